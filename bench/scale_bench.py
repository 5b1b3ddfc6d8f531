"""`make bench-scale`: the registry at national scale, SQLite against PostgreSQL (issue 13).

For each engine (the data directory's SQLite file; a throwaway PostgreSQL cluster with fsync
on, PostgreSQL's own defaults, run as the `postgres` user like tests/pg_cluster.py), in one run:
- populate `--size` synthetic certificates (`jpki demo populate`, 10% revoked): rows/s;
- OCSP answers through a real `jpki serve` on 127.0.0.1 for random serials that no cache has
  seen (every request a distinct serial: the live path, a registry read and a signature each),
  at one connection (the service time) and at `--connections` (throughput);
- the cached path: one set of serials, answered once, then asked again and again;
- [workers] the cached path with `jpki serve --workers 1` and `2`, only once `jpki serve
  --help` offers that option (server.workers is built on another branch);
- the daily CRL run at that size (`jpki crl generate` twice: first run, then the cached daily
  run): wall time and peak RSS;
- size on disk (SQLite file + WAL; PostgreSQL `pg_database_size`).

Placement on the 2 cores: `jpki serve` on CPU 0 and `wrk` on CPU 1. PostgreSQL's server
processes are moved to CPU 0 before the OCSP runs, so the responder and its database share one
core as SQLite's in-process reads do: the two engines get the same CPU budget. (The workers
rows let the daemon use both cores, as the issue asks; wrk then shares a core with it.)
Both engines are populated first; every load row is then measured engine after engine (the
cached path round after round, with the per-round ratio printed), so that the two figures of
a row come from the same minutes of this shared host. Every load loop is bounded (wrk -d).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ocsp_bench import bench_config, free_port, parse_wrk, raw_sign_rate, stop, wait_http  # noqa: E402  (bench/ is the script's directory)

from ca import authority  # noqa: E402
from ca.kinds import CertKind  # noqa: E402
from registry import certificates  # noqa: E402
from registry.store import Store  # noqa: E402

BIN = Path(sys.executable).parent

# wrk script: fixed-length request bodies, one after the other, from a start offset (script
# argument) so that each run asks serials no earlier run asked. -t1: one counter.
LUA = """
local f = io.open("{bodies}", "rb")
local data = f:read("*a")
f:close()
local size = {size}
local count = #data / size
local i = 0
local headers = {{["Content-Type"] = "application/ocsp-request"}}
function init(args)
  i = tonumber(args[1] or "0")
end
function request()
  local offset = (i % count) * size
  i = i + 1
  return wrk.format("POST", "/ocsp", headers, data:sub(offset + 1, offset + size))
end
function wrk.resolve(host, service) wrk.addrs = wrk.lookup(host, service) end
"""


@dataclass
class Figures:
    engine: str
    certificates: int = 0
    populate_seconds: float = 0.0
    loads: dict[str, dict[str, float]] = field(default_factory=dict)
    crl: list[tuple[float, float, int]] = field(default_factory=list)  # (s, peak MiB, CRLs)
    disk_bytes: int = 0
    sign_rate: float = 0.0  # raw RSA-2048 signatures/s on CPU 0, right after the uncached runs
    notes: list[str] = field(default_factory=list)


def log(message: str) -> None:
    print(f"[bench-scale] {message}", file=sys.stderr, flush=True)


def run(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(list(args), capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr[-2000:]}")
    return result.stdout


def measured(args: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """stdout, wall seconds and peak RSS (MiB) of one command (its own rusage, os.wait4)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(args, stdout=out, env=env)  # stderr: its progress bar
        _pid, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {process.returncode}")
    return text, seconds, usage.ru_maxrss / 1024  # Linux: KiB


def wrk(port: int, lua: Path, seconds: int, connections: int, offset: int) -> dict[str, float]:
    return parse_wrk(run("taskset", "-c", "1", "wrk", "-t1", f"-c{connections}",
                         f"-d{seconds}s", "--latency", "-s", str(lua),
                         f"http://127.0.0.1:{port}/ocsp", "--", str(offset)))


