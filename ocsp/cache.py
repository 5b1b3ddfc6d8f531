"""The pre-signed source: DER answers and their HTTP headers, keyed by the CertID's DER.

The CertID's DER encodes (hash algorithm, issuerNameHash, issuerKeyHash, serial), i.e.
(issuer, serial, hash algorithm), and is exactly what the answer must echo.

A second map memoizes the registry's word on a (serial, CA generation), so that a live (nonce)
answer for a known certificate needs no database read on the signing thread: one round trip
through SQLite there is one more wait for the GIL per answer. It follows the answers'
invalidation, and `unknown` is never memoized (a serial may be issued at any moment).

Invalidation: `drop_serials` on a state change, `drop_unknown` whenever another connection
committed anything (a serial that was unknown may just have been issued). `version` counts
invalidations, as (state changes, unknown drops): an answer whose status was read before an
invalidation that concerns it is not stored. A good or revoked answer ignores the unknown
drops, which happen on every foreign commit (the fees ledger commits all the time); a change
of its own state always comes with a state change.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from email.utils import formatdate

from ocsp.issuers import ServedGeneration
from ocsp.request import CertID
from ocsp.status import Status


@dataclass(frozen=True)
class CachedAnswer:
    """One pre-signed answer and what serving it needs (RFC 5019 §6.2 headers, metering)."""

    der: bytes
    cert_id: CertID
    generation: ServedGeneration
    state: str  # good | revoked | unknown
    kind: str
    this_update: int
    next_update: int
    refresh_at: int
    etag: str
    last_modified: str
    expires: str
    # Hot-path values, computed once per entry instead of once per request:
    issuer_kind: str = ""
    metered: tuple[tuple[str, str], ...] = ()  # what the metering hook is handed
    # (second, RFC 5019 headers of that second): rebuilt at most once a second (event loop only)
    headers_memo: list[object] = field(default_factory=lambda: [-1, {}], compare=False, repr=False)

    def headers(self, now: int, content_type: str) -> dict[str, str]:
        """RFC 5019 §6.2 headers; max-age stays a second below nextUpdate."""
        memo = self.headers_memo
        if memo[0] != now:
            memo[1] = {
                "Content-Type": content_type,
                "Cache-Control": f"max-age={max(0, self.next_update - now - 1)},"
                                 " public, no-transform, must-revalidate",
                "Last-Modified": self.last_modified,
                "Expires": self.expires,
                "ETag": self.etag,
            }
            memo[0] = now
        return memo[1]  # type: ignore[return-value]  # [second, headers]: set just above

    @classmethod
    def make(cls, der: bytes, cert_id: CertID, generation: ServedGeneration, state: str,
             kind: str, this_update: int, next_update: int,
             refresh_fraction: float) -> CachedAnswer:
        return cls(
            der=der, cert_id=cert_id, generation=generation, state=state, kind=kind,
            this_update=this_update, next_update=next_update,
            refresh_at=this_update + int((next_update - this_update) * refresh_fraction),
            etag='"' + hashlib.sha256(der).hexdigest()[:40] + '"',
            last_modified=formatdate(this_update, usegmt=True),
            expires=formatdate(next_update, usegmt=True),
            issuer_kind=generation.kind,
            metered=((kind, cert_id.serial_hex),),
        )


class PresignedCache:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.entries: dict[bytes, CachedAnswer] = {}
        self._by_serial: dict[str, set[bytes]] = {}
        self._unknown: set[bytes] = set()
        self.statuses: dict[str, dict[int, Status]] = {}  # serial -> CA generation id -> status
        self._changes = 0
        self._unknown_drops = 0

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, cert_id_der: bytes) -> CachedAnswer | None:
        return self.entries.get(cert_id_der)

    def answers(self) -> list[CachedAnswer]:
        """A snapshot of every cached answer (background work iterates while requests add)."""
        return list(self.entries.values())

    @property
    def version(self) -> tuple[int, int]:
        return self._changes, self._unknown_drops

    def put(self, entry: CachedAnswer, version_at_read: tuple[int, int]) -> bool:
        changes, unknown_drops = version_at_read
        if changes != self._changes or (entry.state == "unknown"
                                        and unknown_drops != self._unknown_drops):
            return False
        if len(self.entries) >= self.limit:
            self._evict()
        key = entry.cert_id.der
        self.entries[key] = entry
        self._by_serial.setdefault(entry.cert_id.serial_hex, set()).add(key)
        if entry.state == "unknown":
            self._unknown.add(key)
        return True

    def status(self, serial_hex: str, ca_id: int) -> Status | None:
        """The memoized status, current as long as the caller ran `Refresher.catch_up()`."""
        by_ca = self.statuses.get(serial_hex)
        return by_ca.get(ca_id) if by_ca is not None else None

    def remember_status(self, serial_hex: str, ca_id: int, status: Status,
                        version_at_read: tuple[int, int]) -> None:
        """Memoize a status read from the registry, unless an invalidation happened since."""
        if status.state == "unknown" or version_at_read[0] != self._changes:
            return
        if len(self.statuses) >= self.limit:
            self.statuses.clear()  # a memo: losing it costs one read per answer, nothing else
        self.statuses.setdefault(serial_hex, {})[ca_id] = status

    def _evict(self) -> None:
        """Drop the oldest tenth (dicts keep insertion order); a miss is re-signed on demand."""
        for key in list(self.entries)[: max(1, self.limit // 10)]:
            self._remove(key)

    def _remove(self, key: bytes) -> CachedAnswer | None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            keys = self._by_serial.get(entry.cert_id.serial_hex)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_serial[entry.cert_id.serial_hex]
            self._unknown.discard(key)
        return entry

    def drop_serials(self, serials: tuple[str, ...] | list[str]) -> list[CachedAnswer]:
        self._changes += 1
        dropped: list[CachedAnswer] = []
        for serial in serials:
            self.statuses.pop(serial, None)
            for key in list(self._by_serial.get(serial, ())):
                entry = self._remove(key)
                if entry is not None:
                    dropped.append(entry)
        return dropped

    def drop_unknown(self) -> None:
        self._unknown_drops += 1
        for key in list(self._unknown):
            self._remove(key)

    def clear(self) -> None:
        self._changes += 1
        self.entries.clear()
        self.statuses.clear()
        self._by_serial.clear()
        self._unknown.clear()
