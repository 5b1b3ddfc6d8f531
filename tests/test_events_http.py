"""POST /registry/events on a real daemon: auth, limits, batches, and durability under kill -9."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from jpki.context import Context
from tests.helpers import Daemon, jpki, registry_rows
from tests.test_revocation_events import MOVE, SHINJUKU, event, issue

pytestmark = pytest.mark.engines


def post(url: str, body: bytes, token: str | None) -> tuple[int, Any]:
    request = urllib.request.Request(url + "/registry/events", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@pytest.fixture
def token(data_dir: Path) -> str:
    result = jpki(data_dir, "operator", "add", "registry-feed")
    assert result.code == 0
    assert result.json["operator"] == "registry-feed"
    return str(result.json["token"])


def test_operator_token_is_required_and_stored_hashed(context: Context, tmp_path: Path,
                                                     token: str) -> None:
    issue(context, tmp_path, "r1")
    daemon = Daemon(context.data_dir).start()
    try:
        body = json.dumps(event("e1", "r1", "card_lost")).encode()
        assert post(daemon.url, body, None)[0] == 401
        assert post(daemon.url, body, "op_wrong")[0] == 401
        status, outcome = post(daemon.url, body, token)
        assert status == 200 and outcome["status"] == "applied"
        assert len(outcome["revoked"]) == 2
        status, replay = post(daemon.url, body, token)
        assert status == 200 and replay["status"] == "replayed"
        conflict = json.dumps(event("e1", "r1", "deletion")).encode()
        assert post(daemon.url, conflict, token)[0] == 409
    finally:
        daemon.stop()
    stored = registry_rows(context.data_dir, "SELECT token_sha256 FROM operators")[0][0]
    assert token not in stored and len(stored) == 64


def test_batches_report_each_index_and_oversized_bodies_are_refused(
        context: Context, tmp_path: Path, token: str) -> None:
    issue(context, tmp_path, "r1")
    daemon = Daemon(context.data_dir).start()
    try:
        batch = [event("a", "r1", "change", **MOVE), {"event_id": "b"},
                 event("c", "r1", "change", **SHINJUKU)]
        status, body = post(daemon.url, json.dumps(batch).encode(), token)
        assert status == 207 and body["rejected"] == 1
        assert [r["status"] for r in body["results"]] == ["applied", "rejected", "applied"]
        assert body["results"][1]["location"] == "index 1"
        assert body["results"][1]["field"] == "resident_id"
        huge = b"[" + b" " * (10 * 1024 * 1024) + b"]"
        status, problem = post(daemon.url, huge, token)
        assert status == 413 and "exceeds" in problem["detail"]
        status, problem = post(daemon.url, b"{nope", token)
        assert status == 400
        # the daemon is still up and nothing was applied by the refused bodies
        with urllib.request.urlopen(daemon.url + "/healthz") as response:
            assert response.status == 200
    finally:
        daemon.stop()
    assert registry_rows(context.data_dir, "SELECT COUNT(*) FROM events")[0][0] == 2


def test_acknowledged_events_survive_sigkill_exactly_once(context: Context, tmp_path: Path,
                                                         token: str) -> None:
    residents = [f"r{i}" for i in range(6)]
    for resident_id in residents:
        issue(context, tmp_path, resident_id)
    events = [event(f"ev-{n}", residents[n % len(residents)], "change",
                    **(MOVE if (n // len(residents)) % 2 == 0 else SHINJUKU))
              for n in range(400)]
    daemon = Daemon(context.data_dir).start()
    acknowledged: list[dict[str, Any]] = []
    sent: list[str] = []
    killed = threading.Event()

    def stream() -> None:
        for item in events:
            if killed.is_set():
                return
            sent.append(item["event_id"])
            try:
                status, _ = post(daemon.url, json.dumps(item).encode(), token)
            except OSError:
                return
            if 200 <= status < 300:
                acknowledged.append(item)
                if len(acknowledged) == 60:
                    daemon.kill()  # SIGKILL while the stream goes on
                    killed.set()

    worker = threading.Thread(target=stream)
    worker.start()
    worker.join(120)
    assert killed.is_set() and len(acknowledged) >= 60
    restarted = Daemon(context.data_dir).start()
    try:
        applied = {row[0] for row in registry_rows(context.data_dir,
                                                   "SELECT event_id FROM events")}
        revocations = registry_rows(
            context.data_dir, "SELECT serial, COUNT(*) FROM audit_log"
            " WHERE action = 'certificate.revoke' GROUP BY serial")
        assert {item["event_id"] for item in acknowledged} <= applied
        assert applied <= set(sent)
        # every resident moved once at least: each signature certificate revoked exactly once
        assert len(revocations) == len(residents)
        assert all(count == 1 for _serial, count in revocations)
        for item in acknowledged:
            status, outcome = post(restarted.url, json.dumps(item).encode(), token)
            assert status == 200 and outcome["status"] == "replayed"
        audit = jpki(context.data_dir, "audit", "verify")
        assert audit.json["ok"], audit.json
    finally:
        restarted.stop()
