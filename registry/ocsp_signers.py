"""The `ocsp_signers` table: the delegated responder certificates of each CA generation
(RFC 6960 §4.2.2.2). `ca/responders.py` turns rows into `ResponderRecord`s."""

from __future__ import annotations

from typing import Any

from registry.store import Store


def newest_row(store: Store, ca_id: int) -> dict[str, Any] | None:
    """The responder certificate of `ca_id` that expires last (newest on a tie)."""
    return store.one("SELECT * FROM ocsp_signers WHERE ca_id = ? ORDER BY not_after DESC, id DESC"
                     " LIMIT 1", (ca_id,))


def insert(store: Store, *, ca_id: int, serial: str, not_before: int, not_after: int,
           key_file: str, cert_der: bytes, created_at: int) -> int:
    """Record a responder certificate (inside the caller's transaction); returns its id."""
    with store.transaction() as conn:
        cursor = conn.execute(
            "INSERT INTO ocsp_signers (ca_id, serial, not_before, not_after, key_file, cert_der,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (ca_id, serial, not_before, not_after, key_file, cert_der, created_at),
        )
        return int(cursor.fetchone()[0])


def key_files_of(store: Store, ca_id: int) -> list[tuple[int, str]]:
    """(id, key_file) of every responder certificate of `ca_id`."""
    return [(int(row[0]), str(row[1])) for row in store.conn.execute(
        "SELECT id, key_file FROM ocsp_signers WHERE ca_id = ?", (ca_id,)).fetchall()]


def set_key_file(store: Store, signer_id: int, key_file: str) -> None:
    with store.transaction() as conn:
        conn.execute("UPDATE ocsp_signers SET key_file = ? WHERE id = ?", (key_file, signer_id))
