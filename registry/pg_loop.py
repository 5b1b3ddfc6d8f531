"""A PostgreSQL session driven by the event loop, for a statement sent too often for a thread.

The responder proves its view of the registry current for every batch of requests
(ocsp/watch.py): one small read per proof. Through a thread, each proof paid the hand-off (a
thread woken, the GIL passed back and forth, `call_soon_threadsafe`) and PostgreSQL parsed
and planned the statement again. Here the statements are prepared once per session, sent with
libpq's asynchronous API (`PQsendQueryPrepared`, in non-blocking mode) and their answer read
when the socket is readable (`loop.add_reader`): no thread, no parse, no plan.

The session is the caller's alone: it is neither the pool's nor shared with a thread. One
statement is in flight at a time (the caller serialises them). A session the server dropped (a
restart, a failover) is dialled again, the statements prepared again and the statement sent
again once: every statement here is a read, so nothing happens twice. Dialling is blocking in
libpq, so it runs on a thread; it happens only at the first statement and after a loss.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import psycopg
from psycopg import pq

from registry.pg import translate

log = logging.getLogger("jpki.registry")

Row = tuple[str | None, ...]


def numbered(sql: str) -> bytes:
    """The query modules' `?` placeholders as libpq's `$1, $2, ...` (outside quoted text)."""
    pieces = translate(sql).split("%s")
    out = [pieces[0]]
    for index, piece in enumerate(pieces[1:], start=1):
        out.append(f"${index}{piece}")
    return "".join(out).replace("%%", "%").encode()


class LoopSession:
    """Prepared reads on a session of its own, sent and answered on the running event loop."""

    def __init__(self, url: str, statements: Mapping[str, str]) -> None:
        self.url = url
        self.statements = {name.encode(): numbered(sql) for name, sql in statements.items()}
        self._pgconn: pq.abc.PGconn | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._fd = -1

    async def rows(self, name: str, params: Sequence[str] = ()) -> list[Row]:
        """The rows of prepared statement `name` (text values), re-sent once on a new session
        if the server dropped this one."""
        values = [param.encode() for param in params]
        for attempt in (1, 2):
            pgconn = self._pgconn or await self._dial()
            try:
                return await self._exchange(pgconn, name.encode(), values)
            except asyncio.CancelledError:
                self._drop()  # its answer would arrive in the next statement's place
                raise
            except psycopg.OperationalError:
                if pgconn.status == pq.ConnStatus.OK:
                    raise  # the statement failed, the session did not: not a loss
                self._drop()
                if attempt == 2:
                    raise
                log.warning("PostgreSQL session of the freshness proof lost; reconnecting")
        raise AssertionError("unreachable")

    async def _exchange(self, pgconn: pq.abc.PGconn, name: bytes,
                        values: list[bytes]) -> list[Row]:
        loop = asyncio.get_running_loop()
        pgconn.send_query_prepared(name, values or None)
        while pgconn.flush():  # the kernel's buffer was full: rare for one small statement
            await asyncio.sleep(0)
        waiter = loop.create_future()
        self._waiter = waiter
        try:  # answered by `_on_readable` (libpq's buffer held nothing: one statement at once)
            await waiter
        finally:
            self._waiter = None
        found: list[Row] = []
        error: str | None = None
        while (result := pgconn.get_result()) is not None:
            if result.status == pq.ExecStatus.TUPLES_OK:
                found.extend(tuple(None if value is None else bytes(value).decode()
                                   for value in (result.get_value(row, column)
                                                 for column in range(result.nfields)))
                             for row in range(result.ntuples))
            else:
                error = (result.error_message or b"failed").decode(errors="replace").strip()
        if error is not None:
            raise psycopg.OperationalError(f"{name.decode()}: {error}")
        return found

    def _on_readable(self) -> None:
        """The socket is readable: take in what arrived; the waiting statement is answered
        once libpq holds its whole result. Between statements, a dropped session is noticed
        here (the next statement dials again)."""
        pgconn, waiter = self._pgconn, self._waiter
        if pgconn is None:
            return
        try:
            pgconn.consume_input()
        except psycopg.OperationalError as error:
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
            else:
                self._drop()
            return
        if waiter is not None and not waiter.done() and not pgconn.is_busy():
            waiter.set_result(None)

    async def _dial(self) -> pq.abc.PGconn:
        pgconn = await asyncio.to_thread(self._connect)
        self._loop, self._fd = asyncio.get_running_loop(), pgconn.socket
        self._loop.add_reader(self._fd, self._on_readable)
        self._pgconn = pgconn
        return pgconn

    def _connect(self) -> pq.abc.PGconn:
        """Blocking (on a thread): a new session with every statement prepared on it."""
        pgconn = pq.PGconn.connect(self.url.encode())
        if pgconn.status != pq.ConnStatus.OK:
            message = pgconn.get_error_message()
            pgconn.finish()
            raise psycopg.OperationalError(f"cannot connect to PostgreSQL: {message}")
        for name, sql in self.statements.items():
            result = pgconn.prepare(name, sql)
            if result.status != pq.ExecStatus.COMMAND_OK:
                message = (result.error_message or b"").decode(errors="replace").strip()
                pgconn.finish()
                raise psycopg.OperationalError(f"cannot prepare {name.decode()}: {message}")
        pgconn.nonblocking = 1
        return pgconn

    def _drop(self) -> None:
        pgconn, self._pgconn = self._pgconn, None
        if pgconn is None:
            return
        if self._loop is not None:  # the number noted at dial: libpq may have closed it
            self._loop.remove_reader(self._fd)
        pgconn.finish()

    def close(self) -> None:
        self._drop()
