"""Bad input from anonymous clients: counted in /metrics, logged at debug level only.

Anyone can send malformed HTTP or a malformed OCSP request, as fast as they like. A line per
request at INFO or an ERROR traceback per request (what aiohttp logs for every request its
parser refuses) lets an attacker fill the disk and bury the lines that matter: the
hardening review's 37,000 mutated requests wrote 34,000 log lines. So each such request
increments `jpki_bad_requests_total{surface}` (the rate an operator alerts on) and is logged
at debug level, for whoever is chasing one client. Our own failures (5xx, exceptions in a
handler) are not bad input and keep their ERROR traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import Counter

log = logging.getLogger("jpki.http")
BAD_REQUESTS = Counter(
    "jpki_bad_requests",
    "Requests refused as malformed or unauthorised input, by surface (http: refused by the"
    " HTTP parser; ocsp: malformedRequest or unauthorized); logged at debug level only, so a"
    " rise here, not the log, shows a broken client or a probe",
    ["surface"],
)


def note(surface: str, reason: object) -> None:
    """Count one bad request on `surface` and log why at debug level (never above)."""
    BAD_REQUESTS.labels(surface).inc()
    if log.isEnabledFor(logging.DEBUG):
        log.debug("bad %s request: %s", surface, _printable(reason))


def _printable(reason: object) -> str:
    """One bounded line: the reason may quote the client's bytes (no forged log lines)."""
    return str(reason).encode("unicode_escape").decode("ascii")[:200]


class ClientErrorLogger:
    """The `logger` of aiohttp's per-connection RequestHandler, which calls only `debug`
    and `exception` on it (aiohttp/web_protocol.py).

    A request its parser refused (an HttpProcessingError with a 4xx status: bad request
    line, header, chunking, sizes) reaches `exception` with that error as exc_info and is
    the client's fault: counted, logged at debug level. Everything else (an exception in a
    handler, a 500) goes to aiohttp's own logger unchanged.
    """

    __slots__ = ("inner",)

    def __init__(self, inner: logging.Logger) -> None:
        self.inner = inner

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        # aiohttp itself logs a bad method on a connection's first request at debug level
        # (TLS or other protocols sent to an HTTP port): counted like the rest
        if not self._client_error(kwargs.get("exc_info")):
            self.inner.debug(msg, *args, **kwargs)

    def exception(self, msg: str, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if not self._client_error(exc_info):
            self.inner.exception(msg, *args, exc_info=exc_info, **kwargs)

    @staticmethod
    def _client_error(exc: object) -> bool:
        """Count and note `exc` if it is a request the parser refused (a 4xx)."""
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            note("http", f"{type(exc).__name__}: {exc}")
            return True
        return False

    def __getattr__(self, name: str) -> Any:  # anything a newer aiohttp may call
        return getattr(self.inner, name)
