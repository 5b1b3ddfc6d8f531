"""The HTTP face of the responder: one thin handler for POST /ocsp and GET /ocsp/{base64}.

RFC 5019 §5 / RFC 6960 appendix A: requests are POSTed as application/ocsp-request or sent as
URL-encoded base64 in a GET path; answers are application/ocsp-response with HTTP 200 whatever
the OCSP status. Cacheable answers carry RFC 5019 §6.2 headers; errors and nonce answers say
no-cache. Domain exceptions become OCSP error statuses here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from ca.keybackend import KeyBackend
from httpapi.arrivals import ARRIVALS
from httpapi.badinput import note
from ocsp import metrics
from ocsp.auth import VerifierDirectory
from ocsp.cache import PresignedCache
from ocsp.errors import ERROR_RESPONSES, MalformedRequest, OCSPError
from ocsp.issuers import IssuerIndex
from ocsp.live import AnswerPolicy
from ocsp.meter import CheckMeter, NoMeter
from ocsp.request import decode_get_path
from ocsp.responder import Responder
from ocsp.signing import SigningPool
from ocsp.source import Reply
from registry.clock import Clock
from registry.store import Store

log = logging.getLogger("jpki.ocsp")
CONTENT_TYPE = "application/ocsp-response"
RESPONDER = web.AppKey("ocsp_responder", Responder)
METER = web.AppKey("ocsp_meter", CheckMeter)  # the fees role replaces the default before start-up
# DOMAIN.md, "Fees": a check marked as a status confirmation is charged at most once per
# resident per verifier per calendar year.
PURPOSE_HEADER = "JPKI-Check-Purpose"
NO_CACHE = {"Content-Type": CONTENT_TYPE, "Cache-Control": "no-cache, no-store"}
# The client's doing: counted in jpki_bad_requests_total{surface="ocsp"}, logged at debug.
CLIENT_ERRORS = frozenset({"malformed_request", "unauthorized"})


@dataclass(frozen=True)
class ServingOptions:
    """What the responder needs from the settings (`jpki serve` builds it)."""

    hash_algorithms: tuple[str, ...] = ("sha1", "sha256")
    cache_limit: int = 200000
    presign_limit: int = 10000
    sign_workers: int = 2
    sign_queue_limit: int = 256
    allow_anonymous: bool = False
    response_validity_hours: float = 24
    refresh_fraction: float = 0.5
    read_timeout_seconds: float = 10
    max_body_bytes: int = 16384
    # How often the background loop refreshes stale answers and reads signer expiry.
    check_minutes: int = 60
    # A responder certificate this close to its notAfter makes /healthz say degraded: the
    # signer renews it that far ahead, so reaching it means the signer is not running.
    renew_before_days: int = 7


def _headers(reply: Reply) -> dict[str, str]:
    cached = reply.cached
    if cached is None:
        return NO_CACHE
    return cached.headers(reply.now, CONTENT_TYPE)


class OCSPHandler:
    def __init__(self, responder: Responder | None, clock: Clock, read_timeout: float,
                 max_body: int) -> None:
        self.responder: Responder = responder  # type: ignore[assignment]  # set at start-up
        self.clock = clock
        self.read_timeout = read_timeout
        self.max_body = max_body

    async def post(self, request: web.Request) -> web.StreamResponse:
        # A body over server.max_body_bytes (the app's client_max_size) makes read() raise
        # 413 before more than that is buffered.
        content = request.content
        if content.is_eof():  # the whole body came with the headers: no timer, no awaiting
            body = content.read_nowait()
            if len(body) > self.max_body:
                raise web.HTTPRequestEntityTooLarge(max_size=self.max_body,
                                                    actual_size=len(body))
        else:
            try:
                async with asyncio.timeout(self.read_timeout):  # slow clients (slowloris)
                    body = await request.read()
            except TimeoutError:
                raise web.HTTPRequestTimeout() from None
        return await self._answer(request, body)

    async def get(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path.split("?", 1)[0].removeprefix("/ocsp/")
        if len(raw) > self.max_body * 2:
            raise web.HTTPRequestEntityTooLarge(max_size=self.max_body, actual_size=len(raw))
        try:
            body = decode_get_path(raw)
        except MalformedRequest as exc:
            return self._error(exc, "")
        return await self._answer(request, body)

    def _count(self, outcome: str, kind: str) -> None:
        metrics.REQUESTS.inc(outcome, kind)

    def _error(self, exc: OCSPError, kind: str) -> web.Response:
        self._count(exc.status, kind)
        if exc.status in CLIENT_ERRORS:  # anyone can send these, at any rate: never above debug
            note("ocsp", f"{exc.status}: {exc}")
        else:
            log.info("OCSP %s: %s", exc.status, exc)
        return web.Response(body=exc.der, headers=NO_CACHE)

    async def _answer(self, request: web.Request, body: bytes) -> web.StreamResponse:
        try:
            reply = await self.responder.answer(
                body, request.headers.get("Authorization"),
                status_confirmation=request.headers.get(PURPOSE_HEADER, "").lower()
                == "status-confirmation")
        except OCSPError as exc:
            return self._error(exc, "")
        except Exception:  # never a stack trace to the client; the daemon keeps serving
            log.exception("OCSP internal error")
            self._count("internal_error", "")
            return web.Response(body=ERROR_RESPONSES["internal_error"], headers=NO_CACHE)
        self._count(reply.outcome, reply.kind)
        headers = _headers(reply)
        if reply.cached is not None and request.headers.get("If-None-Match") == reply.cached.etag:
            return web.Response(status=304, headers={k: v for k, v in headers.items()
                                                     if k != "Content-Type"})
        return web.Response(body=reply.der, headers=headers)


def setup(app: web.Application, data_dir: Path, keys: KeyBackend, clock: Clock,
          options: ServingOptions, registry_url: str = "") -> tuple[Callable[[], dict[str, str]],
                                            Callable[[], dict[str, str]]]:
    """Wire the responder into `jpki serve`: routes, start-up, background work, health.

    `keys` holds the delegated responder keys only. Responder certificates are issued and
    renewed by `jpki signer` (it holds the CA keys); the index below picks new ones up from
    the registry without a restart. Returns (failures, warnings) for /healthz.
    """
    handler = OCSPHandler(None, clock, options.read_timeout_seconds, options.max_body_bytes)

    async def start(app: web.Application) -> None:
        store = Store.open(data_dir, registry_url)
        responder = Responder(
            store=store,
            issuers=IssuerIndex(store, keys, options.hash_algorithms),
            cache=PresignedCache(options.cache_limit),
            pool=SigningPool(options.sign_workers, options.sign_queue_limit),
            directory=VerifierDirectory(store, options.allow_anonymous),
            meter=app.get(METER) or NoMeter(),
            clock=clock,
            policy=AnswerPolicy(timedelta(hours=options.response_validity_hours),
                                options.refresh_fraction, frozenset(options.hash_algorithms)),
            arrivals=app.get(ARRIVALS),
        )
        app[RESPONDER] = responder
        handler.responder = responder
        refresher = responder.refresher
        refresher.spawn(refresher.presign(options.presign_limit, ("sha1",)))
        refresher.spawn(refresher.run_periodically(min(60.0, options.check_minutes * 60)))

    async def stop(app: web.Application) -> None:
        responder = app.get(RESPONDER)
        if responder is not None:
            await responder.close()
            responder.store.close()

    def failures() -> dict[str, str]:
        responder = app.get(RESPONDER)
        if responder is None:
            return {"ocsp": "not started"}
        return {f"ocsp signer {label}": problem
                for label, problem in responder.issuers.problems(clock()).items()}

    def warnings() -> dict[str, str]:
        responder = app.get(RESPONDER)
        if responder is None:
            return {}
        now = clock()
        # The signer renews within check_minutes of entering the window; past that, it is late.
        soon = (timedelta(days=options.renew_before_days)
                - timedelta(minutes=options.check_minutes))
        return {f"ocsp signer {issuer.ca.label}":
                f"responder certificate {issuer.signer.serial} expires"
                f" {issuer.signer.not_after.isoformat()}; renewal is overdue (is `jpki signer`"
                " running?)"
                for issuer in responder.issuers.issuers
                if issuer.signer is not None and issuer.ca.not_after > now
                and now < issuer.signer.not_after <= now + soon}

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.add_routes([web.post("/ocsp", handler.post), web.get(r"/ocsp/{request:.+}", handler.get)])
    return failures, warnings
