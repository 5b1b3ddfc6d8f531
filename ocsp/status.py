"""The database source: the registry's word on one serial under one CA generation.

A serial that this generation never issued is `unknown` (RFC 6960 §2.2), even if another
generation issued the same number.

Lookups run on the signing threads, each with its own read-only connection: sqlite3 drops the
GIL around every call, and re-taking it on the event loop while workers hold it stalls the loop
(measured: 40-50 µs per call under live load instead of 3 µs).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ocsp.response import Status
from registry.clock import from_epoch
from registry.reasons import Reason

UNKNOWN = Status("unknown", "unknown")


class StatusSource:
    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True,
                                   check_same_thread=True, timeout=30)
            self._local.conn = conn
        return conn

    def status(self, serial_hex: str, ca_id: int) -> Status:
        row = self._conn().execute(
            "SELECT kind, ca_id, status, revoked_at, reason FROM certificates WHERE serial = ?",
            (serial_hex,),
        ).fetchone()
        if row is None or row[1] != ca_id:
            return UNKNOWN
        kind, _, state, revoked_at, reason = row
        if state == "revoked":
            return Status("revoked", kind, from_epoch(revoked_at),
                          Reason(reason) if reason is not None else None)
        return Status("good", kind)
