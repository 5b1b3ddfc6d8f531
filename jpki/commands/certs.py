"""Certificate commands: issue, renew, show, revoke."""

from __future__ import annotations

import argparse
from datetime import date, timedelta
from pathlib import Path

from ca import cardprofile
from ca.issuance import IssueRequest
from jpki.commands.ca import cli_actor
from jpki.context import Context
from jpki.output import print_json
from registry import certificates
from registry.clock import epoch
from registry.errors import InvalidInput
from registry.facts import Facts
from registry.reasons import Reason
from revocation import backdating


def _resident_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resident-id", required=True, help="resident record id (1-32 of"
                        " A-Z a-z 0-9 - _); never the individual number")
    parser.add_argument("--name", required=True,
                        help="surname and given name separated by a space (stored with U+3000)")
    parser.add_argument("--name-alt", help="the name with alternative characters substituted"
                        " (one character per character of --name)")
    parser.add_argument("--dob", required=True, metavar="YYYY-MM-DD", help="date of birth")
    parser.add_argument("--sex", required=True, choices=["male", "female", "unknown"])
    parser.add_argument("--address", required=True,
                        help="address from the prefecture on, no postcode")
    parser.add_argument("--address-alt", help="the address with alternative characters")
    parser.add_argument("--municipality-code", required=True, metavar="CODE",
                        help="5-digit local-government code (the CRL partition)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="directory for the PEM certificates and PKCS#12 keys")
    parser.add_argument("--sign-pin", help="signature PIN: 6-16 letters and digits")
    parser.add_argument("--auth-pin", required=True, help="authentication PIN: 4 digits")
    parser.add_argument("--auth-only", action="store_true",
                        help="issue only the authentication certificate")
    parser.add_argument("--allow-minor-signature", action="store_true",
                        help="operator override: issue a signature certificate to an under-15")
    parser.add_argument("--profile", choices=cardprofile.PROFILES, default=None,
                        help="card profile (ca/cardprofile.py): current (RSA, 5 years) or next"
                        " (ECDSA P-384, SHA-384, 10 years, under a P-384 CA generation);"
                        " default: [issuance] profile")
    parser.add_argument("--card-expiry", metavar="YYYY-MM-DD",
                        help="the card's expiry, if not the default (10th birthday after"
                        " issuance, 5th for minors)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             parent: argparse.ArgumentParser) -> None:
    issue = subparsers.add_parser(
        "issue", parents=[parent], help="issue a signature + authentication pair",
        description="Generate two key pairs, issue the linked pair under the current CA"
        " generations, write each key once as a PIN-protected PKCS#12 file next to its PEM"
        " certificate, and print one JSON object.",
    )
    _resident_flags(issue)
    issue.set_defaults(handler=cmd_issue)

    renew = subparsers.add_parser(
        "renew", parents=[parent], help="issue a new pair and supersede the old one",
        description="Issue a new pair for an existing resident, revoke the old live"
        " certificates with reason superseded and record the successor links old -> new.",
    )
    _resident_flags(renew)
    renew.set_defaults(handler=cmd_renew)

    show = subparsers.add_parser("show", parents=[parent],
                                 help="print a certificate's record as JSON")
    show.add_argument("serial", help="hexadecimal serial number")
    show.set_defaults(handler=cmd_show)

    revoke = subparsers.add_parser(
        "revoke", parents=[parent], help="operator revocation (reason codes 0-6)",
        description="Revoke one certificate. Reasons: " + ", ".join(r.name for r in Reason)
        + ". certificateHold is terminal. A revoked certificate cannot be revoked again.",
    )
    revoke.add_argument("serial", help="hexadecimal serial number")
    revoke.add_argument("--reason", required=True, help="RFC 5280 reason name or code")
    revoke.add_argument("--at", metavar="ISO8601",
                        help="back-date the revocation time (with offset), within the configured"
                        " window")
    revoke.set_defaults(handler=cmd_revoke)


def _request(context: Context, args: argparse.Namespace) -> IssueRequest:
    today = context.clock().date()
    card_expiry = None
    if args.card_expiry:
        try:
            card_expiry = date.fromisoformat(args.card_expiry)
        except ValueError:
            raise InvalidInput("must be a real date as YYYY-MM-DD", field="card_expiry") from None
    facts = Facts.parse(
        name=args.name, dob=args.dob, sex=args.sex, address=args.address,
        municipality_code=args.municipality_code, name_alt=args.name_alt,
        address_alt=args.address_alt, today=today,
    )
    return IssueRequest(
        resident_id=args.resident_id, facts=facts, out_dir=args.out, sign_pin=args.sign_pin,
        auth_pin=args.auth_pin, auth_only=args.auth_only,
        allow_minor_signature=args.allow_minor_signature, card_expiry=card_expiry,
        profile=cardprofile.profile(args.profile) if args.profile else None,
        actor=cli_actor(args),
    )


def cmd_issue(context: Context, args: argparse.Namespace) -> int:
    pair = context.issuer.issue(_request(context, args))
    print_json(pair.to_json())
    return 0


def cmd_renew(context: Context, args: argparse.Namespace) -> int:
    pair = context.issuer.renew(_request(context, args))
    print_json(pair.to_json())
    return 0


def cmd_show(context: Context, args: argparse.Namespace) -> int:
    serial = certificates.normalise_serial(args.serial)
    record = certificates.require(context.store, serial)
    result = record.to_json(epoch(context.clock()))
    result["counterpart"] = certificates.counterpart(context.store, serial)
    print_json(result)
    return 0


def cmd_revoke(context: Context, args: argparse.Namespace) -> int:
    serial = certificates.normalise_serial(args.serial)
    reason = Reason.parse(args.reason)
    revoked_at = None
    if args.at:
        window = timedelta(hours=context.settings.revocation.backdate_window_hours)
        revoked_at = backdating.revocation_time(args.at, context.clock(), window)
    record = certificates.revoke(context.store, context.clock, serial, reason,
                                 actor=cli_actor(args), revoked_at=revoked_at, cause="operator")
    print_json(record.to_json(epoch(context.clock())))
    return 0
