"""The long-running processes: `serve` (network), `signer` (CA keys), `run` (both)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from jpki.context import Context
from registry.errors import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             parent: argparse.ArgumentParser) -> None:
    serve = subparsers.add_parser(
        "serve", parents=[parent], help="run the network daemon (OCSP, CRLs, linkage, events)",
        description="Serve OCSP (delegated responder keys), CRL and CA distribution, linkage,"
        " events intake and fee metering on the configured host and port. It never opens a CA"
        " private key: CRLs and responder certificates come from `jpki signer`.")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument("--metrics-listen", metavar="HOST:PORT",
                       help='override server.metrics_listen ("" turns /metrics off)')
    serve.add_argument("--workers", type=_worker_count, metavar="N",
                       help="override server.workers (0: one per core)")
    # set by the parent of a group of workers (jpki/workers.py), not by operators
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--metrics-socket", type=Path, help=argparse.SUPPRESS)
    serve.set_defaults(handler=cmd_serve, seals_audit=False)

    signer = subparsers.add_parser(
        "signer", parents=[parent], help="run the CA's signing process (CRLs, responder certs)",
        description="The only long-running holder of CA private keys; it listens on no port."
        " Re-issues the CRLs that list a new revocation within crl.urgent_delay_seconds, runs"
        " the daily CRL schedule (crl.daily_time, JST) and renews OCSP responder certificates"
        " ocsp.renew_before_days ahead. Stops on SIGINT or SIGTERM.")
    signer.set_defaults(handler=cmd_signer, seals_audit=False)

    run = subparsers.add_parser(
        "run", parents=[parent], help="run signer and serve together (what `make run` does)",
        description="Starts `jpki signer` and `jpki serve` as two child processes (the serving"
        " one without the CA passphrase or PIN in its environment). Ctrl-C stops both; if one"
        " exits, the other is stopped and the exit is reported (exit code 1).")
    run.add_argument("--host", help="override server.host")
    run.add_argument("--port", type=int, help="override server.port")
    run.add_argument("--metrics-listen", metavar="HOST:PORT",
                     help='override server.metrics_listen ("" turns /metrics off)')
    run.add_argument("--workers", type=_worker_count, metavar="N",
                     help="override server.workers of the serving process (0: one per core)")
    run.set_defaults(handler=cmd_run, seals_audit=False)


def _worker_count(text: str) -> int:
    if not text.isdigit() or int(text) > 256:
        raise argparse.ArgumentTypeError("must be a whole number from 0 to 256")
    return int(text)


def _common(context: Context, args: argparse.Namespace) -> list[str]:
    """The options a child process needs to load the same settings and data directory."""
    common = ["--data-dir", str(context.data_dir)]
    if context.settings.source != "<defaults>":
        common = ["--config", context.settings.source, *common]
    if getattr(args, "log_level", None):
        common += ["--log-level", args.log_level]
    return common


def cmd_serve(context: Context, args: argparse.Namespace) -> int:
    from jpki.daemon import serve
    from jpki.listeners import with_metrics_listen
    from jpki.workers import WorkerSeat, serve_workers

    server = context.settings.server
    if args.worker_index is not None:
        if args.metrics_socket is None:
            raise ConfigError("--worker-index needs --metrics-socket")
        serve(context, host=args.host, port=args.port,
              seat=WorkerSeat(args.worker_index, args.metrics_socket))
        return 0
    count = server.worker_count(args.workers)
    if count == 1:
        serve(context, host=args.host, port=args.port, metrics_listen=args.metrics_listen)
        return 0
    if args.metrics_listen is not None:
        server = with_metrics_listen(server, args.metrics_listen)
    host = args.host or server.host
    port = server.port if args.port is None else args.port
    command = [sys.executable, "-m", "jpki.cli", "serve", *_common(context, args),
               "--host", host, "--port", str(port)]
    return serve_workers(command, host, port, count, server)


def cmd_signer(context: Context, args: argparse.Namespace) -> int:
    from jpki.signer import SignerProcess

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    SignerProcess(context).run(stop)
    return 0


def cmd_run(context: Context, args: argparse.Namespace) -> int:
    from jpki.supervisor import supervise

    settings = context.settings
    common = _common(context, args)
    serve_args = ([] if args.host is None else ["--host", args.host]) + (
        [] if args.port is None else ["--port", str(args.port)]) + (
        [] if args.metrics_listen is None else ["--metrics-listen", args.metrics_listen]) + (
        [] if args.workers is None else ["--workers", str(args.workers)])
    secrets = [settings.ca.passphrase_env]
    if settings.keys.backend == "pkcs11":
        secrets.append(settings.keys.pkcs11_pin_env)
    return supervise(common, serve_args, secrets)
