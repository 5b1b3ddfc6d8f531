"""Applying resident-register events: validate, look up the policy, revoke, record; once each.

Every apply path (the CLI's JSON Lines, the daemon's POST /registry/events) goes through
`EventApplier.apply`, one transaction per event. The event id is the idempotency key: a replay
with the same body returns the stored outcome and changes nothing; the same id with another
body is refused as a conflict. Outcomes name serials and reasons, never the 4 facts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ca.kinds import CertKind
from registry import applied_events, audit, certificates, municipalities, phones, residents
from registry.clock import Clock, epoch
from registry.errors import Conflict, InvalidInput, JPKIError, NotFound
from registry.facts import Facts
from registry.logtext import untrusted
from registry.store import Store
from revocation.jsonlines import BadLine
from revocation.policy import EVENT_TYPES, REVOCATION_POLICY, RevocationRule, Scope

log = logging.getLogger("jpki.events")
EVENT_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
FACT_FIELDS = ("name", "dob", "sex", "address", "municipality_code")
KNOWN_FIELDS = {"event_id", "resident_id", "type", "occurred_at", *FACT_FIELDS, "name_alt",
                "address_alt", "auth_contents_wrong", "device"}


@dataclass(frozen=True)
class Event:
    event_id: str
    resident_id: str
    type: str
    occurred_at: datetime
    facts: Facts | None
    auth_contents_wrong: bool
    body_sha256: str
    device: str | None = None  # phone_lost: the device kind whose pair is revoked


@dataclass
class Outcome:
    """What happened to one event; `location` is the line number or array index."""

    status: str  # applied | replayed | rejected
    event_id: str | None = None
    revoked: list[dict[str, str]] = field(default_factory=list)
    note: str | None = None
    error: str | None = None
    error_field: str | None = None
    http_status: int = 200
    location: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "event_id": self.event_id}
        if self.location is not None:
            body["location"] = self.location
        if self.status == "rejected":
            body["error"] = self.error
            body["field"] = self.error_field
        else:
            body["revoked"] = self.revoked
            body["note"] = self.note
        return body


def body_hash(raw: dict[str, Any]) -> str:
    """SHA-256 of the canonical body: the idempotency check of replays.

    Called only on a validated event (known keys, strings that are UTF-8 encodable): a lone
    surrogate here would raise UnicodeEncodeError (issue 14, defect 5).
    """
    canonical = json.dumps(raw, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _unicode_text(raw: dict[str, Any]) -> None:
    """Refuse a string with a lone surrogate (JSON allows "\\ud800", UTF-8 does not): it would
    fail the body hash and every SQLite bind of it."""
    for key, value in raw.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInput("is not Unicode text (a lone surrogate)",
                                   field=key) from None


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if value is None or value == "":
        raise InvalidInput("is required", field=key)
    if not isinstance(value, str):
        raise InvalidInput("must be a string", field=key)
    return value


def parse_event(raw: Any, clock: Clock) -> Event:
    """Validate one event object; every failure names its field.

    Whatever the decoder let through, a failure here is an InvalidInput for this event only:
    a rejection, never an exception that would fail the rest of a batch (issue 14, defect 5).
    """
    try:
        return _parse_event(raw, clock)
    except (ValueError, TypeError, RecursionError, UnicodeError) as exc:
        raise InvalidInput(f"cannot be read ({type(exc).__name__})", field="event") from None


def _parse_event(raw: Any, clock: Clock) -> Event:
    if isinstance(raw, BadLine):
        raise InvalidInput(raw.message, field=raw.field)
    if not isinstance(raw, dict):
        raise InvalidInput("an event must be a JSON object", field="event")
    unknown = sorted(set(raw) - KNOWN_FIELDS)
    if unknown:
        # The key is the sender's text: echoed escaped, so neither a log line nor the CLI's
        # output can be forged or broken by it (defect 11).
        raise InvalidInput("unknown field", field=untrusted(unknown[0]))
    _unicode_text(raw)
    event_id = _text(raw, "event_id")
    if not EVENT_ID.fullmatch(event_id):
        raise InvalidInput("must be 1-128 printable ASCII characters", field="event_id")
    resident_id = _text(raw, "resident_id")
    kind = _text(raw, "type")
    if kind not in REVOCATION_POLICY:
        raise InvalidInput(f"unknown event type (one of {', '.join(EVENT_TYPES)})", field="type")
    try:
        occurred_at = datetime.fromisoformat(_text(raw, "occurred_at"))
    except ValueError:
        raise InvalidInput("must be ISO 8601 with a UTC offset", field="occurred_at") from None
    if occurred_at.tzinfo is None:
        raise InvalidInput("must carry a UTC offset", field="occurred_at")
    facts = None
    if REVOCATION_POLICY[kind].updates_facts:
        for key in FACT_FIELDS:
            _text(raw, key)
        for key in ("name_alt", "address_alt"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                raise InvalidInput("must be a string", field=key)
        facts = Facts.parse(
            name=raw["name"], dob=raw["dob"], sex=raw["sex"], address=raw["address"],
            municipality_code=raw["municipality_code"], name_alt=raw.get("name_alt"),
            address_alt=raw.get("address_alt"), today=clock().date(),
        )
    else:
        present = [key for key in (*FACT_FIELDS, "name_alt", "address_alt") if key in raw]
        if present:
            raise InvalidInput(f"only a change event carries facts, not {kind}",
                               field=present[0])
    wrong = raw.get("auth_contents_wrong", False)
    if not isinstance(wrong, bool):
        raise InvalidInput("must be true or false", field="auth_contents_wrong")
    if wrong and kind != "record_error":
        raise InvalidInput("only applies to record_error", field="auth_contents_wrong")
    device = None
    if REVOCATION_POLICY[kind].names_device:
        device = phones.check_device(_text(raw, "device"))
    elif "device" in raw:
        raise InvalidInput(f"only a phone_lost event names a device, not {kind}",
                           field="device")
    return Event(event_id, resident_id, kind, occurred_at, facts, wrong, body_hash(raw),
                 device)


def _revokes(rule: RevocationRule, kind: CertKind, device: str | None, event: Event,
             facts_differ: bool) -> bool:
    """The policy cell for one certificate: card or phone (`device`), signature or not."""
    if device is None:
        scope = rule.signature if kind is CertKind.SIGNATURE else rule.authentication
    else:
        scope = (rule.phone_signature if kind is CertKind.SIGNATURE
                 else rule.phone_authentication)
    if scope is Scope.ALWAYS:
        return True
    if scope is Scope.IF_FACTS_DIFFER:
        return facts_differ
    if scope is Scope.IF_OWN_CONTENTS_WRONG:
        return event.auth_contents_wrong
    if scope is Scope.IF_NAMED_DEVICE:
        return device == event.device
    return False


class EventApplier:
    """The one function every apply path calls."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def apply(self, raw: Any, *, actor: str = "registry", location: str | None = None
              ) -> Outcome:
        try:
            outcome = self._apply(parse_event(raw, self.clock), actor)
        except JPKIError as exc:
            event_id = raw.get("event_id") if isinstance(raw, dict) else None
            if not (isinstance(event_id, str) and EVENT_ID.fullmatch(event_id)):
                event_id = None  # echo only an id that passed validation
            outcome = Outcome("rejected", event_id, error=str(exc),
                              error_field=exc.field or "event", http_status=exc.http_status)
            log.warning("event rejected location=%s field=%s", location,
                        untrusted(exc.field))
        outcome.location = location
        return outcome

    def apply_all(self, items: Iterable[tuple[str, Any]], *, actor: str) -> list[Outcome]:
        return [self.apply(raw, actor=actor, location=where) for where, raw in items]

    def _apply(self, event: Event, actor: str) -> Outcome:
        with self.store.transaction():
            stored = applied_events.stored(self.store, event.event_id)
            if stored is not None:
                if stored[0] != event.body_sha256:
                    raise Conflict(f"event {event.event_id} was already applied with another"
                                   " body", field="event_id")
                original = json.loads(stored[1])
                return Outcome("replayed", event.event_id, original["revoked"],
                               original["note"])
            current = residents.get(self.store, event.resident_id)
            if current is None:
                raise NotFound(f"resident {event.resident_id} is not in the registry",
                               field="resident_id")
            rule = REVOCATION_POLICY[event.type]
            facts_differ = False
            if event.facts is not None:
                municipalities.check_address(self.store, event.facts)
                facts_differ = not current.same_four(event.facts)
            now = epoch(self.clock())
            live = certificates.live_for_resident(self.store, event.resident_id, now)
            device_of = phones.devices(self.store, event.resident_id)
            revoked = []
            for record in live:
                if _revokes(rule, record.kind, device_of.get(record.serial), event,
                            facts_differ):
                    certificates.revoke(self.store, self.clock, record.serial, rule.reason,
                                        actor=actor, cause=f"event {event.event_id}"
                                        f" ({event.type})")
                    item = {"serial": record.serial, "kind": record.kind.value,
                            "reason": rule.reason.name}
                    if record.serial in device_of:
                        item["device"] = device_of[record.serial]
                    revoked.append(item)
            if event.facts is not None:
                residents.update(self.store, self.clock, event.resident_id, event.facts)
            note = self._note(event, rule, live, revoked, facts_differ, device_of)
            outcome = Outcome("applied", event.event_id, revoked, note)
            applied_events.record(
                self.store, event_id=event.event_id, body_sha256=event.body_sha256,
                resident_id=event.resident_id, type_=event.type,
                outcome=json.dumps({"revoked": revoked, "note": note}), applied_at=now)
            audit.append(self.store, self.clock, actor=actor, action="event.apply",
                         detail={"event_id": event.event_id, "type": event.type,
                                 "resident_id": event.resident_id,
                                 "occurred_at": event.occurred_at.isoformat(),
                                 "revoked": [item["serial"] for item in revoked]})
        log.info("event applied id=%s type=%s revoked=%s", event.event_id, event.type,
                 ",".join(item["serial"] for item in revoked) or "-")
        return outcome

    @staticmethod
    def _note(event: Event, rule: RevocationRule, live: list[certificates.CertificateRecord],
              revoked: list[dict[str, str]], facts_differ: bool,
              device_of: dict[str, str]) -> str:
        if not live:
            return "the resident holds no live certificate; nothing to revoke"
        if event.facts is not None and not facts_differ:
            return "none of the 4 facts changed; the registry was updated, nothing revoked"
        kept = [(f"{device_of[record.serial]} " if record.serial in device_of else "")
                + record.kind.value for record in live
                if record.serial not in {item["serial"] for item in revoked}]
        if kept:
            plural = "s stay" if len(kept) > 1 else " stays"
            return f"the {' and '.join(kept)} certificate{plural} valid ({event.type})"
        return f"every live certificate revoked with {rule.reason.name}"
