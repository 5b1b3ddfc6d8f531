"""A count of the bytes' arrivals on every connection, for proofs that cover a whole batch.

The OCSP responder proves, before answering, that its view of the registry is current
(ocsp/watch.py: one `PRAGMA data_version`). A proof taken after a request's first bytes arrived
covers that request: whatever was acknowledged to anyone before the client sent it was
committed before the proof. So while no byte has arrived on any connection since the last
proof, the requests being handled all arrived before it, and the proof still holds.

Under load the event loop reads many requests in one turn and handles them one after the
other; with this count, one proof serves the whole turn instead of one per request. That
matters because the pragma releases the GIL, and on the live (nonce) path every release hands
the GIL to a signing thread and makes the event loop wait to get it back (measured with
`make bench-ocsp`: +9% answers/s on the live path without the per-request pragma).
"""

from __future__ import annotations

from aiohttp import web


class Arrivals:
    """Bumped by httpapi/deadline.py on every `data_received`, read on the same event loop.

    `counting` is set by the listener that bumps it. An app served some other way (a plain
    TCPSite, as some tests do) leaves it unset, and every request then gets its own proof:
    a count that never moves must not pass for "nothing arrived".
    """

    __slots__ = ("count", "counting")

    def __init__(self) -> None:
        self.count = 0
        self.counting = False


ARRIVALS = web.AppKey("http_arrivals", Arrivals)
