"""Residents' consents, per verifier and per service (DOMAIN.md, "Linkage services").

A grant is valid for 10 years, can be withdrawn at any time, and survives the revocations it
is meant to follow (it is tied to the resident, not to a certificate). For latest-facts the
grant names the items (name, address, dob, sex) the verifier may receive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from registry import audit
from registry.clock import Clock, epoch
from registry.errors import InvalidInput, NotFound
from registry.store import Store
from registry.verifiers import Verifier

SERVICES = ("linkage", "latest-facts", "age")
ITEMS = ("name", "address", "dob", "sex")
VALIDITY_YEARS = 10


@dataclass(frozen=True)
class Consent:
    service: str
    items: tuple[str, ...]
    granted_at: int
    expires_at: int
    id: int | None = None


def check_service(service: str) -> str:
    if service not in SERVICES:
        raise InvalidInput(f"must be one of {', '.join(SERVICES)}", field="service")
    return service


def parse_items(text: str | None, service: str) -> tuple[str, ...]:
    if service != "latest-facts":
        if text:
            raise InvalidInput("only latest-facts consents name items", field="items")
        return ()
    if not text:
        raise InvalidInput("a latest-facts consent names its items (name,address,dob,sex)",
                           field="items")
    items = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    for item in items:
        if item not in ITEMS:
            raise InvalidInput(f"{item!r} is not one of {', '.join(ITEMS)}", field="items")
    return items


def _plus_years(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


def grant(store: Store, clock: Clock, resident_id: str, verifier: Verifier, service: str,
          items: tuple[str, ...], *, actor: str = "operator", via: str = "operator"
          ) -> Consent:
    """Record a grant; a new grant for the same (resident, verifier, service) replaces it.

    `via` says how the consent reached the authority, for the audit row: "operator" (`jpki
    consent grant`, an operator's entry) or "signed statement" (the resident's CMS, kept as
    evidence by linkage/signed_consent.py).
    """
    check_service(service)
    now = clock()
    with store.transaction() as conn:
        if not conn.execute("SELECT 1 FROM residents WHERE resident_id = ?",
                            (resident_id,)).fetchone():
            raise NotFound(f"resident {resident_id} is not in the registry", field="resident_id")
        conn.execute(
            "UPDATE consents SET withdrawn_at = ? WHERE resident_id = ? AND verifier_id = ?"
            " AND service = ? AND withdrawn_at IS NULL",
            (epoch(now), resident_id, verifier.id, service),
        )
        consent = Consent(service, items, epoch(now), epoch(_plus_years(now, VALIDITY_YEARS)))
        cursor = conn.execute(
            "INSERT INTO consents (resident_id, verifier_id, service, items, granted_at,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (resident_id, verifier.id, service, ",".join(items), consent.granted_at,
             consent.expires_at),
        )
        consent_id = int(cursor.fetchone()[0])
        audit.append(store, clock, actor=actor, action="consent.grant",
                     detail={"resident_id": resident_id, "verifier": verifier.name,
                             "service": service, "items": list(items), "via": via})
    return Consent(service, items, consent.granted_at, consent.expires_at, consent_id)


def withdraw(store: Store, clock: Clock, resident_id: str, verifier: Verifier, service: str,
             *, actor: str = "operator", via: str = "operator") -> int:
    check_service(service)
    with store.transaction() as conn:
        changed = int(conn.execute(
            "UPDATE consents SET withdrawn_at = ? WHERE resident_id = ? AND verifier_id = ?"
            " AND service = ? AND withdrawn_at IS NULL",
            (epoch(clock()), resident_id, verifier.id, service),
        ).rowcount)
        if not changed:
            raise NotFound(f"no current {service} consent of resident {resident_id} for"
                           f" verifier {verifier.name}", field="service")
        audit.append(store, clock, actor=actor, action="consent.withdraw",
                     detail={"resident_id": resident_id, "verifier": verifier.name,
                             "service": service, "via": via})
    return changed


def current(store: Store, resident_id: str, verifier_id: int, service: str, now: int
            ) -> Consent | None:
    row = store.one(
        "SELECT service, items, granted_at, expires_at FROM consents WHERE resident_id = ?"
        " AND verifier_id = ? AND service = ? AND withdrawn_at IS NULL AND granted_at <= ?"
        " AND expires_at > ? ORDER BY granted_at DESC LIMIT 1",
        (resident_id, verifier_id, service, now, now),
    )
    if row is None:
        return None
    items = tuple(item for item in (row["items"] or "").split(",") if item)
    return Consent(row["service"], items, row["granted_at"], row["expires_at"])
