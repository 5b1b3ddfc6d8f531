"""`jpki serve`: the composition root of the HTTP surfaces.

Each role contributes its routes; this module only wires them and runs the server. The aiohttp
access log is off (it halves throughput, PEERS.md); roles log what matters themselves, with
serials and verifier ids, never the 4 facts.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ca import web as ca_web
from crl import service as crl_service
from jpki.context import Context

log = logging.getLogger("jpki.daemon")


def build_app(context: Context) -> web.Application:
    settings = context.settings
    app = web.Application(client_max_size=settings.server.max_body_bytes)
    app["context"] = context

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.add_routes([web.get("/healthz", healthz), web.get("/metrics", metrics)])
    app.add_routes(ca_web.routes(context.store, settings.server.public_base_url))
    crl_service.attach(app, context)
    return app


async def run(context: Context, host: str, port: int) -> None:
    app = build_app(context)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = runner.addresses[0] if runner.addresses else (host, port)
    log.info("serving on http://%s:%s (data dir %s)", bound[0], bound[1], context.data_dir)
    print(f"jpki: serving on http://{bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()


def serve(context: Context, host: str | None = None, port: int | None = None) -> None:
    server = context.settings.server
    asyncio.run(run(context, host or server.host, port if port is not None else server.port))
