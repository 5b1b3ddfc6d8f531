"""OCSP operator commands: verifiers, responder certificates and their rotation."""

from __future__ import annotations

import argparse
from pathlib import Path

from ca import responders
from ca.kinds import CertKind
from jpki.commands.ca import add_operator_options, cli_actor
from jpki.context import Context
from jpki.output import print_json
from jpki.wiring import responder_policy
from ocsp import auth
from registry import verifiers
from registry.errors import InvalidInput


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             parent: argparse.ArgumentParser) -> None:
    ver = subparsers.add_parser("verifier", parents=[parent],
                                help="registered verifiers (who may query OCSP)")
    ver_sub = ver.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = ver_sub.add_parser(
        "add", parents=[parent], help="register a verifier; prints its bearer token once",
        description="Print {\"verifier\": NAME, \"token\": TOKEN}; only a hash is stored, so"
        " the token cannot be shown again.",
    )
    add.add_argument("name")
    add.add_argument("--signer-cert", type=Path, metavar="PEM",
                     help="a certificate whose signed OCSP requests identify this verifier")
    add.set_defaults(handler=cmd_verifier_add)
    signer = ver_sub.add_parser("add-signer", parents=[parent],
                                help="register a request-signing certificate for a verifier")
    signer.add_argument("name")
    signer.add_argument("cert", type=Path, metavar="PEM")
    signer.set_defaults(handler=cmd_verifier_add_signer)
    lst = ver_sub.add_parser("list", parents=[parent], help="list verifiers")
    lst.set_defaults(handler=cmd_verifier_list)
    rotate_token = ver_sub.add_parser(
        "rotate-token", parents=[parent], help="replace a verifier's token; prints it once",
        description="Print {\"verifier\": NAME, \"token\": TOKEN}. A running daemon refuses"
        " the old token from its next request on (OCSP, linkage, CRL downloads).",
    )
    rotate_token.add_argument("name")
    add_operator_options(rotate_token, "token rotation")
    rotate_token.set_defaults(handler=cmd_verifier_rotate_token)
    revoke = ver_sub.add_parser(
        "revoke", parents=[parent],
        help="withdraw a verifier: its token and request-signing certificates stop working",
        description="A running daemon refuses the verifier from its next request on. The"
        " verifier's ledger rows stay; its name cannot be registered again.",
    )
    revoke.add_argument("name")
    add_operator_options(revoke, "verifier withdrawn")
    revoke.set_defaults(handler=cmd_verifier_revoke)

    ocsp = subparsers.add_parser("ocsp", parents=[parent], help="OCSP responder certificates")
    ocsp_sub = ocsp.add_subparsers(dest="action", required=True, metavar="ACTION")
    renew = ocsp_sub.add_parser(
        "renew-signers", parents=[parent],
        help="issue responder certificates that are missing or expire within renew_before_days",
        description="Needs the CA passphrase. Run from cron where the daemon cannot read the CA"
        " key; the daemon picks new signers up on its next request.",
    )
    renew.add_argument("--force", action="store_true", help="renew every generation now")
    add_operator_options(renew, "renewal before expiry")
    renew.set_defaults(handler=cmd_renew_signers)

    rotate = ocsp_sub.add_parser(
        "rotate", parents=[parent],
        help="new responder key and certificate for every live CA generation (of --kind)",
        description="Needs the CA passphrase (or token). A running daemon switches to the new"
        " signers on its next request and re-signs its cached answers with them; answers"
        " signed by the old key stay valid until they are replaced.",
    )
    rotate.add_argument("--kind", choices=["signature", "authentication", "sign", "auth", "all"],
                        default="all")
    add_operator_options(rotate, "responder key rotation")
    rotate.set_defaults(handler=cmd_rotate)


def _read_cert(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", field="signer_cert") from None


def cmd_verifier_add(context: Context, args: argparse.Namespace) -> int:
    certificate = None
    if args.signer_cert:
        certificate = verifiers.load_certificate(_read_cert(args.signer_cert))
    with context.store.transaction():
        verifier, token = verifiers.add(context.store, context.clock, args.name,
                                        actor=cli_actor(args))
        if certificate is not None:
            auth.register_signer(context.store, context.clock, args.name, certificate,
                                 actor=cli_actor(args))
    print_json({"verifier": verifier.name, "token": token})
    return 0


def cmd_verifier_add_signer(context: Context, args: argparse.Namespace) -> int:
    certificate = verifiers.load_certificate(_read_cert(args.cert))
    digest = auth.register_signer(context.store, context.clock, args.name, certificate,
                                  actor=cli_actor(args))
    print_json({"verifier": args.name, "signer_fingerprint": digest})
    return 0


def cmd_verifier_list(context: Context, args: argparse.Namespace) -> int:
    print_json({"verifiers": verifiers.list_all(context.store)})
    return 0


def cmd_verifier_rotate_token(context: Context, args: argparse.Namespace) -> int:
    token = verifiers.rotate_token(context.store, context.clock, args.name,
                                   actor=args.operator, reason=args.reason)
    print_json({"verifier": args.name, "token": token})
    return 0


def cmd_verifier_revoke(context: Context, args: argparse.Namespace) -> int:
    verifiers.revoke(context.store, context.clock, args.name, actor=args.operator,
                     reason=args.reason)
    print_json({"verifier": args.name, "revoked": True})
    return 0


def cmd_renew_signers(context: Context, args: argparse.Namespace) -> int:
    issued = responders.ensure(context.store, context.keys, context.responder_keys,
                               context.clock, responder_policy(context.settings), force=args.force,
                               actor=args.operator, reason=args.reason if args.force else None)
    print_json({"issued": _issued(issued)})
    return 0


def cmd_rotate(context: Context, args: argparse.Namespace) -> int:
    kinds = None if args.kind == "all" else frozenset({CertKind.from_short(args.kind)})
    issued = responders.ensure(context.store, context.keys, context.responder_keys,
                               context.clock, responder_policy(context.settings), force=True,
                               actor=args.operator, reason=args.reason, kinds=kinds)
    print_json({"issued": _issued(issued)})
    return 0


def _issued(records: list[responders.ResponderRecord]) -> list[dict[str, object]]:
    return [{"ca_id": r.ca_id, "serial": format(r.certificate.serial_number, "x"),
             "fingerprint": r.fingerprint, "not_after": r.not_after.isoformat()}
            for r in records]
