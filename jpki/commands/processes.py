"""The long-running processes: `serve` (network), `signer` (CA keys), `run` (both)."""

from __future__ import annotations

import argparse
import signal
import threading

from jpki.context import Context


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
    run.set_defaults(handler=cmd_run, seals_audit=False)


def cmd_serve(context: Context, args: argparse.Namespace) -> int:
    from jpki.daemon import serve

    serve(context, host=args.host, port=args.port, metrics_listen=args.metrics_listen)
    return 0


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
    common = ["--data-dir", str(context.data_dir)]
    if settings.source != "<defaults>":
        common = ["--config", settings.source, *common]
    serve_args = ([] if args.host is None else ["--host", args.host]) + (
        [] if args.port is None else ["--port", str(args.port)]) + (
        [] if args.metrics_listen is None else ["--metrics-listen", args.metrics_listen])
    secrets = [settings.ca.passphrase_env]
    if settings.keys.backend == "pkcs11":
        secrets.append(settings.keys.pkcs11_pin_env)
    return supervise(common, serve_args, secrets)
