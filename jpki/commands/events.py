"""Revocation-hook commands: events apply, operator add."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import IO, Any

from jpki.commands.ca import add_operator_options, cli_actor
from jpki.context import Context
from jpki.output import print_json
from registry import operators
from registry.errors import InvalidInput
from revocation import jsonlines
from revocation.events import EventApplier
from revocation.policy import EVENT_TYPES


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             parent: argparse.ArgumentParser) -> None:
    events = subparsers.add_parser("events", parents=[parent],
                                   help="apply resident-register events")
    events_sub = events.add_subparsers(dest="action", required=True, metavar="ACTION")
    apply = events_sub.add_parser(
        "apply", parents=[parent], help="apply events from a JSON Lines file ('-' = stdin)",
        description="Apply each event in its own transaction and print one JSON outcome per"
        " event. Event types: " + ", ".join(EVENT_TYPES) + ". A replayed event_id returns the"
        " original outcome; exits 2 if any event was rejected.",
    )
    apply.add_argument("file", help="JSON Lines file, or - for standard input")
    apply.set_defaults(handler=cmd_events_apply)

    operator = subparsers.add_parser("operator", parents=[parent], help="manage operators")
    operator_sub = operator.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = operator_sub.add_parser("add", parents=[parent],
                                  help="create an operator and print its token once")
    add.add_argument("name")
    add.set_defaults(handler=cmd_operator_add)
    rotate_token = operator_sub.add_parser(
        "rotate-token", parents=[parent], help="replace an operator's token; prints it once",
        description="Print {\"operator\": NAME, \"token\": TOKEN}. A running daemon refuses"
        " the old token on POST /registry/events from its next request on.",
    )
    rotate_token.add_argument("name")
    add_operator_options(rotate_token, "token rotation")
    rotate_token.set_defaults(handler=cmd_operator_rotate_token)
    revoke = operator_sub.add_parser(
        "revoke", parents=[parent], help="withdraw an operator's token for good",
        description="A running daemon refuses the token from its next request on; the name"
        " stays taken.",
    )
    revoke.add_argument("name")
    add_operator_options(revoke, "operator withdrawn")
    revoke.set_defaults(handler=cmd_operator_revoke)


def cmd_events_apply(context: Context, args: argparse.Namespace) -> int:
    applier = EventApplier(context.store, context.clock)
    # Bytes, decoded line by line: a line that is not UTF-8 is rejected alone (defect 5).
    stdin: IO[Any] = getattr(sys.stdin, "buffer", sys.stdin)  # text if stdin was replaced
    source: IO[Any]
    if args.file == "-":
        source = stdin
    else:
        try:
            source = Path(args.file).open("rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise InvalidInput(f"cannot read {args.file}: {exc.strerror}", field="file") from None
    rejected = 0
    try:
        for location, raw in jsonlines.read(source):
            outcome = applier.apply(raw, actor=cli_actor(args), location=location)
            rejected += outcome.status == "rejected"
            print_json(outcome.to_json())
    finally:
        if source is not stdin:
            source.close()
    return 2 if rejected else 0


def cmd_operator_add(context: Context, args: argparse.Namespace) -> int:
    token = operators.add(context.store, context.clock, args.name, actor=cli_actor(args))
    print_json({"operator": args.name, "token": token})
    return 0


def cmd_operator_rotate_token(context: Context, args: argparse.Namespace) -> int:
    token = operators.rotate_token(context.store, context.clock, args.name,
                                   actor=args.operator, reason=args.reason)
    print_json({"operator": args.name, "token": token})
    return 0


def cmd_operator_revoke(context: Context, args: argparse.Namespace) -> int:
    operators.revoke(context.store, context.clock, args.name, actor=args.operator,
                     reason=args.reason)
    print_json({"operator": args.name, "revoked": True})
    return 0
