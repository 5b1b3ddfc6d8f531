"""Smartphone certificates: a signature + authentication pair per device kind, on a card's proof.

The resident proves possession of the card's signature key by signing, with it, a statement
naming the phone's two new public keys (`PossessionProof`); the CA checks that proof against
the registry's record of a *valid* card signature certificate of that resident before it
issues (README, "Smartphone certificates", the decisions table). The pair has the card
profile plus one certificate policy that marks it as a smartphone certificate of a device
kind, and is capped by the card signature certificate's notAfter. At most one pair per
resident and device kind: a new issue supersedes (RFC 5280 §5.3.1, superseded) the old pair
and links it old -> new like a card renewal.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ObjectIdentifier

from ca import authority, credentials, validity
from ca.issuance import (
    IssuancePolicy,
    IssuedCertificate,
    IssuedPair,
    build_credential,
    check_resident_id,
)
from ca.keybackend import KeyBackend
from ca.kinds import CertKind
from ca.profile import LeafRequest
from registry import audit, certificates, municipalities, phones, residents
from registry.certificates import serial_hex
from registry.clock import Clock, epoch, from_epoch
from registry.errors import Conflict, InvalidInput, JPKIError
from registry.reasons import Reason
from registry.store import Store

log = logging.getLogger("jpki.phone")

# The smartphone mark: a second certificate policy under the arc the card policies of this
# authority already use (1.2.392.200149.8.5.1, kinds.py), sub-arc .9, which J-LIS has not
# published: an assumption of this project (README, "Smartphone certificates"). A UUID arc
# (2.25.<UUID>, ITU-T X.667) was tried and refused by the lint before signing: pkilint, like
# many X.509 decoders, rejects OID arcs above 32 bits.
SMARTPHONE_ARC = "1.2.392.200149.8.5.1.9"
SMARTPHONE_POLICY = {
    "android": ObjectIdentifier(SMARTPHONE_ARC + ".1"),
    "iphone": ObjectIdentifier(SMARTPHONE_ARC + ".2"),
}
PROOF_PURPOSE = "jpki-phone-issue/v1"
PROOF_MAX_AGE = timedelta(minutes=10)


class ProofRefused(JPKIError):
    """The card proof does not hold: 403 at an HTTP edge, exit 2 on the CLI."""

    http_status = 403
    exit_code = 2


def spki_sha256(public_key: rsa.RSAPublicKey) -> str:
    der = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class PossessionProof:
    """The card signature key's signature over the phone's new public keys.

    `statement` is canonical JSON (sorted keys, no spaces, UTF-8): purpose, resident_id,
    device, card_serial, signature_spki_sha256, authentication_spki_sha256, signed_at (ISO
    8601 with offset). `signature` is RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §8.2) by the
    card signature key; it stands in for the card's own signing (the card signs the same way).
    """

    statement: bytes
    signature: bytes

    @classmethod
    def make(cls, *, card_key: rsa.RSAPrivateKey, card_certificate: x509.Certificate,
             resident_id: str, device: str, public_keys: dict[CertKind, rsa.RSAPublicKey],
             signed_at: datetime) -> PossessionProof:
        body = {
            "purpose": PROOF_PURPOSE, "resident_id": resident_id, "device": device,
            "card_serial": serial_hex(card_certificate.serial_number),
            "signature_spki_sha256": spki_sha256(public_keys[CertKind.SIGNATURE]),
            "authentication_spki_sha256": spki_sha256(public_keys[CertKind.AUTHENTICATION]),
            "signed_at": signed_at.isoformat(),
        }
        statement = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return cls(statement, card_key.sign(statement, padding.PKCS1v15(), hashes.SHA256()))

    def body(self) -> dict[str, Any]:
        try:
            value = json.loads(self.statement)
        except (ValueError, UnicodeError):
            raise InvalidInput("is not a JSON statement", field="proof") from None
        if not isinstance(value, dict) or value.get("purpose") != PROOF_PURPOSE:
            raise InvalidInput(f"is not a {PROOF_PURPOSE} statement", field="proof")
        return value


@dataclass(frozen=True)
class PhoneRequest:
    resident_id: str
    device: str
    out_dir: Path
    sign_password: str
    auth_pin: str
    keys: dict[CertKind, rsa.RSAPrivateKey]
    proof: PossessionProof
    actor: str = field(default_factory=getpass.getuser)


class PhoneIssuer:
    """Issues smartphone pairs under the current generation of each CA (the card's CAs)."""

    def __init__(self, store: Store, keys: KeyBackend, clock: Clock,
                 policy: IssuancePolicy) -> None:
        self.store = store
        self.keys = keys
        self.clock = clock
        self.policy = policy

    def verify_proof(self, request: PhoneRequest) -> certificates.CertificateRecord:
        """The card signature certificate the proof stands on; refused unless every check holds.

        Order: statement names this resident, device and these keys; the card certificate is
        in the registry, is a card (not a phone) signature certificate of this resident, is
        good now (not revoked, not expired); its public key verifies the signature; the
        statement is fresh.
        """
        body = request.proof.body()
        if body.get("resident_id") != request.resident_id:
            raise ProofRefused("names another resident", field="proof")
        if body.get("device") != request.device:
            raise ProofRefused("names another device kind", field="proof")
        for kind in CertKind:
            if body.get(f"{kind.value}_spki_sha256") != spki_sha256(
                    request.keys[kind].public_key()):
                raise ProofRefused(f"does not name the phone's {kind.value} key", field="proof")
        card = certificates.get(self.store, certificates.normalise_serial(
            str(body.get("card_serial", ""))))
        if card is None or card.kind is not CertKind.SIGNATURE \
                or phones.link(self.store, card.serial) is not None:
            raise ProofRefused("is not made with a card signature certificate of this"
                               " authority", field="card_key")
        if card.resident_id != request.resident_id:
            raise ProofRefused("is another resident's card certificate", field="card_key")
        now = self.clock()
        status = card.status_at(epoch(now))
        if status != "good":
            raise ProofRefused(f"card signature certificate {card.serial} is {status}",
                               field="card_key")
        public_key = x509.load_der_x509_certificate(card.der).public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise ProofRefused("card key is not RSA", field="card_key")
        try:
            public_key.verify(request.proof.signature, request.proof.statement,
                              padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise ProofRefused("signature does not verify with the card signature"
                               " certificate", field="card_key") from None
        try:
            signed_at = datetime.fromisoformat(str(body.get("signed_at")))
        except ValueError:
            raise InvalidInput("signed_at must be ISO 8601", field="proof") from None
        if signed_at.tzinfo is None or not (
                now - PROOF_MAX_AGE <= signed_at <= now + timedelta(minutes=1)):
            raise ProofRefused("is not fresh (signed more than 10 minutes ago or in the"
                               " future)", field="proof")
        return card

    def issue(self, request: PhoneRequest) -> IssuedPair:
        check_resident_id(request.resident_id)
        phones.check_device(request.device)
        credentials.check_pin(CertKind.SIGNATURE, request.sign_password)
        credentials.check_pin(CertKind.AUTHENTICATION, request.auth_pin)
        out_dir = credentials.check_out_dir(request.out_dir)
        card = self.verify_proof(request)
        facts = residents.require(self.store, request.resident_id)
        municipality = municipalities.check_address(self.store, facts)
        now = self.clock()
        built: dict[CertKind, tuple[x509.Certificate, str, bytes, authority.CAGeneration,
                                    str]] = {}
        for kind in (CertKind.SIGNATURE, CertKind.AUTHENTICATION):
            ca = authority.current(self.store, kind)
            plan = validity.plan(facts.dob, now, birthdays=self.policy.birthdays,
                                 ca_not_after=ca.not_after)
            # Capped by the card signature certificate (issue 18): the phone stands on it.
            not_after = min(plan.authentication_not_after, from_epoch(card.not_after))
            key = request.keys[kind]
            pin = request.sign_password if kind is CertKind.SIGNATURE else request.auth_pin
            leaf = build_credential(
                self.store, self.keys, self.policy, ca, key,
                LeafRequest(kind, key.public_key(), municipality, plan.not_before, not_after,
                            facts if kind is CertKind.SIGNATURE else None,
                            extra_policies=(SMARTPHONE_POLICY[request.device],)),
                pin=pin, name_prefix=f"{request.device}-")
            built[kind] = (leaf.certificate, leaf.cn, leaf.pkcs12, ca, leaf.partition)
        return self._commit(request, card, built, out_dir)

    def _commit(self, request: PhoneRequest, card: certificates.CertificateRecord,
                built: dict[CertKind, tuple[x509.Certificate, str, bytes,
                                            authority.CAGeneration, str]],
                out_dir: Path) -> IssuedPair:
        issued: dict[CertKind, IssuedCertificate] = {}
        written: list[Path] = []
        superseded: list[str] = []
        now = epoch(self.clock())
        try:
            with self.store.transaction():
                # Re-checked under the write lock: a revocation may have landed meanwhile.
                if certificates.require(self.store, card.serial).status_at(now) != "good":
                    raise ProofRefused(f"card signature certificate {card.serial} is no longer"
                                       " valid", field="card_key")
                previous = phones.newest_without_successor(self.store, request.resident_id,
                                                           request.device)
                for kind, (certificate, cn, _p12, ca, partition) in built.items():
                    serial = serial_hex(certificate.serial_number)
                    certificates.insert(
                        self.store, serial=serial, kind=kind, ca_id=ca.id,
                        resident_id=request.resident_id, subject_cn=cn, partition=partition,
                        not_before=epoch(certificate.not_valid_before_utc),
                        not_after=epoch(certificate.not_valid_after_utc), issued_at=now,
                        der=certificate.public_bytes(Encoding.DER))
                    phones.record(self.store, serial=serial, resident_id=request.resident_id,
                                  device=request.device, card_serial=card.serial,
                                  issued_at=now)
                    audit.append(self.store, self.clock, actor=request.actor,
                                 action="certificate.issue", serial=serial,
                                 detail={"kind": kind.value, "ca": ca.label,
                                         "partition": partition, "device": request.device,
                                         "card_serial": card.serial})
                    issued[kind] = IssuedCertificate(
                        kind, serial, credentials.paths_for(out_dir, kind, serial))
                for old in previous:
                    record = certificates.require(self.store, old)
                    if record.status_at(now) == "good":
                        certificates.revoke(self.store, self.clock, old, Reason.superseded,
                                            actor=request.actor,
                                            cause=f"new {request.device} pair")
                        superseded.append(old)
                    certificates.link_successor(self.store, self.clock, old,
                                                issued[record.kind].serial, record.kind)
                certificates.link_pair(self.store, self.clock, request.resident_id,
                                       issued[CertKind.SIGNATURE].serial,
                                       issued[CertKind.AUTHENTICATION].serial)
                for kind, (certificate, _cn, pkcs12_file, _ca, _partition) in built.items():
                    files = issued[kind].files
                    credentials.write(files, pkcs12_file=pkcs12_file, certificate=certificate)
                    written += [files.key, files.certificate]
        except FileExistsError as exc:
            _remove(written)
            raise Conflict(f"{exc.filename} already exists", field="out") from None
        except BaseException:
            _remove(written)
            raise
        log.info("issued %s pair sig=%s auth=%s on card=%s", request.device,
                 issued[CertKind.SIGNATURE].serial, issued[CertKind.AUTHENTICATION].serial,
                 card.serial)
        return IssuedPair(request.resident_id, issued, superseded)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
