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

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from httpapi.arrivals import Arrivals
from registry import changes
from registry.changes import LoopFeed
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


class SharedProof:
    """The same proof for a registry across the network (PostgreSQL), without blocking the
    event loop on its round trip, and shared by every request it covers.

    A proof covers the requests whose bytes arrived before it was sent. One proof is in flight
    at a time, on the event loop itself: the snapshot read is a statement prepared once on a
    session of the proof's own, sent without blocking and answered when its socket is readable
    (`changes.LoopFeed`, registry/pg_loop.py), so no thread is woken and nothing is parsed per
    proof. A request waits for the first proof sent after it arrived, joining the one in
    flight if that one was sent after its arrival, else the next. The loop serves other
    requests meanwhile. When a proof returns, what it found (the new `state_changes` rows,
    read on the same session once the snapshot moved) is applied (`apply`) before any request
    it covers is answered. Without an arrivals count, every request takes a ticket and needs a
    proof sent after its ticket. A failed proof fails the requests waiting for it (an OCSP
    internal error, never a stale answer); the next request sends a new one.
    """

    def __init__(self, watch: RegistryWatch, feed: LoopFeed,
                 apply: Callable[[Changes], None]) -> None:
        self.watch = watch  # the state: the last snapshot and state change seen
        self.feed = feed
        self.apply = apply
        self.arrivals = watch.arrivals
        self._inflight: asyncio.Future[None] | None = None
        self._inflight_from = -1  # the count when the proof in flight was sent
        self._proved_from = -1  # the count when the last completed proof was sent
        self._tickets = 0

    def _count(self) -> int:
        if self.arrivals is not None and self.arrivals.counting:
            return self.arrivals.count
        self._tickets += 1
        return self._tickets

    async def prove(self) -> None:
        need = self._count()
        while self._proved_from < need:
            inflight = self._inflight
            if inflight is None:
                inflight = self._send()
            elif self._inflight_from < need:  # sent before we arrived: not ours
                with contextlib.suppress(Exception):  # its failure is its requests' to report
                    await asyncio.shield(inflight)
                continue
            await asyncio.shield(inflight)

    def _send(self) -> asyncio.Future[None]:
        """Start a proof. Its snapshot statement is sent in the task's first step, after the
        count is read: requests counted here arrived before it."""
        sent_from = self.arrivals.count if self.arrivals is not None and \
            self.arrivals.counting else self._tickets
        future: asyncio.Future[None] = asyncio.ensure_future(self._prove(sent_from))
        self._inflight, self._inflight_from = future, sent_from
        future.add_done_callback(self._retrieved)
        return future

    async def _prove(self, sent_from: int) -> None:
        try:
            found = await self._poll()
            if found is not None:
                self.apply(found)
        finally:
            self._inflight = None
        self._proved_from = max(self._proved_from, sent_from)

    async def _poll(self) -> Changes | None:
        watch = self.watch
        version = await self.feed.data_version()
        if version == watch.version:
            return None
        rows = await self.feed.serials_since(watch.last_seq)
        watch.version = version  # only once its rows are read: a failed read is read again
        if rows:
            watch.last_seq = rows[-1][0]
        return Changes(tuple(row[1] for row in rows)) if rows else NOTHING

    @staticmethod
    def _retrieved(future: asyncio.Future[None]) -> None:
        """Each waiter re-raises a failure for its own request; none is left unretrieved."""
        if not future.cancelled():
            future.exception()

    def close(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
        self.feed.close()
