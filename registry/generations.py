"""The `ca_generations` table: one row per CA key generation of each kind (signature,
authentication). `ca/authority.py` turns rows into `CAGeneration`s; only this module names the
table.
"""

from __future__ import annotations

from typing import Any

from registry.store import Store


def rows(store: Store, kind: str | None = None, *,
         include_retired: bool = True) -> list[dict[str, Any]]:
    """Every generation (of `kind`), ordered by kind then generation."""
    clauses = []
    params: tuple[object, ...] = ()
    if kind is not None:
        clauses.append("kind = ?")
        params = (kind,)
    if not include_retired:
        clauses.append("retired_at IS NULL")
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    return store.query(f"SELECT * FROM ca_generations{where} ORDER BY kind, generation", params)


def row_by_id(store: Store, ca_id: int) -> dict[str, Any] | None:
    return store.one("SELECT * FROM ca_generations WHERE id = ?", (ca_id,))


def row_by_generation(store: Store, kind: str, generation: int) -> dict[str, Any] | None:
    return store.one("SELECT * FROM ca_generations WHERE kind = ? AND generation = ?",
                     (kind, generation))


def newest_row(store: Store, kind: str) -> dict[str, Any] | None:
    """The newest generation of `kind`: new certificates are issued under it."""
    return store.one(
        "SELECT * FROM ca_generations WHERE kind = ? ORDER BY generation DESC LIMIT 1", (kind,))


def last_generation(store: Store, kind: str) -> int:
    """The highest generation number of `kind` (0: none yet)."""
    row = store.one("SELECT COALESCE(MAX(generation), 0) AS last FROM ca_generations"
                    " WHERE kind = ?", (kind,))
    return int(row["last"] if row else 0)


def insert(store: Store, *, kind: str, generation: int, serial: str, not_before: int,
           not_after: int, key_id: str, key_file: str, cert_der: bytes, created_at: int) -> int:
    """Record a new generation (inside the caller's transaction); returns its id. The unique
    (kind, generation) index refuses a concurrent rotation of the same CA."""
    with store.transaction() as conn:
        cursor = conn.execute(
            "INSERT INTO ca_generations (kind, generation, serial, not_before, not_after, key_id,"
            " key_file, cert_der, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (kind, generation, serial, not_before, not_after, key_id, key_file, cert_der,
             created_at),
        )
        return int(cursor.fetchone()[0])


def retire(store: Store, ca_id: int, retired_at: int, archived_key_file: str) -> None:
    with store.transaction() as conn:
        conn.execute("UPDATE ca_generations SET retired_at = ?, key_file = ? WHERE id = ?",
                     (retired_at, archived_key_file, ca_id))


def served_state(store: Store) -> tuple[int, int, int]:
    """(generations, newest responder certificate id, retired generations): changes on every
    rotation, responder renewal or retirement, so a responder re-reads its issuers only then."""
    row = store.conn.execute(
        "SELECT (SELECT COUNT(*) FROM ca_generations), (SELECT COALESCE(MAX(id), 0)"
        " FROM ocsp_signers), (SELECT COUNT(*) FROM ca_generations"
        " WHERE retired_at IS NOT NULL)"
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2])
