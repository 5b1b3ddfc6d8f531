"""`make bench-ocsp`: our responder against `openssl ocsp`, `cfssl ocspserve` and bare aiohttp.

Same CA, same certificates, same request, one run; every server is one process pinned to CPU 0
and `wrk` runs on CPU 1 (PEERS.md). The live (nonce) path is measured twice: pinned to CPU 0
like the others (the per-core figure), and as one process free to use both cores (the issue's
target, "one server process"), each against the raw RSA sign rate on one core measured right
after each of its runs (the host's load drifts; a ratio pairs figures of the same minute).
Then both CAs are rotated to ECDSA P-384 (`jpki ca rotate --algorithm ecdsa-p384`, issue
18 part 2), a `next`-profile pair is issued, and the live path is measured the same two ways
with that generation's P-384 responder (ecdsa-with-SHA384: no templates, pyca builds every
answer), against the raw P-384 sign rate of its own key.
The openssl responder binds every interface, so it and its load run inside a private network
namespace (`unshare -n`). Every load loop is bounded (wrk -d).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.keyalgorithm import KeyAlgorithm

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
JPKI = [str(BIN / "jpki"), "--config", str(REPO / "configs" / "default.toml")]
LUA = """
wrk.method = "POST"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/ocsp-request"
{auth}
-- PEERS.md: the default resolve probes each address with an empty connection, which wedges
-- the openssl responder.
function wrk.resolve(host, service) wrk.addrs = wrk.lookup(host, service) end
"""


CACHED, METERED = "ours (cached)", "ours (cached, metered)"
BARE, BARE_DEADLINE = "bare aiohttp", "bare aiohttp + deadline"
LIVE_ONE_CORE = "ours (live, core 0)"
LIVE_METERED = "ours (live, core 0, metered)"
LIVE_TWO_CORES = "ours (live, cores 0-1)"
LIVE_P384_ONE_CORE = "ours P-384 (live, core 0)"
LIVE_P384_TWO_CORES = "ours P-384 (live, cores 0-1)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*args: str, **kwargs: object) -> str:
    kwargs.setdefault("stderr", subprocess.PIPE)
    result = subprocess.run(list(args), stdout=subprocess.PIPE, text=True, check=True,
                            **kwargs)  # type: ignore[call-overload]
    return result.stdout


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error status means it is up
                return
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def parse_wrk(text: str) -> dict[str, float]:
    """Rate, count, p50/p99 (ms) and errors of one wrk run (wrk --latency output)."""
    rate_match = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    if not rate_match or not total:
        raise RuntimeError(f"unexpected wrk output: {text}")
    rate = float(rate_match.group(1))

    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(r"Socket errors: (.*)", text)
    return {"rps": rate, "requests": float(total.group(1)),
            "p50_ms": latency("50"), "p99_ms": latency("99"),
            "non2xx": float(errors.group(1)) if errors else 0.0,
            "socket_errors": sockets.group(1).strip() if sockets else ""}  # type: ignore[dict-item]


def wrk_cmd(url: str, lua: Path, seconds: int, connections: int) -> list[str]:
    return ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
            "--latency", "-s", str(lua), url]


def load(url: str, lua: Path, seconds: int, connections: int,
         server: int | None = None) -> dict[str, float]:
    """One bounded wrk run; with `server` (a process group), also the CPU time the server's
    processes spent per answer, in µs: a figure other load on the host barely moves."""
    before = group_cpu_seconds(server) if server else (0.0, 0.0)
    core_before = cpu_busy_seconds()[0]
    row = parse_wrk(run(*wrk_cmd(url, lua, seconds, connections)))
    if server:
        after = group_cpu_seconds(server)
        answers = max(row["requests"], 1)
        row["cpu_us"] = (after[0] - before[0]) / answers * 1e6
        row["cpu_us_others"] = (after[1] - before[1]) / answers * 1e6
        row["core_us"] = (cpu_busy_seconds()[0] - core_before) / answers * 1e6
    return row


def cpu_busy_seconds() -> list[float]:
    """Seconds each CPU was busy (not idle, not waiting on I/O), whoever ran there: the
    kernel's work for the daemon (interrupts, its fee journal's writes) is not in its
    process."""
    hertz = os.sysconf("SC_CLK_TCK")
    busy = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            ticks = [int(field) for field in line.split()[1:]]
            busy.append((sum(ticks) - ticks[3] - ticks[4]) / hertz)
    return busy


def group_cpu_seconds(pgid: int) -> tuple[float, float]:
    """User plus system CPU seconds of process `pgid` (its threads included), and of the
    other processes of its group (the fee journal's fold process), from /proc."""
    ticks = [0, 0]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp; utime and stime follow at 11 and 12
            ticks[stat.parent.name != str(pgid)] += int(fields[11]) + int(fields[12])
    hertz = os.sysconf("SC_CLK_TCK")
    return ticks[0] / hertz, ticks[1] / hertz


def keep_best(results: dict[str, dict[str, float]], name: str, row: dict[str, float]) -> None:
    """The machine is shared and noisy: every server gets the same number of runs, best kept
    (by its ratio to the raw sign rate of the same minute when it has one)."""
    score = "ratio" if "ratio" in row else "rps"
    if name not in results or row[score] > results[name][score]:
        results[name] = row


def paired(row: dict[str, float], key_pem: bytes) -> dict[str, float]:
    """A live row with the raw sign rate measured right after it: the host's load drifts over
    a run, and a ratio is only meaningful between figures of the same minute."""
    raw = raw_sign_rate(key_pem, seconds=1.0, runs=2)
    return {**row, "raw": raw, "ratio": row["rps"] / raw}


def bench_config(path: Path, *replacements: tuple[str, str]) -> Path:
    """configs/default.toml as the benches run it, written to `path`: anonymous requests
    allowed (the unmetered rows), no metrics listener, the municipality and tariff files by
    absolute path; then each (old, new) of `replacements`."""
    configs = REPO / "configs"
    text = (configs / "default.toml").read_text()
    for old, new in (("allow_anonymous = false", "allow_anonymous = true"),
                     ('metrics_listen = "127.0.0.1:9108"', 'metrics_listen = ""'),
                     ('"municipalities.csv"', f'"{configs / "municipalities.csv"}"'),
                     ('"tariff.toml"', f'"{configs / "tariff.toml"}"'), *replacements):
        text = text.replace(old, new, 1)
    path.write_text(text)
    return path


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, start_new_session=True)


