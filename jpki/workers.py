"""`jpki serve` with server.workers > 1: N worker processes on one port, under a small parent.

Why: one `jpki serve` process answers from one core (one event loop; pyca releases the GIL
only while it signs), so the cached OCSP path of a many-core host needs several processes.
Each worker is a whole `jpki serve` (its own OCSP caches, pre-signed answers, signing pool,
registry connections and fee journal) that listens on the same port with SO_REUSEPORT: the
kernel spreads new connections over the workers' accept queues, no process hands them on.

The parent is the serving role's supervisor, not a server: it holds no key (not even a
responder key) and opens no registry. It checks that the port is free, starts the workers
(each dies with it, PR_SET_PDEATHSIG), forwards SIGHUP to every worker, stops them all on
SIGINT or SIGTERM, and serves their merged /metrics on server.metrics_listen: each worker
exports its own metrics on a Unix socket in a private directory, and the parent relabels every
sample with `worker="<k>"` (Prometheus sums them: `sum without (worker) (...)`).

A worker that exits on its own is reported (which worker, pid and exit code) and the other
workers are stopped; `jpki serve` then exits 1. Restarting is the service manager's job
(systemd `Restart=on-failure`), as for `jpki run`: a parent that restarted workers quietly
would hide a crash loop, and the half of the traffic it dropped, from the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from jpki import listeners
from jpki.settings import ServerSettings
from jpki.supervisor import first_exited, forward_signal, stop_all
from registry.errors import ConfigError

log = logging.getLogger("jpki.serve")
POLL_SECONDS = 0.2
SCRAPE_TIMEOUT_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class WorkerSeat:
    """What makes a `jpki serve` process worker `index` of a group: it listens with
    SO_REUSEPORT, writes fee journal `index` and exports /metrics on `metrics_socket`."""

    index: int
    metrics_socket: Path


def worker_name(index: int) -> str:
    return f"worker {index}"


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies, even by SIGKILL, so that no
    worker keeps answering on the port with nobody supervising it (Linux prctl(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def check_port_free(host: str, port: int) -> None:
    """Refuse a port someone already listens on: SO_REUSEPORT would let our workers join a
    listener of the same user (another `jpki serve`, another data directory) and share its
    traffic. A plain bind fails with EADDRINUSE in that case; port 0 has no shared meaning."""
    if port == 0:
        raise ConfigError("server.port 0 (any free port) cannot be shared by several workers:"
                          " set a port, or server.workers = 1")
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the workers do
            probe.bind(address)
    except OSError as exc:
        raise ConfigError(f"server.port: cannot listen on {host}:{port}:"
                          f" {exc.strerror or exc}") from None


class _Families(Collector):
    """Metric families already gathered (the workers' merged exposition)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def merge_metrics(texts: Mapping[int, str | None]) -> bytes:
    """The workers' expositions as one, every sample labelled with its worker; a worker that
    did not answer (None) is only `jpki_serve_worker_up{worker} 0`."""
    families: dict[str, Metric] = {}
    for worker, text in sorted(texts.items()):
        if text is None:
            continue
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation,
                                                        family.type, family.unit)
            merged.samples.extend(sample._replace(labels={**sample.labels,
                                                          "worker": str(worker)})
                                  for sample in family.samples)
    up = Metric("jpki_serve_worker_up", "1 when the serving worker answered this scrape, else 0"
                " (it is stopping, or stuck: its metrics are missing from this scrape)",
                "gauge")
    for worker, text in sorted(texts.items()):
        up.add_sample("jpki_serve_worker_up", {"worker": str(worker)},
                      0.0 if text is None else 1.0)
    families[up.name] = up
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families.values()))
    return generate_latest(registry)


async def _scrape(path: Path) -> str | None:
    try:
        async with (aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(path)),
                timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_SECONDS)) as session,
                session.get("http://worker/metrics") as response):
            return await response.text() if response.status == 200 else None
    except (OSError, aiohttp.ClientError, TimeoutError):
        return None


def _metrics_app(seats: Sequence[WorkerSeat]) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        texts = await asyncio.gather(*(_scrape(seat.metrics_socket) for seat in seats))
        body = merge_metrics({seat.index: text
                              for seat, text in zip(seats, texts, strict=True)})
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.on_response_prepare.append(listeners.plain_server_header)
    app.add_routes([web.get("/metrics", metrics)])
    return app


async def _supervise(command: Sequence[str], host: str, port: int, count: int,
                     server: ServerSettings, sockets: Path) -> int:
    seats = [WorkerSeat(index, sockets / f"worker-{index}.sock") for index in range(count)]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    children: dict[str, subprocess.Popen[bytes]] = {}

    def hang_up() -> None:
        log.info("SIGHUP: forwarded to %d workers", len(children))
        for child in children.values():
            forward_signal(child, signal.SIGHUP)

    loop.add_signal_handler(signal.SIGHUP, hang_up)
    metrics = await listeners.start_metrics(server, _metrics_app(seats),
                                            "metrics of every worker")
    failed = False
    try:
        for seat in seats:
            children[worker_name(seat.index)] = subprocess.Popen(
                [*command, "--worker-index", str(seat.index),
                 "--metrics-socket", str(seat.metrics_socket)],
                preexec_fn=_die_with_parent)  # noqa: PLW1509  # no thread runs yet
        log.info("started %d workers (pids %s) for %s:%d", count,
                 ", ".join(str(child.pid) for child in children.values()), host, port)
        waiting = set(seats)
        while not stop.is_set():
            exited = first_exited(children)
            if exited is not None:
                failed, (name, code) = True, exited
                print(f"jpki serve: {name} (pid {children[name].pid}) exited with code {code};"
                      " stopping the other workers", file=sys.stderr, flush=True)
                break
            if waiting:  # a worker creates its metrics socket once its port is bound
                waiting = {seat for seat in waiting if not seat.metrics_socket.exists()}
                if not waiting:
                    scheme = "https" if server.tls_cert_file else "http"
                    print(f"jpki: serving on {scheme}://{host}:{port} with {count} workers",
                          flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_SECONDS)
    finally:
        log.info("stopping %d workers", len(children))
        await loop.run_in_executor(None, stop_all, children)
        if metrics is not None:
            await metrics.cleanup()
    return 1 if failed else 0


def serve_workers(command: Sequence[str], host: str, port: int, count: int,
                  server: ServerSettings) -> int:
    """Run `count` workers of `command` (a `jpki serve` command line) on host:port until
    SIGINT or SIGTERM (0) or until a worker exits on its own (1)."""
    check_port_free(host, port)
    sockets = Path(tempfile.mkdtemp(prefix="jpki-serve-"))  # 0700: the metrics are business data
    try:
        return asyncio.run(_supervise(command, host, port, count, server, sockets))
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
