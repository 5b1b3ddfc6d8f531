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
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from ca import responders
from ca.keybackend import KeyBackend
from ca.responders import ResponderPolicy
from httpapi.arrivals import ARRIVALS
from httpapi.badinput import note
from jpki.context import Context
from ocsp import metrics
from ocsp.auth import VerifierDirectory
from ocsp.cache import PresignedCache
from ocsp.errors import ERROR_RESPONSES, MalformedRequest, OCSPError
from ocsp.issuers import IssuerIndex
from ocsp.meter import Meter, NoMeter
from ocsp.request import decode_get_path
from ocsp.responder import Reply, Responder
from ocsp.responder import ResponderPolicy as AnswerPolicy
from ocsp.signing import LiveSigner
from registry.clock import Clock
from registry.store import Store

log = logging.getLogger("jpki.ocsp")
CONTENT_TYPE = "application/ocsp-response"
RESPONDER = web.AppKey("ocsp_responder", Responder)
METER = web.AppKey("ocsp_meter", Meter)  # the fees role replaces the default before start-up
# DOMAIN.md, "Fees": a check marked as a status confirmation is charged at most once per
# resident per verifier per calendar year.
PURPOSE_HEADER = "JPKI-Check-Purpose"
NO_CACHE = {"Content-Type": CONTENT_TYPE, "Cache-Control": "no-cache, no-store"}
# The client's doing: counted in jpki_bad_requests_total{surface="ocsp"}, logged at debug.
CLIENT_ERRORS = frozenset({"malformed_request", "unauthorized"})


def responder_keys(context: Context) -> KeyBackend:
    return context.responder_keys


def responder_policy(context: Context) -> ResponderPolicy:
    ocsp = context.settings.ocsp
    return ResponderPolicy(validity_days=ocsp.responder_validity_days,
                           renew_before_days=ocsp.renew_before_days,
                           key_size=context.settings.ca.key_size)


def renew_signers(data_dir: Path, ca_keys: KeyBackend, keys: KeyBackend, clock: Clock,
                  policy: ResponderPolicy, *, force: bool = False, actor: str) -> list[str]:
    """Issue missing or expiring responder certificates; its own connection (runs in a thread)."""
    store = Store.open(data_dir)
    try:
        issued = responders.ensure(store, ca_keys, keys, clock, policy, force=force, actor=actor)
        return [format(r.certificate.serial_number, "x") for r in issued]
    finally:
        store.close()


def _headers(reply: Reply, now: int) -> dict[str, str]:
    entry = reply.entry
    if entry is None:
        return NO_CACHE
    return entry.headers(now, CONTENT_TYPE)


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
        headers = _headers(reply, reply.now)
        if reply.entry is not None and request.headers.get("If-None-Match") == reply.entry.etag:
            return web.Response(status=304, headers={k: v for k, v in headers.items()
                                                     if k != "Content-Type"})
        return web.Response(body=reply.der, headers=headers)


def setup(app: web.Application, context: Context) -> Callable[[], dict[str, str]]:
    """Wire the responder into `jpki serve`: routes, start-up, background work, health."""
    settings = context.settings.ocsp
    clock = context.clock
    keys = responder_keys(context)
    handler = OCSPHandler(None, clock, settings.read_timeout_seconds,
                          context.settings.server.max_body_bytes)

    async def start(app: web.Application) -> None:
        if settings.auto_renew:
            await _renew(app)
        store = Store.open(context.data_dir)
        responder = Responder(
            store=store,
            issuers=IssuerIndex(store, keys, settings.hash_algorithms),
            cache=PresignedCache(settings.cache_limit),
            signer=LiveSigner(settings.sign_workers, settings.sign_queue_limit),
            directory=VerifierDirectory(store, settings.allow_anonymous),
            meter=app.get(METER) or NoMeter(),
            clock=clock,
            policy=AnswerPolicy(timedelta(hours=settings.response_validity_hours),
                                settings.refresh_fraction, frozenset(settings.hash_algorithms)),
            arrivals=app.get(ARRIVALS),
        )
        app[RESPONDER] = responder
        handler.responder = responder
        responder.spawn(responder.presign(settings.presign_limit, ("sha1",)))
        responder.spawn(_periodic(app))

    async def _renew(app: web.Application) -> None:
        """Renew responder certificates when the CA key is readable here (design: see README)."""
        try:
            issued = await asyncio.get_running_loop().run_in_executor(
                None, lambda: renew_signers(context.data_dir, context.keys, keys, clock,
                                            responder_policy(context), actor="daemon"))
            if issued:
                log.info("OCSP responder certificates renewed: %s", ", ".join(issued))
        except Exception as exc:  # no CA passphrase here: operators renew with the CLI
            log.warning("OCSP responder renewal not possible in the daemon: %s", exc)

    async def _periodic(app: web.Application) -> None:
        while True:
            await asyncio.sleep(min(60.0, settings.renew_check_minutes * 60))
            responder = app[RESPONDER]
            now = clock()
            for issuer in responder.issuers.issuers:
                if issuer.signer is not None:
                    metrics.SIGNER_SECONDS_LEFT.labels(issuer.ca.label).set(
                        (issuer.signer.not_after - now).total_seconds())
            if settings.auto_renew and any(
                    responders.needs_renewal(i.signer.not_after if i.signer else None, now,
                                             responder_policy(context))
                    for i in responder.issuers.issuers if i.ca.not_after > now):
                await _renew(app)
            responder.refresh()
            await responder.refresh_stale()
            metrics.RESPONSE_AGE.set(responder.oldest_age())
            metrics.CACHED.set(len(responder.cache))

    async def stop(app: web.Application) -> None:
        responder = app.get(RESPONDER)
        if responder is not None:
            await responder.close()
            responder.store.close()

    def health() -> dict[str, str]:
        responder = app.get(RESPONDER)
        if responder is None:
            return {"ocsp": "not started"}
        return {f"ocsp signer {label}": problem
                for label, problem in responder.issuers.problems(clock()).items()}

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.add_routes([web.post("/ocsp", handler.post), web.get(r"/ocsp/{request:.+}", handler.get)])
    return health