def stop(process: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM to the process group (a daemon and its children), SIGKILL after `grace` s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(grace)


def raw_sign_rate(key_pem: bytes, seconds: float = 2.0, runs: int = 3) -> float:
    """Signatures per second on one core (CPU 0), in this Python, with the key's own scheme:
    RSA PKCS#1 v1.5 SHA-256, or ECDSA with SHA-384 for P-384 (ca/keyalgorithm.py).

    The best of `runs` bounded runs: the machine is shared, like every other row here.
    """
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey))
    algorithm = KeyAlgorithm.of(key)
    data = b"\x30" * 1200
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        best = 0.0
        for _ in range(runs):
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                algorithm.sign(key, data)
                count += 1
            best = max(best, count / (time.perf_counter() - started))
        return best
    finally:
        os.sched_setaffinity(0, affinity)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--certificates", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per server (ours and bare interleaved); the best is reported")
    parser.add_argument("--sign-workers", type=int, default=2,
                        help="ocsp.sign_workers of the measured daemon (one per core here)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--journal-flush", choices=("aio", "thread"), default="aio",
                        help="fees.journal_flush of the daemon: how the fee journal's"
                        " fdatasync runs (fees/flush.py)")
    parser.add_argument("--only", choices=("all", "metering"), default="all",
                        help="metering: only the metered and unmetered rows of our daemon "
                        "(cached and live on core 0), for work on the fee path")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ocsp-bench-"))
    data = work / "data"
    jpki = [*JPKI, "--data-dir", str(data), "--log-level", "WARNING"]
    results: dict[str, dict[str, float]] = {}
    try:
        run(*jpki, "init")
        leaves = []
        for index in range(opts.certificates):
            out = json.loads(run(*jpki, "issue", "--resident-id", f"bench-{index}", "--out",
                                 str(work / "out"), "--name", "山田 太郎", "--dob", "1980-04-02",
                                 "--sex", "male", "--address", "東京都新宿区西新宿二丁目8番1号",
                                 "--municipality-code", "13104", "--sign-pin", "abc12345",
                                 "--auth-pin", "1234").splitlines()[-1])
            leaves.append(out["signature"])
        run(*jpki, "revoke", leaves[1]["serial"], "--reason", "affiliationChanged")
        token = json.loads(run(*jpki, "verifier", "add", "bench"))["token"]
        db = sqlite3.connect(data / "registry.db")
        ca_der, ca_id = db.execute("SELECT cert_der, id FROM ca_generations WHERE"
                                   " kind='signature'").fetchone()
        r_der, r_key_file = db.execute("SELECT cert_der, key_file FROM ocsp_signers WHERE"
                                       " ca_id=? ORDER BY id DESC", (ca_id,)).fetchone()
        rows = db.execute("SELECT serial, status, revoked_at, reason, not_after FROM"
                          " certificates WHERE ca_id=?", (ca_id,)).fetchall()
        db.close()
        ca_pem = work / "ca.pem"
        ca_pem.write_bytes(x509.load_der_x509_certificate(ca_der).public_bytes(
            serialization.Encoding.PEM))
        r_pem = work / "responder.pem"
        r_pem.write_bytes(x509.load_der_x509_certificate(r_der).public_bytes(
            serialization.Encoding.PEM))
        passphrase = (data / "ocsp-passphrase").read_text().strip().encode()
        key = serialization.load_pem_private_key((data / "ocsp" / r_key_file).read_bytes(),
                                                 password=passphrase)
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        r_key = work / "responder.key"
        r_key.touch(0o600)
        r_key.write_bytes(key_pem)
        leaf = leaves[0]["certificate"]
        request = work / "req.der"
        nonce_request = work / "req-nonce.der"
        run("openssl", "ocsp", "-issuer", str(ca_pem), "-cert", leaf, "-no_nonce", "-reqout",
            str(request))
        run("openssl", "ocsp", "-issuer", str(ca_pem), "-cert", leaf, "-reqout",
            str(nonce_request))
        auth = f'wrk.headers["Authorization"] = "Bearer {token}"'
        lua_plain = work / "plain.lua"
        lua_plain.write_text(LUA.format(body=request, auth=auth))
        lua_nonce = work / "nonce.lua"
        # the live path is compared with the raw sign rate: unmetered, like the cached row
        lua_nonce.write_text(LUA.format(body=nonce_request, auth=""))
        lua_nonce_metered = work / "nonce-metered.lua"
        lua_nonce_metered.write_text(LUA.format(body=nonce_request, auth=auth))
        lua_anonymous = work / "anonymous.lua"
        lua_anonymous.write_text(LUA.format(body=request, auth=""))
        # The same daemon answers anonymous requests too (unmetered: nobody to bill), so the
        # cost of durable metering is the ratio of the two cached rows, measured side by side.
        config = bench_config(work / "bench.toml",
                              ("sign_workers = 2", f"sign_workers = {opts.sign_workers}"),
                              ('journal_flush = "aio"', f'journal_flush = "{opts.journal_flush}"'))
        serve = [str(BIN / "jpki"), "--config", str(config), "--data-dir", str(data),
                 "--log-level", "WARNING", "serve", "--host", "127.0.0.1",
                 "--workers", "1"]  # one server process, as every peer here

        rounds: list[tuple[float, float]] = []
        # -- ours and the bare aiohttp ceiling, interleaved (the machine is shared) --------
        port, bare_port, deadline_port = free_port(), free_port(), free_port()
        ours = start(["taskset", "-c", "0", *serve, "--port", str(port)])
        bare = bare_deadline = None
        try:
            url = f"http://127.0.0.1:{port}/ocsp"
            wait_http(f"http://127.0.0.1:{port}/healthz")
            sample = subprocess.run(
                ["curl", "-s", "-H", f"Authorization: Bearer {token}", "--data-binary",
                 f"@{request}", "-H", "Content-Type: application/ocsp-request", url],
                capture_output=True, check=True).stdout
            check = run("openssl", "ocsp", "-issuer", str(ca_pem), "-cert", leaf, "-no_nonce",
                        "-url", url, "-CAfile", str(ca_pem), "-header",
                        f"Authorization=Bearer {token}", stderr=subprocess.STDOUT)
            assert ": good" in check and "Response verify OK" in check, check
            check = run("openssl", "ocsp", "-issuer", str(ca_pem), "-cert", leaf, "-url", url,
                        "-CAfile", str(ca_pem), stderr=subprocess.STDOUT)  # live: nonce echoed
            assert ": good" in check and "Response verify OK" in check, check
            assert "WARNING: no nonce" not in check, check
            bare_cmd = ["taskset", "-c", "0", sys.executable,
                        str(REPO / "bench" / "bare_aiohttp.py")]
            bare = start([*bare_cmd, str(bare_port), str(len(sample))])
            bare_deadline = start([*bare_cmd, str(deadline_port), str(len(sample)), "deadline"])
            bare_url = f"http://127.0.0.1:{bare_port}/ocsp"
            deadline_url = f"http://127.0.0.1:{deadline_port}/ocsp"
            wait_http(f"http://127.0.0.1:{bare_port}/healthz")
            wait_http(f"http://127.0.0.1:{deadline_port}/healthz")
            load(url, lua_plain, 2, opts.connections)  # warm-up
            load(bare_url, lua_plain, 2, opts.connections)
            for _ in range(opts.rounds):
                this_round: dict[str, dict[str, float]] = {}
                for name, target, lua in ((CACHED, url, lua_anonymous),
                                          (METERED, url, lua_plain),
                                          (BARE, bare_url, lua_plain),
                                          (BARE_DEADLINE, deadline_url, lua_plain),
                                          (LIVE_ONE_CORE, url, lua_nonce),
                                          (LIVE_METERED, url, lua_nonce_metered)):
                    if opts.only == "metering" and name in (BARE, BARE_DEADLINE):
                        continue
                    row = load(target, lua, opts.seconds, opts.connections,
                               ours.pid if target == url else None)
                    this_round[name] = row
                    keep_best(results, name, paired(row, key_pem) if name == LIVE_ONE_CORE
                              else row)
                # metered against unmetered measured back to back (the host's load drifts)
                rounds.append((this_round[METERED]["rps"] / this_round[CACHED]["rps"],
                               this_round[LIVE_METERED]["rps"]
                               / this_round[LIVE_ONE_CORE]["rps"]))
        finally:
            stop(ours)
            for process in (bare, bare_deadline):
                if process is not None:
                    stop(process)
        if opts.only == "metering":
            print_metering(results, rounds)
            return 0
        # The target is per server *process*: the same daemon once more, free to use
        # both cores (its signing threads sign in parallel, RSA releases the GIL). wrk still
        # runs on core 1, so it shares that core with the server.
        port = free_port()
        ours = start(["taskset", "-c", "0,1", *serve, "--port", str(port)])
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz")
            load(f"http://127.0.0.1:{port}/ocsp", lua_nonce, 2, opts.connections)  # warm-up
            for _ in range(opts.rounds):
                keep_best(results, LIVE_TWO_CORES, paired(load(
                    f"http://127.0.0.1:{port}/ocsp", lua_nonce, opts.seconds,
                    opts.connections), key_pem))
        finally:
            stop(ours)

        # -- openssl ocsp responder, in its own network namespace ---------------------------
        index = work / "index.txt"
        lines = []
        for serial, status, revoked_at, reason, not_after in rows:
            expiry = time.strftime("%y%m%d%H%M%SZ", time.gmtime(not_after))
            hexserial = serial.upper()
            hexserial = ("0" + hexserial) if len(hexserial) % 2 else hexserial
            if status == "revoked":
                names = ["unspecified", "keyCompromise", "CACompromise", "affiliationChanged",
                         "superseded", "cessationOfOperation", "certificateHold"]
                when = time.strftime("%y%m%d%H%M%SZ", time.gmtime(revoked_at))
                lines.append(f"R\t{expiry}\t{when},{names[reason]}\t{hexserial}\tunknown\t/CN=x")
            else:
                lines.append(f"V\t{expiry}\t\t{hexserial}\tunknown\t/CN=x")
        index.write_text("\n".join(lines) + "\n")
        (work / "index.txt.attr").write_text("unique_subject = no\n")
        port = 18888
        openssl_load = wrk_cmd(f"http://127.0.0.1:{port}/ocsp", lua_plain, opts.seconds,
                               opts.connections)
        script = (
            "ip link set lo up; "
            f"taskset -c 0 openssl ocsp -index {index} -port {port} -rsigner {r_pem} "
            f"-rkey {r_key} -CA {ca_pem} -nmin 60 >/dev/null 2>&1 & pid=$!; sleep 0.5; "
            f"{' '.join(openssl_load)}"
            "; kill $pid"
        )
        for _ in range(opts.rounds):  # a fresh responder each run (it wedges, PEERS.md)
            try:
                out = run("timeout", str(opts.seconds + 30), "unshare", "-n", "bash", "-c",
                          script)
                keep_best(results, "openssl ocsp", parse_wrk(out))
            except (subprocess.CalledProcessError, AttributeError) as exc:
                print(f"openssl ocsp responder: not measured ({exc})", file=sys.stderr)

        # -- cfssl ocspserve (pre-signed, GOMAXPROCS=1) -------------------------------------
        if shutil.which("cfssl"):
            responses = work / "cfssl-responses"
            signed = json.loads(run("cfssl", "ocspsign", "-ca", str(ca_pem), "-responder",
                                    str(r_pem), "-responder-key", str(r_key), "-cert", leaf,
                                    "-status", "good"))
            responses.write_text(signed["ocspResponse"] + "\n")
            port = free_port()
            cfssl = start(["taskset", "-c", "0", "cfssl", "ocspserve", "-address", "127.0.0.1",
                           "-port", str(port), "-responses", str(responses)],
                          env={"GOMAXPROCS": "1"})
            try:
                time.sleep(1.0)
                load(f"http://127.0.0.1:{port}/", lua_plain, 2, opts.connections)
                for _ in range(opts.rounds):
                    keep_best(results, "cfssl ocspserve", load(
                        f"http://127.0.0.1:{port}/", lua_plain, opts.seconds, opts.connections))
            finally:
                stop(cfssl)
        else:
            print("cfssl: not installed (Debian package golang-cfssl); skipped",
                  file=sys.stderr)
        sign_rate = raw_sign_rate(key_pem)
        p384_rate = measure_p384(opts, work, data, jpki, serve, results)
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"{'server':<26}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}")
    for name, row in results.items():
        print(f"{name:<26}{row['rps']:>10.0f}{row['p50_ms']:>10.2f}{row['p99_ms']:>10.2f}"
              f"{row['non2xx']:>10.0f}")
    print(f"{'raw RSA-2048 sign/s':<26}{sign_rate:>10.0f}  (CPU 0 only, cryptography)")
    cached = results[CACHED]["rps"]
    ratios = {"cached / openssl ocsp": ("openssl ocsp", 5.0),
              "cached / cfssl ocspserve": ("cfssl ocspserve", 1.0),
              "cached / bare aiohttp": (BARE, 0.65)}
    for label, (peer, target) in ratios.items():
        if peer in results:
            ratio = cached / results[peer]["rps"]
            print(f"{label:<36}{ratio:>6.2f}  (target >= {target})")
    print_metering(results, rounds)
    deadline = results[BARE_DEADLINE]["rps"] / results[BARE]["rps"]
    print(f"{'bare + deadline / bare':<36}{deadline:>6.2f}  (cost of the header deadline)")
    for label, name, what in (
            ("live, core 0 / raw sign (1 core)", LIVE_ONE_CORE,
             "per core: HTTP and signing share CPU 0"),
            ("live, cores 0-1 / raw sign (1 core)", LIVE_TWO_CORES,
             "one process, both cores, wrk on core 1; target >= 0.8")):
        row = results[name]
        print(f"{label:<36}{row['ratio']:>6.2f}  ({what}; raw {row['raw']:.0f}/s measured"
              f" right after; {row['rps'] / sign_rate:.2f} against the raw rate above)")
    print(f"{'raw P-384 sign/s':<26}{p384_rate:>10.0f}  (CPU 0 only, ECDSA SHA-384)")
    for label, name, what in (
            ("P-384 live, core 0 / raw P-384", LIVE_P384_ONE_CORE,
             "per core: HTTP and signing share CPU 0"),
            ("P-384 live, cores 0-1 / raw P-384", LIVE_P384_TWO_CORES,
             "one process, both cores, wrk on core 1")):
        row = results[name]
        print(f"{label:<36}{row['ratio']:>6.2f}  ({what}; raw {row['raw']:.0f}/s measured"
              f" right after; {row['rps'] / p384_rate:.2f} against the raw rate above)")
    return 0


