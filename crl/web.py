"""GET /crl/...: the published CRLs, at the URLs the certificates carry.

This face holds no key: it serves the files the signer published, describing a file again only
when its inode, size or mtime changes (a publication is an atomic rename, and the file is served
from the descriptor it was described from, so a request gets either the old CRL or the new one,
never half of one). No CRL is held in memory: a body is read from the file in chunks.

Caching follows the CRL itself: Last-Modified is thisUpdate, max-age runs until nextUpdate and
Expires is nextUpdate (RFC 5019 §6.2 applies the same rule to OCSP; a cache must not keep a CRL
past nextUpdate). The ETag is the SHA-256 of the file's last 1,024 bytes, which hold the
signature: it covers every signed byte, so it changes with any change of content, and a
gigabyte CRL need not be read to name it. `If-None-Match` gets 304; `Range` (one range, RFC 9110
§14) gets 206, so a verifier resumes a large download (`If-Range` with the ETag keeps it from
splicing two CRLs); a range beyond the end gets 416.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from aiohttp import web
from asn1crypto import parser as asn1_parser
from asn1crypto import x509 as asn1_x509

from ca.kinds import CertKind
from registry.clock import Clock

CONTENT_TYPE = "application/pkix-crl"


CHUNK = 256 * 1024
# One range of bytes (RFC 9110 §14.1.2); ASCII digits only, bounded so int() stays cheap.
_RANGE = re.compile(r"bytes=(?P<first>[0-9]{0,19})-(?P<last>[0-9]{0,19})", re.ASCII)
# The signature of a CRL signed with up to a 4096-bit key, and its algorithm, fit in this.
TAIL = 1024
# The tbsCertList fields before revokedCertificates (issuer DN, times) fit in this.
HEAD = 64 * 1024


@dataclass(frozen=True)
class ServedCRL:
    stamp: tuple[int, int, int]
    size: int
    etag: str
    this_update: datetime
    next_update: datetime | None


class NotACRL(ValueError):
    """The file does not start like a CertificateList (RFC 5280 §5.1)."""


def _skip_header(data: bytes, offset: int) -> int:
    """The offset of the contents of the constructed element at `offset` (its length octets,
    X.690 §8.1.3, are read; its contents need not be in `data`)."""
    if offset + 2 > len(data) or data[offset] != 0x30:
        raise NotACRL("not a DER SEQUENCE")
    first = data[offset + 1]
    return offset + 2 + (first & 0x7F if first & 0x80 else 0)


def crl_times(head: bytes) -> tuple[datetime, datetime | None]:
    """thisUpdate and nextUpdate from the first bytes of a DER CRL."""
    offset = _skip_header(head, _skip_header(head, 0))  # CertificateList, then tbsCertList
    times: list[datetime] = []
    for _ in range(5):  # version, signature, issuer, thisUpdate, nextUpdate (RFC 5280 §5.1)
        try:
            _c, _m, tag, header, contents, _t = asn1_parser.parse(head[offset:], strict=False)
        except ValueError as exc:
            raise NotACRL(str(exc)) from None
        length = len(header) + len(contents)
        if tag in (23, 24):  # UTCTime, GeneralizedTime
            times.append(asn1_x509.Time.load(head[offset:offset + length]).native)
        elif times:
            break
        offset += length
    if not times:
        raise NotACRL("no thisUpdate")
    return times[0], times[1] if len(times) > 1 else None


def describe(handle: BinaryIO, stamp: tuple[int, int, int]) -> ServedCRL:
    size = stamp[1]
    head = os.pread(handle.fileno(), HEAD, 0)
    tail = os.pread(handle.fileno(), TAIL, max(0, size - TAIL))
    this_update, next_update = crl_times(head)
    return ServedCRL(stamp, size, '"' + hashlib.sha256(tail).hexdigest()[:32] + '"',
                     this_update, next_update)


class CRLFiles:
    """The published CRL files, described once per (inode, size, mtime)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[Path, ServedCRL] = {}

    def open(self, kind: CertKind, generation: int, name: str
             ) -> tuple[BinaryIO, ServedCRL] | None:
        """The open file and its description; the caller closes the file."""
        path = self.root / kind.short / f"g{generation}" / f"{name}.crl"
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            self._cache.pop(path, None)
            return None
        try:
            stat = os.fstat(handle.fileno())
            stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            cached = self._cache.get(path)
            if cached is None or cached.stamp != stamp:
                cached = describe(handle, stamp)
                self._cache[path] = cached
        except BaseException:
            handle.close()
            raise
        return handle, cached


