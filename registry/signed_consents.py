"""The `signed_consents` table: the CMS evidence of consents a resident signed with the
signature certificate (linkage/signed_consent.py), one row per statement hash."""

from __future__ import annotations

from registry.store import Store


def seen(store: Store, statement_sha256: str) -> bool:
    """Whether this signed statement was already submitted (a replay)."""
    return store.conn.execute("SELECT 1 FROM signed_consents WHERE statement_sha256 = ?",
                              (statement_sha256,)).fetchone() is not None


def record(store: Store, *, resident_id: str, verifier_id: int, consent_id: int | None,
           action: str, service: str, statement_sha256: str, signer_serial: str,
           signed_at: int, received_at: int, cms: bytes) -> int:
    """Record the evidence (inside the caller's transaction); returns its id."""
    with store.transaction() as conn:
        cursor = conn.execute(
            "INSERT INTO signed_consents (resident_id, verifier_id, consent_id, action,"
            " service, statement_sha256, signer_serial, signed_at, received_at, cms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (resident_id, verifier_id, consent_id, action, service, statement_sha256,
             signer_serial, signed_at, received_at, cms))
        return int(cursor.fetchone()[0])
