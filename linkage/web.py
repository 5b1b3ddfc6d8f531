"""HTTP under /linkage/v1/: JSON answers for verifiers (Bearer tokens), problem+json errors.

Each answer is metered (free or priced) and leaves only after its ledger row is durable.
Logs carry serials and verifier names, never the 4 facts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web
from multidict import MultiMapping

from fees.ledger import Check, LedgerRow
from httpapi.body import read_limited
from httpapi.problem import problem
from linkage.service import Answer, LinkageService
from linkage.signed_consent import MAX_CMS_BYTES, SignedConsentDesk
from registry import tokens, verifiers
from registry.errors import JPKIError
from registry.store import Store
from registry.threads import StoreThreads
from registry.verifiers import Verifier

log = logging.getLogger("jpki.linkage")


class CheckRecorder(Protocol):
    async def record(self, checks: list[Check]) -> list[LedgerRow]: ...


TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Consent Required", 404: "Not Found",
          409: "Validity Check Required", 500: "Internal Server Error"}
CONSENT_TITLES = {400: "Signed Consent Refused", 403: "Not The Caller", 404: "Not Found",
                  409: "Replayed Statement", 413: "Payload Too Large"}


def consent_route(threads: StoreThreads, desk: SignedConsentDesk,
                  read_timeout: float) -> web.RouteDef:
    """POST /linkage/v1/consents: the resident's CMS SignedData (DER), posted by the verifier
    it names (README, "Consent signed by the resident"). 201 with what was recorded, or a 4xx
    problem+json with nothing recorded. The token check, and the statement's verification and
    recording, run on the registry threads (their own store each), not on the loop."""

    async def handler(request: web.Request) -> web.Response:
        token = tokens.bearer(request.headers.get("Authorization"))
        verifier = await threads.run(lambda store: verifiers.authenticate(store, token))
        if verifier is None:
            return problem(401, TITLES[401], "a verifier Bearer token is required")
        try:
            async with asyncio.timeout(read_timeout):  # slow clients (README, "Slow clients")
                body = await read_limited(request, MAX_CMS_BYTES)
        except TimeoutError:
            response = problem(408, "Request Timeout",
                               f"the body did not arrive within {read_timeout:g} s")
            response.force_close()
            return response
        if body is None:
            return problem(413, CONSENT_TITLES[413],
                           f"a signed consent is at most {MAX_CMS_BYTES} bytes of DER")
        try:
            recorded = await threads.run(lambda store: desk.on(store).submit(body, verifier))
        except JPKIError as exc:
            status = exc.http_status if exc.http_status in CONSENT_TITLES else 400
            log.info("signed consent refused verifier=%s status=%d field=%s", verifier.name,
                     status, exc.field)
            return problem(status, CONSENT_TITLES[status], str(exc), field=exc.field)
        log.info("signed consent %s verifier=%s signer=%s", recorded["action"], verifier.name,
                 recorded["signature_serial"])
        return web.json_response(recorded, status=201, headers={"Cache-Control": "no-store"})

    return web.post("/linkage/v1/consents", handler)


Question = Callable[[LinkageService, Verifier, str, "MultiMapping[str]"], Answer]


def routes(threads: StoreThreads, service: LinkageService,
           meter: CheckRecorder) -> list[web.RouteDef]:
    """The linkage answers. The token check, the consent and validity-check preconditions and
    the answer's reads run in one call on the registry threads (`LinkageService.on` their
    store); the metering is awaited on the loop, as before."""

    def endpoint(name: str, question: Question
                 ) -> Callable[[web.Request], Awaitable[web.Response]]:
        def work(store: Store, token: str | None, serial: str, query: MultiMapping[str]
                 ) -> tuple[Verifier | None, Answer | JPKIError | None]:
            verifier = verifiers.authenticate(store, token)
            if verifier is None:
                return None, None
            try:
                return verifier, question(service.on(store), verifier, serial, query)
            except JPKIError as exc:  # mapped on the loop, below
                return verifier, exc

        async def handler(request: web.Request) -> web.Response:
            token = tokens.bearer(request.headers.get("Authorization"))
            serial, query = request.match_info["serial"], request.query
            verifier, result = await threads.run(
                lambda store: work(store, token, serial, query))
            if verifier is None or result is None:
                return problem(401, TITLES[401], "a verifier Bearer token is required")
            if isinstance(result, JPKIError):
                status = result.http_status if result.http_status in TITLES else 400
                log.info("linkage %s refused verifier=%s status=%d", name, verifier.name,
                         status)
                return problem(status, TITLES[status], str(result), field=result.field)
            await meter.record([Check(verifier.id, verifier.name, result.check_type, "linkage",
                                      result.serial, service.clock())])
            log.info("linkage %s verifier=%s serial=%s", name, verifier.name, result.serial)
            return web.json_response(result.body, headers={"Cache-Control": "no-store"})

        return handler

    return [
        web.get("/linkage/v1/predecessor/{serial}", endpoint(
            "predecessor", lambda s, v, serial, q: s.predecessor(
                v, serial, chain=q.get("chain") == "all"))),
        web.get("/linkage/v1/successor/{serial}", endpoint(
            "successor", lambda s, v, serial, q: s.successor(v, serial))),
        web.get("/linkage/v1/counterpart/{serial}", endpoint(
            "counterpart", lambda s, v, serial, q: s.counterpart(v, serial))),
        web.get("/linkage/v1/card/{serial}", endpoint(
            "card", lambda s, v, serial, q: s.card(v, serial))),
        web.get("/linkage/v1/latest-facts/{serial}", endpoint(
            "latest-facts", lambda s, v, serial, q: s.latest_facts(v, serial))),
        web.get("/linkage/v1/age/{serial}", endpoint(
            "age", lambda s, v, serial, q: s.age(v, serial, q.get("at_least")))),
    ]
