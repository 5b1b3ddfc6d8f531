"""Which published CRLs are older than their schedule: what the serving daemon's /healthz says.

The serving daemon holds no CA key; `jpki signer` re-signs every CRL daily. When the signer is
down the daemon keeps serving what was published, and says which CRL missed its daily run (or,
worse, is past its nextUpdate) so an operator learns of it before a verifier does.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from crl.schedule import DailySchedule
from registry.clock import epoch
from registry.store import Store

# A daily run at national scale takes minutes; only a CRL still old after this is overdue.
RUN_ALLOWANCE = timedelta(minutes=30)


def overdue(store: Store, schedule: DailySchedule, now: datetime) -> dict[str, str]:
    """{"crl <kind> g<N>": problem} for each live generation whose CRLs missed a run."""
    due = schedule.last_due(now)
    late = now - due > RUN_ALLOWANCE
    rows = store.conn.execute(
        "SELECT g.kind, g.generation, MIN(s.this_update), MIN(s.next_update),"
        " COUNT(*) FROM crl_state s JOIN ca_generations g ON g.id = s.ca_id"
        " WHERE s.published_number IS NOT NULL AND g.retired_at IS NULL AND g.not_after > ?"
        # Delta CRLs (crl/delta.py) run hourly, not daily; their base's age is what counts.
        " AND s.partition NOT LIKE '%.delta'"
        " GROUP BY g.id ORDER BY g.kind, g.generation", (epoch(now),))
    problems: dict[str, str] = {}
    for kind, generation, oldest, soonest_next, count in rows:
        label = f"crl {kind} g{generation}"
        if soonest_next is not None and soonest_next <= epoch(now):
            problems[label] = (f"{count} CRL(s), some past nextUpdate: verifiers hold expired"
                               " CRLs (is `jpki signer` running?)")
        elif late and oldest < epoch(due):
            signed = datetime.fromtimestamp(oldest, due.tzinfo).isoformat()
            problems[label] = (f"oldest CRL thisUpdate {signed} missed the daily run of"
                               f" {due.isoformat()} (is `jpki signer` running?)")
    unpublished = store.conn.execute(
        "SELECT g.kind, g.generation FROM ca_generations g WHERE g.retired_at IS NULL"
        " AND g.not_after > ? AND NOT EXISTS (SELECT 1 FROM crl_state s WHERE s.ca_id = g.id"
        " AND s.partition = 'full' AND s.published_number IS NOT NULL)", (epoch(now),))
    for kind, generation in unpublished:
        problems[f"crl {kind} g{generation}"] = (
            "no CRL published yet (`jpki signer` publishes missing CRLs when it starts)")
    return problems


def oldest_full_crl(store: Store) -> int | None:
    """thisUpdate (epoch) of the oldest published full CRL: revocations committed since then
    may be missing from some CRL, which a signer starting up catches up on."""
    row = store.conn.execute(
        "SELECT MIN(this_update) FROM crl_state WHERE partition = 'full'"
        " AND published_number IS NOT NULL").fetchone()
    return int(row[0]) if row and row[0] is not None else None
