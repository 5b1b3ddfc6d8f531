"""`jpki serve`: the composition root of the HTTP surfaces.

Each role contributes its routes; this module only wires them and runs the server. It runs in
the `serve` security context: it opens the responder keys only, never a CA key (the backend
refuses, ca/keyaccess.py); CRLs and responder certificates come from `jpki signer`. The aiohttp
access log is off (it halves throughput, PEERS.md); roles log what matters themselves, with
serials and verifier ids, never the 4 facts.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from ca import web as ca_web
from crl import service as crl_service
from fees.meter import CRLDownloadMeter, LedgerMeter, OCSPMeter
from httpapi import deadline
from httpapi.arrivals import ARRIVALS, Arrivals
from jpki import listeners
from jpki.context import Context
from jpki.settings import ServerSettings
from jpki.workers import WorkerSeat
from linkage import web as linkage_web
from linkage.service import LinkageService
from linkage.signed_consent import SignedConsentDesk
from ocsp import web as ocsp_web
from ocsp.web import ServingOptions
from registry.threads import StoreThreads
from revocation import web as events_web

log = logging.getLogger("jpki.daemon")
CONTEXT = web.AppKey("context", Context)
# Threads for the linkage handlers' registry work: each holds a store (on PostgreSQL one of
# the process's pool, registry/pg.py POOL_SIZE); linkage answers are few next to OCSP's.
LINKAGE_THREADS = 2
METER = web.AppKey("meter", LedgerMeter)
# Roles append checks returning {name: problem}; healthy stays exactly {"status": "ok"}.
# A failure (a live generation nobody can answer for) is 503; a warning (a CRL that missed its
# run, a responder certificate due for renewal: the signer is down) is 200 "degraded", since
# everything already published is still served.
HEALTH_CHECKS = web.AppKey("health_checks", list)
HEALTH_WARNINGS = web.AppKey("health_warnings", list)


def serving_options(context: Context) -> ServingOptions:
    ocsp = context.settings.ocsp
    return ServingOptions(
        hash_algorithms=ocsp.hash_algorithms, cache_limit=ocsp.cache_limit,
        presign_limit=ocsp.presign_limit, sign_workers=ocsp.sign_workers,
        sign_queue_limit=ocsp.sign_queue_limit, allow_anonymous=ocsp.allow_anonymous,
        response_validity_hours=ocsp.response_validity_hours,
        refresh_fraction=ocsp.refresh_fraction, read_timeout_seconds=ocsp.read_timeout_seconds,
        max_body_bytes=context.settings.server.max_body_bytes,
        check_minutes=ocsp.renew_check_minutes, renew_before_days=ocsp.renew_before_days)


def build_app(context: Context, worker: int = 0) -> web.Application:
    context = context.as_holder("serve")  # from here on, no CA key can be opened
    settings = context.settings
    app = web.Application(client_max_size=settings.server.max_body_bytes)
    app[CONTEXT] = context
    app[HEALTH_CHECKS] = []
    app[HEALTH_WARNINGS] = []
    app[ARRIVALS] = Arrivals()  # shared by the listener and the OCSP freshness proof

    async def healthz(request: web.Request) -> web.Response:
        problems = {k: v for check in app[HEALTH_CHECKS] for k, v in check().items()}
        if problems:
            return web.json_response({"status": "failing", "problems": problems}, status=503)
        warnings = {k: v for check in app[HEALTH_WARNINGS] for k, v in check().items()}
        if warnings:
            return web.json_response({"status": "degraded", "problems": warnings})
        return web.json_response({"status": "ok"})

    app.on_response_prepare.append(listeners.plain_server_header)
    app.add_routes([web.get("/healthz", healthz)])  # /metrics: listeners.metrics_app() only
    app.add_routes(ca_web.routes(context.store, settings.server.public_base_url))
    url = settings.registry.url
    events_web.setup(app, context.data_dir, context.clock, settings.events.max_body_bytes,
                     settings.ocsp.read_timeout_seconds, url)

    # one fee journal per serving worker: each holds its journal's lock (fees/journal.py)
    fee_settings = settings.fees
    meter = LedgerMeter(context.data_dir, context.tariff, worker, url, fee_settings.fold_nice,
                        fee_settings.journal_flush, fee_settings.commit_delay_ms / 1000,
                        fee_settings.commit_siblings)
    app[METER] = meter

    async def start_meter(app: web.Application) -> None:
        # fold what a previous run left in the fee journal before the first answer
        await asyncio.get_running_loop().run_in_executor(None, meter.start)

    app.on_startup.append(start_meter)

    async def close_meter(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, meter.close)

    app.on_cleanup.append(close_meter)
    linkage = LinkageService(context.store, context.clock,
                             timedelta(minutes=settings.linkage.check_window_minutes),
                             frozenset(settings.linkage.age_thresholds))
    # the linkage handlers' registry reads and consent recording, off the loop
    linkage_threads = StoreThreads(context.store.reopen, LINKAGE_THREADS, "linkage")
    app.add_routes(linkage_web.routes(linkage_threads, linkage, meter))
    desk = SignedConsentDesk(context.store, context.clock,
                             timedelta(minutes=settings.linkage.consent_max_age_minutes))
    app.add_routes([linkage_web.consent_route(linkage_threads, desk,
                                              settings.ocsp.read_timeout_seconds)])

    async def close_linkage(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, linkage_threads.close)

    app.on_cleanup.append(close_linkage)

    app[ocsp_web.METER] = OCSPMeter(meter)
    failures, warnings = ocsp_web.setup(app, context.data_dir, context.responder_keys,
                                        context.clock, serving_options(context), url)
    app[HEALTH_CHECKS].append(failures)
    app[HEALTH_WARNINGS].append(warnings)
    app[HEALTH_WARNINGS].append(crl_service.attach(
        app, context.data_dir, context.clock, settings.crl.daily_time,
        CRLDownloadMeter(meter, context.store, context.clock), url,
        Path(settings.crl.serve_dir) if settings.crl.serve_dir else None))
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


async def run(context: Context, host: str, port: int, server: ServerSettings,
              seat: WorkerSeat | None = None) -> None:
    """Serve until SIGINT or SIGTERM; as worker `seat` of a group (jpki/workers.py), on a
    port shared with the other workers and with /metrics on the seat's socket."""
    tls = listeners.tls_context(server)  # first: a bad TLS file stops start-up early
    listeners.plain_default_server_header()
    app = build_app(context, seat.index if seat else 0)
    timeouts = context.settings.ocsp
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           keepalive_timeout=timeouts.idle_timeout_seconds)
    await runner.setup()
    # Not TCPSite: the listener wraps each connection in the request-header deadline.
    listener = await deadline.listen(runner, host, port,
                                     request_timeout=timeouts.request_timeout_seconds,
                                     arrivals=app[ARRIVALS], ssl_context=tls,
                                     reuse_port=seat is not None)
    metrics = (await listeners.start_metrics(server) if seat is None
               else await listeners.start_metrics_socket(seat.metrics_socket))
    quiet_collector()
    bound = listener.sockets[0].getsockname() if listener.sockets else (host, port)
    scheme = "https" if tls else "http"
    log.info("serving on %s://%s:%s (data dir %s)", scheme, bound[0], bound[1],
             context.data_dir)
    if seat is None:
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


