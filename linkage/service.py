"""The answers of the linkage services, with their consent and validity-check preconditions.

Order of checks (and of refusals): serial syntax (400), certificate known (404), the resident's
current consent for this verifier and service (403), then the validity-check precondition (409).
A refusal never names the resident nor says whether the resident has other certificates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ca import validity
from ca.kinds import CertKind
from fees.ledger import validity_checked
from registry import certificates, consents, phones, residents, successors
from registry.certificates import CertificateRecord
from registry.clock import JST, Clock, epoch
from registry.errors import Conflict, InvalidInput, JPKIError
from registry.store import Store
from registry.verifiers import Verifier


class ConsentMissing(JPKIError):
    http_status = 403
    exit_code = 6


class ValidityCheckRequired(Conflict):
    """409: the free answers follow a validity check of the same certificate (DOMAIN.md)."""


@dataclass(frozen=True)
class Answer:
    body: dict[str, Any]
    check_type: str
    serial: str


class LinkageService:
    def __init__(self, store: Store, clock: Clock, check_window: timedelta,
                 age_thresholds: frozenset[int] = frozenset({15, 18, 20, 65})) -> None:
        self.store = store
        self.clock = clock
        self.check_window = check_window
        self.age_thresholds = age_thresholds

    def on(self, store: Store) -> LinkageService:
        """The same service reading through `store` (a registry thread's own, linkage/web.py)."""
        return LinkageService(store, self.clock, self.check_window, self.age_thresholds)

    # -- preconditions -------------------------------------------------------------------

    def _certificate(self, serial_text: str) -> CertificateRecord:
        return certificates.require(self.store, certificates.normalise_serial(serial_text))

    def _consent(self, record: CertificateRecord, verifier: Verifier,
                 service: str) -> consents.Consent:
        consent = consents.current(self.store, record.resident_id, verifier.id, service,
                                   epoch(self.clock()))
        if consent is None:
            raise ConsentMissing(
                f"the holder of certificate {record.serial} has not given verifier"
                f" {verifier.name} a current '{service}' consent", field="consent")
        return consent

    def _recent_check(self, record: CertificateRecord, verifier: Verifier) -> None:
        since = self.clock() - self.check_window
        if not validity_checked(self.store, verifier.id, record.serial, since):
            minutes = int(self.check_window.total_seconds() // 60)
            raise ValidityCheckRequired(
                f"check the validity of certificate {record.serial} (OCSP or CRL) first: this"
                f" answer requires a validity check by {verifier.name} within {minutes}"
                " minutes", field="validity_check")

    def _registered(self, record: CertificateRecord, verifier: Verifier) -> None:
        if not validity_checked(self.store, verifier.id, record.serial):
            raise ValidityCheckRequired(
                f"verifier {verifier.name} has never checked certificate {record.serial}:"
                " register it with a validity check first", field="validity_check")

    # -- chains --------------------------------------------------------------------------

    def _predecessor_of(self, serial: str) -> str | None:
        return successors.predecessor_of(self.store, serial)

    def _successor_of(self, serial: str) -> str | None:
        return successors.of(self.store, serial)

    # -- answers -------------------------------------------------------------------------

    def predecessor(self, verifier: Verifier, serial: str, chain: bool = False) -> Answer:
        record = self._certificate(serial)
        self._consent(record, verifier, "linkage")
        self._recent_check(record, verifier)
        previous = self._predecessor_of(record.serial)
        body: dict[str, Any] = {"serial": record.serial, "kind": record.kind.value,
                                "predecessor": previous}
        if chain:
            items: list[str] = []
            cursor = previous
            while cursor is not None and cursor not in items:
                items.append(cursor)
                cursor = self._predecessor_of(cursor)
            body["chain"] = items  # newest first, back to the first certificate
        return Answer(body, "linkage", record.serial)

    def successor(self, verifier: Verifier, serial: str) -> Answer:
        record = self._certificate(serial)
        self._consent(record, verifier, "linkage")
        self._recent_check(record, verifier)
        newest: str | None = None
        cursor = self._successor_of(record.serial)
        seen = {record.serial}
        while cursor is not None and cursor not in seen:
            newest = cursor
            seen.add(cursor)
            cursor = self._successor_of(cursor)
        return Answer({"serial": record.serial, "kind": record.kind.value, "successor": newest},
                      "linkage", record.serial)

    def counterpart(self, verifier: Verifier, serial: str) -> Answer:
        record = self._certificate(serial)
        self._consent(record, verifier, "linkage")
        other = certificates.counterpart(self.store, record.serial)
        other_kind = (CertKind.AUTHENTICATION if record.kind is CertKind.SIGNATURE
                      else CertKind.SIGNATURE)
        return Answer({"serial": record.serial, "kind": record.kind.value,
                       "counterpart": {"serial": other, "kind": other_kind.value}
                       if other else None},
                      "counterpart", record.serial)

    def card(self, verifier: Verifier, serial: str) -> Answer:
        """The card signature serial a smartphone certificate was issued on (issue 18).

        Consent-gated like counterpart (the 'linkage' consent) and priced like it (check type
        `card_link`, configs/tariff.toml). After a card renewal the answer still names the card
        certificate the phone was issued on, and says the link was superseded and by which.
        """
        record = self._certificate(serial)
        link = phones.link(self.store, record.serial)
        if link is None:
            raise InvalidInput("is not a smartphone certificate", field="serial")
        self._consent(record, verifier, "linkage")
        return Answer({"serial": record.serial, "kind": record.kind.value,
                       "device": link.device, "card_signature_serial": link.card_serial,
                       "card_link": "superseded" if link.card_successor else "current",
                       "card_successor": link.card_successor},
                      "card_link", record.serial)

    def latest_facts(self, verifier: Verifier, serial: str) -> Answer:
        record = self._certificate(serial)
        if record.kind is not CertKind.SIGNATURE:
            raise InvalidInput("latest facts are answered for signature certificates only",
                               field="serial")
        consent = self._consent(record, verifier, "latest-facts")
        self._registered(record, verifier)
        newest = phones.newest_card_serial(self.store, record.resident_id,
                                           CertKind.SIGNATURE.value)
        if newest is None or newest == record.serial:
            return Answer({"serial": record.serial, "newer": None}, "latest_facts_unchanged",
                          record.serial)
        facts = residents.require(self.store, record.resident_id)
        values = {"name": facts.certified_name().text, "address": facts.certified_address().text,
                  "dob": facts.dob.isoformat(), "sex": facts.sex.value}
        return Answer({"serial": record.serial,
                       "newer": {"serial": newest,
                                 "facts": {item: values[item] for item in consent.items}}},
                      "latest_facts_newer", record.serial)

    def age(self, verifier: Verifier, serial: str, at_least_text: str | None) -> Answer:
        """Whether the holder is at least one of the configured ages, nothing more.

        Only `linkage.age_thresholds` are answered: with a free threshold, asking again each
        day with bisected values reveals the exact date of birth (issue 14, defect 9), which
        the age service exists to withhold.
        """
        allowed = ", ".join(str(age) for age in sorted(self.age_thresholds))
        text = at_least_text or ""
        # Checked as text first: int() of a 5,000-digit string raises, of " 18" succeeds.
        if not (text.isascii() and text.isdigit() and len(text) <= 3):
            raise InvalidInput(f"must be one of {allowed}", field="at_least")
        at_least = int(text)
        if at_least not in self.age_thresholds:
            raise InvalidInput(f"must be one of {allowed}", field="at_least")
        record = self._certificate(serial)
        self._consent(record, verifier, "age")
        self._recent_check(record, verifier)
        facts = residents.require(self.store, record.resident_id)
        today = self.clock().astimezone(JST).date()
        return Answer({"serial": record.serial, "at_least": at_least,
                       "result": validity.age_on(facts.dob, today) >= at_least},
                      "age", record.serial)