def request_bodies(ca: x509.Certificate, serials: list[str]) -> tuple[bytes, int]:
    """One DER OCSP request (no nonce, SHA-1 CertID as RFC 5019 §2.1.1 asks) per serial,
    concatenated; every body has the same length (64-bit serials with the top bit set)."""
    name_hash = hashlib.sha1(ca.subject.public_bytes()).digest()
    key_hash = x509.SubjectKeyIdentifier.from_public_key(ca.public_key()).digest
    bodies = [ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash, key_hash, int(serial, 16), hashes.SHA1()).build().public_bytes(
        serialization.Encoding.DER) for serial in serials]
    size = len(bodies[0])
    if any(len(body) != size for body in bodies):
        raise RuntimeError("request bodies differ in length: serials are not all 64-bit")
    return b"".join(bodies), size


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)


def serve_has_workers(jpki: list[str], env: dict[str, str]) -> bool:
    return "--workers" in run(*jpki, "serve", "--help", env=env)


def pin_cluster(data: Path, cpus: str) -> None:
    """Move the postmaster and every server process to `cpus` (new backends inherit it)."""
    postmaster = int((data / "postmaster.pid").read_text().splitlines()[0])
    children = run("ps", "-o", "pid=", "--ppid", str(postmaster)).split()
    for pid in [str(postmaster), *children]:
        subprocess.run(["taskset", "-a", "-cp", cpus, pid], stdout=subprocess.DEVNULL,
                       check=False)


