"""Paired issuance: a signature and an authentication certificate per resident, linked.

All validation happens before a key is generated or a row is written; the registry rows, the
pair link, the audit rows and the credential files are committed together (the files are
removed again if the transaction fails), so a failed issuance leaves nothing behind.
"""

from __future__ import annotations

import getpass
import logging
import re
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca import authority, credentials, validity
from ca.cardprofile import CURRENT, CardProfile
from ca.keybackend import KeyBackend, PrivateKey
from ca.kinds import CertKind
from ca.profile import LeafRequest, build_leaf, issuance_id
from registry import audit, certificates, municipalities, phones, residents, shards
from registry.certificates import CertificateRecord, serial_hex
from registry.clock import JST, Clock, epoch, from_epoch
from registry.errors import Conflict, InvalidInput
from registry.facts import Facts
from registry.reasons import Reason
from registry.store import Store

log = logging.getLogger("jpki.issuance")
RESIDENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True)
class IssuancePolicy:
    """What the settings fix for issuance."""

    base_url: str
    cps_uri: str
    birthdays: int = 5
    minimum_signature_age: int = 15
    key_size: int = 2048
    # The default card profile (`[issuance] profile`, ca/cardprofile.py); `--profile` overrides.
    profile: CardProfile = CURRENT
    # PBKDF2 iterations of the residents' PKCS#12 files (ca/credentials.py explains the MAC).
    pkcs12_kdf_rounds: int = credentials.KDF_ROUNDS
    # Certificates per CRL shard of a municipality (registry/shards.py: crl.max_partition_bytes).
    shard_capacity: int = shards.DEFAULT_CAPACITY


@dataclass(frozen=True)
class IssueRequest:
    resident_id: str
    facts: Facts
    out_dir: Path
    sign_pin: str | None
    auth_pin: str
    auth_only: bool = False
    allow_minor_signature: bool = False
    card_expiry: date | None = None
    profile: CardProfile | None = None  # None: the policy's default
    # Who asked, for the audit log: the CLI passes --operator or the login name.
    actor: str = field(default_factory=getpass.getuser)


@dataclass(frozen=True)
class IssuedCertificate:
    kind: CertKind
    serial: str
    files: credentials.CredentialFiles

    def to_json(self) -> dict[str, str]:
        return {"serial": self.serial, "certificate": str(self.files.certificate),
                "key": str(self.files.key)}


@dataclass(frozen=True)
class IssuedPair:
    resident_id: str
    issued: dict[CertKind, IssuedCertificate]
    superseded: list[str]

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"resident_id": self.resident_id}
        for kind in (CertKind.SIGNATURE, CertKind.AUTHENTICATION):
            if kind in self.issued:
                result[kind.value] = self.issued[kind].to_json()
        if self.superseded:
            result["superseded"] = self.superseded
        return result


@dataclass(frozen=True)
class BuiltLeaf:
    """One leaf ready to be recorded: the certificate, its CN, its PKCS#12 file and the CRL
    partition (shard) it was given."""

    certificate: x509.Certificate
    cn: str
    pkcs12: bytes
    partition: str


def build_credential(store: Store, keys: KeyBackend, policy: IssuancePolicy,
                     ca: authority.CAGeneration, key: PrivateKey, request: LeafRequest, *,
                     pin: str, name_prefix: str = "") -> BuiltLeaf:
    """Sign one leaf and bundle it with its key; the card and phone issuers share it.

    The CRL shard is fixed now, because it goes into cRLDistributionPoints (registry/shards.py).
    The PKCS#12 KDF takes most of a second: callers pay it before the registry's write lock.
    `request.partition` is ignored: the shard is assigned here.
    """
    cn = issuance_id(request.municipality.code)
    partition = shards.assign(store, ca.id, request.municipality.code, policy.shard_capacity)
    certificate = build_leaf(
        replace(request, partition=partition), ca, ca.private_key(keys),
        serial=x509.random_serial_number(), cn=cn, base_url=policy.base_url,
        cps_uri=policy.cps_uri)
    pkcs12 = credentials.bundle(
        key=key, certificate=certificate, ca_certificate=ca.certificate, pin=pin,
        friendly_name=f"{name_prefix}{request.kind.value}-"
        f"{serial_hex(certificate.serial_number)}",
        kdf_rounds=policy.pkcs12_kdf_rounds)
    return BuiltLeaf(certificate, cn, pkcs12, partition)


