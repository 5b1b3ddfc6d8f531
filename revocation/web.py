"""POST /registry/events: the resident register's feed into the daemon.

Authenticated with an operator's Bearer token. The body is one event object or an array of
them, read with its own size limit (events batches are larger than OCSP requests). Each event
is applied in its own transaction on a dedicated connection in a worker thread, so fsync never
blocks the event loop, and the response is sent only after every commit: a 2xx means durable.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from httpapi.problem import problem
from registry import operators, tokens
from registry.clock import Clock
from registry.store import Store
from revocation.events import EventApplier, Outcome


async def read_limited(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than `limit` (checked before and while reading)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class EventsEndpoint:
    def __init__(self, data_dir: Path, clock: Clock, max_body_bytes: int) -> None:
        self.data_dir = data_dir
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        # One writer thread with its own connection: events are serialised, like the register.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="events")
        self._store: Store | None = None

    def _applier(self) -> EventApplier:
        if self._store is None:
            self._store = Store.open(self.data_dir)
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
        body = await read_limited(request, self.max_body_bytes)
        if body is None:
            return problem(413, "Payload Too Large",
                            f"the body exceeds {self.max_body_bytes} bytes; send smaller batches")
        try:
            parsed = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return problem(400, "Bad Request", f"the body is not JSON: {exc}")
        single = not isinstance(parsed, list)
        items: list[tuple[str | None, Any]] = (
            [(None, parsed)] if single else [(f"index {i}", item) for i, item in
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


def setup(app: web.Application, data_dir: Path, clock: Clock, max_body_bytes: int) -> None:
    endpoint = EventsEndpoint(data_dir, clock, max_body_bytes)
    app.router.add_post("/registry/events", endpoint.handle)
    app.on_cleanup.append(endpoint.close)
