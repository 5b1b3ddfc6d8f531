"""The two CAs and their generations.

Every ~4 years a new CA key is created with the *same* DN and a 10-year validity, so several
generations are live at once; anything that picks a CA picks it by key (key id), never by name.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca import lint
from ca.keybackend import KeyAlgorithm, KeyBackend, PrivateKey, PublicKey, spki_fingerprint
from ca.kinds import CertKind, ca_name
from registry import audit
from registry import generations as registry_generations
from registry.clock import Clock, epoch, from_epoch
from registry.errors import JPKIError, NotFound, NotInitialised
from registry.store import Store


@dataclass(frozen=True)
class CAGeneration:
    id: int
    kind: CertKind
    generation: int
    certificate: x509.Certificate
    key_id: str
    key_file: str
    retired_at: int | None = None

    @property
    def retired(self) -> bool:
        return self.retired_at is not None

    @property
    def fingerprint(self) -> str:
        return spki_fingerprint(self.certificate.public_key())

    @property
    def algorithm(self) -> KeyAlgorithm:
        """The generation's key algorithm (rsa-2048, ecdsa-p384): it signs with its scheme."""
        return KeyAlgorithm.of(self.certificate.public_key())

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    @property
    def label(self) -> str:
        return f"{self.kind.short}-g{self.generation}"

    def private_key(self, keys: KeyBackend) -> PrivateKey:
        if self.retired:
            raise JPKIError(f"CA generation {self.label} is retired; its key is archived")
        return keys.load(self.key_file)


# Every CA certificate, self-signed or link (RFC 5280 §4.2.1.9, §4.2.1.3: both critical).
CA_CONSTRAINTS = x509.BasicConstraints(ca=True, path_length=None)
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)


def key_id(public_key: PublicKey) -> bytes:
    """RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bit string."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest


def _add_years(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


def ca_certificate_builder(kind: CertKind, public_key: PublicKey, now: datetime,
                           years: int) -> x509.CertificateBuilder:
    """The self-signed CA certificate of `public_key`, unsigned (ca/lint.py signs it)."""
    name = ca_name(kind)
    not_before = now.replace(microsecond=0) - timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(_add_years(not_before, years))
        .add_extension(CA_CONSTRAINTS, critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def build_ca_certificate(kind: CertKind, key: PrivateKey, now: datetime,
                         years: int) -> x509.Certificate:
    def builder_for(public_key: PublicKey) -> x509.CertificateBuilder:
        return ca_certificate_builder(kind, public_key, now, years)

    return lint.sign_self_signed(builder_for, key, f"{kind.value} CA certificate")


def _from_row(row: dict[str, Any]) -> CAGeneration:
    return CAGeneration(
        id=row["id"],
        kind=CertKind(row["kind"]),
        generation=row["generation"],
        certificate=x509.load_der_x509_certificate(row["cert_der"]),
        key_id=row["key_id"],
        key_file=row["key_file"],
        retired_at=row.get("retired_at"),
    )


def generations(store: Store, kind: CertKind | None = None, *,
                include_retired: bool = True) -> list[CAGeneration]:
    """Every generation, or with include_retired=False those that still sign CRLs and
    responder certificates (retiring is `jpki ca retire`, once all their certificates expired)."""
    return [_from_row(row) for row in
            registry_generations.rows(store, kind.value if kind else None,
                                      include_retired=include_retired)]


def by_id(store: Store, ca_id: int) -> CAGeneration:
    row = registry_generations.row_by_id(store, ca_id)
    if row is None:
        raise NotInitialised(f"CA generation {ca_id} is not in the registry")
    return _from_row(row)


def by_generation(store: Store, kind: CertKind, generation: int) -> CAGeneration:
    row = registry_generations.row_by_generation(store, kind.value, generation)
    if row is None:
        raise NotFound(f"no {kind.value} CA generation {generation}", field="generation")
    return _from_row(row)


def current(store: Store, kind: CertKind) -> CAGeneration:
    """The newest generation of a kind: new certificates are issued under it."""
    row = registry_generations.newest_row(store, kind.value)
    if row is None:
        raise NotInitialised(f"the {kind.value} CA does not exist yet: run `jpki init`")
    return _from_row(row)


def create_generation(store: Store, keys: KeyBackend, clock: Clock, kind: CertKind, *,
                      algorithm: KeyAlgorithm, years: int = 10,
                      actor: str = "operator", reason: str = "initial key") -> CAGeneration:
    """Create the next generation of a CA: new key, self-signed certificate, registry row.

    Called alone (`jpki init`), the key is generated (possibly slowly, on a token) before the
    write lock is taken; `rotation.rotate` calls it inside its own transaction, so that the
    generation and its link certificates commit together. Either way the unique
    (kind, generation) index refuses a concurrent rotation of the same CA.
    """
    generation = registry_generations.last_generation(store, kind.value) + 1
    previous = current(store, kind) if generation > 1 else None
    # Lint before the key exists, for the backend writes a key as it makes it (ca/lint.py);
    # build_ca_certificate lints again, which costs a few ms once per generation.
    lint.rehearse_self_signed(lambda public_key: ca_certificate_builder(kind, public_key,
                                                                        clock(), years),
                              algorithm, f"{kind.value} CA certificate")
    # A random suffix: a rotation rolled back after the key was made leaves that key unused
    # (never reused), and the retry gets a fresh name.
    key_file, key = keys.generate(f"{kind.short}-g{generation}-{secrets.token_hex(4)}",
                                  algorithm)
    now = clock()
    certificate = build_ca_certificate(kind, key, now, years)
    with store.transaction():
        kid = key_id(key.public_key()).hex()
        ca_id = registry_generations.insert(
            store, kind=kind.value, generation=generation,
            serial=format(certificate.serial_number, "x"),
            not_before=epoch(certificate.not_valid_before_utc),
            not_after=epoch(certificate.not_valid_after_utc), key_id=kid, key_file=key_file,
            cert_der=certificate.public_bytes(Encoding.DER), created_at=epoch(now))
        audit.append(store, clock, actor=actor, action="ca.generation.create",
                     serial=format(certificate.serial_number, "x"),
                     detail={"kind": kind.value, "generation": generation, "key_id": kid,
                             "reason": reason, "algorithm": algorithm.name,
                             "old_key": previous.fingerprint if previous else None,
                             "new_key": spki_fingerprint(key.public_key()),
                             "not_after": from_epoch(epoch(certificate.not_valid_after_utc))
                             .isoformat()})
        return CAGeneration(ca_id, kind, generation, certificate, kid, key_file)

