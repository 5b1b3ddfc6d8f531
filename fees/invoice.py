"""Monthly invoices and running usage, computed from the ledger alone.

Each line is (check type, rule): the count and the amount, so that a check priced under the
OCSP promotion and one priced after it appear on separate lines of the same month. The monthly
volume discount applies to the subtotal (see configs/tariff.toml for the rounding rule).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Any

from fees.fold import catch_up
from fees.tariff import Tariff, discounted
from registry import verifiers
from registry.errors import InvalidInput
from registry.store import Store

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass
class Line:
    check_type: str
    rule_id: str
    count: int
    amount_yen: int


@dataclass
class Invoice:
    verifier: str
    month: str
    lines: list[Line] = field(default_factory=list)
    charged_checks: int = 0
    discount_percent: int = 0

    @property
    def checks(self) -> int:
        return sum(line.count for line in self.lines)

    @property
    def subtotal_yen(self) -> int:
        return sum(line.amount_yen for line in self.lines)

    @property
    def total_yen(self) -> int:
        return discounted(self.subtotal_yen, self.discount_percent)

    @property
    def discount_yen(self) -> int:
        return self.subtotal_yen - self.total_yen

    def to_json(self) -> dict[str, Any]:
        return {
            "verifier": self.verifier,
            "month": self.month,
            "lines": [line.__dict__ for line in self.lines],
            "checks": self.checks,
            "charged_checks": self.charged_checks,
            "subtotal_yen": self.subtotal_yen,
            "discount_percent": self.discount_percent,
            "discount_yen": self.discount_yen,
            "total_yen": self.total_yen,
        }


def check_month(month: str) -> str:
    if not isinstance(month, str) or not MONTH.match(month):
        raise InvalidInput("must be YYYY-MM", field="month")
    return month


def invoices(store: Store, tariff: Tariff, month: str, verifier: str | None = None
             ) -> list[Invoice]:
    check_month(month)
    catch_up(store)  # exact: every durable check, folded or still in the journal
    names = verifiers.names_by_id(store)
    sql = (
        "SELECT l.verifier_id, l.check_type, l.rule_id, COUNT(*) AS n,"
        " CAST(SUM(l.amount_yen) AS BIGINT) AS yen,"
        " SUM(CASE WHEN l.amount_yen > 0 THEN 1 ELSE 0 END) AS charged"
        " FROM ledger l WHERE l.month = ?"
    )
    params: list[Any] = [month]
    if verifier is not None:
        verifier_id = verifiers.id_of(store, verifier)
        if verifier_id is None:
            return []
        sql += " AND l.verifier_id = ?"
        params.append(verifier_id)
    sql += " GROUP BY l.verifier_id, l.check_type, l.rule_id"
    result: dict[str, Invoice] = {}
    for row in _by_name(store.query(sql, tuple(params)), names, "check_type", "rule_id"):
        invoice = result.setdefault(row["verifier"], Invoice(row["verifier"], month))
        invoice.lines.append(Line(row["check_type"], row["rule_id"], row["n"], row["yen"]))
        invoice.charged_checks += row["charged"]
    for invoice in result.values():
        invoice.discount_percent = tariff.discount_percent(invoice.verifier,
                                                           invoice.charged_checks)
    return list(result.values())


def to_csv(items: list[Invoice]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["verifier", "month", "check_type", "rule_id", "count", "amount_yen"])
    for invoice in items:
        for line in invoice.lines:
            writer.writerow([invoice.verifier, invoice.month, line.check_type, line.rule_id,
                             line.count, line.amount_yen])
        writer.writerow([invoice.verifier, invoice.month, "subtotal", "", invoice.checks,
                         invoice.subtotal_yen])
        writer.writerow([invoice.verifier, invoice.month, "discount",
                         f"{invoice.discount_percent}%", "", -invoice.discount_yen])
        writer.writerow([invoice.verifier, invoice.month, "total", "", "", invoice.total_yen])
    return out.getvalue()


def usage(store: Store, verifier: str | None = None) -> list[dict[str, Any]]:
    """Running totals per verifier, month and check type."""
    catch_up(store)
    names = verifiers.names_by_id(store)
    sql = (
        "SELECT l.verifier_id, l.month, l.check_type, COUNT(*) AS checks,"
        " CAST(SUM(l.amount_yen) AS BIGINT) AS yen FROM ledger l"
    )
    params: tuple[Any, ...] = ()
    if verifier is not None:
        verifier_id = verifiers.id_of(store, verifier)
        if verifier_id is None:
            return []
        sql += " WHERE l.verifier_id = ?"
        params = (verifier_id,)
    sql += " GROUP BY l.verifier_id, l.month, l.check_type"
    return _by_name(store.query(sql, params), names, "month", "check_type")


def _by_name(rows: list[dict[str, Any]], names: dict[int, str], *columns: str
             ) -> list[dict[str, Any]]:
    """The ledger's rows named by verifier (the registry owns the verifiers), ordered by
    name then `columns` as SQLite would order them (NULL first). A row whose verifier is
    not in the registry is left out, as a join would."""
    named = []
    for row in rows:
        name = names.get(row.pop("verifier_id"))
        if name is not None:
            named.append({"verifier": name, **row})

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        return (row["verifier"], *((row[c] is not None, row[c] or "") for c in columns))

    return sorted(named, key=key)
