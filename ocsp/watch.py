"""Proof that the responder's view of the registry is current, checked on every request.

`jpki revoke` runs in another process and commits `state_changes` in the same transaction as
the revocation. `PRAGMA data_version` on the responder's own connection changes whenever any
other connection commits (https://sqlite.org/pragma.html#pragma_data_version); only then are
the new `state_changes` rows read. The check costs one pragma when nothing changed, so a
revocation acknowledged to the operator is served to the very next query.

Given the server's `Arrivals` (httpapi/arrivals.py) and a listener that counts them, a proof
is reused while no byte has arrived on any connection since it was taken: every request then
being handled arrived before it. The count is read *before* the pragma runs, so bytes that
arrive meanwhile are never counted as proven.
"""

from __future__ import annotations

from dataclasses import dataclass

from httpapi.arrivals import Arrivals
from registry import changes
from registry.store import Connection


@dataclass(frozen=True)
class Changes:
    serials: tuple[str, ...]


NOTHING = Changes(())


class RegistryWatch:
    def __init__(self, conn: Connection, arrivals: Arrivals | None = None) -> None:
        self.conn = conn
        self.arrivals = arrivals
        self._proved_at = -1  # arrivals.count when the last proof was taken
        self._cursor = conn.cursor()  # reused: the check runs on every request
        self.version = self._data_version()
        self.last_seq = changes.newest_seq(conn)

    def _data_version(self) -> object:
        return changes.data_version(self._cursor)

    def poll(self) -> Changes | None:
        """None when no other connection committed since the last poll, else what changed."""
        if self.arrivals is not None and self.arrivals.counting:
            seen = self.arrivals.count
            if seen == self._proved_at:  # nothing arrived since the last proof: it holds
                return None
            self._proved_at = seen
        version = self._data_version()
        if version == self.version:
            return None
        self.version = version
        rows = changes.serials_since(self.conn, self.last_seq)
        if rows:
            self.last_seq = rows[-1][0]
        return Changes(tuple(row[1] for row in rows)) if rows else NOTHING
