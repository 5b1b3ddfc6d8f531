"""The append-only, hash-chained audit log.

Each row carries the SHA-256 of the previous row's hash and its own fields, so an edit, a
deletion or an insertion made behind the code's back breaks the chain at that row. Rows hold
serials, actors and actions, never the 4 facts: the audit log is read by people who must not
learn a resident's name or address from it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from registry.clock import Clock, epoch
from registry.store import Store

GENESIS = "0" * 64


def _row_hash(prev_hash: str, row_id: int, at: int, actor: str, action: str,
              serial: str | None, detail: str) -> str:
    payload = json.dumps([prev_hash, row_id, at, actor, action, serial, detail],
                         ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def append(store: Store, clock: Clock, *, actor: str, action: str,
           serial: str | None = None, detail: dict[str, Any] | None = None) -> int:
    """Append one row; call inside the transaction whose change it records."""
    with store.transaction() as conn:
        last = conn.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
        prev_hash = last[1] if last else GENESIS
        row_id = (last[0] if last else 0) + 1
        at = epoch(clock())
        text = json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        digest = _row_hash(prev_hash, row_id, at, actor, action, serial, text)
        conn.execute(
            "INSERT INTO audit_log (id, at, actor, action, serial, detail, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row_id, at, actor, action, serial, text, prev_hash, digest),
        )
        return row_id


@dataclass(frozen=True)
class ChainReport:
    rows: int
    first_broken: int | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.first_broken is None


def verify(store: Store) -> ChainReport:
    """Walk the chain in id order; report the first row whose link or hash does not hold."""
    prev_hash = GENESIS
    expected_id = 1
    count = 0
    cursor = store.conn.execute(
        "SELECT id, at, actor, action, serial, detail, prev_hash, hash FROM audit_log ORDER BY id"
    )
    for row_id, at, actor, action, serial, detail, row_prev, row_hash in cursor:
        count += 1
        if row_id != expected_id:
            return ChainReport(count, expected_id, f"row {expected_id} is missing")
        if row_prev != prev_hash:
            return ChainReport(count, row_id, f"row {row_id} does not link to row {row_id - 1}")
        if _row_hash(row_prev, row_id, at, actor, action, serial, detail) != row_hash:
            return ChainReport(count, row_id, f"row {row_id} was altered (hash mismatch)")
        prev_hash = row_hash
        expected_id += 1
    return ChainReport(count, None, None)
