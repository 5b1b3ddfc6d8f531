"""What a metered check costs, piece by piece (issue 15): the figures behind fees/README.md.

Measured in one process on a scratch registry, no daemon: the direct ledger write (the old
path of every metered answer, still used by CLI tools) split into its parts, against what the
journal asks of the event loop now. Device flush latency is measured as the journal does it
(append + fdatasync) and as SQLite does it (a WAL commit with synchronous=FULL).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fees import fold as fee_fold  # noqa: E402
from fees.ledger import Check, LedgerRow, write_batch  # noqa: E402
from fees.meter import LedgerMeter, OCSPMeter  # noqa: E402
from fees.metrics import count  # noqa: E402
from fees.tariff import Price, load_tariff  # noqa: E402
from registry.store import Store  # noqa: E402
from registry.verifiers import Verifier  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
N = 2000


def per_item(label: str, seconds: float, count: int) -> None:
    print(f"{label:<58}{seconds / count * 1e6:>9.2f} µs")


def main() -> int:
    tariff = load_tariff(REPO / "configs" / "tariff.toml")
    work = Path(tempfile.mkdtemp(prefix="fee-costs-"))
    store = Store.open(work / "data")
    verifier_id = store.conn.execute(
        "INSERT INTO verifiers (name, token_hash, created_at) VALUES ('bench', 'x', 0)"
    ).lastrowid
    assert verifier_id is not None
    at = datetime.now(UTC)
    checks = [Check(verifier_id, "bench", "signature_check", "ocsp", format(i, "x"), at)
              for i in range(N)]

    # 1. the old path: write_batch per row, synchronous=OFF (CPU: Python per row + INSERT)
    store.conn.execute("PRAGMA synchronous=OFF")
    write_batch(store, tariff, checks[:100])
    began = time.perf_counter()
    for start in range(0, N, 100):
        write_batch(store, tariff, checks[start:start + 100])
    per_item("old write_batch, per row (Python + INSERT, no flush)", time.perf_counter() - began,
             N)
    rows = [(0, "2026-11", 2026, verifier_id, "signature_check", "ocsp", format(i, "x"), None,
             0, "signature-check", 20) for i in range(N)]
    began = time.perf_counter()
    with store.transaction() as conn:
        conn.executemany("INSERT INTO ledger (at, month, year, verifier_id, check_type, channel,"
                         " serial, resident_id, status_confirmation, rule_id, amount_yen)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    per_item("  of which the SQLite INSERT (executemany), per row", time.perf_counter() - began,
             N)
    # the fold's statement: the same rows, 200 to a multi-row INSERT (fees.fold.insert)
    began = time.perf_counter()
    with store.transaction() as conn:
        fee_fold.insert(conn, rows)  # the fold's own statement
    per_item("  the fold's multi-row INSERT (200 rows a statement), per row",
             time.perf_counter() - began, N)
    # 2. status confirmation: the resident lookup and the once-per-year query, per check
    began = time.perf_counter()
    for check in checks[:500]:
        store.conn.execute("SELECT serial, resident_id FROM certificates WHERE serial IN (?)",
                           (check.serial,)).fetchall()
    per_item("resident lookup per serial (indexed SELECT)", time.perf_counter() - began, 500)
    began = time.perf_counter()
    for _ in range(500):
        store.conn.execute(
            "SELECT 1 FROM ledger WHERE verifier_id = ? AND resident_id = ? AND year = ?"
            " AND status_confirmation = 1 AND rule_id != ? LIMIT 1",
            (verifier_id, "r1", 2026, tariff.repeat_rule_id)).fetchone()
    per_item("status-confirmation once-per-year query, per check", time.perf_counter() - began,
             500)
    # 3. prometheus labels per entry (the old _count) against one inc per (verifier, type)
    entries = [LedgerRow(check, None, Price("signature-check", 20)) for check in checks]
    began = time.perf_counter()
    count(entries)
    per_item("prometheus .labels().inc() x2 per entry", time.perf_counter() - began, N)
    # 4. flushes: a SQLite commit with synchronous=FULL, and the journal's append + fdatasync
    store.conn.execute("PRAGMA synchronous=FULL")
    sqlite_flush = []
    for check in checks[:40]:
        began = time.perf_counter()
        write_batch(store, tariff, [check])
        sqlite_flush.append(time.perf_counter() - began)
    fd = os.open(work / "flush.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    append_flush = []
    for _ in range(40):
        began = time.perf_counter()
        os.write(fd, b"x" * 2000)
        os.fdatasync(fd)
        append_flush.append(time.perf_counter() - began)
    os.close(fd)
    print(f"{'SQLite WAL commit (synchronous=FULL), 1 row, median':<58}"
          f"{statistics.median(sqlite_flush) * 1e3:>9.2f} ms")
    print(f"{'journal append + fdatasync, median':<58}"
          f"{statistics.median(append_flush) * 1e3:>9.2f} ms")
    # 5. the new event-loop side: price memo + row + lock + group append, per request
    meter = LedgerMeter(work / "data", tariff)
    ocsp_meter = OCSPMeter(meter)
    bank = Verifier(verifier_id, "bench")

    async def loop_side() -> tuple[float, float]:
        meter.start()
        await ocsp_meter.record(bank, [("signature", "1")], at)  # warm the price memo
        loop = asyncio.get_running_loop()

        async def answered(durable: asyncio.Future[None] | None) -> None:
            if durable is not None:
                await durable

        record = float("inf")
        finished = [float("inf"), float("inf")]  # tasks that do not wait, and tasks that do
        for _ in range(7):  # the host is shared: the quickest of several
            # record() is a plain call: the price memo, the row, the group's list
            began = time.perf_counter()
            waiting = [ocsp_meter.record(bank, [("signature", "a")], at) for _ in range(N)]
            record = min(record, time.perf_counter() - began)
            await asyncio.gather(*waiting)
            # a request waiting on its group's future: suspended, then woken and resumed,
            # against the same tasks finishing without waiting
            for case, shared in enumerate((None, loop.create_future())):
                began = time.perf_counter()
                tasks = [asyncio.ensure_future(answered(shared)) for _ in range(N)]
                await asyncio.sleep(0)  # every task runs up to its await (or to its end)
                if shared is not None:
                    shared.set_result(None)
                await asyncio.gather(*tasks)
                finished[case] = min(finished[case], time.perf_counter() - began)
        return record, finished[1] - finished[0]

    record, suspension = uvloop.run(loop_side())  # the daemon's loop
    per_item("new: OCSPMeter.record on the loop, per request", record, N)
    per_item("  its wait on the group's future: suspend, wake, resume", suspension, N)

    def old_handoff() -> float:
        cond = threading.Condition()
        began = time.perf_counter()
        for _ in range(N):
            with cond:
                cond.notify()
        return time.perf_counter() - began

    per_item("old: Condition.notify per request (no waiter; a wake costs more)",
             old_handoff(), N)
    meter.close()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