class Engine:
    """One engine's registry, its populated data and its `jpki serve` (one at a time)."""

    def __init__(self, name: str, opts: argparse.Namespace, work: Path) -> None:
        self.name, self.opts, self.work = name, opts, work
        self.figures = Figures(name)
        self.data = work / "data"
        self.env = {**os.environ}
        self.env.pop("JPKI_REGISTRY_URL", None)
        self.cluster: Any = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.used = 0  # pool bodies asked so far: each uncached run starts past them
        self.pool_size = 0
        self.jpki: list[str] = []

    def prepare(self) -> None:
        """`jpki init`, populate, and the request bodies of sampled serials."""
        opts, work, figures = self.opts, self.work, self.figures
        if self.name == "postgresql":
            from tests.pg_cluster import Cluster

            # fsync, synchronous_commit and full_page_writes on (PostgreSQL's defaults); a
            # buffer cache and checkpoint spacing a server of this size would have.
            self.cluster = Cluster().start(
                durable=True, settings=f"-c shared_buffers={opts.pg_buffers}"
                                       " -c max_wal_size=4GB")
            self.env["JPKI_REGISTRY_URL"] = self.cluster.create_database()
        # the bench primes what it measures: no start-up pre-signing of the newest
        # certificates competing with the uncached runs for the signing threads (its answers
        # would not be uncached ones anyway)
        config = bench_config(work / "bench.toml",
                              ("\n[ocsp]\n", "\n[ocsp]\npresign_limit = 0\n"))
        assert "presign_limit = 0" in config.read_text()
        self.jpki = [str(BIN / "jpki"), "--config", str(config), "--data-dir", str(self.data),
                     "--log-level", "WARNING"]
        log(f"{self.name}: jpki init")
        run(*self.jpki, "init", env=self.env)

        residents = opts.size // 2  # one signature and one authentication certificate each
        log(f"{self.name}: populating {2 * residents:,} certificates")
        out, _seconds, _rss = measured([*self.jpki, "demo", "populate", "--residents",
                                        str(residents), "--revoked-fraction", "0.1"], self.env)
        report = json.loads(out.strip().splitlines()[-1])
        figures.certificates = int(report["certificates"])
        figures.populate_seconds = float(report["seconds"])

        store = Store.open(self.data, self.env.get("JPKI_REGISTRY_URL", ""))
        try:
            ca = authority.current(store, CertKind.SIGNATURE)
            wanted = opts.pool + opts.cached_set
            log(f"{self.name}: sampling {wanted:,} serials")
            serials = certificates.sample_serials(store, ca.id, wanted)
        finally:
            store.close()
        if len(serials) <= 2 * opts.cached_set:
            raise RuntimeError(f"only {len(serials)} signature certificates: raise --size")
        self.pool_size = min(opts.pool, len(serials) - opts.cached_set)
        pool, size = request_bodies(ca.certificate, serials[:self.pool_size])
        cached, _ = request_bodies(ca.certificate, serials[self.pool_size:])
        (work / "pool.der").write_bytes(pool)
        (work / "cached.der").write_bytes(cached)
        self.lua_pool = work / "pool.lua"
        self.lua_pool.write_text(LUA.format(bodies=work / "pool.der", size=size))
        self.lua_cached = work / "cached.lua"
        self.lua_cached.write_text(LUA.format(bodies=work / "cached.der", size=size))

    def serve(self, cpus: str, *extra: str) -> None:
        """`jpki serve` on `cpus`, PostgreSQL's processes moved there too."""
        if self.cluster is not None:
            pin_cluster(self.cluster.data, cpus)
        self.port = free_port()
        self.daemon = start(["taskset", "-c", cpus, *self.jpki, "serve", "--host", "127.0.0.1",
                             "--port", str(self.port), *extra], self.env)
        wait_http(f"http://127.0.0.1:{self.port}/healthz", timeout=60)  # start-up at 10 M

    def stop_serving(self) -> None:
        if self.daemon is not None:
            stop(self.daemon, grace=15)
            self.daemon = None

    def uncached(self, name: str, connections: int) -> None:
        log(f"{self.name}: {name}")
        row = wrk(self.port, self.lua_pool, self.opts.seconds, connections, self.used)
        self.used += int(row["requests"])
        if self.used > self.pool_size:
            self.figures.notes.append(f"{name}: the pool of {self.pool_size:,} serials ran out"
                                      " (raise --pool): some answers were cached")
        self.figures.loads[name] = row
        self.check(name, row)

    def check(self, name: str, row: dict[str, float]) -> None:
        """Failed requests are reported, never averaged away."""
        if row["non2xx"] or row["socket_errors"] or not row["requests"]:
            self.figures.notes.append(f"{name}: {row['requests']:.0f} requests, "
                                      f"{row['non2xx']:.0f} non-2xx, socket errors:"
                                      f" {row['socket_errors'] or 'none'}")

    def cached(self, seconds: int | None = None) -> dict[str, float]:
        return wrk(self.port, self.lua_cached, seconds or self.opts.seconds,
                   self.opts.connections, 0)

    def workers(self) -> None:
        """[workers] server.workers = 1 and 2, cached path, once `jpki serve` offers
        --workers (built on another branch). The daemon may use both cores here; wrk stays
        on CPU 1 and shares it."""
        if not serve_has_workers(self.jpki, self.env):
            self.figures.notes.append("workers=1/2 rows: not measured (`jpki serve --workers`"
                                      " is not on this branch yet)")
            return
        for workers in (1, 2):
            self.serve("0,1", "--workers", str(workers))
            try:
                self.cached(3)
                self.figures.loads[f"cached, workers={workers}"] = max(
                    (self.cached() for _ in range(self.opts.rounds)), key=lambda r: r["rps"])
            finally:
                self.stop_serving()

    def crl_and_size(self) -> None:
        if self.cluster is not None:
            pin_cluster(self.cluster.data, "0,1")
        for label in ("first", "daily"):
            log(f"{self.name}: jpki crl generate ({label} run)")
            out, seconds, rss = measured([*self.jpki, "crl", "generate"], self.env)
            self.figures.crl.append((seconds, rss, int(json.loads(out)["published"])))
        if self.cluster is None:
            self.figures.disk_bytes = sum(path.stat().st_size
                                          for path in self.data.glob("registry.db*"))
        else:
            import psycopg

            with psycopg.connect(self.env["JPKI_REGISTRY_URL"]) as conn:
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
                self.figures.disk_bytes = int(row[0]) if row else 0

    def close(self) -> None:
        self.stop_serving()
        if self.cluster is not None:
            self.cluster.stop()
        if self.opts.keep:
            log(f"{self.name}: kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def measure(engines: list[Engine], opts: argparse.Namespace) -> list[float]:
    """Every engine populated first; then each load run engine after engine, round after
    round, so that the engines' figures of one row come from the same minutes of a shared,
    noisy host. Returns the per-round cached ratios (second engine / first)."""
    for engine in engines:
        engine.prepare()
    ratios: list[float] = []
    for engine in engines:  # idle daemons cost nothing: all serve at once, on CPU 0
        engine.serve("0")
    try:
        for name, connections in (("uncached, 1 conn", 1),
                                  (f"uncached, {opts.connections} conn", opts.connections)):
            for engine in engines:
                engine.uncached(name, connections)
        key_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        sign_rate = raw_sign_rate(key_pem, seconds=1.0, runs=2)  # the floor of an uncached answer
        cached = f"cached, {opts.connections} conn"
        for engine in engines:
            engine.figures.sign_rate = sign_rate
            log(f"{engine.name}: {cached}")
            engine.cached(3)  # every serial of the set answered once, and cached
        for _ in range(opts.rounds):
            rows = [engine.cached() for engine in engines]
            for engine, row in zip(engines, rows, strict=True):
                best = engine.figures.loads.get(cached)
                engine.check(cached, row)
                if best is None or row["rps"] > best["rps"]:
                    engine.figures.loads[cached] = row
            if len(rows) == 2:
                ratios.append(rows[1]["rps"] / rows[0]["rps"])
    finally:
        for engine in engines:
            engine.stop_serving()
    for engine in engines:
        engine.workers()
    for engine in engines:
        engine.crl_and_size()
    return ratios


def table(results: list[Figures], opts: argparse.Namespace) -> str:
    names = [f.engine for f in results]
    lines = [f"| {opts.size:,} certificates | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]

    def add(label: str, cells: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    add("populate (rows/s)", [f"{f.certificates / max(f.populate_seconds, 1e-9):,.0f}"
                              for f in results])
    loads = [name for name in results[0].loads]
    for name in loads:
        add(f"OCSP {name}: req/s", [f"{f.loads[name]['rps']:,.0f}" if name in f.loads else "-"
                                    for f in results])
        add(f"OCSP {name}: p50 / p99 ms",
            [f"{f.loads[name]['p50_ms']:.2f} / {f.loads[name]['p99_ms']:.2f}"
             if name in f.loads else "-" for f in results])
    add("raw RSA-2048 sign/s, CPU 0 (same minute)", [f"{f.sign_rate:,.0f}" for f in results])
    if not any("workers" in name for name in loads):
        add("OCSP cached, workers=1 / workers=2: req/s", ["not measured"] * len(results))
    for index, label in enumerate(("first", "cached daily")):
        add(f"CRL run, {label}: s / peak RSS MiB",
            [f"{f.crl[index][0]:.1f} / {f.crl[index][1]:.0f}" for f in results])
    add("size on disk (MiB)", [f"{f.disk_bytes / 2**20:,.0f}" for f in results])
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10_000_000,
                        help="certificates per engine (half signature, half authentication)")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5,
                        help="cached runs per engine, interleaved; best kept")
    parser.add_argument("--pool", type=int, default=60_000,
                        help="distinct serials for the uncached runs (never asked twice)")
    parser.add_argument("--cached-set", type=int, default=1000)
    parser.add_argument("--pg-buffers", default="512MB", help="PostgreSQL shared_buffers")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    opts = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian package wrk)")
    engines = []
    try:
        for name in opts.engines.split(","):
            engines.append(Engine(name, opts, Path(tempfile.mkdtemp(prefix=f"scale-{name}-"))))
        ratios = measure(engines, opts)
    finally:
        for engine in engines:
            engine.close()
    results = [engine.figures for engine in engines]
    print()
    print(table(results, opts))
    for figures in results:
        for note in figures.notes:
            print(f"{figures.engine}: {note}")
    names = [f.engine for f in results]
    if "sqlite" in names and "postgresql" in names:
        lite, pg = results[names.index("sqlite")], results[names.index("postgresql")]
        cached = f"cached, {opts.connections} conn"
        print(f"PostgreSQL / SQLite, cached req/s: "
              f"{pg.loads[cached]['rps'] / lite.loads[cached]['rps']:.2f} (best of each;"
              " target >= 0.90)")
    if ratios:
        print(f"{engines[1].name} / {engines[0].name}, cached, per round (back to back):"
              f" {', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}")
    for figures in results:
        if figures.engine == "postgresql":
            row = figures.loads["uncached, 1 conn"]
            print(f"PostgreSQL uncached p99 at 1 connection: {row['p99_ms']:.2f} ms"
                  " (target < 10 ms at 10M rows)")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f};"
          f" this process's peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}"
          " MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
