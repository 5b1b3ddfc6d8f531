"""Which published CRLs are older than their schedule: what the serving daemon's /healthz says.

The serving daemon holds no CA key; `jpki signer` re-signs every CRL daily. When the signer is
down the daemon keeps serving what was published, and says which CRL missed its daily run (or,
worse, is past its nextUpdate) so an operator learns of it before a verifier does.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from crl.schedule import DailySchedule
from registry import crl_state
from registry.clock import epoch
from registry.store import Store

# A daily run at national scale takes minutes; only a CRL still old after this is overdue.
RUN_ALLOWANCE = timedelta(minutes=30)


def overdue(store: Store, schedule: DailySchedule, now: datetime) -> dict[str, str]:
    """{"crl <kind> g<N>": problem} for each live generation whose CRLs missed a run."""
    due = schedule.last_due(now)
    late = now - due > RUN_ALLOWANCE
    rows = crl_state.schedule_by_generation(store, now)
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
    unpublished = crl_state.unpublished_generations(store, now)
    for kind, generation in unpublished:
        problems[f"crl {kind} g{generation}"] = (
            "no CRL published yet (`jpki signer` publishes missing CRLs when it starts)")
    return problems


def oldest_full_crl(store: Store) -> int | None:
    """thisUpdate (epoch) of the oldest published full CRL: revocations committed since then
    may be missing from some CRL, which a signer starting up catches up on."""
    return crl_state.oldest_full_this_update(store)
