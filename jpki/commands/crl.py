"""CRL commands: `jpki crl generate` (on demand) and `jpki demo populate` (scale data)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from ca.kinds import CertKind
from demo import populate as demo_populate
from jpki.context import Context
from jpki.output import print_json
from jpki.wiring import crl_generator
from registry import shards


class ProgressBar:
    """A one-line bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, stream: TextIO, unit: str) -> None:
        self.stream = stream
        self.unit = unit
        self.enabled = stream.isatty()

    def __call__(self, done: int, total: int, label: str = "") -> None:
        if not self.enabled or total <= 0:
            return
        width = 30
        filled = width * done // total
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
                          f" {self.unit} {label:<24}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             parent: argparse.ArgumentParser) -> None:
    crl = subparsers.add_parser("crl", parents=[parent], help="certificate revocation lists")
    crl_sub = crl.add_subparsers(dest="action", required=True, metavar="ACTION")
    generate = crl_sub.add_parser(
        "generate", parents=[parent], help="generate and publish CRLs now",
        description="Sign and publish every partition CRL and the full CRL of every live CA"
        " generation (the daemon does this daily). With --partition, only that municipality's"
        " CRL and the full CRLs (an urgent revocation).",
    )
    generate.add_argument("--partition", metavar="CODE", help="5-digit municipality code")
    generate.add_argument("--kind", choices=["signature", "authentication", "sign", "auth"],
                          help="only this CA")
    generate.set_defaults(handler=cmd_generate)

    demo = subparsers.add_parser("demo", parents=[parent], help="demonstration data")
    demo_sub = demo.add_subparsers(dest="action", required=True, metavar="ACTION")
    populate = demo_sub.add_parser(
        "populate", parents=[parent], help="add synthetic residents and revocations",
        description="Write synthetic residents and certificate rows directly (no keys, no"
        " signatures) under the current CA generations, for scale tests and benchmarks.",
    )
    populate.add_argument("--residents", type=int, required=True, metavar="N")
    populate.add_argument("--revoked-fraction", type=float, required=True, metavar="F",
                          help="fraction of the certificates that are revoked (0..1)")
    populate.add_argument("--kinds", default="signature,authentication",
                          help="comma-separated certificate kinds (default: both)")
    populate.add_argument("--seed", type=int, default=1)
    populate.set_defaults(handler=cmd_populate)


def cmd_generate(context: Context, args: argparse.Namespace) -> int:
    kind = CertKind.from_short(args.kind) if args.kind else None
    # The CLI is single-threaded: its worker processes may be forked (they open their own
    # registry connection and never use the inherited one).
    generator = crl_generator(context.store, context.keys, context.clock, context.settings,
                              start_method="fork")
    bar = ProgressBar(sys.stderr, "CRLs")
    started = time.perf_counter()
    results = generator.run(kind=kind, partition=args.partition, progress=bar)
    elapsed = time.perf_counter() - started
    if not bar.enabled:
        print(f"jpki crl generate: {len(results)} CRLs,"
              f" {sum(r.entries for r in results)} entries in {elapsed:.1f} s", file=sys.stderr)
    print_json({"published": len(results), "seconds": round(elapsed, 3),
                "crls": [result.to_json() for result in results]})
    return 0


def cmd_populate(context: Context, args: argparse.Namespace) -> int:
    kinds = [CertKind.from_short(token.strip()) for token in args.kinds.split(",")
             if token.strip()]
    bar = ProgressBar(sys.stderr, "residents")
    started = time.perf_counter()
    report = demo_populate.populate(context.store, context.clock, residents=args.residents,
                                    revoked_fraction=args.revoked_fraction, kinds=kinds,
                                    seed=args.seed,
                                    progress=lambda done, total, rate: bar(done, total,
                                                                       f"{rate:,.0f}/s"),
                                    shard_capacity=shards.capacity(
                                    context.settings.crl.max_partition_bytes))
    seconds = time.perf_counter() - started
    print_json({**report.to_json(), "seconds": round(seconds, 3),
                "residents_per_second": round(report.residents / max(seconds, 1e-9))})
    return 0
