"""OCSP operator commands: verifiers, responder certificates, CA rotation."""

from __future__ import annotations

import argparse
from pathlib import Path

from ca import authority, responders
from ca.kinds import CertKind
from jpki.context import Context
from jpki.output import print_json
from ocsp.web import responder_keys, responder_policy
from registry import verifiers
from registry.errors import InvalidInput
from revocation.compromise import revoke_generation


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
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

    ocsp = subparsers.add_parser("ocsp", parents=[parent], help="OCSP responder certificates")
    ocsp_sub = ocsp.add_subparsers(dest="action", required=True, metavar="ACTION")
    renew = ocsp_sub.add_parser(
        "renew-signers", parents=[parent],
        help="issue responder certificates that are missing or expire within renew_before_days",
        description="Needs the CA passphrase. Run from cron where the daemon cannot read the CA"
        " key; the daemon picks new signers up on its next request.",
    )
    renew.add_argument("--force", action="store_true", help="renew every generation now")
    renew.set_defaults(handler=cmd_renew_signers)

    ca = subparsers.add_parser("ca", parents=[parent], help="CA generations")
    ca_sub = ca.add_subparsers(dest="action", required=True, metavar="ACTION")
    rotate = ca_sub.add_parser(
        "rotate", parents=[parent], help="create the next CA generation (new key, same DN)",
        description="New issuance uses the newest generation; older ones stay live until they"
        " expire. A responder certificate is issued for the new generation.",
    )
    rotate.add_argument("--kind", required=True,
                        choices=["signature", "authentication", "sign", "auth", "all"])
    rotate.set_defaults(handler=cmd_ca_rotate)
    compromise = ca_sub.add_parser(
        "compromise", parents=[parent],
        help="revoke every certificate of a compromised CA generation (cACompromise)",
        description="Revokes, in one transaction, every unrevoked certificate issued under the"
        " generation. Rotate first (`jpki ca rotate`) if it is the newest generation, so that"
        " new issuance moves to a fresh key.",
    )
    compromise.add_argument("--kind", required=True,
                            choices=["signature", "authentication", "sign", "auth"])
    compromise.add_argument("--generation", required=True, type=int)
    compromise.add_argument("--confirm", action="store_true", required=True,
                            help="required: this cannot be undone")
    compromise.set_defaults(handler=cmd_ca_compromise)


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
        verifier, token = verifiers.add(context.store, context.clock, args.name)
        if certificate is not None:
            verifiers.add_signer(context.store, context.clock, args.name, certificate)
    print_json({"verifier": verifier.name, "token": token})
    return 0


def cmd_verifier_add_signer(context: Context, args: argparse.Namespace) -> int:
    certificate = verifiers.load_certificate(_read_cert(args.cert))
    digest = verifiers.add_signer(context.store, context.clock, args.name, certificate)
    print_json({"verifier": args.name, "signer_fingerprint": digest})
    return 0


def cmd_verifier_list(context: Context, args: argparse.Namespace) -> int:
    print_json({"verifiers": verifiers.list_all(context.store)})
    return 0


def cmd_renew_signers(context: Context, args: argparse.Namespace) -> int:
    issued = responders.ensure(context.store, context.keys, responder_keys(context),
                               context.clock, responder_policy(context), force=args.force)
    print_json({"issued": [{"ca_id": r.ca_id, "serial": format(r.certificate.serial_number, "x"),
                            "not_after": r.not_after.isoformat()} for r in issued]})
    return 0


def cmd_ca_rotate(context: Context, args: argparse.Namespace) -> int:
    kinds = list(CertKind) if args.kind == "all" else [CertKind.from_short(args.kind)]
    created = []
    for kind in kinds:
        generation = authority.create_generation(
            context.store, context.keys, context.clock, kind, key_size=context.settings.ca.key_size,
            years=context.settings.ca.validity_years)
        created.append({"kind": kind.value, "generation": generation.generation,
                        "key_id": generation.key_id})
    responders.ensure(context.store, context.keys, responder_keys(context), context.clock,
                      responder_policy(context))
    print_json({"created": created})
    return 0


def cmd_ca_compromise(context: Context, args: argparse.Namespace) -> int:
    serials = revoke_generation(context.store, context.clock, CertKind.from_short(args.kind),
                                args.generation)
    print_json({"kind": CertKind.from_short(args.kind).value, "generation": args.generation,
                "reason": "cACompromise", "revoked": len(serials)})
    return 0
