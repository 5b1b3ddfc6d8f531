"""`jpki serve`: the composition root of the HTTP surfaces.

Each role contributes its routes; this module only wires them and runs the server. The aiohttp
access log is off (it halves throughput, PEERS.md); roles log what matters themselves, with
serials and verifier ids, never the 4 facts.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from datetime import timedelta

from aiohttp import web, web_response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from ca import web as ca_web
from crl import service as crl_service
from fees.meter import CRLDownloadMeter, LedgerMeter, OCSPMeter
from httpapi import deadline
from httpapi.arrivals import ARRIVALS, Arrivals
from jpki.context import Context
from jpki.settings import ServerSettings
from linkage import web as linkage_web
from linkage.service import LinkageService
from ocsp import web as ocsp_web
from registry.errors import ConfigError
from revocation import web as events_web

log = logging.getLogger("jpki.daemon")
CONTEXT = web.AppKey("context", Context)
METER = web.AppKey("meter", LedgerMeter)
# Roles append checks returning {name: problem}; healthy stays exactly {"status": "ok"}.
HEALTH_CHECKS = web.AppKey("health_checks", list)


async def plain_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """`Server: jpki`: aiohttp would name itself and Python with their versions, a free
    inventory for an attacker matching known flaws."""
    response.headers["Server"] = "jpki"


def plain_default_server_header() -> None:
    """Make aiohttp's own default `Server` value "jpki" too, for the responses no app sees.

    aiohttp answers a malformed request (bad method, bad header, bad path) itself with a 400
    that bypasses every app signal, and fills in its default `Server: Python/3.x aiohttp/x.y`.
    No public setting changes that default: the module attribute it reads is replaced, once,
    at start-up; like httpapi/deadline.py, fail at start-up if this aiohttp has no such
    attribute, and tests/test_daemon_surfaces.py pins the behaviour.
    """
    if not isinstance(getattr(web_response, "SERVER_SOFTWARE", None), str):
        raise RuntimeError("this aiohttp's web_response has no SERVER_SOFTWARE:"
                           " jpki/daemon.py must be adapted to it")
    web_response.SERVER_SOFTWARE = "jpki"


def metrics_app() -> web.Application:
    """Prometheus /metrics alone, for the separate `server.metrics_listen` listener.

    The metrics name verifiers and count the yen billed to them (fees/), so they are business
    data: operators' scrapers reach this listener (127.0.0.1 by default), the internet does
    not, and the public app answers 404 for /metrics.
    """
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.on_response_prepare.append(plain_server_header)
    app.add_routes([web.get("/metrics", metrics)])
    return app


def tls_context(server: ServerSettings) -> ssl.SSLContext | None:
    """The public port's TLS context from server.tls_cert_file / tls_key_file, else None.

    TLS 1.2 at least (RFC 8996 deprecates 1.0 and 1.1); the key file is refused when group or
    others can read it, as CA and responder key files are.
    """
    if server.tls_cert_file is None or server.tls_key_file is None:
        return None
    try:
        if server.tls_key_file.stat().st_mode & 0o077:
            raise ConfigError(f"server.tls_key_file: {server.tls_key_file} is readable by group"
                              " or others; chmod 600 it")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(server.tls_cert_file, server.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"server.tls_cert_file / tls_key_file: cannot load"
                          f" {server.tls_cert_file} with {server.tls_key_file}: {exc}") from None
    return context


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

    app.on_response_prepare.append(plain_server_header)
    app.add_routes([web.get("/healthz", healthz)])  # /metrics: metrics_app(), never here
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


async def start_metrics(server: ServerSettings) -> web.AppRunner | None:
    """The metrics listener (server.metrics_listen), or None when it is off."""
    address = server.metrics_address()
    if address is None:
        return None
    runner = web.AppRunner(metrics_app(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, *address).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"server.metrics_listen: cannot listen on {server.metrics_listen}:"
                          f" {exc.strerror}") from None
    log.info("metrics on http://%s/metrics", server.metrics_listen)
    return runner


async def run(context: Context, host: str, port: int, server: ServerSettings) -> None:
    tls = tls_context(server)  # first: a bad TLS file stops start-up before anything runs
    plain_default_server_header()
    app = build_app(context)
    timeouts = context.settings.ocsp
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           keepalive_timeout=timeouts.idle_timeout_seconds)
    await runner.setup()
    # Not TCPSite: the listener wraps each connection in the request-header deadline.
    listener = await deadline.listen(runner, host, port,
                                     request_timeout=timeouts.request_timeout_seconds,
                                     arrivals=app[ARRIVALS], ssl_context=tls)
    metrics = await start_metrics(server)
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
    if metrics_listen is not None:  # `jpki serve --metrics-listen`, validated as in the file
        try:
            server = ServerSettings(**{**server.model_dump(), "metrics_listen": metrics_listen})
        except ValidationError as exc:
            raise ConfigError(f"--metrics-listen: {exc.errors()[0]['msg']}") from None
    main = run(context, host or server.host, port if port is not None else server.port, server)
    try:
        import uvloop  # PEERS.md: +20-28% on plain HTTP paths
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
