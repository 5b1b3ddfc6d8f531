"""A request-header deadline for aiohttp's server: slow clients (slowloris) are cut off.

aiohttp times out idle keep-alive connections (`keepalive_timeout`) and our handlers time out
slow bodies (`ocsp.read_timeout_seconds`), but aiohttp has no timeout of its own for a client
that dribbles its request line and headers: 3.9 lets such a connection live forever, newer
releases only close it when the keep-alive timer happens to fire. Each such connection holds a
socket and a parser, so a few thousand of them exhaust the responder.

`RequestDeadline` wraps the protocol aiohttp builds for each connection (`runner.server()`,
public API) and closes the connection when a request's line and headers have not all arrived
within `timeout` seconds of its first byte (for the first request: of the connection itself).
It forwards every event unchanged. On the hot path it costs a clock read and three attribute
reads per received segment: no task and no timer per request. One timer per connection is
re-armed lazily, like aiohttp's own keep-alive timer.

It reads two attributes of aiohttp's RequestHandler: `_request_count` (bumped when a request's
headers are parsed) and `_waiter` (pending while the handler waits for the next request). They
are private, so listen() checks them at start-up and tests/test_slow_clients.py pins the
behaviour against the installed aiohttp. Not covered: the rest of a request pipelined behind
one being handled (or sent in the instant between a response and the next wait); the idle
timeout bounds those.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from aiohttp import web
from prometheus_client import Counter

from httpapi.arrivals import Arrivals
from httpapi.badinput import ClientErrorLogger

log = logging.getLogger("jpki.http")
CLOSED = Counter(
    "jpki_http_request_deadline_closed",
    "Connections closed because a request line and headers did not arrive within"
    " ocsp.request_timeout_seconds (slow clients, slowloris); a steady rise is an attack or a"
    " broken client, not load",
)


class RequestDeadline(asyncio.Protocol):
    """One connection: aiohttp's RequestHandler plus a deadline on incomplete requests."""

    __slots__ = ("inner", "timeout", "loop", "arrivals", "transport", "_since", "_seen",
                 "_timer")

    def __init__(self, inner: web.RequestHandler, timeout: float,
                 loop: asyncio.AbstractEventLoop, arrivals: Arrivals) -> None:
        self.inner = inner
        self.timeout = timeout
        self.loop = loop
        self.arrivals = arrivals
        self.transport: asyncio.BaseTransport | None = None
        self._since: float | None = None  # when the request now arriving began, else None
        self._seen = 0  # the handler's request count at the last check
        self._timer: asyncio.TimerHandle | None = None

    # -- the deadline ------------------------------------------------------------------------
    def _expire(self) -> None:
        """Timer: close the connection if the current request is overdue, else re-arm."""
        self._timer = None
        since = self._since
        if since is None or self.transport is None:
            return
        deadline = since + self.timeout
        if self.loop.time() < deadline:  # a later request began since the timer was set
            self._timer = self.loop.call_at(deadline, self._expire)
            return
        CLOSED.inc()  # counted, logged at debug only: a slowloris must not flood the log
        log.debug("closing connection from %s: request headers incomplete after %.1f s",
                  self.transport.get_extra_info("peername"), self.timeout)
        self.transport.close()

    # -- asyncio.Protocol, forwarded ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.inner.connection_made(transport)
        self._seen = self.inner._request_count
        # the first request is due within the timeout too, even if no byte ever comes
        self._since = self.loop.time()
        self._timer = self.loop.call_at(self._since + self.timeout, self._expire)

    def data_received(self, data: bytes) -> None:
        self.arrivals.count += 1  # before aiohttp sees the bytes (httpapi/arrivals.py)
        inner = self.inner
        waiter = inner._waiter
        if self._since is None and waiter is not None and not waiter.done():
            # first bytes of a new request on an idle keep-alive connection (bytes that
            # arrive once its headers are parsed are its body: the handler times those)
            self._since = self.loop.time()
        inner.data_received(data)
        count = inner._request_count
        if count != self._seen:  # headers complete: this request met its deadline
            self._seen = count
            self._since = None
        elif self._since is not None and self._timer is None:  # incomplete: start the clock
            self._timer = self.loop.call_at(self._since + self.timeout, self._expire)

    def eof_received(self) -> bool | None:
        # aiohttp's handler returns None (close on EOF); asyncio.Protocol allows True (stay
        # half-open), so pass on whatever the inner protocol answers
        protocol: asyncio.Protocol = self.inner
        return protocol.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._since = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.inner.connection_lost(exc)


def protocol_factory(server: web.Server, timeout: float,
                     arrivals: Arrivals) -> Callable[[], RequestDeadline]:
    """What `loop.create_server` needs: aiohttp's protocol for each connection, wrapped."""
    loop = asyncio.get_running_loop()

    def factory() -> RequestDeadline:
        handler = server()
        # requests aiohttp's parser refuses: counted and logged at debug, not one ERROR
        # traceback each (httpapi/badinput.py). The slot is typed Logger; aiohttp calls only
        # debug() and exception() on it, which ClientErrorLogger provides.
        handler.logger = ClientErrorLogger(handler.logger)  # type: ignore[assignment]  # above
        return RequestDeadline(handler, timeout, loop, arrivals)

    return factory


async def listen(runner: web.BaseRunner, host: str, port: int, *, request_timeout: float,
                 arrivals: Arrivals | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 reuse_port: bool = False) -> asyncio.Server:
    """Serve `runner` (set up) on host:port with the header deadline; what TCPSite does.

    The caller closes the returned server before `runner.cleanup()`, which then shuts the
    open connections down as usual. `arrivals` is bumped on every segment received
    (httpapi/arrivals.py). With `ssl_context` the listener speaks TLS; the TLS handshake,
    which comes before the protocol sees the connection, gets the same `request_timeout`
    (asyncio's default is 60 s: a slowloris could stall there instead). With `reuse_port`
    (SO_REUSEPORT) several processes listen on the same port and the kernel spreads new
    connections over them.
    """
    server = runner.server
    if server is None:
        raise RuntimeError("runner.setup() must run before listen()")
    probe = server()  # a handler never connected: nothing registers it
    if not (hasattr(probe, "_request_count") and hasattr(probe, "_waiter")):
        # Fail at start-up, not on the first connection: the deadline reads these two.
        raise RuntimeError("this aiohttp's RequestHandler has no _request_count/_waiter:"
                           " httpapi/deadline.py must be adapted to it")
    arrivals = arrivals or Arrivals()
    arrivals.counting = True
    return await asyncio.get_running_loop().create_server(
        protocol_factory(server, request_timeout, arrivals), host, port,
        reuse_address=True, reuse_port=reuse_port or None, backlog=128, ssl=ssl_context,
        ssl_handshake_timeout=request_timeout if ssl_context is not None else None)
