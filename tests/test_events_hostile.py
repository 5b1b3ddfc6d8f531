"""Hostile events (issue 14, defects 5 and 11) against a real `jpki serve` and the real CLI.

Each attack of the review is replayed first: a 5,000-digit number, deep nesting and a lone
surrogate each gave 500 and blocked the rest of a batch; an unknown key holding a newline
forged an "event applied" log line; a dribbled body kept its connection open. Now each bad
event is rejected at its index naming its field, the others apply, and the log stays one line
per record.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jpki.context import Context
from jpki.settings import load_settings
from tests.helpers import CONFIG, Daemon, jpki
from tests.test_events_http import post
from tests.test_revocation_events import event, issue

FORGED = "INFO jpki.events: event applied id=forged type=deletion revoked=-"
DEEP = "[" * 5000 + "]" * 5000
HUGE = "9" * 5000


def hostile_lines() -> list[str]:
    """One valid event, then each attack, then another valid event: JSON texts, in order."""
    good = json.dumps(event("good-1", "r1", "card_lost"))
    base = json.dumps(event("bad", "r1", "card_lost"))[:-1]  # open object, to append to
    return [
        good,
        base.replace('"bad"', '"huge"') + f', "auth_contents_wrong": {HUGE}}}',
        base.replace('"bad"', '"deep"') + f', "name_alt": {DEEP}}}',
        json.dumps(event("surrogate", "\ud800", "card_lost")),
        base.replace('"bad"', '"forged"') + ", " + json.dumps({"x\n" + FORGED: 1})[1:],
        json.dumps(event("good-2", "r2", "deletion")),
    ]


EXPECTED_FIELDS = [None, "auth_contents_wrong", "name_alt", "resident_id",
                   "x\\x0a" + FORGED, None]


@pytest.fixture
def slow_body_daemon(data_dir: Path, tmp_path: Path) -> Iterator[tuple[Daemon, str]]:
    """A daemon whose body read timeout is 1 s, with an operator token and residents r1, r2."""
    config = tmp_path / "events.toml"
    config.write_text(
        CONFIG.read_text()
        .replace("read_timeout_seconds = 10", "read_timeout_seconds = 1")
        .replace('"municipalities.csv"', f'"{CONFIG.parent / "municipalities.csv"}"')
        .replace('"tariff.toml"', f'"{CONFIG.parent / "tariff.toml"}"'))
    context = Context(load_settings(config, data_dir))
    for resident_id in ("r1", "r2"):
        issue(context, tmp_path, resident_id)
    context.store.close()
    token = jpki(data_dir, "operator", "add", "registry-feed").json["token"]
    daemon = Daemon(data_dir, config=config).start()
    yield daemon, token
    daemon.stop()


def applied_events(data_dir: Path) -> set[str]:
    with sqlite3.connect(data_dir / "registry.db") as conn:
        return {row[0] for row in conn.execute("SELECT event_id FROM events")}


def log_lines(daemon: Daemon) -> list[str]:
    return (daemon.data_dir / f"daemon-{daemon.port}.log").read_text(
        errors="replace").splitlines()


RECORD_START = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} ")


def server_problems(lines: list[str]) -> list[str]:
    """Log records at ERROR or with a traceback, whole."""
    records: list[list[str]] = []
    for line in lines:
        if RECORD_START.match(line) or not records:
            records.append([line])
        else:
            records[-1].append(line)
    return ["\n".join(record) for record in records
            if (" ERROR " in record[0] or " CRITICAL " in record[0]
                or any("Traceback" in line for line in record))]


def check_results(results: list[dict[str, Any]]) -> None:
    assert [r["status"] for r in results] == ["applied", "rejected", "rejected", "rejected",
                                              "rejected", "applied"]
    assert [r.get("field") for r in results] == EXPECTED_FIELDS
    assert results[2]["error"].startswith("name_alt: nested deeper than")
    assert results[3]["event_id"] == "surrogate"


def test_one_bad_event_rejects_itself_and_the_batch_applies(
        slow_body_daemon: tuple[Daemon, str]) -> None:
    daemon, token = slow_body_daemon
    body = ("[" + ",\n".join(hostile_lines()) + "]").encode()
    status, answer = post(daemon.url, body, token)
    assert status == 207, answer
    assert answer["rejected"] == 4
    check_results(answer["results"])
    assert [r["location"] for r in answer["results"]] == [f"index {i}" for i in range(6)]
    assert applied_events(daemon.data_dir) == {"good-1", "good-2"}
    # each attack alone, as a single event: its own 400 naming the field, never a 500
    for line, field in zip(hostile_lines()[1:5], EXPECTED_FIELDS[1:5], strict=True):
        status, answer = post(daemon.url, line.encode(), token)
        assert status == 400 and answer["field"] == field, answer
    # a batch that nests too deeply outside any event still names the index
    status, answer = post(daemon.url, f'[{DEEP}, {hostile_lines()[0]}]'.encode(), token)
    assert status == 207 and answer["results"][0]["location"] == "index 0"
    assert answer["results"][1]["status"] == "replayed"
    lines = log_lines(daemon)
    assert not [line for line in lines if line.startswith(FORGED)], lines
    assert not server_problems(lines)
    assert any("field=x\\x0aINFO jpki.events: event applied" in line for line in lines)


def test_cli_applies_the_same_lines_one_outcome_each(data_dir: Path, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    context = Context(load_settings(CONFIG, data_dir))
    for resident_id in ("r1", "r2"):
        issue(context, tmp_path, resident_id)
    context.store.close()
    source = tmp_path / "events.jsonl"
    source.write_bytes("\n".join(hostile_lines()).encode() + b"\n\xff\xfe not utf-8\n")
    result = jpki(data_dir, "events", "apply", str(source))
    assert result.code == 2, result.err
    outcomes = result.json_lines
    check_results(outcomes[:6])
    assert outcomes[6]["status"] == "rejected" and outcomes[6]["location"] == "line 7"
    assert "UTF-8" in outcomes[6]["error"]
    assert applied_events(data_dir) == {"good-1", "good-2"}
    assert caplog.records  # the rejections were logged...
    assert not [r for r in caplog.records if "\n" in r.getMessage()]  # ...one line each


def test_a_dribbled_body_gets_408_and_the_connection_closes(
        slow_body_daemon: tuple[Daemon, str]) -> None:
    daemon, token = slow_body_daemon
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
        sock.sendall(b"POST /registry/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Authorization: Bearer " + token.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n[")
        started = time.monotonic()
        received = b""
        sock.settimeout(0.3)
        while time.monotonic() - started < 25:
            try:
                sock.sendall(b" ")
            except OSError:
                break  # closed by the server
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            received += chunk
        elapsed = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b"Connection: close" in received
    assert elapsed < 20  # closed, not kept open while the client dribbles
