"""The `state_changes` feed as a responder or the signer follows it: the newest sequence, what
came after, and the cheap token that says whether anything was committed at all.

`jpki revoke` (another process, maybe another host) commits a `state_changes` row in the same
transaction as the revocation. A follower reads the rows only once the token moved:
- SQLite: `PRAGMA data_version` on the follower's own connection changes whenever any other
  connection commits (https://sqlite.org/pragma.html#pragma_data_version);
- PostgreSQL: the text of `pg_current_snapshot()` (xmin:xmax:in-progress list) is the same
  only while no write transaction has begun or ended anywhere in the cluster, so an unchanged
  snapshot proves that nothing was committed since (a changed one may be another database's
  write: then the follower reads and finds nothing; it costs one query).
Each is one round trip, so the per-request proof of freshness stays cheap. On PostgreSQL the
rows' trigger also NOTIFYs `jpki_state_changes` (registry/pg_migrations.py): `ChangeSignal`
lets the signer sleep until then instead of polling.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

from registry.errors import JPKIError
from registry.store import Connection, Store

log = logging.getLogger("jpki.registry")

_NEWEST = "SELECT COALESCE(MAX(seq), 0) FROM state_changes"
_SINCE = "SELECT seq, serial FROM state_changes WHERE seq > ? ORDER BY seq"
_SNAPSHOT = "SELECT pg_current_snapshot()::text"


def data_version(cursor: Any) -> object:
    """A token that changes whenever another connection commits (see the module docstring).

    `cursor` is a connection, or a cursor the caller reuses on every request (SQLite)."""
    if isinstance(cursor, sqlite3.Cursor | sqlite3.Connection):
        return int(cursor.execute("PRAGMA data_version").fetchone()[0])
    from registry.pg import scalar_text  # psycopg is imported only when it is used

    return scalar_text(cursor, _SNAPSHOT.encode())


def newest_seq(conn: Connection) -> int:
    """The sequence number of the newest committed state change (0: none yet)."""
    return int(conn.execute(_NEWEST).fetchone()[0])


def serials_since(conn: Connection, seq: int) -> list[tuple[int, str]]:
    """(seq, serial) of every state change after `seq`, oldest first."""
    return [(int(row[0]), str(row[1])) for row in conn.execute(_SINCE, (seq,)).fetchall()]


class LoopFeed:
    """The same token and rows on PostgreSQL, read on the event loop (registry/pg_loop.py):
    for the responder's proof of freshness, sent for every batch of requests."""

    def __init__(self, url: str) -> None:
        from registry.pg_loop import LoopSession  # psycopg is imported only when it is used

        self.session = LoopSession(url, {"snapshot": _SNAPSHOT, "since": _SINCE})

    async def data_version(self) -> object:
        rows = await self.session.rows("snapshot")
        return rows[0][0] or "" if rows else ""

    async def serials_since(self, seq: int) -> list[tuple[int, str]]:
        return [(int(str(row[0])), str(row[1]))
                for row in await self.session.rows("since", (str(seq),))]

    def close(self) -> None:
        self.session.close()


class ChangeSignal:
    """Sleep until a state change is committed or `timeout` passes.

    SQLite has no cross-process signal: the sleep is the timeout (the caller then checks the
    token). PostgreSQL: LISTEN on a connection of its own; a notification ends the sleep.
    """

    def __init__(self, store: Store, stop: threading.Event) -> None:
        self.stop = stop
        self.url = store.url
        self._listener: Any = None
        if store.dialect == "postgresql":
            from registry.pg import listen

            self._listener = listen(store.url)

    def wait(self, timeout: float) -> None:
        if self._listener is None:
            self.stop.wait(timeout)
            return
        try:
            for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                pass  # the rows are the source of truth; the payload only wakes us
        except Exception as exc:  # the server went away: poll until it is back
            log.warning("change notifications lost (%s); listening again", type(exc).__name__)
            self._listener.close()
            self.stop.wait(timeout)
            self._listener = self._relisten()

    def _relisten(self) -> Any:
        from registry.pg import listen

        try:
            return listen(self.url)
        except JPKIError:
            return _Deaf()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()


class _Deaf:
    """A listener while the server is unreachable: every wait fails, so the next one tries
    to listen again (the caller's timeout paces the attempts)."""

    def notifies(self, timeout: float, stop_after: int) -> Iterator[object]:
        raise ConnectionError("not listening")

    def close(self) -> None:
        return None
