"""`jpki init`: the first generation of both CAs, the municipality table, the dev passphrase,
the audit key, and a first signed checkpoint of the audit log.

Idempotent: each step checks what exists and only does what is missing, and the report says
what was done and what was already there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ca import auditkey, authority, responders
from ca.keybackend import KeyAlgorithm, KeyBackend
from ca.kinds import CertKind
from registry import municipalities
from registry.clock import Clock
from registry.store import Store


@dataclass
class InitReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created)


def initialise(store: Store, keys: KeyBackend, clock: Clock, *, municipalities_csv: Path,
               key_size: int, years: int,
               responder: tuple[KeyBackend, responders.ResponderCertificatePolicy]
               | None = None, actor: str = "operator", reason: str = "initial key"
               ) -> InitReport:
    report = InitReport()
    passphrase_file = keys.ensure_passphrase()
    if passphrase_file:
        report.created.append(f"development CA passphrase file {passphrase_file} (mode 0600)")
    if municipalities.count(store) == 0:
        rows = municipalities.import_csv(store, municipalities_csv)
        report.created.append(f"municipality table ({rows} rows from {municipalities_csv})")
    else:
        report.existing.append(f"municipality table ({municipalities.count(store)} rows)")
    for kind in CertKind:
        existing = authority.generations(store, kind)
        if existing:
            report.existing.append(f"{kind.value} CA ({len(existing)} generation(s))")
            continue
        generation = authority.create_generation(store, keys, clock, kind,
                                                 algorithm=KeyAlgorithm.rsa(key_size),
                                                 years=years, actor=actor, reason=reason)
        report.created.append(
            f"{kind.value} CA generation {generation.generation} (key id {generation.key_id})"
        )
    if responder is not None:  # OCSP: a delegated responder certificate per CA generation
        responder_keys, policy = responder
        if responder_keys.ensure_passphrase():
            report.created.append("development OCSP responder passphrase file (mode 0600)")
        for record in responders.ensure(store, keys, responder_keys, clock, policy, actor=actor):
            report.created.append(
                f"OCSP responder certificate {record.certificate.serial_number:x}"
                f" for CA id {record.ca_id}")
    created = auditkey.ensure(store, keys, clock, key_size=key_size)
    if created:
        report.created.append(created)
    else:
        report.existing.append("audit checkpoint key")
    auditkey.seal(store, keys, clock)  # init holds the CA key: anchor what it just wrote
    return report
