"""The CRL role inside the daemon: serving routes, metrics, and the daily run in a thread.

The daemon holds the CA keys for CRL signing, as Boulder's crl-updater does: CRLs must be
re-signed every day whether or not anything changed, so the signer has to be a long-running
process. Only the worker thread that runs the generator loads a key (from the key backend: an
encrypted file under JPKI_CA_PASSPHRASE or the 0600 file, or a PKCS#11 token) and drops it when
the run ends; the HTTP handlers only read published files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from aiohttp import web

from crl import metrics
from crl import web as crl_web
from crl.generator import from_settings
from crl.schedule import DailyRunner, DailySchedule
from registry.errors import JPKIError
from registry.store import DB_NAME, Store

if TYPE_CHECKING:
    from jpki.context import Context

log = logging.getLogger("jpki.crl.service")
MAX_SLEEP = 60.0


def daily_tick(context: Context) -> bool:
    """One scheduler decision, with its own registry connection (it runs in a worker thread)."""
    store = Store(context.data_dir / DB_NAME)  # migrated when the daemon started
    try:
        generator = from_settings(store, context.keys, context.clock, context.settings)
        runner = DailyRunner(DailySchedule(context.settings.crl.daily_time), context.clock,
                             generator.run, generator.last_complete_run)
        return runner.tick()
    finally:
        store.close()


def attach(app: web.Application, context: Context,
           meter: crl_web.DownloadMeter | None = None) -> None:
    app.add_routes(crl_web.routes(context.data_dir, context.clock, meter))
    metrics.install(context.data_dir, context.clock)
    if context.settings.crl.schedule_enabled:
        app.cleanup_ctx.append(_daily_task(context))


def _daily_task(context: Context) -> Callable[[web.Application], AsyncIterator[None]]:
    schedule = DailySchedule(context.settings.crl.daily_time)

    async def run(app: web.Application) -> AsyncIterator[None]:
        executor = ThreadPoolExecutor(1, thread_name_prefix="crl-daily")
        loop = asyncio.get_running_loop()

        async def forever() -> None:
            while True:
                try:
                    await loop.run_in_executor(executor, daily_tick, context)
                except JPKIError as exc:
                    log.error("daily CRL run failed: %s", exc)
                except Exception:  # keep the schedule alive; the next tick retries
                    log.exception("daily CRL run failed")
                wait = (schedule.next_due(context.clock()) - context.clock()).total_seconds()
                await asyncio.sleep(max(1.0, min(MAX_SLEEP, wait)))

        task = asyncio.create_task(forever())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        executor.shutdown(wait=False, cancel_futures=True)

    return run
