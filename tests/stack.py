"""The whole daemon in-process on 127.0.0.1 under a frozen clock, for tests that move time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
from aiohttp import web

from ca.bootstrap import initialise
from jpki.context import Context
from jpki.daemon import build_app
from jpki.settings import load_settings
from registry.clock import FrozenClock
from tests.helpers import CONFIG, free_port


@dataclass
class Stack:
    context: Context
    clock: FrozenClock
    url: str
    session: aiohttp.ClientSession
    app: web.Application

    async def get(self, path: str, token: str | None = None) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.get(self.url + path, headers=headers) as response:
            return response.status, await response.json(content_type=None)


def frozen_context(data_dir: Path, now: datetime) -> tuple[Context, FrozenClock]:
    clock = FrozenClock(now)
    context = Context(load_settings(CONFIG, data_dir), clock)
    settings = context.settings
    initialise(context.store, context.keys, clock,
               municipalities_csv=settings.registry.municipalities_csv,
               key_size=settings.ca.key_size, years=settings.ca.validity_years)
    return context, clock


@asynccontextmanager
async def running(context: Context, clock: FrozenClock) -> AsyncIterator[Stack]:
    app = build_app(context)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    async with aiohttp.ClientSession() as session:
        try:
            yield Stack(context, clock, f"http://127.0.0.1:{port}", session, app)
        finally:
            await runner.cleanup()
