"""Fee and consent commands: fees invoice, fees usage, consent grant|withdraw."""

from __future__ import annotations

import argparse

from fees import invoice
from jpki.commands.ca import cli_actor
from jpki.context import Context
from jpki.output import print_json
from registry import consents, verifiers


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             parent: argparse.ArgumentParser) -> None:
    fees = subparsers.add_parser("fees", parents=[parent], help="invoices and usage")
    fees_sub = fees.add_subparsers(dest="action", required=True, metavar="ACTION")
    inv = fees_sub.add_parser(
        "invoice", parents=[parent], help="the invoice of a month, per verifier",
        description="Counts and amounts per check type and tariff rule, the monthly discount"
        " and the total, in integer yen (totals rounded down).",
    )
    inv.add_argument("--month", required=True, metavar="YYYY-MM", help="JST calendar month")
    inv.add_argument("--verifier", metavar="NAME")
    inv.add_argument("--format", choices=["json", "csv"], default="json")
    inv.set_defaults(handler=cmd_invoice)
    use = fees_sub.add_parser("usage", parents=[parent],
                              help="running totals per verifier, month and check type")
    use.add_argument("--verifier", metavar="NAME")
    use.set_defaults(handler=cmd_usage)

    consent = subparsers.add_parser("consent", parents=[parent],
                                    help="record a resident's consent for a verifier")
    consent_sub = consent.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, help_text in (("grant", "grant (valid 10 years; replaces an earlier grant)"),
                              ("withdraw", "withdraw the current grant")):
        cmd = consent_sub.add_parser(action, parents=[parent], help=help_text)
        cmd.add_argument("--resident-id", required=True)
        cmd.add_argument("--verifier", required=True, metavar="NAME")
        cmd.add_argument("--service", required=True, choices=list(consents.SERVICES))
        if action == "grant":
            cmd.add_argument("--items", help="latest-facts only: any of name,address,dob,sex")
        cmd.add_argument("--operator", metavar="NAME",
                         help="the operator who records it, for the audit log (audited as an"
                         " operator entry; a resident's own signed consent goes to POST"
                         " /linkage/v1/consents)")
        cmd.set_defaults(handler=cmd_consent)


def cmd_invoice(context: Context, args: argparse.Namespace) -> int:
    if args.verifier:
        verifiers.require(context.store, args.verifier)
    items = invoice.invoices(context.store, context.tariff, args.month, args.verifier)
    if args.format == "csv":
        print(invoice.to_csv(items), end="")
    else:
        print_json({"month": args.month, "invoices": [item.to_json() for item in items]})
    return 0


def cmd_usage(context: Context, args: argparse.Namespace) -> int:
    if args.verifier:
        verifiers.require(context.store, args.verifier)
    print_json({"usage": invoice.usage(context.store, args.verifier)})
    return 0


def cmd_consent(context: Context, args: argparse.Namespace) -> int:
    verifier = verifiers.require(context.store, args.verifier)
    if args.action == "grant":
        items = consents.parse_items(args.items, args.service)
        grant = consents.grant(context.store, context.clock, args.resident_id, verifier,
                               args.service, items, actor=cli_actor(args))
        print_json({"resident_id": args.resident_id, "verifier": verifier.name,
                    "service": grant.service, "items": list(grant.items),
                    "expires_at": grant.expires_at})
    else:
        consents.withdraw(context.store, context.clock, args.resident_id, verifier,
                          args.service, actor=cli_actor(args))
        print_json({"resident_id": args.resident_id, "verifier": verifier.name,
                    "service": args.service, "withdrawn": True})
    return 0
