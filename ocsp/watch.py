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
from concurrent.futures import ThreadPoolExecutor
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


class SharedProof:
    """The same proof for a registry across the network (PostgreSQL), without blocking the
    event loop on its round trip, and shared by every request it covers.

    A proof covers the requests whose bytes arrived before it was sent. One proof is in flight
    at a time, on a thread of its own with a session of its own (`RegistryWatch.poll`, whose
    libpq call releases the GIL); a request waits for the first proof sent after it arrived,
    joining the one in flight if that one was sent after its arrival, else the next. The
    loop serves other requests meanwhile. When a proof returns, what it found is applied
    (`apply`, on the loop) before any request it covers is answered. Without an arrivals
    count, every request takes a ticket and needs a proof sent after its ticket.
    """

    def __init__(self, watch: RegistryWatch, apply: Callable[[Changes], None]) -> None:
        self.watch = watch
        self.apply = apply
        self.arrivals = watch.arrivals
        watch.arrivals = None  # the proof decides what is covered; every poll queries
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry-proof")
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
        loop = asyncio.get_running_loop()
        sent_from = self.arrivals.count if self.arrivals is not None and \
            self.arrivals.counting else self._tickets
        future: asyncio.Future[None] = loop.create_future()
        self._inflight, self._inflight_from = future, sent_from

        def done(task: asyncio.Future[Changes | None]) -> None:
            self._inflight = None
            try:
                found = task.result()
                if found is not None:
                    self.apply(found)
            except BaseException as error:  # the waiters answer an error; the next one retries
                future.set_exception(error)
                future.exception()  # retrieved: each waiter re-raises it for its own request
                return
            self._proved_from = max(self._proved_from, sent_from)
            future.set_result(None)

        loop.run_in_executor(self._executor, self.watch.poll).add_done_callback(done)
        return future

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
