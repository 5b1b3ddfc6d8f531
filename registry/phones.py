"""Smartphone certificates in the record: the mark on a certificate row and the link to the card.

A smartphone pair is an ordinary pair in `certificates` and `pairs` (same CAs, same CRL
partition, same OCSP lookups: README, "Smartphone certificates"). This module owns the one
table that says which rows are a phone's, of which device kind, and on which card signature
certificate they were issued. Card queries exclude these rows through `PHONE_ROW`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from registry import audit
from registry.clock import Clock, epoch
from registry.errors import InvalidInput
from registry.store import Store

DEVICES = ("android", "iphone")

PHONE_ROW = "EXISTS (SELECT 1 FROM phone_certificates p WHERE p.serial = {alias}.serial)"
"""SQL predicate, true for a phone certificate row of `certificates` aliased as {alias}."""


def check_device(device: Any, field: str = "device") -> str:
    if device not in DEVICES:
        raise InvalidInput(f"must be one of {', '.join(DEVICES)}", field=field)
    return str(device)


@dataclass(frozen=True)
class PhoneLink:
    """What a phone certificate was issued on, and whether a card renewal superseded that."""

    serial: str
    resident_id: str
    device: str
    card_serial: str
    card_successor: str | None
    card_superseded_at: int | None


def record(store: Store, *, serial: str, resident_id: str, device: str, card_serial: str,
           issued_at: int) -> None:
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO phone_certificates (serial, resident_id, device, card_serial,"
            " issued_at) VALUES (?, ?, ?, ?, ?)",
            (serial, resident_id, device, card_serial, issued_at))


def link(store: Store, serial: str) -> PhoneLink | None:
    row = store.one("SELECT * FROM phone_certificates WHERE serial = ?", (serial,))
    if row is None:
        return None
    return PhoneLink(row["serial"], row["resident_id"], row["device"], row["card_serial"],
                     row["card_successor"], row["card_superseded_at"])


def devices(store: Store, resident_id: str) -> dict[str, str]:
    """serial -> device kind of every phone certificate of the resident."""
    rows = store.query("SELECT serial, device FROM phone_certificates WHERE resident_id = ?",
                       (resident_id,))
    return {row["serial"]: row["device"] for row in rows}


def newest_without_successor(store: Store, resident_id: str, device: str) -> list[str]:
    """The serials of the device's current pair (at most one per kind): the ones a new issue
    for the same device kind supersedes."""
    rows = store.query(
        "SELECT c.serial, c.kind FROM certificates c JOIN phone_certificates p"
        " ON p.serial = c.serial WHERE p.resident_id = ? AND p.device = ? AND NOT EXISTS"
        " (SELECT 1 FROM successors s WHERE s.old_serial = c.serial)"
        " ORDER BY c.issued_at DESC, c.rowid DESC",
        (resident_id, device))
    newest: dict[str, str] = {}
    for row in rows:
        newest.setdefault(row["kind"], row["serial"])
    return list(newest.values())


def supersede_card_link(store: Store, clock: Clock, old_card: str, new_card: str, *,
                        actor: str) -> list[str]:
    """A card renewal: the phones issued on `old_card` now point past it to `new_card`.

    The phone certificates stay valid (they carry their own keys and validity, capped by the
    old card certificate's notAfter); only the link is marked superseded.
    """
    now = epoch(clock())
    with store.transaction() as conn:
        serials = [row[0] for row in conn.execute(
            "SELECT serial FROM phone_certificates WHERE card_serial = ?"
            " AND card_successor IS NULL", (old_card,))]
        if serials:
            conn.execute(
                "UPDATE phone_certificates SET card_successor = ?, card_superseded_at = ?"
                " WHERE card_serial = ? AND card_successor IS NULL", (new_card, now, old_card))
            audit.append(store, clock, actor=actor, action="phone.card_link.supersede",
                         serial=old_card, detail={"new_card": new_card, "phones": serials})
    return serials


def newest_card_serial(store: Store, resident_id: str, kind: str) -> str | None:
    """The serial of the resident's newest card certificate of `kind` (phones excluded)."""
    row = store.conn.execute(
        "SELECT c.serial FROM certificates c WHERE c.resident_id = ?"
        " AND c.kind = ? AND NOT " + PHONE_ROW.format(alias="c")
        + " ORDER BY c.issued_at DESC, c.rowid DESC LIMIT 1",
        (resident_id, kind)).fetchone()
    return str(row[0]) if row else None
