"""Delegated OCSP responder certificates (RFC 6960 §4.2.2.2), one per CA generation.

This module signs with the CA key, so it lives in `ca/`; the responder (`ocsp/`) only loads the
responder keys and certificates. Profile: EKU id-kp-OCSPSigning (the delegation itself),
keyUsage digitalSignature, id-pkix-ocsp-nocheck (§4.2.2.2.1: verifiers need not check the
responder's own status, which is why the validity is short, 30 days by default), AKI/SKI.

Responder keys live in the configured key backend (ca/keybackend.py): as files they are
encrypted under a *separate* passphrase (`ocsp.passphrase_env`, else the 0600 file
`ocsp-passphrase`), so the internet-facing responder never needs the CA passphrase to sign; on
PKCS#11 they are token objects labelled `ocsp/...`. Renewal does need the CA key:
`jpki ocsp renew-signers` (cron) and the daemon at start-up and periodically when the CA
passphrase is available to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca import authority, lint
from ca.authority import CAGeneration
from ca.keybackend import KeyAlgorithm, KeyBackend, PrivateKey, PublicKey, spki_fingerprint
from ca.kinds import CertKind
from registry import audit, ocsp_signers
from registry.clock import Clock, epoch
from registry.store import Store


@dataclass(frozen=True)
class ResponderCertificatePolicy:
    validity_days: int = 30
    renew_before_days: int = 7
    key_size: int = 2048  # responders of RSA generations; a P-384 generation's is P-384

    def algorithm_for(self, ca: CAGeneration) -> KeyAlgorithm:
        """The responder key's algorithm: the CA's family, so a P-384 generation's answers
        are signed ecdsa-with-SHA384 by a P-384 key (issue 18: no weaker link in the chain
        than the CA itself), an RSA generation's by RSA of `key_size`."""
        if ca.algorithm.family == "ec":
            return ca.algorithm
        return KeyAlgorithm.rsa(self.key_size)


@dataclass(frozen=True)
class ResponderRecord:
    id: int
    ca_id: int
    certificate: x509.Certificate
    key_file: str

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def fingerprint(self) -> str:
        return spki_fingerprint(self.certificate.public_key())


def responder_name(ca: CAGeneration) -> x509.Name:
    return x509.Name(
        [
            *list(ca.certificate.subject)[:3],
            x509.NameAttribute(NameOID.COMMON_NAME, f"OCSP Responder {ca.label}"),
        ]
    )


def responder_certificate_builder(ca: CAGeneration, public_key: PublicKey,
                                  now: datetime, days: int, serial: int | None = None
                                  ) -> x509.CertificateBuilder:
    """The responder certificate of `public_key` under `ca`, unsigned (ca/lint.py signs it)."""
    not_before = now.replace(microsecond=0) - timedelta(minutes=5)
    not_after = min(not_before + timedelta(days=days), ca.not_after)
    return (
        x509.CertificateBuilder()
        .subject_name(responder_name(ca))
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.AuthorityKeyIdentifier(bytes.fromhex(ca.key_id), None, None),
                       critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def build_responder_certificate(ca: CAGeneration, ca_key: PrivateKey, public_key: PublicKey,
                                now: datetime, days: int, serial: int | None = None
                                ) -> x509.Certificate:
    return lint.sign(responder_certificate_builder(ca, public_key, now, days, serial), ca_key,
                     f"OCSP responder certificate of {ca.label}")


def _record(row: dict[str, Any]) -> ResponderRecord:
    return ResponderRecord(row["id"], row["ca_id"], x509.load_der_x509_certificate(row["cert_der"]),
                           row["key_file"])


def latest(store: Store, ca_id: int) -> ResponderRecord | None:
    row = ocsp_signers.newest_row(store, ca_id)
    return _record(row) if row else None


def issue(store: Store, ca_keys: KeyBackend, responder_keys: KeyBackend, clock: Clock,
          ca: CAGeneration, policy: ResponderCertificatePolicy, *, actor: str = "operator",
          reason: str = "renewal") -> ResponderRecord:
    """A new key and certificate for the responder of one CA generation."""
    previous = latest(store, ca.id)
    ca_key = ca.private_key(ca_keys)  # first: no responder key is made for a locked CA key
    serial_number = x509.random_serial_number()
    serial = format(serial_number, "x")
    # Lint before the responder key exists: the backend writes a key as it makes it.
    algorithm = policy.algorithm_for(ca)
    stand_in = lint.stand_in_key(algorithm).public_key()
    lint.rehearse(responder_certificate_builder(ca, stand_in, clock(), policy.validity_days,
                                                serial_number),
                  KeyAlgorithm.of(ca_key), f"OCSP responder certificate of {ca.label}")
    key_file, key = responder_keys.generate(f"responder-{ca.label}-{serial}", algorithm)
    now = clock()
    certificate = build_responder_certificate(ca, ca_key, key.public_key(), now,
                                              policy.validity_days, serial_number)
    with store.transaction():
        signer_id = ocsp_signers.insert(
            store, ca_id=ca.id, serial=serial, not_before=epoch(certificate.not_valid_before_utc),
            not_after=epoch(certificate.not_valid_after_utc), key_file=key_file,
            cert_der=certificate.public_bytes(Encoding.DER), created_at=epoch(now))
        audit.append(store, clock, actor=actor, action="ocsp.signer.issue", serial=serial,
                     detail={"ca": ca.label, "reason": reason,
                             "old_key": previous.fingerprint if previous else None,
                             "new_key": spki_fingerprint(key.public_key()),
                             "not_after": certificate.not_valid_after_utc.isoformat()})
    return ResponderRecord(signer_id, ca.id, certificate, key_file)


def needs_renewal(not_after: datetime | None, now: datetime,
                  policy: ResponderCertificatePolicy) -> bool:
    """Renew `renew_before_days` ahead, so nextUpdate (capped by notAfter) never shrinks to 0."""
    return not_after is None or not_after - now <= timedelta(days=policy.renew_before_days)


def ensure(store: Store, ca_keys: KeyBackend, responder_keys: KeyBackend, clock: Clock,
           policy: ResponderCertificatePolicy, *, force: bool = False, actor: str = "operator",
           kinds: frozenset[CertKind] | None = None, reason: str | None = None
           ) -> list[ResponderRecord]:
    """Issue a responder certificate for every live CA generation that lacks a fresh one.

    Live: not past its notAfter and not retired; a retired generation's certificates have
    all expired, so nobody needs its answers signed any more.
    """
    responder_keys.ensure_passphrase()
    issued = []
    now = clock()
    for ca in authority.generations(store, include_retired=False):
        if ca.not_after <= now or (kinds is not None and ca.kind not in kinds):
            continue
        record = latest(store, ca.id)
        if force or needs_renewal(record.not_after if record else None, now, policy):
            why = reason or ("first responder certificate" if record is None
                             else "rotation" if force else "renewal before expiry")
            issued.append(issue(store, ca_keys, responder_keys, clock, ca, policy, actor=actor,
                                reason=why))
    return issued
