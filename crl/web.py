"""GET /crl/...: the published CRLs, at the URLs the certificates carry.

This face holds no key: it serves the files the generator published, re-reading a file only
when its inode, size or mtime changes (a publication is an atomic rename, so a request sees
either the old CRL or the new one, never half of one). Caching follows the CRL itself:
Last-Modified is thisUpdate, max-age runs until nextUpdate (RFC 5019 §6.2 applies the same
rule to OCSP; a cache must not keep a CRL past nextUpdate), the ETag is the SHA-256 of the DER.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Protocol

from aiohttp import web
from cryptography import x509

from ca.kinds import CertKind
from registry.clock import Clock

CONTENT_TYPE = "application/pkix-crl"


@dataclass(frozen=True)
class ServedCRL:
    stamp: tuple[int, int, int]
    body: bytes
    etag: str
    this_update: datetime
    next_update: datetime | None


class CRLFiles:
    """The published CRL files under the data directory, cached by (inode, size, mtime)."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "crl"
        self._cache: dict[Path, ServedCRL] = {}

    def get(self, kind: CertKind, generation: int, name: str) -> ServedCRL | None:
        path = self.root / kind.short / f"g{generation}" / f"{name}.crl"
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            self._cache.pop(path, None)
            return None
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        cached = self._cache.get(path)
        if cached is not None and cached.stamp == stamp:
            return cached
        body = path.read_bytes()
        crl = x509.load_der_x509_crl(body)
        served = ServedCRL(stamp, body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"',
                           crl.last_update_utc, crl.next_update_utc)
        self._cache[path] = served
        return served


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = [token.strip().removeprefix("W/") for token in header.split(",")]
    return "*" in candidates or etag in candidates


class DownloadMeter(Protocol):
    """Records a CRL download by an identified verifier (free: DOMAIN.md, "Fees")."""

    async def download(self, authorization: str, path: str) -> bool:
        """False when the bearer token is not a verifier's."""


def routes(data_dir: Path, clock: Clock, meter: DownloadMeter | None = None
           ) -> list[web.RouteDef]:
    files = CRLFiles(data_dir)

    async def serve(request: web.Request) -> web.StreamResponse:
        try:
            kind = CertKind.from_short(request.match_info["kind"])
        except ValueError:
            raise web.HTTPNotFound() from None
        served = files.get(kind, int(request.match_info["generation"]),
                           request.match_info["name"])
        if served is None:
            raise web.HTTPNotFound(text="no CRL published at this URL yet\n")
        now = clock()
        max_age = 0
        if served.next_update is not None:
            max_age = max(0, int((served.next_update - now).total_seconds()))
        headers = {
            "ETag": served.etag,
            "Last-Modified": format_datetime(served.this_update, usegmt=True),
            "Cache-Control": f"public, max-age={max_age}, no-transform",
        }
        if served.next_update is not None:
            headers["Expires"] = format_datetime(served.next_update, usegmt=True)
        # CRLs are public (openssl's -crl_download sends no credentials); a verifier that
        # identifies itself has the download metered, free, in the ledger before it is sent.
        authorization = request.headers.get("Authorization")
        if authorization and meter is not None and not await meter.download(authorization,
                                                                             request.path):
            raise web.HTTPUnauthorized(text="unknown verifier token\n")
        if _etag_matches(request.headers.get("If-None-Match"), served.etag):
            return web.Response(status=304, headers=headers)
        return web.Response(body=served.body, content_type=CONTENT_TYPE, headers=headers)

    # The generation's digits are bounded: a 300-digit one made a file name too long for
    # os.stat (500). The CRL files' names are exactly these, nothing else is looked up: a
    # municipality code with its shard (registry/shards.py) or "full", each with its delta.
    return [web.get(r"/crl/{kind}/g{generation:\d{1,9}}"
                    r"/{name:(?:\d{5}(?:-\d{1,6})?|full)(?:\.delta)?}.crl", serve)]
