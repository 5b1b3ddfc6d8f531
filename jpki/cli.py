"""The `jpki` command: parse, build the context, call the role, print JSON, map errors.

Every subcommand accepts `--config FILE` and `--data-dir DIR`, before or after its name.
Errors are one line on stderr naming the field at fault, with a non-zero exit code
(2 invalid input, 3 not found, 4 conflict, 5 not initialised, 78 bad configuration).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from jpki.commands import COMMAND_MODULES
from jpki.context import Context
from registry.errors import JPKIError

Handler = Callable[[Context, argparse.Namespace], int]


def common_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="FILE",
                        help="TOML configuration (default: $JPKI_CONFIG or configs/default.toml)")
    parent.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, metavar="DIR",
                        help="data directory (overrides the configured data_dir)")
    parent.add_argument("--log-level", default=argparse.SUPPRESS,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level on stderr (default INFO)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parent = common_options()
    parser = argparse.ArgumentParser(
        prog="jpki", parents=[parent],
        description="A JPKI-style certificate authority and revocation service.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers, parent)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO"), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        context = Context.load(getattr(args, "config", None), getattr(args, "data_dir", None))
        try:
            return handler(context, args)
        finally:  # also after a refusal: rows committed before it get their checkpoint
            # Not for the long-running processes: `serve` must never open the CA key backend
            # (the signer checkpoints what it appended), and the signer seals as it runs.
            if getattr(args, "seals_audit", True):
                context.seal_audit()
    except JPKIError as exc:
        print(f"jpki {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
