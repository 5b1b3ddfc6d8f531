"""Operator set-up commands: init, municipalities import, audit verify."""

from __future__ import annotations

import argparse
from pathlib import Path

from ca.bootstrap import initialise
from jpki.commands.ca import add_operator_options
from jpki.context import Context
from jpki.output import print_json
from jpki.wiring import responder_policy
from registry import audit, municipalities


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    init = subparsers.add_parser(
        "init", parents=[parent], help="create generation 1 of both CAs (idempotent)",
        description="Create the data directory, the municipality table and generation 1 of the"
        " signature and authentication CAs. Running it again changes nothing and says so.",
    )
    add_operator_options(init, "initial key")
    init.set_defaults(handler=cmd_init)

    muni = subparsers.add_parser("municipalities", parents=[parent],
                                 help="manage the municipality table")
    muni_sub = muni.add_subparsers(dest="action", required=True, metavar="ACTION")
    imp = muni_sub.add_parser("import", parents=[parent],
                              help="load the official list (CSV: code,prefecture,name,"
                              "prefecture_roman,name_roman)")
    imp.add_argument("file", type=Path)
    imp.set_defaults(handler=cmd_municipalities_import)

    aud = subparsers.add_parser("audit", parents=[parent], help="audit log")
    aud_sub = aud.add_subparsers(dest="action", required=True, metavar="ACTION")
    ver = aud_sub.add_parser("verify", parents=[parent],
                             help="check the hash chain and name the first broken row")
    ver.set_defaults(handler=cmd_audit_verify)


def cmd_init(context: Context, args: argparse.Namespace) -> int:
    settings = context.settings
    report = initialise(
        context.store, context.keys, context.clock,
        municipalities_csv=settings.registry.municipalities_csv,
        key_size=settings.ca.key_size, years=settings.ca.validity_years,
        responder=(context.responder_keys, responder_policy(context.settings)),
        actor=args.operator, reason=args.reason,
    )
    print_json({
        "data_dir": str(context.data_dir),
        "changed": report.changed,
        "created": report.created,
        "already_present": report.existing,
        "message": "initialised" if report.changed else "already initialised; nothing changed",
    })
    return 0


def cmd_municipalities_import(context: Context, args: argparse.Namespace) -> int:
    rows = municipalities.import_csv(context.store, args.file)
    print_json({"imported": rows, "total": municipalities.count(context.store)})
    return 0


def cmd_audit_verify(context: Context, args: argparse.Namespace) -> int:
    report = audit.verify(context.store)
    print_json({"ok": report.ok, "rows": report.rows, "first_broken_row": report.first_broken,
                "problem": report.problem})
    return 0 if report.ok else 1
