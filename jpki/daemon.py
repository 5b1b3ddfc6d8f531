"""`jpki serve`: the composition root of the HTTP surfaces.

Each role contributes its routes; this module only wires them and runs the server. The aiohttp
access log is off (it halves throughput, PEERS.md); roles log what matters themselves, with
serials and verifier ids, never the 4 facts.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta

from aiohttp import web

from ca import web as ca_web
from crl import service as crl_service
from fees.meter import CRLDownloadMeter, LedgerMeter, OCSPMeter
from httpapi import deadline
from httpapi.arrivals import ARRIVALS, Arrivals
from jpki import listeners
from jpki.context import Context
from jpki.settings import ServerSettings
from linkage import web as linkage_web
from linkage.service import LinkageService
from ocsp import web as ocsp_web
from revocation import web as events_web

log = logging.getLogger("jpki.daemon")
CONTEXT = web.AppKey("context", Context)
METER = web.AppKey("meter", LedgerMeter)
# Roles append checks returning {name: problem}; healthy stays exactly {"status": "ok"}.
HEALTH_CHECKS = web.AppKey("health_checks", list)


def build_app(context: Context) -> web.Application:
    settings = context.settings
    app = web.Application(client_max_size=settings.server.max_body_bytes)
    app[CONTEXT] = context
    app[HEALTH_CHECKS] = []
    app[ARRIVALS] = Arrivals()  # shared by the listener and the OCSP freshness proof

    async def healthz(request: web.Request) -> web.Response:
        problems = {k: v for check in app[HEALTH_CHECKS] for k, v in check().items()}
        if problems:
            return web.json_response({"status": "degraded", "problems": problems}, status=503)
        return web.json_response({"status": "ok"})

    app.on_response_prepare.append(listeners.plain_server_header)
    app.add_routes([web.get("/healthz", healthz)])  # /metrics: listeners.metrics_app() only
    app.add_routes(ca_web.routes(context.store, settings.server.public_base_url))
    events_web.setup(app, context.data_dir, context.clock, settings.events.max_body_bytes)

    meter = LedgerMeter(context.data_dir, context.tariff)
    app[METER] = meter

    async def close_meter(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, meter.close)

    app.on_cleanup.append(close_meter)
    linkage = LinkageService(context.store, context.clock,
                             timedelta(minutes=settings.linkage.check_window_minutes))
    app.add_routes(linkage_web.routes(context.store, linkage, meter))

    app[ocsp_web.METER] = OCSPMeter(meter)
    app[HEALTH_CHECKS].append(ocsp_web.setup(app, context))
    crl_service.attach(app, context, CRLDownloadMeter(meter, context.store, context.clock))
    return app


def reload(app: web.Application) -> None:
    """SIGHUP: pick up keys and signers now. Connections stay open; nothing restarts.

    Not needed after `jpki ca rotate` or `jpki ocsp rotate` (the responder notices registry
    changes on its next request); useful after changing keys outside the registry.
    """
    log.info("SIGHUP: reloading CA generations, responder signers and verifiers")
    try:
        responder = app.get(ocsp_web.RESPONDER)
        if responder is not None:
            responder.reload()
    except Exception:  # a bad key must not take the serving daemon down
        log.exception("reload failed; still serving with the previous keys")


async def run(context: Context, host: str, port: int, server: ServerSettings) -> None:
    tls = listeners.tls_context(server)  # first: a bad TLS file stops start-up early
    listeners.plain_default_server_header()
    app = build_app(context)
    timeouts = context.settings.ocsp
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           keepalive_timeout=timeouts.idle_timeout_seconds)
    await runner.setup()
    # Not TCPSite: the listener wraps each connection in the request-header deadline.
    listener = await deadline.listen(runner, host, port,
                                     request_timeout=timeouts.request_timeout_seconds,
                                     arrivals=app[ARRIVALS], ssl_context=tls)
    metrics = await listeners.start_metrics(server)
    bound = listener.sockets[0].getsockname() if listener.sockets else (host, port)
    scheme = "https" if tls else "http"
    log.info("serving on %s://%s:%s (data dir %s)", scheme, bound[0], bound[1],
             context.data_dir)
    print(f"jpki: serving on {scheme}://{bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload, app)
    await stop.wait()
    log.info("shutting down")
    listener.close()
    if metrics is not None:
        await metrics.cleanup()
    await runner.cleanup()


def serve(context: Context, host: str | None = None, port: int | None = None,
          metrics_listen: str | None = None) -> None:
    server = context.settings.server
    if metrics_listen is not None:
        server = listeners.with_metrics_listen(server, metrics_listen)
    main = run(context, host or server.host, port if port is not None else server.port, server)
    try:
        import uvloop  # PEERS.md: +20-28% on plain HTTP paths
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
