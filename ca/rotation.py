"""CA key rotation with link certificates (RFC 4210 §4.4), and retirement of old generations.

Every generation keeps the CA's DN, so a verifier that trusts only one self-signed generation
needs a bridge to the other: NewWithOld (the new key certified by the old one) lets a relying
party that still trusts the old root accept new certificates, and OldWithNew (the old key
certified by the new one) lets one that already trusts the new root accept the old
certificates that stay valid until they expire. Both carry AKI/SKI, which is what lets path
builders tell the generations apart.

A link carries the serial number of its subject generation's self-signed certificate. The
profile's leaves pin their CA in authorityKeyIdentifier by key id *and* issuer DN + CA serial
(DOMAIN.md), and path builders compare that serial (OpenSSL's X509_check_akid), so a bridge
with any other serial is never taken as the leaf's issuer. The link is the same CA (same DN,
same key, same serial) certified by the other generation's key; RFC 5280 §4.1.2.2's
(issuer, serial) uniqueness is kept per signing key, which is what the key id names.

A rotation may change the key algorithm (`--algorithm ecdsa-p384`, issue 18 part 2): each link
is signed with its issuer's scheme (ca/keyalgorithm.py), so RSA -> P-384 gives a NewWithOld
signed sha256WithRSAEncryption over a P-384 key and an OldWithNew signed ecdsa-with-SHA384
over an RSA key; both verify with `openssl verify` either way (tests/test_p384_generation.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca import authority, lint, responders
from ca.authority import CAGeneration
from ca.keybackend import KeyAlgorithm, KeyBackend, PrivateKey
from ca.kinds import CertKind
from ca.responders import ResponderCertificatePolicy, ResponderRecord
from registry import audit, ca_links, certificates, generations, ocsp_signers
from registry.clock import Clock, epoch, from_epoch
from registry.errors import Conflict, JPKIError
from registry.store import Store

NEW_WITH_OLD = "new_with_old"
OLD_WITH_NEW = "old_with_new"


@dataclass(frozen=True)
class LinkCertificate:
    id: int
    kind: CertKind
    direction: str
    old_ca_id: int
    new_ca_id: int
    certificate: x509.Certificate


@dataclass(frozen=True)
class Rotation:
    old: CAGeneration
    new: CAGeneration
    links: list[LinkCertificate]


def link_builder(*, subject: CAGeneration, issuer: CAGeneration, not_before: datetime,
                 not_after: datetime) -> x509.CertificateBuilder:
    """`subject`'s public key to be certified by `issuer`'s key, unsigned (ca/lint.py signs)."""
    public_key = subject.certificate.public_key()
    KeyAlgorithm.of(public_key)  # RSA or a curve of ours, else UnsupportedKey
    return (
        x509.CertificateBuilder()
        .subject_name(subject.certificate.subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(subject.serial)  # see the module docstring
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(authority.CA_CONSTRAINTS, critical=True)
        .add_extension(authority.CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier(bytes.fromhex(subject.key_id)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(bytes.fromhex(issuer.key_id), None, None),
                       critical=False)
    )


def build_link(*, subject: CAGeneration, issuer: CAGeneration, issuer_key: PrivateKey,
               not_before: datetime, not_after: datetime) -> x509.Certificate:
    """`subject`'s public key certified by `issuer`'s key: a self-issued CA certificate."""
    return lint.sign(link_builder(subject=subject, issuer=issuer, not_before=not_before,
                                  not_after=not_after),
                     issuer_key, f"link certificate {issuer.label} -> {subject.label}")


def _link_windows(old: CAGeneration, new: CAGeneration
                  ) -> dict[str, tuple[CAGeneration, CAGeneration, datetime, datetime]]:
    """Per direction: (subject, issuer, notBefore, notAfter) of the link certificate."""
    return {
        NEW_WITH_OLD: (new, old, new.certificate.not_valid_before_utc,
                       min(old.not_after, new.not_after)),
        OLD_WITH_NEW: (old, new, old.certificate.not_valid_before_utc, old.not_after),
    }


def _rehearse(old: CAGeneration, clock: Clock, *, algorithm: KeyAlgorithm, years: int) -> None:
    """Lint both links before the new key is made (ca/lint.py; create_generation lints the
    new CA certificate the same way).

    The new generation is stood in for by the stand-in key of its algorithm, so a refusal
    leaves no key file or token object behind, and the real keys sign nothing here. Each link
    is rehearsed with a stand-in of its issuer's algorithm (RSA size, or curve).
    """
    stand_in = lint.stand_in_key(algorithm)
    certificate = authority.ca_certificate_builder(
        old.kind, stand_in.public_key(), clock(), years).sign(stand_in, algorithm.hash)
    new = CAGeneration(0, old.kind, old.generation + 1, certificate,
                       authority.key_id(stand_in.public_key()).hex(), "")
    for subject, issuer, not_before, not_after in _link_windows(old, new).values():
        lint.rehearse(link_builder(subject=subject, issuer=issuer, not_before=not_before,
                                   not_after=not_after),
                      issuer.algorithm, f"link certificate {issuer.label} -> {subject.label}")


def _link_from_row(row: dict[str, Any]) -> LinkCertificate:
    return LinkCertificate(row["id"], CertKind(row["kind"]), row["direction"], row["old_ca_id"],
                           row["new_ca_id"], x509.load_der_x509_certificate(row["cert_der"]))


def links(store: Store, kind: CertKind | None = None) -> list[LinkCertificate]:
    return [_link_from_row(row) for row in ca_links.rows(store, kind.value if kind else None)]


def _record_link(store: Store, clock: Clock, kind: CertKind, direction: str, old: CAGeneration,
                 new: CAGeneration, certificate: x509.Certificate, actor: str) -> LinkCertificate:
    serial = format(certificate.serial_number, "x")
    with store.transaction():
        link_id = ca_links.insert(
            store, kind=kind.value, direction=direction, old_ca_id=old.id, new_ca_id=new.id,
            serial=serial, not_before=epoch(certificate.not_valid_before_utc),
            not_after=epoch(certificate.not_valid_after_utc),
            cert_der=certificate.public_bytes(Encoding.DER), created_at=epoch(clock()))
        audit.append(store, clock, actor=actor, action="ca.link.issue", serial=serial,
                     detail={"kind": kind.value, "direction": direction, "old": old.label,
                             "new": new.label, "old_key": old.fingerprint,
                             "new_key": new.fingerprint})
    return LinkCertificate(link_id, kind, direction, old.id, new.id, certificate)


def rotate(store: Store, keys: KeyBackend, clock: Clock, kind: CertKind, *,
           algorithm: KeyAlgorithm | None, years: int, operator: str, reason: str) -> Rotation:
    """The next generation of `kind` and its two link certificates, in one transaction.

    `algorithm` None keeps the current generation's algorithm (RSA of its size, or P-384).

    New issuance moves to the new generation as soon as this commits (authority.current);
    the old one keeps signing its CRLs and responder certificates until it is retired.
    """
    old = authority.current(store, kind)
    old_key = old.private_key(keys)  # before any change: a locked-away key stops us here
    algorithm = algorithm or old.algorithm
    _rehearse(old, clock, algorithm=algorithm, years=years)
    with store.transaction():
        new = authority.create_generation(store, keys, clock, kind, algorithm=algorithm,
                                          years=years, actor=operator, reason=reason)
        signers = {old.id: old_key, new.id: new.private_key(keys)}
        made = []
        for direction, (subject, issuer, not_before, not_after) in _link_windows(old,
                                                                                 new).items():
            link = build_link(subject=subject, issuer=issuer, issuer_key=signers[issuer.id],
                              not_before=not_before, not_after=not_after)
            made.append(_record_link(store, clock, kind, direction, old, new, link, operator))
    return Rotation(old, new, made)


@dataclass(frozen=True)
class Coverage:
    """What a generation still answers for: certificates not yet expired."""

    unexpired: int
    live: int  # unexpired and not revoked
    last_expiry: int | None


def coverage(store: Store, ca_id: int, now: datetime) -> Coverage:
    unexpired, live, last = certificates.coverage_under(store, ca_id, epoch(now))
    return Coverage(unexpired, live, last)


def retire(store: Store, keys: KeyBackend, responder_keys: KeyBackend, clock: Clock,
           kind: CertKind, generation: int, *, operator: str, reason: str) -> CAGeneration:
    """Archive an old generation's key once every certificate it issued has expired.

    Refused for the current generation (new issuance needs it) and while any certificate is
    unexpired: until then its CRLs and OCSP answers must keep being signed. Its responder keys
    are archived with it.
    """
    ca = authority.by_generation(store, kind, generation)
    if ca.retired:
        raise Conflict(f"{ca.label} is already retired", field="generation")
    if authority.current(store, kind).id == ca.id:
        raise Conflict(f"{ca.label} is the current generation: rotate first", field="generation")
    now = clock()
    covered = coverage(store, ca.id, now)
    if covered.unexpired:
        last = from_epoch(covered.last_expiry or 0).isoformat()
        raise Conflict(f"{ca.label} still covers {covered.unexpired} unexpired certificate(s);"
                       f" the last expires {last}", field="generation")
    with store.transaction():
        archived = keys.archive(ca.key_file)
        generations.retire(store, ca.id, epoch(now), archived)
        for signer_id, signer_key in ocsp_signers.key_files_of(store, ca.id):
            if not signer_key.startswith(("archive/", "pkcs11:archived/")):
                ocsp_signers.set_key_file(store, signer_id, responder_keys.archive(signer_key))
        audit.append(store, clock, actor=operator, action="ca.generation.retire",
                     serial=format(ca.serial, "x"),
                     detail={"kind": kind.value, "generation": generation, "reason": reason,
                             "old_key": ca.fingerprint, "new_key": None,
                             "archived_as": archived})
    return authority.by_id(store, ca.id)


@dataclass(frozen=True)
class CompletedRotation:
    """What `rotate_kinds` did: the new generations, their responders, the CRLs published."""

    rotations: list[Rotation]
    responders: list[ResponderRecord]
    crls_published: int
    warnings: list[str]


def rotate_kinds(store: Store, keys: KeyBackend, responder_keys: KeyBackend, clock: Clock,
                 kinds: list[CertKind], *, algorithm: KeyAlgorithm | None, years: int,
                 responder_policy: ResponderCertificatePolicy,
                 publish_crls: Callable[[CertKind], int], operator: str,
                 reason: str) -> CompletedRotation:
    """Rotate each kind, then complete the rotation: responder certificates and CRLs.

    Once a generation has committed, what follows completes it and must not make an operator
    run the rotation again (that would create yet another generation): a failure of a
    completing step is returned as a warning with its remedy, and `jpki signer` publishes any
    missing CRL when it next looks.
    """
    rotations = [rotate(store, keys, clock, kind, algorithm=algorithm, years=years,
                        operator=operator, reason=reason) for kind in kinds]
    warnings = []
    signers: list[ResponderRecord] = []
    published = 0
    try:
        signers = responders.ensure(store, keys, responder_keys, clock, responder_policy,
                                    actor=operator, kinds=frozenset(kinds))
    except JPKIError as exc:
        warnings.append(f"responder certificate not issued ({exc}); run `jpki ocsp rotate`")
    try:
        published = sum(publish_crls(kind) for kind in kinds)
    except JPKIError as exc:
        warnings.append(f"CRLs not published ({exc}); run `jpki crl generate`")
    return CompletedRotation(rotations, signers, published, warnings)
