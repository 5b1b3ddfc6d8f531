"""The CLI's contract: init is idempotent, errors name the field and change nothing."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.request import urlopen

from tests.helpers import Daemon, issue_args, jpki


def test_init_twice_changes_nothing_and_says_so(data_dir: Path) -> None:
    result = jpki(data_dir, "init")
    assert result.code == 0
    assert result.json["changed"] is False
    assert "already initialised" in result.json["message"]


def test_daemon_serves_healthz_and_ca_listing(daemon: Daemon) -> None:
    generated = jpki(daemon.data_dir, "crl", "generate")  # what `jpki signer` does at start
    assert generated.code == 0, generated.err
    with urlopen(daemon.url + "/healthz") as response:
        assert json.load(response) == {"status": "ok"}
    with urlopen(daemon.url + "/ca/") as response:
        listing = json.load(response)["certificates"]
    assert {(item["kind"], item["generation"]) for item in listing} == {
        ("signature", 1), ("authentication", 1)}
    path = "/" + listing[0]["der"].split("/", 3)[3]  # public_base_url differs from the test port
    with urlopen(daemon.url + path) as response:
        assert response.headers["Content-Type"] == "application/pkix-cert"
        assert response.read()[:1] == b"\x30"


def test_issue_prints_stable_json(data_dir: Path, tmp_path: Path) -> None:
    result = jpki(data_dir, *issue_args("r-1", tmp_path / "out"))
    assert result.code == 0, result.err
    body = result.json
    assert body["resident_id"] == "r-1"
    for kind in ("signature", "authentication"):
        assert set(body[kind]) == {"serial", "certificate", "key"}
        assert body[kind]["serial"] == body[kind]["serial"].lower()
        assert Path(body[kind]["key"]).stat().st_mode & 0o777 == 0o600
