"""Which CA a CertID names, and the delegated signer that answers for it.

Generations share a DN (DOMAIN.md), so issuerNameHash alone never decides: the index is keyed
by (hash algorithm, issuerNameHash, issuerKeyHash), built for every accepted algorithm. The key
hash is over the subjectPublicKey BIT STRING contents (RFC 6960 §4.1.1), the name hash over the
DER of the issuer's subject.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca import authority, responders
from ca.authority import CAGeneration
from ca.keybackend import KeyBackend
from ocsp.builder import ResponderKey
from registry import generations
from registry.store import Store

log = logging.getLogger("jpki.ocsp")


@dataclass(frozen=True)
class Signer:
    """A delegated responder: its key signs every answer about its CA generation."""

    ca: CAGeneration
    certificate: x509.Certificate
    key: ResponderKey
    key_hash: bytes  # responderID byKey
    not_after: datetime
    serial: str

    @property
    def kind(self) -> str:
        return self.ca.kind.value


@dataclass(frozen=True)
class ServedGeneration:
    """A CA generation this responder answers for, and the delegated signer that answers."""

    ca: CAGeneration
    signer: Signer | None  # None when no valid responder certificate exists (healthz says so)

    @property
    def kind(self) -> str:
        return self.ca.kind.value


def cert_id_hashes(ca: CAGeneration, algorithm: str) -> tuple[bytes, bytes]:
    cert = asn1_x509.Certificate.load(ca.certificate.public_bytes(Encoding.DER))
    name_hash = hashlib.new(algorithm, cert.subject.dump()).digest()
    key_hash = hashlib.new(algorithm,
                           cert.public_key["public_key"].contents[1:]).digest()  # skip unused-bits
    return name_hash, key_hash


def load_signer(store: Store, keys: KeyBackend, ca: CAGeneration) -> Signer | None:
    record = responders.latest(store, ca.id)
    if record is None:
        return None
    certificate = asn1_x509.Certificate.load(record.certificate.public_bytes(Encoding.DER))
    key = keys.load(record.key_file)
    return Signer(ca=ca, certificate=record.certificate, key=key,
                  key_hash=certificate.public_key.sha1,
                  not_after=record.not_after,
                  serial=format(record.certificate.serial_number, "x"))


class IssuerIndex:
    """All CA generations of both kinds, looked up per CertID."""

    def __init__(self, store: Store, keys: KeyBackend, algorithms: tuple[str, ...]) -> None:
        self.store = store
        self.keys = keys
        self.algorithms = algorithms
        self._by_hashes: dict[tuple[str, bytes, bytes], ServedGeneration] = {}
        self.issuers: list[ServedGeneration] = []
        self._fingerprint: tuple[int, int, int] | None = None

    def _state(self) -> tuple[int, int, int]:
        return generations.served_state(self.store)

    def forget(self) -> None:
        """Make the next reload_if_changed() re-read everything (SIGHUP)."""
        self._fingerprint = None

    def reload_if_changed(self) -> bool:
        """Re-read generations and signers on rotation, renewal or retirement.

        A retired generation leaves the index: its certificates have all expired, and a query
        about them gets `unauthorized` rather than an answer nobody signs any more.
        """
        state = self._state()
        if state == self._fingerprint:
            return False
        by_hashes: dict[tuple[str, bytes, bytes], ServedGeneration] = {}
        issuers: list[ServedGeneration] = []
        for ca in authority.generations(self.store, include_retired=False):
            issuer = ServedGeneration(ca, load_signer(self.store, self.keys, ca))
            issuers.append(issuer)
            for algorithm in self.algorithms:
                name_hash, key_hash = cert_id_hashes(ca, algorithm)
                by_hashes[(algorithm, name_hash, key_hash)] = issuer
        self._by_hashes, self.issuers, self._fingerprint = by_hashes, issuers, state
        log.info("OCSP issuers loaded: %s", ", ".join(
            f"{i.ca.label}(signer {i.signer.serial if i.signer else 'none'})" for i in issuers))
        return True

    def find(self, algorithm: str, name_hash: bytes, key_hash: bytes) -> ServedGeneration | None:
        return self._by_hashes.get((algorithm, name_hash, key_hash))

    def problems(self, now: datetime) -> dict[str, str]:
        """Generations whose signer is missing or expired: what /healthz reports."""
        result: dict[str, str] = {}
        for issuer in self.issuers:
            if issuer.ca.not_after <= now:
                continue
            if issuer.signer is None:
                result[issuer.ca.label] = "no responder certificate"
            elif issuer.signer.not_after <= now:
                result[issuer.ca.label] = f"responder certificate {issuer.signer.serial} expired"
        return result
