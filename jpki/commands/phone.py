"""Smartphone certificate commands: phone issue (README, "Smartphone certificates")."""

from __future__ import annotations

import argparse
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from ca.kinds import CertKind
from ca.phone import PhoneRequest, PossessionProof
from jpki.commands.ca import cli_actor
from jpki.context import Context
from jpki.output import print_json
from registry import phones
from registry.errors import InvalidInput


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             parent: argparse.ArgumentParser) -> None:
    phone = subparsers.add_parser("phone", parents=[parent],
                                  help="smartphone certificates (a pair per device kind)")
    phone_sub = phone.add_subparsers(dest="action", required=True, metavar="ACTION")
    issue = phone_sub.add_parser(
        "issue", parents=[parent], help="issue a smartphone pair on the card's proof",
        description="Generate the phone's two key pairs, sign their public keys with the card"
        " signature key (the proof of possession), and issue the pair if the card signature"
        " certificate is valid. A new pair for the same device kind supersedes the old one.")
    issue.add_argument("--resident-id", required=True)
    issue.add_argument("--device", required=True, choices=list(phones.DEVICES))
    issue.add_argument("--card-key", required=True, type=Path, metavar="CARD.p12",
                       help="the card signature PKCS#12 file (`jpki issue` wrote it)")
    issue.add_argument("--card-pin", required=True, help="the card signature PIN")
    issue.add_argument("--out", required=True, type=Path, metavar="DIR")
    issue.add_argument("--sign-password", required=True,
                       help="the phone signature password: 6-16 letters and digits")
    issue.add_argument("--auth-pin", required=True, help="the phone authentication PIN: 4 digits")
    issue.set_defaults(handler=cmd_phone_issue)


def _card_credentials(path: Path, pin: str
                      ) -> tuple[rsa.RSAPrivateKey, pkcs12.PKCS12KeyAndCertificates]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", field="card_key") from None
    try:
        bundle = pkcs12.load_pkcs12(data, pin.encode("utf-8"))
    except ValueError:
        raise InvalidInput("wrong PIN or not a PKCS#12 file", field="card_pin") from None
    if not isinstance(bundle.key, rsa.RSAPrivateKey) or bundle.cert is None:
        raise InvalidInput("holds no RSA key and certificate", field="card_key")
    return bundle.key, bundle


def cmd_phone_issue(context: Context, args: argparse.Namespace) -> int:
    issuer = context.phone_issuer
    phones.check_device(args.device)
    card_key, bundle = _card_credentials(args.card_key, args.card_pin)
    assert bundle.cert is not None
    # The phone's keys: made here, standing in for the phone's keystore.
    keys = {kind: rsa.generate_private_key(65537, issuer.policy.key_size) for kind in CertKind}
    proof = PossessionProof.make(
        card_key=card_key, card_certificate=bundle.cert.certificate,
        resident_id=args.resident_id, device=args.device,
        public_keys={kind: key.public_key() for kind, key in keys.items()},
        signed_at=context.clock())
    pair = issuer.issue(PhoneRequest(
        resident_id=args.resident_id, device=args.device, out_dir=args.out,
        sign_password=args.sign_password, auth_pin=args.auth_pin, keys=keys, proof=proof,
        actor=cli_actor(args)))
    result = pair.to_json()
    result["device"] = args.device
    print_json(result)
    return 0