def print_metering(results: dict[str, dict[str, float]],
                   rounds: list[tuple[float, float]]) -> None:
    """The cost of durable metering: metered against unmetered rows of the same daemon."""
    for name in (CACHED, METERED, LIVE_ONE_CORE, LIVE_METERED):
        row = results[name]
        print(f"{name:<30}{row['rps']:>10.0f} req/s  p50 {row['p50_ms']:.2f} ms"
              f"  p99 {row['p99_ms']:.2f} ms  CPU µs/answer: daemon {row.get('cpu_us', 0):.1f},"
              f" fold {row.get('cpu_us_others', 0):.1f}, all of core 0"
              f" {row.get('core_us', 0):.1f}")
    metered = results[METERED]["rps"] / results[CACHED]["rps"]
    print(f"{'metered / unmetered, cached':<36}{metered:>6.2f}  (best of each; target >= 0.9,"
          f" metered p99 {results[METERED]['p99_ms']:.1f} ms, target < 10)")
    live_metered = results[LIVE_METERED]["rps"] / results[LIVE_ONE_CORE]["rps"]
    print(f"{'metered / unmetered, live (core 0)':<36}{live_metered:>6.2f}  (best of each;"
          " target >= 0.95)")
    print(f"{'  per round, back to back':<36}"
          + ", ".join(f"cached {c:.2f} live {v:.2f}" for c, v in rounds))
    # the host's load drifts within a run: a pair measured back to back shares its minute
    print(f"{'  median of the rounds':<36}cached {statistics.median(c for c, _ in rounds):.2f}"
          f" live {statistics.median(v for _, v in rounds):.2f}")


