"""Resident records: the 4 facts as the register last reported them."""

from __future__ import annotations

from datetime import date
from typing import Any

from registry.clock import Clock, epoch
from registry.errors import Conflict, NotFound
from registry.facts import Facts, Sex
from registry.store import Store


def _facts(row: dict[str, Any]) -> Facts:
    return Facts(
        name=row["name"],
        dob=date.fromisoformat(row["dob"]),
        sex=Sex(row["sex"]),
        address=row["address"],
        municipality_code=row["municipality_code"],
        name_alt=row["name_alt"],
        address_alt=row["address_alt"],
    )


def get(store: Store, resident_id: str) -> Facts | None:
    row = store.one("SELECT * FROM residents WHERE resident_id = ?", (resident_id,))
    return _facts(row) if row else None


def require(store: Store, resident_id: str) -> Facts:
    facts = get(store, resident_id)
    if facts is None:
        raise NotFound(f"resident {resident_id} is not in the registry", field="resident_id")
    return facts


def _values(facts: Facts) -> tuple[Any, ...]:
    return (facts.name, facts.name_alt, facts.dob.isoformat(), facts.sex.value, facts.address,
            facts.address_alt, facts.municipality_code)


def record(store: Store, clock: Clock, resident_id: str, facts: Facts) -> bool:
    """Insert a new resident; an existing one must carry the same facts (returns False)."""
    with store.transaction() as conn:
        existing = get(store, resident_id)
        if existing is not None:
            if existing != facts:
                raise Conflict(
                    f"resident {resident_id} exists with different facts; report the change"
                    " as a resident-register event instead",
                    field="resident_id",
                )
            return False
        now = epoch(clock())
        conn.execute(
            "INSERT INTO residents (resident_id, name, name_alt, dob, sex, address, address_alt,"
            " municipality_code, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (resident_id, *_values(facts), now, now),
        )
        return True


def update(store: Store, clock: Clock, resident_id: str, facts: Facts) -> None:
    with store.transaction() as conn:
        changed = conn.execute(
            "UPDATE residents SET name = ?, name_alt = ?, dob = ?, sex = ?, address = ?,"
            " address_alt = ?, municipality_code = ?, updated_at = ? WHERE resident_id = ?",
            (*_values(facts), epoch(clock()), resident_id),
        ).rowcount
        if not changed:
            raise NotFound(f"resident {resident_id} is not in the registry", field="resident_id")


def count_with_prefix(store: Store, prefix: str) -> int:
    """How many residents have an id starting with `prefix` (a demo run continues after them)."""
    return int(store.conn.execute(
        "SELECT COUNT(*) FROM residents WHERE resident_id LIKE ?", (prefix + "%",)
    ).fetchone()[0])


def insert_many(store: Store, rows: list[tuple[Any, ...]]) -> None:
    """Bulk insert (resident_id, name, dob, sex, address, municipality_code, created_at,
    updated_at) rows: synthetic demo data only, no facts validation. COPY on PostgreSQL
    (registry/certificates.py insert_many says why)."""
    with store.transaction() as conn:
        if store.dialect == "postgresql":
            from registry.pg import PgStore, copy_rows  # psycopg: imported only when used

            assert isinstance(store, PgStore)
            copy_rows(store, "residents", ("resident_id", "name", "dob", "sex", "address",
                                           "municipality_code", "created_at", "updated_at"),
                      rows)
            return
        conn.executemany(
            "INSERT INTO residents (resident_id, name, dob, sex, address,"
            " municipality_code, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows)
