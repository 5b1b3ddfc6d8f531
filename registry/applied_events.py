"""The `events` table: every resident event applied, by event id with its body hash, so a
replay is answered with the original outcome and a changed body under a used id is refused
(revocation/events.py)."""

from __future__ import annotations

from registry.store import Store


def stored(store: Store, event_id: str) -> tuple[str, str] | None:
    """(body_sha256, outcome JSON) of an event already applied, or None."""
    row = store.conn.execute("SELECT body_sha256, outcome FROM events WHERE event_id = ?",
                             (event_id,)).fetchone()
    return (str(row[0]), str(row[1])) if row else None


def record(store: Store, *, event_id: str, body_sha256: str, resident_id: str, type_: str,
           outcome: str, applied_at: int) -> None:
    """Record an applied event (inside the caller's transaction, with its revocations)."""
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO events (event_id, body_sha256, resident_id, type, outcome,"
            " applied_at) VALUES (?, ?, ?, ?, ?, ?)",
            (event_id, body_sha256, resident_id, type_, outcome, applied_at),
        )