def measure_p384(opts: argparse.Namespace, work: Path, data: Path, jpki: list[str],
                 serve: list[str], results: dict[str, dict[str, float]]) -> float:
    """The live path of a P-384 generation: rotate both CAs to ECDSA P-384, issue a
    `next`-profile pair, and load the same daemon with nonce requests for it, pinned to
    core 0 and free on cores 0-1, each paired with the raw P-384 sign rate right after it.
    Returns the raw P-384 sign rate on CPU 0 (best of 3)."""
    # both kinds: a `next` pair is issued under P-384 generations only (ca/cardprofile.py)
    run(*jpki, "ca", "rotate", "--kind", "all", "--algorithm", "ecdsa-p384")
    issued = json.loads(run(*jpki, "issue", "--resident-id", "bench-p384", "--out",
                            str(work / "out"), "--name", "山田 太郎", "--dob", "1980-04-02",
                            "--sex", "male", "--address", "東京都新宿区西新宿二丁目8番1号",
                            "--municipality-code", "13104", "--sign-pin", "abc12345",
                            "--auth-pin", "1234", "--profile", "next").splitlines()[-1])
    leaf = issued["signature"]["certificate"]
    db = sqlite3.connect(data / "registry.db")
    ca_der, ca_id = db.execute("SELECT cert_der, id FROM ca_generations WHERE kind='signature'"
                               " ORDER BY generation DESC").fetchone()
    r_key_file = db.execute("SELECT key_file FROM ocsp_signers WHERE ca_id=? ORDER BY id DESC",
                            (ca_id,)).fetchone()[0]
    db.close()
    ca_pem = work / "ca-p384.pem"
    ca_pem.write_bytes(x509.load_der_x509_certificate(ca_der).public_bytes(
        serialization.Encoding.PEM))
    passphrase = (data / "ocsp-passphrase").read_text().strip().encode()
    key = serialization.load_pem_private_key((data / "ocsp" / r_key_file).read_bytes(),
                                             password=passphrase)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    nonce_request = work / "req-p384-nonce.der"
    run("openssl", "ocsp", "-issuer", str(ca_pem), "-cert", leaf, "-reqout", str(nonce_request))
    lua_nonce = work / "nonce-p384.lua"
    lua_nonce.write_text(LUA.format(body=nonce_request, auth=""))
    for name, cpus in ((LIVE_P384_ONE_CORE, "0"), (LIVE_P384_TWO_CORES, "0,1")):
        port = free_port()
        ours = start(["taskset", "-c", cpus, *serve, "--port", str(port)])
        try:
            url = f"http://127.0.0.1:{port}/ocsp"
            wait_http(f"http://127.0.0.1:{port}/healthz")
            check = run("openssl", "ocsp", "-issuer", str(ca_pem), "-cert", leaf, "-url", url,
                        "-CAfile", str(ca_pem), stderr=subprocess.STDOUT)  # live: nonce echoed
            assert ": good" in check and "Response verify OK" in check, check
            assert "WARNING: no nonce" not in check, check
            load(url, lua_nonce, 2, opts.connections)  # warm-up
            for _ in range(opts.rounds):
                keep_best(results, name, paired(load(url, lua_nonce, opts.seconds,
                                                     opts.connections), key_pem))
        finally:
            stop(ours)
    return raw_sign_rate(key_pem)


if __name__ == "__main__":
    sys.exit(main())
