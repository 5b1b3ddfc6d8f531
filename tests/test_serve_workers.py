"""`jpki serve --workers 2`: two real worker processes on one port (SO_REUSEPORT) under a
parent that holds no key. Both answer; a revocation through POST /registry/events is in every
worker's next answer; every billed check is in the ledger once; signals reach every worker;
a worker that dies is reported and takes the group down."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from ca import authority
from ca.kinds import CertKind
from fees import journal
from jpki.context import Context
from registry.store import Store
from tests.helpers import CONFIG, REPO, free_port, jpki, openssl
from tests.test_events_http import post
from tests.test_fees_durability import request_for

WORKERS = 2
REQUESTS = 40  # one connection each: all on one worker of two has odds 2**-39


class Group:
    """`jpki serve --workers N` as a real subprocess tree; /metrics is the parent's merge."""

    def __init__(self, data_dir: Path, workers: int = WORKERS) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.port = free_port()
        self.metrics_listen = f"127.0.0.1:{free_port()}"
        self.log = data_dir.parent / f"group-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Group:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jpki.cli", "serve", "--config", str(CONFIG),
                 "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
                 "--port", str(self.port), "--metrics-listen", self.metrics_listen,
                 "--workers", str(self.workers)],
                stdout=log, stderr=log, cwd=REPO)
        self.wait_for(lambda: f"with {self.workers} workers" in self.log.read_text(),
                      "the workers to listen")
        return self

    def wait_for(self, condition: Any, what: str, timeout: float = 60.0,
                 check_exit: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process is not None
            if check_exit and self.process.poll() is not None:
                raise AssertionError(f"jpki serve exited ({self.process.returncode}) waiting"
                                     f" for {what}: {self.log.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.log.read_text()}")
            time.sleep(0.05)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.metrics_listen}/metrics",
                                    timeout=10) as response:
            return response.read().decode()

    def answers(self, outcome: str) -> Counter[str]:
        """OCSP answers with `outcome` so far, per worker (the parent's merged metrics)."""
        found: Counter[str] = Counter()
        for labels, value in re.findall(r'^jpki_ocsp_requests_total\{([^}]*)\} (\S+)$',
                                        self.metrics(), re.MULTILINE):
            if f'outcome="{outcome}"' in labels:
                found[re.search(r'worker="(\d+)"', labels)[1]] += int(float(value))  # type: ignore[index]
        return found

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:  # field 4 of proc(5): the parent's pid
                pids.append(int(stat.parent.name))
        return sorted(pids)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def ask(url: str, body: bytes, token: str) -> ocsp.OCSPResponse:
    request = urllib.request.Request(
        url + "/ocsp", data=body, method="POST",
        headers={"Content-Type": "application/ocsp-request", "Authorization": f"Bearer {token}",
                 "Connection": "close"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return ocsp.load_der_ocsp_response(response.read())


def test_two_workers_answer_fresh_bill_once_and_stop_together(
        context: Context, issued: dict[str, Any], tmp_path: Path) -> None:
    data_dir = context.data_dir
    operator = jpki(data_dir, "operator", "add", "registry-feed").json["token"]
    bank = jpki(data_dir, "verifier", "add", "bank").json["token"]
    ca = authority.current(context.store, CertKind.SIGNATURE).certificate
    serial = int(issued["signature"]["serial"], 16)
    body = request_for(ca, serial, nonce=False)
    group = Group(data_dir).start()
    try:
        pids = group.worker_pids()
        assert len(pids) == WORKERS
        assert group.process is not None
        opened = [os.readlink(fd) for fd in Path(f"/proc/{group.process.pid}/fd").iterdir()]
        assert not [path for path in opened if str(data_dir) in path], opened  # keyless parent
        assert 'jpki_serve_worker_up{worker="0"} 1.0' in group.metrics()
        assert 'jpki_serve_worker_up{worker="1"} 1.0' in group.metrics()

        for _ in range(REQUESTS):
            assert ask(group.url, body, bank).certificate_status == ocsp.OCSPCertStatus.GOOD
        good = group.answers("good")
        assert set(good) == {"0", "1"} and sum(good.values()) == REQUESTS, good

        status, outcome = post(group.url, json.dumps(
            {"event_id": "lost-1", "resident_id": "src-1", "type": "card_lost",
             "occurred_at": "2026-11-20T10:00:00+09:00"}).encode(), operator)
        assert status == 200 and outcome["status"] == "applied", outcome
        # each worker's first answer after the commit is among these, and all are revoked
        for _ in range(REQUESTS):
            answer = ask(group.url, body, bank)
            assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
        revoked = group.answers("revoked")
        assert set(revoked) == {"0", "1"} and sum(revoked.values()) == REQUESTS, revoked
        ca_pem = tmp_path / "ca.pem"
        ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        checked = openssl("ocsp", "-issuer", str(ca_pem), "-CAfile", str(ca_pem),
                          "-serial", hex(serial), "-url", group.url + "/ocsp", "-no_nonce",
                          "-header", f"Authorization=Bearer {bank}")
        text = checked.stdout + checked.stderr
        assert "Response verify OK" in text and ": revoked" in text, text

        # every billed answer once in the ledger, from both workers' journals
        usage = jpki(data_dir, "fees", "usage", "--verifier", "bank").json["usage"]
        assert sum(row["checks"] for row in usage) == 2 * REQUESTS + 1, usage
        assert {w for w, _ in journal.journal_dirs(data_dir)} == {0, 1}
        with sqlite3.connect(data_dir / "registry.db") as conn:
            rows = conn.execute("SELECT count(*) FROM ledger").fetchone()[0]
            marks = dict(conn.execute("SELECT journal, seq FROM fee_journal_marks").fetchall())
        assert rows == 2 * REQUESTS + 1, rows
        assert set(marks) == {journal.journal_key(data_dir, k) for k in (0, 1)}, marks

        assert group.process is not None
        group.process.send_signal(signal.SIGHUP)  # forwarded: every worker reloads
        group.wait_for(lambda: all(f"worker-{k} jpki.daemon: SIGHUP" in group.log.read_text()
                                   for k in range(WORKERS)), "both workers to reload")

        group.process.send_signal(signal.SIGTERM)
        assert group.process.wait(30) == 0, group.log.read_text()
        assert not any(alive(pid) for pid in pids)
    finally:
        group.stop()


def test_a_worker_that_dies_is_reported_and_the_others_stop(data_dir: Path) -> None:
    group = Group(data_dir).start()
    try:
        pids = group.worker_pids()
        assert len(pids) == WORKERS
        os.kill(pids[1], signal.SIGKILL)
        assert group.process is not None
        assert group.process.wait(30) == 1
        log = group.log.read_text()
        assert re.search(rf"jpki serve: worker \d \(pid {pids[1]}\) exited with code -9;"
                         " stopping the other workers", log), log
        assert not alive(pids[0])
    finally:
        group.stop()


def test_workers_do_not_outlive_a_killed_parent(data_dir: Path) -> None:
    group = Group(data_dir).start()
    try:
        pids = group.worker_pids()
        assert group.process is not None
        group.process.kill()  # no handler runs: PR_SET_PDEATHSIG sends the workers SIGTERM
        group.process.wait(10)
        group.wait_for(lambda: not any(alive(pid) for pid in pids), "the workers to stop",
                       check_exit=False)
    finally:
        group.stop()


def test_a_port_in_use_is_refused_before_any_worker_starts(data_dir: Path) -> None:
    group = Group(data_dir).start()
    try:
        second = jpki(data_dir, "serve", "--workers", "2", "--host", "127.0.0.1",
                      "--port", str(group.port))
        assert second.code != 0
        assert f"cannot listen on 127.0.0.1:{group.port}" in second.err
    finally:
        group.stop()


def test_each_worker_folds_under_its_own_mark_and_worker_0_keeps_the_old_one(
        data_dir: Path) -> None:
    store = Store.open(data_dir)
    try:
        with store.transaction() as conn:  # a data directory from before workers existed
            conn.execute("INSERT INTO fee_journal_folds (id, seq) VALUES (1, 7)")
        assert journal.folded_mark(store, 0) == 7
        assert journal.folded_mark(store, 1) == 0
        assert journal.fold(store, [(1, "", [])], worker=1) == 1
        assert journal.folded_mark(store, 1) == 1
        assert journal.folded_mark(store, 0) == 7
    finally:
        store.close()
