"""The OCSP live source's status read through `registry.certificates.status_under` against its
peer, the same statement inlined as ocsp/status.py had it before the registry owned the table.

Same read-only connection, same random serials over 200,000 rows (10% revoked), interleaved
rounds; prints the best round of each and the ratio (after/before). Run:
`.venv/bin/python bench/status_read_bench.py`.
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from registry import certificates
from registry.store import read_only

ROWS = 200_000
READS = 100_000
ROUNDS = 5


def main() -> None:
    db = Path(tempfile.mkdtemp()) / "registry.db"
    setup = sqlite3.connect(db)
    setup.execute("CREATE TABLE certificates (serial TEXT PRIMARY KEY, kind TEXT, ca_id INT,"
                  " status TEXT, revoked_at INT, reason INT)")
    setup.executemany("INSERT INTO certificates VALUES (?, ?, ?, ?, ?, ?)", [
        (format(i, "x"), "signature", 1, "revoked" if i % 10 == 0 else "good",
         1000 if i % 10 == 0 else None, 1 if i % 10 == 0 else None) for i in range(1, ROWS + 1)])
    setup.commit()
    setup.close()
    conn = read_only(db)
    serials = [format(random.randrange(1, ROWS + 1), "x") for _ in range(READS)]

    def inline() -> None:
        for serial in serials:
            row = conn.execute("SELECT kind, ca_id, status, revoked_at, reason FROM"
                               " certificates WHERE serial = ?", (serial,)).fetchone()
            if row is None or row[1] != 1:
                continue

    def registry() -> None:
        for serial in serials:
            certificates.status_under(conn, 1, serial)

    best: dict[str, float] = {}
    runs: list[tuple[str, Callable[[], None]]] = [("inline", inline), ("registry", registry)]
    for _ in range(ROUNDS):
        for name, run in runs:
            started = time.perf_counter()
            run()
            per_read = (time.perf_counter() - started) / READS * 1e6
            best[name] = min(best.get(name, per_read), per_read)
    print(f"inline {best['inline']:.2f} µs/read, registry {best['registry']:.2f} µs/read,"
          f" registry/inline {best['registry'] / best['inline']:.3f}")


if __name__ == "__main__":
    main()
