"""Benchmark: full-CRL generation against `openssl ca -gencrl` over the same entries.

    make bench-crl                      # 1,000,000 revoked signature certificates
    make bench-crl SIZE=10000000        # 10 million (populate alone takes minutes)
    python bench/crl_bench.py --revoked 100000 --keep

One run: a fresh data directory (`jpki init`), `jpki demo populate` with every certificate
revoked, then interleaved rounds of three contenders, each in its own child process, timed
wall-clock from spawn to exit (interpreter start-up, imports and key loading included for us)
with its peak RSS and CPU time from wait4():
- ours, first run: the signature CA's daily run (69 partition CRLs + the full CRL) with the
  entry cache emptied, so every entry is encoded (what the very first run costs);
- ours, daily run: the same with the entries cached by the previous run (the steady state:
  a day's new revocations are a sliver of the list);
- `openssl ca -gencrl` over an index.txt of the same serials, expiry dates, revocation times
  and reasons (it has no cache: it rebuilds every entry each time).
The CA key is written unencrypted for openssl into the work directory, mode 0600, and the
directory is deleted afterwards unless --keep.

Targets (issue 17): peak RSS of every one of our processes under 500 MiB whatever the size
(the same figure at 1 million and 10 million: CRLs are streamed); the daily run at 10 million
under 30 s; the first run no slower than openssl; no partition CRL over
`crl.max_partition_bytes` (the largest file and the count over the cap are printed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "default.toml"
JPKI = [sys.executable, "-m", "jpki.cli", "--config", str(CONFIG)]
TARGET_RATIO = 0.5  # daily run / openssl
TARGET_COLD_RATIO = 1.0  # first run / openssl
TARGET_MIB = 500
TARGET_DAILY_SECONDS_AT_10M = 30.0
# openssl's index.txt reason names (crypto/x509/v3_crld.c / apps/ca.c crl_reasons).
OPENSSL_REASONS = {
    None: "", 0: ",unspecified", 1: ",keyCompromise", 2: ",CACompromise",
    3: ",affiliationChanged", 4: ",superseded", 5: ",cessationOfOperation",
    6: ",certificateHold,holdInstructionNone",
}


def run_measured(argv: list[str], **kwargs: object) -> tuple[float, float, int, float]:
    """Run a child; return (wall seconds, peak RSS MiB, exit status, CPU seconds).

    Peak RSS is the largest single process of the child's tree (wait4 semantics); CPU time
    is user + system of the child and every process it waited for (our worker processes).
    """
    started = time.perf_counter()
    process = subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload]
    _pid, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return (elapsed, usage.ru_maxrss / 1024, process.returncode,
            usage.ru_utime + usage.ru_stime)


def ours_child(data_dir: Path) -> None:
    """In the child: the signature CA's daily run, from the registry to published files.

    That is every partition CRL and the full CRL of the generation: the full CRL is assembled
    from the partitions' entries, so the partitions are part of its cost and are timed too.
    """
    sys.path.insert(0, str(REPO))
    from ca.kinds import CertKind
    from jpki.context import Context
    from jpki.wiring import crl_generator

    context = Context.load(CONFIG, data_dir)
    generator = crl_generator(context.store, context.keys, context.clock, context.settings,
                              start_method="fork")  # as `jpki crl generate` does
    started = time.perf_counter()
    published = generator.run(kind=CertKind.SIGNATURE)
    full = next(item for item in published if item.partition == "full")
    print(json.dumps({"inner_seconds": time.perf_counter() - started,
                      "entries": full.entries, "size": full.size, "crls": len(published),
                      "path": str(full.path)}), flush=True)


def openssl_time(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%y%m%d%H%M%SZ")


def prepare_openssl(data_dir: Path, work: Path) -> Path:
    """index.txt, crlnumber, CA certificate and key, minimal config (PEERS.md)."""
    from cryptography.hazmat.primitives import serialization

    sys.path.insert(0, str(REPO))
    from ca import authority
    from ca.kinds import CertKind
    from jpki.context import Context

    context = Context.load(CONFIG, data_dir)
    ca = authority.current(context.store, CertKind.SIGNATURE)
    key = ca.private_key(context.keys)
    fd = os.open(work / "ca.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    (work / "ca.pem").write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    conn = sqlite3.connect(data_dir / "registry.db")
    with (work / "index.txt").open("w") as index:
        cursor = conn.execute(
            "SELECT serial, not_after, revoked_at, reason, subject_cn FROM certificates"
            " WHERE ca_id = ? AND status = 'revoked'", (ca.id,))
        for serial, not_after, revoked_at, reason, cn in cursor:
            hexa = serial.upper()
            if len(hexa) % 2:
                hexa = "0" + hexa
            index.write(f"R\t{openssl_time(not_after)}\t{openssl_time(revoked_at)}"
                        f"{OPENSSL_REASONS[reason]}\t{hexa}\tunknown\t/CN={cn}\n")
    conn.close()
    (work / "index.txt.attr").write_text("unique_subject = no\n")
    (work / "crlnumber").write_text("01\n")
    config = work / "openssl.cnf"
    config.write_text(f"""[ ca ]
