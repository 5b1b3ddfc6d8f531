"""CA key operations: rotate, retire, status, compromise.

Every key operation names its operator and reason; both go into the audit row with the old and
new key fingerprints, so `jpki audit verify` can later prove who turned which key over and why.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from ca import rotation
from ca import status as ca_status
from ca.keyalgorithm import ECDSA_P384, KeyAlgorithm
from ca.kinds import CertKind
from jpki.context import Context
from jpki.output import print_json
from jpki.wiring import crl_generator, responder_policy
from revocation.compromise import revoke_generation

OPERATOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
KINDS = ["signature", "authentication", "sign", "auth"]


def _operator(value: str) -> str:
    if not OPERATOR.fullmatch(value):
        raise argparse.ArgumentTypeError(
            "must be 1-64 characters of letters, digits, '.', '_', '@', '-'")
    return value


def _default_operator() -> str:
    name = os.environ.get("JPKI_OPERATOR") or getpass.getuser()
    return name if OPERATOR.fullmatch(name) else "operator"


def cli_actor(args: argparse.Namespace) -> str:
    """Who a CLI command acts as, for the audit log: --operator, else $JPKI_OPERATOR or the
    login name; never a fixed word, or the log could not say who did what."""
    return getattr(args, "operator", None) or _default_operator()


def add_operator_options(parser: argparse.ArgumentParser, default_reason: str) -> None:
    parser.add_argument("--operator", type=_operator, default=_default_operator(),
                        metavar="NAME", help="who does this, for the audit log"
                        " (default: $JPKI_OPERATOR or the login name)")
    parser.add_argument("--reason", default=default_reason, metavar="TEXT",
                        help=f"why, for the audit log (default: {default_reason!r})")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             parent: argparse.ArgumentParser) -> None:
    ca = subparsers.add_parser("ca", parents=[parent], help="CA generations and their keys")
    ca_sub = ca.add_subparsers(dest="action", required=True, metavar="ACTION")

    rotate = ca_sub.add_parser(
        "rotate", parents=[parent], help="create the next CA generation (new key, same DN)",
        description="Create the next generation (same DN, new key and serial, ca.validity_years)"
        " with the two RFC 4210 link certificates (NewWithOld, OldWithNew), issue its OCSP"
        " responder certificate and publish its CRLs. New issuance moves to it at once; older"
        " generations keep signing CRLs and OCSP answers until retired. A running daemon picks"
        " it up by itself.",
    )
    rotate.add_argument("--kind", required=True, choices=[*KINDS, "all"])
    rotate.add_argument("--algorithm", choices=["rsa", ECDSA_P384], default=None,
                        help="the new generation's key: rsa (ca.key_size bits) or ecdsa-p384"
                        " (the next-generation card profile); default: the current"
                        " generation's algorithm")
    add_operator_options(rotate, "scheduled rotation")
    rotate.set_defaults(handler=cmd_rotate)

    retire = ca_sub.add_parser(
        "retire", parents=[parent], help="archive the key of an old generation",
        description="Refused for the current generation and while any certificate the"
        " generation issued is unexpired. Its CA key and responder keys are archived (kept,"
        " never loaded again) and it stops signing CRLs and OCSP answers.",
    )
    retire.add_argument("--kind", required=True, choices=KINDS)
    retire.add_argument("--generation", required=True, type=int)
    add_operator_options(retire, "all certificates expired")
    retire.set_defaults(handler=cmd_retire)

    status = ca_sub.add_parser(
        "status", parents=[parent], help="every generation: key, validity, coverage, responder",
        description="Per generation: whether it is current, live, expired or retired, its key"
        " fingerprint, validity, how many unexpired and live (unexpired, unrevoked)"
        " certificates it still covers, and its OCSP responder certificate's expiry.",
    )
    status.add_argument("--format", choices=["json", "table"], default="json",
                        help="json (one object, the default) or a table for people")
    status.set_defaults(handler=cmd_status)

    compromise = ca_sub.add_parser(
        "compromise", parents=[parent],
        help="revoke every certificate of a compromised CA generation (cACompromise)",
        description="Revokes, in one transaction, every unrevoked certificate issued under the"
        " generation. Rotate first (`jpki ca rotate`) if it is the newest generation, so that"
        " new issuance moves to a fresh key.",
    )
    compromise.add_argument("--kind", required=True, choices=KINDS)
    compromise.add_argument("--generation", required=True, type=int)
    compromise.add_argument("--confirm", action="store_true", required=True,
                            help="required: this cannot be undone")
    compromise.set_defaults(handler=cmd_compromise)


def cmd_rotate(context: Context, args: argparse.Namespace) -> int:
    kinds = list(CertKind) if args.kind == "all" else [CertKind.from_short(args.kind)]
    generator = crl_generator(context.store, context.keys, context.clock, context.settings,
                              start_method="fork")
    done = rotation.rotate_kinds(
        context.store, context.keys, context.responder_keys, context.clock, kinds,
        algorithm=(KeyAlgorithm.parse(args.algorithm, rsa_bits=context.settings.ca.key_size)
                   if args.algorithm else None),
        years=context.settings.ca.validity_years,
        responder_policy=responder_policy(context.settings),
        publish_crls=lambda kind: len(generator.run(kind=kind)),
        operator=args.operator, reason=args.reason)
    for warning in done.warnings:
        print(f"jpki ca rotate: warning: {warning}", file=sys.stderr)
    print_json({
        "created": [{
            "kind": r.new.kind.value, "generation": r.new.generation, "key_id": r.new.key_id,
            "algorithm": r.new.algorithm.name,
            "fingerprint": r.new.fingerprint, "previous": r.old.label,
            "links": [{"direction": link.direction,
                       "serial": format(link.certificate.serial_number, "x")}
                      for link in r.links],
        } for r in done.rotations],
        "responder_certificates": [format(r.certificate.serial_number, "x")
                                   for r in done.responders],
        "crls_published": done.crls_published, "warnings": done.warnings})
    return 0


def cmd_retire(context: Context, args: argparse.Namespace) -> int:
    kind = CertKind.from_short(args.kind)
    ca = rotation.retire(context.store, context.keys, context.responder_keys, context.clock,
                         kind, args.generation, operator=args.operator, reason=args.reason)
    print_json({"kind": kind.value, "generation": ca.generation, "retired": True,
                "fingerprint": ca.fingerprint, "archived_key": ca.key_file})
    return 0


def cmd_status(context: Context, args: argparse.Namespace) -> int:
    items = [status.to_json() for status in ca_status.generations(context.store,
                                                                 context.clock())]
    links = [{"kind": link.kind.value, "direction": link.direction,
              "serial": format(link.certificate.serial_number, "x"),
              "not_after": link.certificate.not_valid_after_utc.isoformat()}
             for link in rotation.links(context.store)]
    if args.format == "table":
        _print_table(items, links)
    else:
        print_json({"generations": items, "links": links})
    return 0


def _print_table(items: list[dict[str, Any]], links: list[dict[str, Any]]) -> None:
    columns: list[tuple[str, Callable[[dict[str, Any]], str]]]
    columns = [("CA", lambda g: f"{g['kind']} g{g['generation']}{' *' if g['current'] else ''}"),
               ("STATE", lambda g: g["state"]),
               ("FINGERPRINT", lambda g: g["fingerprint"][:23] + "…"),
               ("NOT AFTER", lambda g: g["not_after"][:10]),
               ("LIVE", lambda g: str(g["live_certificates"])),
               ("UNEXPIRED", lambda g: str(g["unexpired_certificates"])),
               ("RESPONDER UNTIL", lambda g: (g["responder_not_after"] or "none")[:16])]
    rows = [[title for title, _ in columns]] + [[cell(g) for _, cell in columns] for g in items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for row in rows:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True))
              .rstrip())
    print(f"(* current generation; {len(links)} link certificate(s); --format json for all"
          " fields)")


def cmd_compromise(context: Context, args: argparse.Namespace) -> int:
    serials = revoke_generation(context.store, context.clock, CertKind.from_short(args.kind),
                                args.generation)
    print_json({"kind": CertKind.from_short(args.kind).value, "generation": args.generation,
                "reason": "cACompromise", "revoked": len(serials)})
    return 0
