"""Benchmark: revocation -> published CRL, through the two processes an operator runs.

    python bench/crl_urgent_bench.py                 # the shipped crl.urgent_delay_seconds (60)
    python bench/crl_urgent_bench.py --delay 8 -n 20

One run: a fresh data directory, N issued pairs, CRLs published, then `jpki signer` and
`jpki serve` started as real processes on 127.0.0.1. N times, one after another: `jpki revoke`
(timed from the moment the command returns, i.e. the revocation is acknowledged and durable)
until the partition CRL *served by `jpki serve` over HTTP* lists the serial. The peer is the
budget itself: the ratio printed is the median delay over `crl.urgent_delay_seconds`, which must
stay below 1. Everything runs on 127.0.0.1; the loop is bounded by N and a per-revocation cap.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography import x509

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "default.toml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def crl_path(certificate: Path) -> str:
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    uri = next(name.value for point in points for name in point.full_name or []
               if isinstance(name, x509.UniformResourceIdentifier))
    return "/" + uri.split("/", 3)[3]


def listed(url: str, serial: int) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            crl = x509.load_der_x509_crl(response.read())
    except (urllib.error.URLError, OSError):
        return False
    return crl.get_revoked_certificate_by_serial_number(serial) is not None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20, help="revocations measured (default 20)")
    parser.add_argument("--delay", type=float, default=60.0,
                        help="crl.urgent_delay_seconds (default: the shipped 60)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jpki-urgent-"))
    data = work / "data"
    config = work / "bench.toml"
    text = CONFIG.read_text(encoding="utf-8")
    text = text.replace('municipalities_csv = "municipalities.csv"',
                        f'municipalities_csv = "{REPO / "configs" / "municipalities.csv"}"')
    text = text.replace('tariff_file = "tariff.toml"',
                        f'tariff_file = "{REPO / "configs" / "tariff.toml"}"')
    text = text.replace("urgent_delay_seconds = 60", f"urgent_delay_seconds = {args.delay}")
    config.write_text(text, encoding="utf-8")
    jpki = [sys.executable, "-m", "jpki.cli", "--config", str(config), "--data-dir", str(data)]

    def run(*argv: str) -> dict:
        done = subprocess.run([*jpki, *argv], capture_output=True, text=True, check=True,
                              cwd=REPO, timeout=300)
        return json.loads(done.stdout.strip().splitlines()[-1])

    port = free_port()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        run("init")
        pairs = []
        for i in range(args.n):
            print(f"\rissuing {i + 1}/{args.n}", end="", file=sys.stderr, flush=True)
            pairs.append(run("issue", "--resident-id", f"bench-{i}", "--name", "山田 太郎",
                             "--dob", "1980-04-02", "--sex", "male", "--address",
                             "東京都新宿区西新宿二丁目8番1号", "--municipality-code", "13104",
                             "--out", str(work / f"r{i}"), "--sign-pin", "abc12345",
                             "--auth-pin", "1234"))
        print(file=sys.stderr)
        run("crl", "generate")
        logs = open(work / "processes.log", "ab")  # noqa: SIM115  # closed with the processes
        processes.append(subprocess.Popen([*jpki, "signer"], stdout=logs, stderr=logs,
                                          cwd=REPO))
        processes.append(subprocess.Popen([*jpki, "serve", "--host", "127.0.0.1", "--port",
                                           str(port), "--metrics-listen", ""],
                                          stdout=logs, stderr=logs, cwd=REPO))
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        delays = []
        cap = args.delay + 30
        for i, pair in enumerate(pairs):
            serial = pair["signature"]["serial"]
            url = base + crl_path(Path(pair["signature"]["certificate"]))
            run("revoke", serial, "--reason", "keyCompromise")
            acknowledged = time.monotonic()
            while not listed(url, int(serial, 16)):
                if time.monotonic() - acknowledged > cap:
                    raise SystemExit(f"revocation {i}: not on the served CRL after {cap} s")
                time.sleep(0.05)
            delays.append(time.monotonic() - acknowledged)
            print(f"revocation {i + 1:2d}/{args.n}: on the served partition CRL after"
                  f" {delays[-1]:6.2f} s", flush=True)
        median = statistics.median(delays)
        print(f"\nrevocation -> served CRL over {len(delays)} revocations:"
              f" median {median:.2f} s, min {min(delays):.2f} s, max {max(delays):.2f} s")
        print(f"median / crl.urgent_delay_seconds ({args.delay:g} s) = {median / args.delay:.2f}"
              f" (must stay below 1; max / delay = {max(delays) / args.delay:.2f})")
        return 0 if max(delays) <= args.delay else 1
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(20)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