default_ca = bench
[ bench ]
database = {work}/index.txt
crlnumber = {work}/crlnumber
certificate = {work}/ca.pem
private_key = {work}/ca.key
default_md = sha256
default_crl_hours = 30
crl_extensions = crl_ext
unique_subject = no
[ crl_ext ]
authorityKeyIdentifier = keyid:always
""")
    return config


def populate(data_dir: Path, revoked: int, env: dict[str, str]) -> None:
    subprocess.run([*JPKI, "--data-dir", str(data_dir), "init"], check=True, env=env,
                   stdout=subprocess.DEVNULL, cwd=REPO)
    started = time.perf_counter()
    done = subprocess.run([*JPKI, "--data-dir", str(data_dir), "demo", "populate",
                           "--residents", str(revoked), "--revoked-fraction", "1", "--kinds",
                           "signature"], check=True, env=env, stdout=subprocess.PIPE, cwd=REPO)
    elapsed = time.perf_counter() - started
    report = json.loads(done.stdout)
    print(f"populate: {revoked:,} residents, {revoked:,} revoked signature certificates"
          f" in {elapsed:.1f} s ({report['residents_per_second']:,} residents/s inside)",
          flush=True)


def file_report(data_dir: Path, cap: int) -> tuple[int, int, int, int]:
    """(largest partition file, partition files, partition files over the cap, full CRL size)
    of the signature CA's current generation, delta CRLs aside."""
    directory = data_dir / "crl" / "sign" / "g1"
    sizes = [path.stat().st_size for path in directory.glob("*.crl")
             if path.name != "full.crl" and ".delta." not in path.name]
    return (max(sizes, default=0), len(sizes), sum(size > cap for size in sizes),
            (directory / "full.crl").stat().st_size)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revoked", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse a populated --work directory (skip init and populate)")
    parser.add_argument("--child-ours", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_ours:
        ours_child(args.child_ours)
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="jpki-bench-crl-"))
    work.mkdir(parents=True, exist_ok=True)
    data_dir = work / "data"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        if not (args.reuse and (data_dir / "registry.db").exists()):
            populate(data_dir, args.revoked, env)

        for leftover in ("ca.key", "index.txt", "index.txt.attr", "index.txt.old",
                         "index.txt.attr.old", "crlnumber", "crlnumber.old"):
            (work / leftover).unlink(missing_ok=True)
        config = prepare_openssl(data_dir, work)
        runs: dict[str, list[tuple[float, float, float]]] = {
            "cold": [], "daily": [], "openssl": []}
        ours: dict[str, object] = {}
        # Interleaved repetitions: the machine is shared, so compare medians, not one sample.
        for round_number in range(1, args.repeat + 1):
            for mode in ("cold", "daily"):
                if mode == "cold":  # forget every cached entry encoding: a first-ever run
                    with sqlite3.connect(data_dir / "registry.db") as conn:
                        conn.execute("DELETE FROM crl_entries")
                out = work / "ours.json"
                with out.open("w") as handle:
                    seconds, mib, code, cpu = run_measured(
                        [sys.executable, str(Path(__file__).resolve()), "--child-ours",
                         str(data_dir)], stdout=handle, env=env, cwd=REPO)
                if code:
                    raise SystemExit(f"our generator failed with exit code {code}")
                ours = json.loads(out.read_text())
                runs[mode].append((seconds, mib, cpu))
            (work / "crlnumber").write_text("01\n")
            seconds, mib, code, cpu = run_measured(
                ["openssl", "ca", "-gencrl", "-batch", "-config", str(config), "-out",
                 str(work / "openssl.crl")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if code:
                raise SystemExit(f"openssl ca -gencrl failed with exit code {code}")
            runs["openssl"].append((seconds, mib, cpu))
            print(f"  round {round_number}: "
                  + ", ".join(f"{name} {items[-1][0]:.2f} s (CPU {items[-1][2]:.2f} s)"
                              for name, items in runs.items()), flush=True)
        median = {name: statistics.median(run[0] for run in items)
                  for name, items in runs.items()}
        peak = {name: max(run[1] for run in items) for name, items in runs.items()}
        labels = {"cold": "ours, first run (every entry encoded)",
                  "daily": "ours, daily run (entries cached)",
                  "openssl": "openssl ca -gencrl"}
        for name, items in runs.items():
            print(f"{labels[name]:<40} {median[name]:6.2f} s wall median of {args.repeat}"
                  f" (best {min(r[0] for r in items):.2f} s, CPU median"
                  f" {statistics.median(r[2] for r in items):.2f} s), peak RSS"
                  f" {peak[name]:4.0f} MiB")
        print(f"output: {ours['entries']:,} entries, full CRL {int(ours['size']) / 2**20:.1f} MiB"
              f" DER + {int(ours['crls']) - 1} partition CRLs;"
              f" openssl {(work / 'openssl.crl').stat().st_size / 2**20:.1f} MiB PEM")
        ratio = median["daily"] / median["openssl"]
        cold_ratio = median["cold"] / median["openssl"]
        ours_mib = max(peak["cold"], peak["daily"])
        sys.path.insert(0, str(REPO))
        from jpki.settings import load_settings

        cap = load_settings(CONFIG, data_dir).crl.max_partition_bytes
        largest, files, over, full_size = file_report(data_dir, cap)
        # The 30 s target is the issue's, at 10 million; smaller runs are not held to a pro
        # rata share of it (start-up and the 140 files' fsyncs do not shrink with the size).
        daily_target = TARGET_DAILY_SECONDS_AT_10M if args.revoked >= 10_000_000 else float("inf")
        print(f"ratio ours/openssl: daily {ratio:.2f} (target <= {TARGET_RATIO}), first run"
              f" {cold_ratio:.2f} (target <= {TARGET_COLD_RATIO}); peak RSS {ours_mib:.0f} MiB"
              f" (target < {TARGET_MIB} MiB at any size); daily run {median['daily']:.1f} s"
              f" (target < {TARGET_DAILY_SECONDS_AT_10M:.0f} s at 10 M)")
        print(f"files: largest partition CRL {largest / 1e6:.2f} MB of {files} partition"
              f" files, {over} over the cap of {cap / 1e6:.0f} MB (target 0); full CRL"
              f" {full_size / 1e6:.1f} MB")
        ok = (ratio <= TARGET_RATIO and cold_ratio <= TARGET_COLD_RATIO
              and ours_mib < TARGET_MIB and over == 0 and median["daily"] <= daily_target)
        print("PASS" if ok else "FAIL: target missed")
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
