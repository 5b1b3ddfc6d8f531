"""POST /registry/events: the resident register's feed into the daemon.

Authenticated with an operator's Bearer token. The body is one event object or an array of
them, read with its own size limit (events batches are larger than OCSP requests) and within
`read_timeout` seconds, like every body the daemon reads (README, "Slow clients"): a client
that dribbles its body gets 408 and the connection is closed. Each event is applied in its own
transaction on a dedicated connection in a worker thread, so fsync never blocks the event loop,
and the response is sent only after every commit: a 2xx means durable. A body that is JSON but
holds bad events (huge numbers, deep nesting, lone surrogates) is still a batch: each bad
event is rejected at its index and the others apply (207).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from httpapi.body import read_limited
from httpapi.problem import problem
from registry import operators, tokens
from registry.clock import Clock
from registry.store import Store
from revocation.events import EventApplier, Outcome
from revocation.jsonlines import decode_body


class EventsEndpoint:
    def __init__(self, data_dir: Path, clock: Clock, max_body_bytes: int,
                 read_timeout: float, registry_url: str = "") -> None:
        self.data_dir = data_dir
        self.registry_url = registry_url
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout
        # One writer thread with its own connection: events are serialised, like the register.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="events")
        self._store: Store | None = None

    def _applier(self) -> EventApplier:
        if self._store is None:
            self._store = Store.open(self.data_dir, self.registry_url)
        return EventApplier(self._store, self.clock)

    def _apply(self, items: list[tuple[str | None, Any]], actor: str) -> list[Outcome]:
        applier = self._applier()
        return [applier.apply(raw, actor=actor, location=where) for where, raw in items]

    def _operator(self, header: str | None) -> str | None:
        return operators.authenticate(self._applier().store, tokens.bearer(header))

    async def handle(self, request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        operator = await loop.run_in_executor(self.executor, self._operator,
                                              request.headers.get("Authorization"))
        if operator is None:
            return problem(401, "Unauthorized", "an operator Bearer token is required")
        try:
            async with asyncio.timeout(self.read_timeout):  # slow clients (slowloris)
                body = await read_limited(request, self.max_body_bytes)
        except TimeoutError:
            # The rest of the body may never come: answer, then close rather than keep a
            # connection whose next request would start mid-body.
            response = problem(408, "Request Timeout",
                               f"the body did not arrive within {self.read_timeout:g} s")
            response.force_close()
            return response
        if body is None:
            return problem(413, "Payload Too Large",
                            f"the body exceeds {self.max_body_bytes} bytes; send smaller batches")
        try:
            single, parsed = decode_body(body)
        except ValueError as exc:
            return problem(400, "Bad Request", f"the body is not JSON: {exc}")
        items: list[tuple[str | None, Any]] = (
            [(None, parsed[0])] if single else [(f"index {i}", item) for i, item in
                                                enumerate(parsed)]
        )
        outcomes = await loop.run_in_executor(self.executor, self._apply, items,
                                              f"operator:{operator}")
        if single:
            outcome = outcomes[0]
            return web.json_response(outcome.to_json(), status=outcome.http_status)
        rejected = sum(outcome.status == "rejected" for outcome in outcomes)
        return web.json_response(
            {"results": [outcome.to_json() for outcome in outcomes], "rejected": rejected},
            status=200 if not rejected else 207,
        )

    async def close(self, app: web.Application) -> None:
        self.executor.shutdown(wait=True)
        if self._store is not None:
            self._store.close()


def setup(app: web.Application, data_dir: Path, clock: Clock, max_body_bytes: int,
          read_timeout: float = 10.0, registry_url: str = "") -> None:
    endpoint = EventsEndpoint(data_dir, clock, max_body_bytes, read_timeout, registry_url)
    app.router.add_post("/registry/events", endpoint.handle)
    app.on_cleanup.append(endpoint.close)
