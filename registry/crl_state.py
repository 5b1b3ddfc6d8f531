"""The `crl_state` table: per CA generation and scope (partition, `full`, or `<scope>.delta`),
the last reserved CRL number and what was last published at that scope's URL.

RFC 5280 §5.2.3: CRL numbers increase; `reserve_numbers` commits a number before anything is
signed, so a crash never reuses one. crl/publisher.py decides; this module only reads and
writes the rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from registry.clock import epoch
from registry.store import Store

_UPSERT_NUMBER = ("INSERT INTO crl_state (ca_id, partition, number) VALUES (?, ?, ?)"
                  " ON CONFLICT(ca_id, partition) DO UPDATE SET number = excluded.number")


def row(store: Store, ca_id: int, partition: str) -> dict[str, Any] | None:
    return store.one("SELECT * FROM crl_state WHERE ca_id = ? AND partition = ?",
                     (ca_id, partition))


def reserve_numbers(store: Store, ca_id: int, partitions: list[str]) -> dict[str, int]:
    """Commit and return the next CRL number of each scope, in one transaction."""
    numbers: dict[str, int] = {}
    with store.transaction() as conn:
        for partition in partitions:
            found = conn.execute(
                "SELECT number FROM crl_state WHERE ca_id = ? AND partition = ?",
                (ca_id, partition),
            ).fetchone()
            numbers[partition] = (found[0] if found else 0) + 1
            conn.execute(_UPSERT_NUMBER, (ca_id, partition, numbers[partition]))
    return numbers


def set_number(store: Store, ca_id: int, partition: str, number: int) -> None:
    """Make `number` the last reserved number of a scope (a delta CRL shares its base's)."""
    with store.transaction() as conn:
        conn.execute(_UPSERT_NUMBER, (ca_id, partition, number))


def published_this_updates(store: Store, ca_id: int) -> dict[str, int]:
    """thisUpdate of every CRL published for a CA generation, by partition."""
    rows = store.conn.execute(
        "SELECT partition, this_update FROM crl_state WHERE ca_id = ?"
        " AND published_number IS NOT NULL", (ca_id,))
    return {partition: this_update for partition, this_update in rows}


def record_published(store: Store, ca_id: int, partition: str, *, number: int, idp: str,
                     this_update: int, next_update: int, entries: int, size: int, sha256: str,
                     duration_ms: int, published_at: int, watermark: int | None,
                     base_number: int | None) -> None:
    with store.transaction() as conn:
        conn.execute(
            "UPDATE crl_state SET published_number = ?, idp = ?, this_update = ?,"
            " next_update = ?, entries = ?, size = ?, sha256 = ?, duration_ms = ?,"
            " published_at = ?, watermark = ?, base_number = ?"
            " WHERE ca_id = ? AND partition = ?",
            (number, idp, this_update, next_update, entries, size, sha256, duration_ms,
             published_at, watermark, base_number, ca_id, partition),
        )


def delta_bases(store: Store, ca_id: int, delta_suffix: str) -> list[tuple[str, int, int]]:
    """(scope, number, watermark) of every complete CRL published with a watermark."""
    rows = store.conn.execute(
        "SELECT partition, published_number, watermark FROM crl_state WHERE ca_id = ?"
        " AND published_number IS NOT NULL AND watermark IS NOT NULL"
        " AND partition NOT LIKE ? ORDER BY partition", (ca_id, "%" + delta_suffix))
    return [(str(scope), int(number), int(mark)) for scope, number, mark in rows]


def published_with_generation(store: Store) -> list[dict[str, Any]]:
    """Every published CRL with its generation's kind and number (for the metrics)."""
    return store.query(
        "SELECT g.kind, g.generation, s.partition, s.size, s.entries, s.duration_ms,"
        " s.this_update, s.next_update FROM crl_state s JOIN ca_generations g"
        " ON g.id = s.ca_id WHERE s.published_number IS NOT NULL")


def schedule_by_generation(store: Store, now: datetime
                           ) -> list[tuple[str, int, int, int | None, int]]:
    """(kind, generation, oldest thisUpdate, soonest nextUpdate, CRLs) of every live
    generation's published complete CRLs."""
    rows = store.conn.execute(
        "SELECT g.kind, g.generation, MIN(s.this_update), MIN(s.next_update),"
        " COUNT(*) FROM crl_state s JOIN ca_generations g ON g.id = s.ca_id"
        " WHERE s.published_number IS NOT NULL AND g.retired_at IS NULL AND g.not_after > ?"
        # Delta CRLs (crl/delta.py) run hourly, not daily; their base's age is what counts.
        " AND s.partition NOT LIKE '%.delta'"
        " GROUP BY g.id ORDER BY g.kind, g.generation", (epoch(now),))
    return [(str(kind), int(generation), int(oldest), soonest, int(count))
            for kind, generation, oldest, soonest, count in rows]


def unpublished_generations(store: Store, now: datetime) -> list[tuple[str, int]]:
    """(kind, generation) of every live generation without a published full CRL."""
    rows = store.conn.execute(
        "SELECT g.kind, g.generation FROM ca_generations g WHERE g.retired_at IS NULL"
        " AND g.not_after > ? AND NOT EXISTS (SELECT 1 FROM crl_state s WHERE s.ca_id = g.id"
        " AND s.partition = 'full' AND s.published_number IS NOT NULL)", (epoch(now),))
    return [(str(kind), int(generation)) for kind, generation in rows]


def oldest_full_this_update(store: Store) -> int | None:
    """thisUpdate (epoch) of the oldest published full CRL."""
    found = store.conn.execute(
        "SELECT MIN(this_update) FROM crl_state WHERE partition = 'full'"
        " AND published_number IS NOT NULL").fetchone()
    return int(found[0]) if found and found[0] is not None else None