def quiet_collector() -> None:
    """Keep Python's cyclic garbage collector off the answers' latency.

    A full collection walks every tracked object: with the libraries of a loaded daemon that
    is 40-55 ms with the event loop stopped, and metered answers (whose rows and futures
    outlive a young collection while their flush is under way) made one every few seconds
    under load: the whole p99 of the metered path (`make bench-ocsp`). Objects made at
    start-up (modules, settings, keys, indexes) are moved out of the collector's sight
    (`gc.freeze`, https://docs.python.org/3/library/gc.html#gc.freeze), and the young
    generation is collected every 20,000 allocations instead of 700: per-request objects
    are freed by reference counting; the collector only finds cycles.
    """
    gc.collect()
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(20000, gen1, gen2)


def serve(context: Context, host: str | None = None, port: int | None = None,
          metrics_listen: str | None = None, seat: WorkerSeat | None = None) -> None:
    server = context.settings.server
    if metrics_listen is not None:
        server = listeners.with_metrics_listen(server, metrics_listen)
    if seat is not None:  # the group's log is one stream: every line names its worker
        for handler in logging.getLogger().handlers:
            handler.setFormatter(logging.Formatter(
                f"%(asctime)s %(levelname)s worker-{seat.index} %(name)s: %(message)s"))
    main = run(context, host or server.host, port if port is not None else server.port, server,
               seat)
    try:
        import uvloop  # PEERS.md: +20-28% on plain HTTP paths
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
