"""The database source: the registry's word on one serial under one CA generation.

A serial that this generation never issued is `unknown` (RFC 6960 §2.2), even if another
generation issued the same number.
"""

from __future__ import annotations

import sqlite3

from ocsp.response import Status
from registry.clock import from_epoch
from registry.reasons import Reason

UNKNOWN = Status("unknown", "unknown")


class StatusSource:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def status(self, serial_hex: str, ca_id: int) -> Status:
        row = self.conn.execute(
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
