"""The whole daemon in-process on 127.0.0.1 under a frozen clock, for tests that move time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp import web

from ca import responders
from ca.bootstrap import initialise
from jpki.context import Context
from jpki.daemon import build_app
from jpki.settings import load_settings
from jpki.wiring import responder_policy
from registry.clock import FrozenClock
from tests.helpers import CONFIG, free_port


@dataclass
class Stack:
    context: Context
    clock: FrozenClock
    url: str
    session: aiohttp.ClientSession
    app: web.Application

    def advance(self, delta: timedelta) -> None:
        """Move the frozen clock; renew responder certificates as the daemon's loop would."""
        self.clock.advance(delta)
        self.renew_signers()

    def set(self, moment: datetime) -> None:
        self.clock.now = moment
        self.renew_signers()

    def renew_signers(self) -> None:
        responders.ensure(self.context.store, self.context.keys, self.context.responder_keys,
                          self.clock, responder_policy(self.context.settings))

    async def ocsp(self, ca_pem: Path, serial: str, token: str, *extra: str) -> str:
        """The real `openssl ocsp` client against this stack, verifying at the frozen time.

        `-attime` makes openssl verify the responder's chain at the frozen moment; its
        separate freshness check of thisUpdate uses the real clock, so it may print
        "Status times invalid", which the callers do not rely on.
        """
        process = await asyncio.create_subprocess_exec(
            "openssl", "ocsp", "-issuer", str(ca_pem), "-CAfile", str(ca_pem),
            "-serial", "0x" + serial, "-url", self.url + "/ocsp", "-no_nonce",
            "-attime", str(int(self.clock().timestamp())),
            "-header", f"Authorization=Bearer {token}", *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 60)
        text = out.decode() + err.decode()
        assert "Response verify OK" in text and "Response Verify Failure" not in text, text
        return text

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
    # responder certificates valid at the frozen time, as `jpki init` issues them
    responders.ensure(context.store, context.keys, context.responder_keys, clock,
                      responder_policy(context.settings))
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
