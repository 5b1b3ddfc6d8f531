"""The fee ledger: one row per metered check, priced by the rule in force when it happened.

The daemon's checks reach the ledger through the fee journal (`fees.journal`): a response that
carries a billed answer leaves only after its journal row is durable, and the journal is folded
into this table exactly once, so a crash never loses a billed check nor bills one twice. Every
reader of the ledger here folds what the journal holds first. Direct metering (CLI tools)
writes batches straight in (`write_batch`). Rows hold serials and verifier ids, never the 4 facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from fees.fold import catch_up
from fees.tariff import Price, Tariff
from registry import certificates
from registry.clock import JST, epoch
from registry.store import Store


@dataclass(frozen=True)
class Check:
    """One billable event reported by a responder or service."""

    verifier_id: int
    verifier_name: str
    check_type: str  # signature_check, authentication_check, unknown_check, counterpart, ...
    channel: str  # ocsp, crl, linkage
    serial: str | None
    at: datetime
    status_confirmation: bool = False


@dataclass(frozen=True)
class LedgerRow:
    check: Check
    resident_id: str | None
    price: Price


def _residents(store: Store, serials: set[str]) -> dict[str, str]:
    return certificates.residents_of(store, serials)


def write_batch(store: Store, tariff: Tariff, checks: Sequence[Check]) -> list[LedgerRow]:
    """Price and insert every check in one transaction; return the entries in order.

    Hot path of every metered answer: prices are looked up once per (check, channel, JST day)
    and the rows go in with one executemany; the resident is looked up only for
    status-confirmation checks, the only ones whose price depends on it.
    """
    prices: dict[tuple[str, str, date], Price] = {}
    rows: list[tuple[object, ...]] = []
    entries: list[LedgerRow] = []
    with store.transaction() as conn:
        residents = _residents(store, {c.serial for c in checks
                                       if c.serial and c.status_confirmation})
        charged_this_batch: set[tuple[int, str, int]] = set()
        for check in checks:
            local = check.at.astimezone(JST)
            day = local.date()
            price = prices.get((check.check_type, check.channel, day))
            if price is None:
                price = tariff.price(check.check_type, check.channel, check.at)
                prices[(check.check_type, check.channel, day)] = price
            resident = residents.get(check.serial or "")
            if check.status_confirmation and resident is not None:
                key = (check.verifier_id, resident, local.year)
                seen = key in charged_this_batch or conn.execute(
                    "SELECT 1 FROM ledger WHERE verifier_id = ? AND resident_id = ? AND year = ?"
                    " AND status_confirmation = 1 AND rule_id != ? LIMIT 1",
                    (check.verifier_id, resident, local.year, tariff.repeat_rule_id),
                ).fetchone()
                if seen:
                    price = Price(tariff.repeat_rule_id, 0)
                else:
                    charged_this_batch.add(key)
            rows.append((epoch(check.at), f"{local:%Y-%m}", local.year, check.verifier_id,
                         check.check_type, check.channel, check.serial, resident,
                         int(check.status_confirmation), price.rule_id, price.yen))
            entries.append(LedgerRow(check, resident, price))
        conn.executemany(
            "INSERT INTO ledger (at, month, year, verifier_id, check_type, channel, serial,"
            " resident_id, status_confirmation, rule_id, amount_yen)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return entries


VALIDITY_CHECKS = ("signature_check", "authentication_check")


def validity_checked(store: Store, verifier_id: int, serial: str,
                     since: datetime | None = None) -> bool:
    """Did this verifier check this certificate's validity (since `since`, or ever)?

    The linkage preconditions: a recent check for the free answers, any check at all for a
    serial the verifier "registered" (latest facts).
    """
    catch_up(store)  # a check answered a moment ago may still be in the journal only
    row = store.conn.execute(
        "SELECT 1 FROM ledger WHERE verifier_id = ? AND serial = ? AND at >= ?"
        " AND check_type IN (?, ?) LIMIT 1",
        (verifier_id, serial, epoch(since) if since else 0, *VALIDITY_CHECKS),
    ).fetchone()
    return row is not None