def check_resident_id(resident_id: str) -> str:
    if not isinstance(resident_id, str) or not RESIDENT_ID.match(resident_id):
        raise InvalidInput("must be 1-32 letters, digits, '-' or '_'", field="resident_id")
    return resident_id


class PairIssuer:
    """Issues pairs under the current generation of each CA."""

    def __init__(self, store: Store, keys: KeyBackend, clock: Clock,
                 policy: IssuancePolicy) -> None:
        self.store = store
        self.keys = keys
        self.clock = clock
        self.policy = policy

    def _kinds(self, request: IssueRequest, issue_day: date) -> list[CertKind]:
        if request.auth_only:
            return [CertKind.AUTHENTICATION]
        age = validity.age_on(request.facts.dob, issue_day)
        if age < self.policy.minimum_signature_age and not request.allow_minor_signature:
            return [CertKind.AUTHENTICATION]
        return [CertKind.SIGNATURE, CertKind.AUTHENTICATION]

    def _validate(self, request: IssueRequest) -> municipalities.Municipality:
        check_resident_id(request.resident_id)
        municipality = municipalities.check_address(self.store, request.facts)
        credentials.check_pin(CertKind.AUTHENTICATION, request.auth_pin)
        return municipality

    def issue(self, request: IssueRequest) -> IssuedPair:
        """A first pair for a resident; refuses a resident who already holds live ones."""
        municipality = self._validate(request)
        existing = residents.get(self.store, request.resident_id)
        if existing is not None:
            if existing != request.facts:
                raise Conflict(
                    "exists with different facts; report the change as an event first",
                    field="resident_id",
                )
            live = certificates.live_for_resident(self.store, request.resident_id,
                                                  epoch(self.clock()))
            if live:
                raise Conflict(
                    f"already holds live certificates ({', '.join(r.serial for r in live)});"
                    " use `jpki renew`",
                    field="resident_id",
                )
        return self._issue(request, municipality, predecessors=[])

    def renew(self, request: IssueRequest) -> IssuedPair:
        """A new pair; the old pair is linked old -> new, and revoked (superseded) if live.

        The newest certificate of each kind is the predecessor even when it is already revoked
        (a move revoked the signature certificate) or expired, so the linkage chains never
        break at a renewal.
        """
        municipality = self._validate(request)
        residents.require(self.store, request.resident_id)
        previous = certificates.newest_per_kind(self.store, request.resident_id)
        if not previous:
            raise Conflict("holds no certificate to renew; use `jpki issue`",
                           field="resident_id")
        return self._issue(request, municipality, predecessors=previous)

    def _issue(self, request: IssueRequest, municipality: municipalities.Municipality, *,
               predecessors: list[CertificateRecord]) -> IssuedPair:
        now = self.clock()
        issue_day = now.astimezone(JST).date()
        kinds = self._kinds(request, issue_day)
        if CertKind.SIGNATURE in kinds:
            credentials.check_pin(CertKind.SIGNATURE, request.sign_pin)
        card = request.profile or self.policy.profile
        cas = {kind: authority.current(self.store, kind) for kind in kinds}
        for ca in cas.values():  # before a key is made or a file written
            card.check_ca(ca.label, ca.algorithm)
        out_dir = credentials.check_out_dir(request.out_dir)
        renewal_bonus = any(
            validity.renewal_within_window(from_epoch(record.not_after), now,
                                           card.renewal_window_days)
            for record in predecessors
        )
        plans = {
            kind: validity.plan(
                request.facts.dob, now, birthdays=card.birthdays or self.policy.birthdays,
                card_expiry=request.card_expiry, renewal_bonus=renewal_bonus,
                ca_not_after=cas[kind].not_after,
                renewal_extends_card=card.renewal_extends_card,
            )
            for kind in kinds
        }
        resident_algorithm = card.resident_algorithm(self.policy.key_size)
        auth_end = plans[CertKind.AUTHENTICATION].authentication_not_after
        built: dict[CertKind, tuple[x509.Certificate, str, bytes, str]] = {}
        for kind in kinds:
            ca = cas[kind]
            key = resident_algorithm.generate()
            plan = plans[kind]
            not_after = min(plan.signature_not_after, auth_end) \
                if kind is CertKind.SIGNATURE else auth_end
            pin = request.sign_pin if kind is CertKind.SIGNATURE else request.auth_pin
            leaf = build_credential(
                self.store, self.keys, self.policy, ca, key,
                LeafRequest(kind, key.public_key(), municipality, plan.not_before, not_after,
                            request.facts if kind is CertKind.SIGNATURE else None),
                pin=pin or "")
            built[kind] = (leaf.certificate, leaf.cn, leaf.pkcs12, leaf.partition)
        return self._commit(request, municipality, cas, built, predecessors, out_dir)

    def _commit(self, request: IssueRequest, municipality: municipalities.Municipality,
                cas: dict[CertKind, authority.CAGeneration],
                built: dict[CertKind, tuple[x509.Certificate, str, bytes, str]],
                predecessors: list[CertificateRecord], out_dir: Path) -> IssuedPair:
        issued: dict[CertKind, IssuedCertificate] = {}
        written: list[Path] = []
        superseded: list[str] = []
        now = epoch(self.clock())
        try:
            with self.store.transaction():
                if not predecessors:
                    residents.record(self.store, self.clock, request.resident_id, request.facts)
                else:
                    residents.update(self.store, self.clock, request.resident_id, request.facts)
                for kind, (certificate, cn, _pkcs12, partition) in built.items():
                    serial = serial_hex(certificate.serial_number)
                    certificates.insert(
                        self.store, serial=serial, kind=kind, ca_id=cas[kind].id,
                        resident_id=request.resident_id, subject_cn=cn,
                        partition=partition,
                        not_before=epoch(certificate.not_valid_before_utc),
                        not_after=epoch(certificate.not_valid_after_utc), issued_at=now,
                        der=certificate.public_bytes(Encoding.DER),
                    )
                    audit.append(self.store, self.clock, actor=request.actor,
                                 action="certificate.issue", serial=serial,
                                 detail={"kind": kind.value, "ca": cas[kind].label,
                                         "partition": partition,
                                         "profile": (request.profile
                                                     or self.policy.profile).name})
                    files = credentials.paths_for(out_dir, kind, serial)
                    issued[kind] = IssuedCertificate(kind, serial, files)
                for record in predecessors:
                    if record.status_at(now) == "good":
                        certificates.revoke(self.store, self.clock, record.serial,
                                            Reason.superseded, actor=request.actor,
                                            cause="renewal")
                        superseded.append(record.serial)
                    if record.kind in issued:
                        certificates.link_successor(self.store, self.clock, record.serial,
                                                    issued[record.kind].serial, record.kind)
                        if record.kind is CertKind.SIGNATURE:
                            # Issue 18: the phones issued on the old card certificate stay
                            # valid; their link to the card is superseded by the new one.
                            phones.supersede_card_link(
                                self.store, self.clock, record.serial,
                                issued[CertKind.SIGNATURE].serial, actor=request.actor)
                certificates.link_pair(
                    self.store, self.clock, request.resident_id,
                    issued[CertKind.SIGNATURE].serial if CertKind.SIGNATURE in issued else None,
                    issued[CertKind.AUTHENTICATION].serial,
                )
                for kind, (certificate, _cn, pkcs12_file, _partition) in built.items():
                    files = issued[kind].files
                    credentials.write(files, pkcs12_file=pkcs12_file, certificate=certificate)
                    written += [files.key, files.certificate]
        except FileExistsError as exc:
            _remove(written)
            raise Conflict(f"{exc.filename} already exists", field="out") from None
        except BaseException:
            _remove(written)
            raise
        for kind, item in issued.items():
            log.info("issued %s certificate serial=%s ca=%s partition=%s", kind.value,
                     item.serial, cas[kind].label, municipality.code)
        return IssuedPair(request.resident_id, issued, superseded)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)

