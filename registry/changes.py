"""The `state_changes` feed as a responder follows it: the newest sequence and what came after.

`jpki revoke` (another process) commits a `state_changes` row in the same transaction as the
revocation; a responder reads them only once `PRAGMA data_version` says another connection
committed (https://sqlite.org/pragma.html#pragma_data_version). These functions take the
responder's own connection (and the cursor it reuses on every request) so the per-request
check stays one pragma.
"""

from __future__ import annotations

import sqlite3

_NEWEST = "SELECT COALESCE(MAX(seq), 0) FROM state_changes"
_SINCE = "SELECT seq, serial FROM state_changes WHERE seq > ? ORDER BY seq"


def data_version(cursor: sqlite3.Cursor | sqlite3.Connection) -> int:
    """Changes whenever another connection commits to the registry file."""
    return int(cursor.execute("PRAGMA data_version").fetchone()[0])


def newest_seq(conn: sqlite3.Connection) -> int:
    """The sequence number of the newest committed state change (0: none yet)."""
    return int(conn.execute(_NEWEST).fetchone()[0])


def serials_since(conn: sqlite3.Connection, seq: int) -> list[tuple[int, str]]:
    """(seq, serial) of every state change after `seq`, oldest first."""
    return [(int(row[0]), str(row[1])) for row in conn.execute(_SINCE, (seq,)).fetchall()]
