"""What `jpki serve` shows on which listener: TLS on the public port, /metrics on its own.

Issue 14 (defects 10 and 12): the metrics are business data (verifier names, yen billed), so
they are served only on `server.metrics_listen`; bearer tokens must not travel in clear, so
the public port can speak TLS itself; and no response names the library or its version.
The daemon (jpki/daemon.py) wires these in; nothing here knows a role.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from aiohttp import web, web_response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from jpki.settings import ServerSettings
from registry.errors import ConfigError

log = logging.getLogger("jpki.daemon")


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
                           " jpki/listeners.py must be adapted to it")
    # not re-exported by aiohttp, checked just above:
    web_response.SERVER_SOFTWARE = "jpki"  # type: ignore[attr-defined]  # replaced on purpose


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


async def start_metrics(server: ServerSettings, app: web.Application | None = None,
                        what: str = "metrics") -> web.AppRunner | None:
    """The metrics listener (server.metrics_listen) serving `app` (this process's metrics
    unless given: `jpki serve --workers` serves every worker's), or None when it is off."""
    address = server.metrics_address()
    if address is None:
        return None
    runner = web.AppRunner(app or metrics_app(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, *address).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"server.metrics_listen: cannot listen on {server.metrics_listen}:"
                          f" {exc.strerror}") from None
    log.info("%s on http://%s/metrics", what, server.metrics_listen)
    return runner


async def start_metrics_socket(path: Path) -> web.AppRunner:
    """A serving worker's metrics on a Unix socket, for its parent to merge (jpki/workers.py):
    the socket lives in the parent's private (0700) directory, no port is taken per worker."""
    runner = web.AppRunner(metrics_app(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.UnixSite(runner, str(path)).start()
    return runner


def with_metrics_listen(server: ServerSettings, metrics_listen: str) -> ServerSettings:
    """`jpki serve --metrics-listen`: the setting overridden, validated as in the file."""
    try:
        return ServerSettings(**{**server.model_dump(), "metrics_listen": metrics_listen})
    except ValidationError as exc:
        raise ConfigError(f"--metrics-listen: {exc.errors()[0]['msg']}") from None
