"""The `ca_links` table: the link (cross) certificates between CA generations, issued at
rotation so that relying parties holding either root can verify the other's certificates."""

from __future__ import annotations

from typing import Any

from registry.store import Store


def rows(store: Store, kind: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM ca_links"
    params: tuple[object, ...] = ()
    if kind is not None:
        sql += " WHERE kind = ?"
        params = (kind,)
    return store.query(sql + " ORDER BY id", params)


def insert(store: Store, *, kind: str, direction: str, old_ca_id: int, new_ca_id: int,
           serial: str, not_before: int, not_after: int, cert_der: bytes,
           created_at: int) -> int:
    """Record a link certificate (inside the caller's transaction); returns its id."""
    with store.transaction() as conn:
        cursor = conn.execute(
            "INSERT INTO ca_links (kind, direction, old_ca_id, new_ca_id, serial, not_before,"
            " not_after, cert_der, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (kind, direction, old_ca_id, new_ca_id, serial, not_before, not_after, cert_der,
             created_at),
        )
        return int(cursor.fetchone()[0])
