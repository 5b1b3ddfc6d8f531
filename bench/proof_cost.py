"""CPU cost of one freshness proof (ocsp/watch.py), on the event loop against on a thread.

Usage: .venv/bin/python -m bench.proof_cost [N]   (default 20,000 proofs per way; seconds)

Three ways, one after the other on one uvloop, each N proofs awaited one at a time (as one
connection's requests would meet them), on a throwaway PostgreSQL cluster (tests/pg_cluster.py)
and the SQLite file of a temporary data directory:

- `thread`: the previous PostgreSQL proof, `changes.data_version` (`scalar_text`, libpq's
  blocking `exec_`) on a single-thread executor, the answer handed back to the loop;
- `loop`: `changes.LoopFeed.data_version`, the prepared statement sent and answered on the
  loop (registry/pg_loop.py);
- `sqlite`: `PRAGMA data_version` on the loop, the peer the PostgreSQL path is held to.

Printed per proof: wall time, this process's CPU (`time.process_time`), and for PostgreSQL the
CPU of the serving backend (utime + stime from /proc/<backend pid>/stat).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import uvloop

from registry import changes
from registry.pg import connect
from registry.store import Store
from tests.pg_cluster import Cluster

TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    """Seconds of CPU the backend process used (0 when it cannot be read: another user's
    /proc entry stays readable on Debian, but be safe)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


async def measure(name: str, proof: Callable[[], Awaitable[object]], count: int,
                  backend: int | None) -> float:
    for _ in range(200):  # warm: the session dialled, statements prepared, caches filled
        await proof()
    wall, cpu = time.perf_counter(), time.process_time()
    server = backend_cpu(backend) if backend else 0.0
    for _ in range(count):
        await proof()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    server = backend_cpu(backend) - server if backend else 0.0
    per = 1e6 / count
    print(f"{name:7} wall {wall * per:6.1f} µs  process CPU {cpu * per:6.1f} µs"
          + (f"  backend CPU {server * per:6.1f} µs" if backend else "")
          + f"  (total CPU {(cpu + server) * per:6.1f} µs)")
    return cpu + server


async def main(count: int, url: str, data_dir: Path) -> None:
    loop = asyncio.get_running_loop()
    threaded = connect(url)
    executor = ThreadPoolExecutor(max_workers=1)

    async def on_thread() -> object:
        return await loop.run_in_executor(executor, changes.data_version, threaded)

    feed = changes.LoopFeed(url)
    await feed.data_version()
    pgconn = feed.session._pgconn  # the backend whose CPU is read
    assert pgconn is not None
    sqlite = Store.open(data_dir)
    cursor = sqlite.conn.cursor()

    async def on_sqlite() -> object:
        return changes.data_version(cursor)

    thread = await measure("thread", on_thread, count, threaded.raw.info.backend_pid)
    on_loop = await measure("loop", feed.data_version, count, pgconn.backend_pid)
    pragma = await measure("sqlite", on_sqlite, count, None)
    print(f"loop / thread CPU per proof: {on_loop / thread:.2f};"
          f" loop / sqlite: {on_loop / pragma:.1f}, thread / sqlite: {thread / pragma:.1f}")
    feed.close()
    threaded.close()
    sqlite.close()
    executor.shutdown()


if __name__ == "__main__":
    proofs = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    cluster = Cluster().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            database = cluster.create_database()
            Store.open(Path(tmp) / "pg", database).close()  # the schema
            uvloop.run(main(proofs, database, Path(tmp) / "sqlite"))
    finally:
        cluster.stop()
