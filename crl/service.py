"""The CRL role inside the serving daemon: routes, metrics and freshness; it holds no key.

CRLs are signed by `jpki signer`, the CA's own process (daily, and urgently after revocations),
which alone opens the CA keys, as Boulder's CA service alone holds keys and its crl-updater
asks it to sign. This face only serves the files the signer published and reports, through
/healthz, a CRL that missed its schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from aiohttp import web

from crl import freshness, metrics
from crl import web as crl_web
from crl.schedule import DailySchedule
from registry.clock import Clock
from registry.store import Store


def attach(app: web.Application, data_dir: Path, clock: Clock, daily_time: str,
           meter: crl_web.DownloadMeter | None = None, registry_url: str = "",
           serve_dir: Path | None = None) -> Callable[[], dict[str, str]]:
    """Add the routes and metrics; return the /healthz warnings of the published CRLs."""
    app.add_routes(crl_web.routes(serve_dir or data_dir / "crl", clock, meter))
    metrics.install(data_dir, clock, registry_url)
    schedule = DailySchedule(daily_time)

    def warnings() -> dict[str, str]:
        now: datetime = clock()
        store = Store.open(data_dir, registry_url)  # its own short-lived connection
        try:
            return freshness.overdue(store, schedule, now)
        finally:
            store.close()

    return warnings
