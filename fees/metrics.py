"""The fee metrics of the serving process: counted once per durable group commit (on the
event loop, when the group's answers are released), not per fold: the fold runs in a process of
its own (fees/folder.py) whose counters nobody scrapes."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from fees.fold import Names
    from fees.frames import Row
    from fees.ledger import LedgerRow
    from registry.store import Store

CHECKS = Counter("jpki_fee_checks_total", "Metered checks by verifier and check type "
                 "(every billable answer; the ledger is the record)", ["verifier", "check_type"])
YEN = Counter("jpki_fee_yen_total", "Yen at the tariff's price of each check by verifier and "
              "check type, before the status-confirmation once-per-year rule and monthly "
              "discounts (the invoice is the record)", ["verifier", "check_type"])
BATCH = Histogram("jpki_fee_commit_batch_size", "Checks per journal flush (group commit: "
                  "larger under load)", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
FLUSH = Histogram("jpki_fee_journal_flush_seconds", "A durable write of the fee journal, from"
                  " its start to its completion seen by the event loop (a direct write with "
                  "RWF_DSYNC, or an fdatasync on the flush thread): what a metered answer "
                  "waits for; above ~5 ms, metered answers lose throughput at a given "
                  "concurrency",
                  buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128))


def count(entries: Sequence[LedgerRow]) -> None:
    """The metrics of checks written straight to the ledger (direct metering)."""
    for entry in entries:
        CHECKS.labels(entry.check.verifier_name, entry.check.check_type).inc()
        if entry.price.yen:
            YEN.labels(entry.check.verifier_name, entry.check.check_type).inc(entry.price.yen)


_BY_ROW = itemgetter(3, 4, 10)  # verifier id, check type, yen


def count_rows(rows: Iterable[Row], names: Names, store: Store) -> None:
    """The metrics of journal rows made durable: one tally in C per flush, then one increment
    per (verifier, check type, price) of it; the labelled children are kept."""
    for (verifier_id, check_type, yen), n in Tally(map(_BY_ROW, rows)).items():
        pair = _CHILDREN.get((verifier_id, check_type))
        if pair is None:
            name = names.cover(store, {verifier_id}).get(verifier_id, str(verifier_id))
            pair = _CHILDREN[(verifier_id, check_type)] = (CHECKS.labels(name, check_type),
                                                          YEN.labels(name, check_type))
        pair[0].inc(n)
        if yen:
            pair[1].inc(n * yen)


_CHILDREN: dict[tuple[int, str], tuple[Counter, Counter]] = {}