def byte_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """RFC 9110 §14.1.2: the [start, end) of a single `bytes=` range; None to send the whole
    file (no header, a malformed one, or several ranges, which a server may ignore); False
    when the range is not satisfiable (416)."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or not (match["first"] or match["last"]):
        return None
    first, last = match["first"], match["last"]
    if not first:  # suffix range: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            return False
        return max(0, size - length), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if last and int(last) < start:
        return None  # invalid: ignored (§14.1.1)
    if start >= size:
        return False
    return start, end


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = [token.strip().removeprefix("W/") for token in header.split(",")]
    return "*" in candidates or etag in candidates


class DownloadMeter(Protocol):
    """Records a CRL download by an identified verifier (free: DOMAIN.md, "Fees")."""

    async def download(self, authorization: str, path: str) -> bool:
        """False when the bearer token is not a verifier's."""


def routes(root: Path, clock: Clock, meter: DownloadMeter | None = None
           ) -> list[web.RouteDef]:
    """`root` holds the published tree (<data dir>/crl, or a mount of the signer's)."""
    files = CRLFiles(root)

    async def serve(request: web.Request) -> web.StreamResponse:
        try:
            kind = CertKind.from_short(request.match_info["kind"])
        except ValueError:
            raise web.HTTPNotFound() from None
        loop = asyncio.get_running_loop()
        try:
            opened = await loop.run_in_executor(None, files.open, kind,
                                                int(request.match_info["generation"]),
                                                request.match_info["name"])
        except NotACRL:
            raise web.HTTPNotFound(text="no CRL published at this URL yet\n") from None
        if opened is None:
            raise web.HTTPNotFound(text="no CRL published at this URL yet\n")
        handle, served = opened
        try:
            return await _respond(request, handle, served)
        finally:
            handle.close()

    async def _respond(request: web.Request, handle: BinaryIO,
                       served: ServedCRL) -> web.StreamResponse:
        now = clock()
        max_age = 0
        if served.next_update is not None:
            max_age = max(0, int((served.next_update - now).total_seconds()))
        headers = {
            "ETag": served.etag,
            "Last-Modified": format_datetime(served.this_update, usegmt=True),
            "Cache-Control": f"public, max-age={max_age}, no-transform",
            "Accept-Ranges": "bytes",
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
        wanted = byte_range(request.headers.get("Range"), served.size)
        if_range = request.headers.get("If-Range")
        if wanted is not None and if_range is not None and if_range.strip() != served.etag:
            wanted = None  # §13.1.5: the CRL changed since the part the client holds
        if wanted is False:
            headers["Content-Range"] = f"bytes */{served.size}"
            return web.Response(status=416, headers=headers)
        start, end = wanted if isinstance(wanted, tuple) else (0, served.size)
        response = web.StreamResponse(status=206 if isinstance(wanted, tuple) else 200,
                                      headers=headers)
        if isinstance(wanted, tuple):
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{served.size}"
        response.content_type = CONTENT_TYPE
        response.content_length = end - start
        await response.prepare(request)
        if request.method != "HEAD":
            loop = asyncio.get_running_loop()
            offset = start
            while offset < end:
                chunk = await loop.run_in_executor(None, os.pread, handle.fileno(),
                                                   min(CHUNK, end - offset), offset)
                if not chunk:
                    break
                await response.write(chunk)
                offset += len(chunk)
        await response.write_eof()
        return response

    # The generation's digits are bounded: a 300-digit one made a file name too long for
    # os.stat (500). The CRL files' names are exactly these, nothing else is looked up: a
    # municipality code with its shard (registry/shards.py) or "full", each with its delta.
    return [web.get(r"/crl/{kind}/g{generation:\d{1,9}}"
                    r"/{name:(?:\d{5}(?:-\d{1,6})?|full)(?:\.delta)?}.crl", serve)]
