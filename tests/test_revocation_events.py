"""Resident-register events revoke exactly what DOMAIN.md prescribes, once each."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from ca.issuance import IssuedPair, IssueRequest
from ca.kinds import CertKind
from jpki.context import Context
from registry import certificates, residents
from registry.facts import Facts
from registry.notify import hub
from revocation.events import EventApplier
from tests.helpers import jpki

pytestmark = pytest.mark.engines

SHINJUKU = dict(name="山田 太郎", dob="1980-04-02", sex="male",
                address="東京都新宿区西新宿二丁目8番1号", municipality_code="13104")


def issue(context: Context, tmp_path: Path, resident_id: str) -> IssuedPair:
    facts = Facts.parse(**SHINJUKU)
    return context.issuer.issue(IssueRequest(resident_id, facts, tmp_path / resident_id,
                                             "abc12345", "1234"))


def event(event_id: str, resident_id: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "resident_id": resident_id, "type": kind,
            "occurred_at": "2026-11-20T10:00:00+09:00", **extra}


MOVE = dict(SHINJUKU, address="東京都千代田区千代田1番1号", municipality_code="13101")

# event -> (signature status, reason; authentication status, reason), from DOMAIN.md
POLICY_CASES = [
    ("change", MOVE, {}, ("revoked", "affiliationChanged"), ("good", None)),
    ("change", dict(SHINJUKU, name="山田 次郎"), {}, ("revoked", "affiliationChanged"),
     ("good", None)),
    ("change", dict(SHINJUKU, dob="1980-04-03"), {}, ("revoked", "affiliationChanged"),
     ("good", None)),
    ("change", dict(SHINJUKU, sex="unknown"), {}, ("revoked", "affiliationChanged"),
     ("good", None)),
    ("change", dict(SHINJUKU), {}, ("good", None), ("good", None)),  # trivial correction
    ("emigration_keep_card", {}, {}, ("revoked", "affiliationChanged"), ("good", None)),
    ("deletion", {}, {}, ("revoked", "cessationOfOperation"),
     ("revoked", "cessationOfOperation")),
    ("stop_request", {}, {}, ("revoked", "cessationOfOperation"),
     ("revoked", "cessationOfOperation")),
    ("card_lost", {}, {}, ("revoked", "certificateHold"), ("revoked", "certificateHold")),
    ("key_compromise", {}, {}, ("revoked", "keyCompromise"), ("revoked", "keyCompromise")),
    ("record_error", {}, {}, ("revoked", "affiliationChanged"), ("good", None)),
    ("record_error", {}, {"auth_contents_wrong": True}, ("revoked", "affiliationChanged"),
     ("revoked", "affiliationChanged")),
    ("destroyed_before_delivery", {}, {}, ("revoked", "unspecified"),
     ("revoked", "unspecified")),
]


@pytest.mark.parametrize(("kind", "facts", "extra", "signature", "authentication"),
                         POLICY_CASES)
def test_policy_table(context: Context, tmp_path: Path, kind: str, facts: dict,
                      extra: dict, signature: tuple, authentication: tuple) -> None:
    pair = issue(context, tmp_path, "r1")
    outcome = EventApplier(context.store, context.clock).apply(
        event("e1", "r1", kind, **facts, **extra))
    assert outcome.status == "applied", outcome.to_json()
    for cert_kind, expected in ((CertKind.SIGNATURE, signature),
                                (CertKind.AUTHENTICATION, authentication)):
        shown = jpki(context.data_dir, "show", pair.issued[cert_kind].serial).json
        assert (shown["status"], shown["reason"]) == expected, (cert_kind, shown)
        if expected[0] == "revoked":
            assert shown["revoked_at"] is not None
    revoked = {item["serial"] for item in outcome.revoked}
    assert len(revoked) == [signature[0], authentication[0]].count("revoked")
    if facts:
        assert residents.require(context.store, "r1") == Facts.parse(**facts)


def test_change_notes_why_nothing_was_revoked(context: Context, tmp_path: Path) -> None:
    issue(context, tmp_path, "r1")
    outcome = EventApplier(context.store, context.clock).apply(
        event("e1", "r1", "change", **SHINJUKU))
    assert outcome.revoked == [] and "none of the 4 facts changed" in (outcome.note or "")


def test_replay_returns_the_original_outcome_and_changes_nothing(
        context: Context, tmp_path: Path) -> None:
    issue(context, tmp_path, "r1")
    applier = EventApplier(context.store, context.clock)
    first = applier.apply(event("e1", "r1", "card_lost"))
    audit_rows = context.store.one("SELECT COUNT(*) AS n FROM audit_log")["n"]
    again = applier.apply(event("e1", "r1", "card_lost"))
    assert again.status == "replayed"
    assert again.revoked == first.revoked and len(first.revoked) == 2
    assert context.store.one("SELECT COUNT(*) AS n FROM audit_log")["n"] == audit_rows
    conflict = applier.apply(event("e1", "r1", "deletion"))
    assert conflict.status == "rejected" and conflict.http_status == 409
    assert conflict.error_field == "event_id"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (event("e9", "nobody", "deletion"), "resident_id"),
        (event("e9", "r1", "moved_to_mars"), "type"),
        (event("e9", "r1", "change", name="山田 太郎"), "dob"),
        (event("e9", "r1", "change", **dict(SHINJUKU, dob="1980-02-30")), "dob"),
        (event("e9", "r1", "change", **dict(SHINJUKU, municipality_code="99999")),
         "municipality_code"),
        (dict(event("e9", "r1", "deletion"), occurred_at="yesterday"), "occurred_at"),
        (dict(event("e9", "r1", "deletion"), occurred_at="2026-11-20T10:00:00"), "occurred_at"),
        ({"resident_id": "r1", "type": "deletion", "occurred_at": "2026-11-20T10:00:00Z"},
         "event_id"),
        (event("e9", "r1", "deletion", address="東京都"), "address"),
        (event("e9", "r1", "deletion", colour="blue"), "colour"),
        (event("e9", "r1", "card_lost", auth_contents_wrong=True), "auth_contents_wrong"),
        (["not", "an", "object"], "event"),
    ],
)
def test_invalid_events_are_rejected_and_change_nothing(
        context: Context, tmp_path: Path, raw: Any, field: str) -> None:
    pair = issue(context, tmp_path, "r1")
    before = context.store.query("SELECT serial, status FROM certificates ORDER BY serial")
    outcome = EventApplier(context.store, context.clock).apply(raw)
    assert outcome.status == "rejected"
    assert outcome.error_field == field, outcome.to_json()
    assert context.store.query("SELECT serial, status FROM certificates ORDER BY serial") == before
    assert context.store.one("SELECT COUNT(*) AS n FROM events")["n"] == 0
    assert pair.issued[CertKind.SIGNATURE].serial


def test_cli_applies_json_lines_with_line_numbers(context: Context, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    issue(context, tmp_path, "r1")
    issue(context, tmp_path, "r2")
    lines = [
        json.dumps(event("a", "r1", "change", **MOVE)),
        "",
        "{not json",
        json.dumps(event("b", "nobody", "deletion")),
        json.dumps(event("c", "r2", "key_compromise")),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = jpki(context.data_dir, "events", "apply", str(path))
    assert result.code == 2
    outcomes = result.json_lines
    assert [o["status"] for o in outcomes] == ["applied", "rejected", "rejected", "applied"]
    assert outcomes[1]["location"] == "line 3" and outcomes[1]["field"] == "event"
    assert outcomes[2]["location"] == "line 4" and outcomes[2]["field"] == "resident_id"
    assert [r["reason"] for r in outcomes[3]["revoked"]] == ["keyCompromise"] * 2
    # stdin, replayed: same outcomes, exit 0 for the valid ones
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines[0] + "\n" + lines[4] + "\n"))
    replay = jpki(context.data_dir, "events", "apply", "-")
    assert replay.code == 0
    assert [o["status"] for o in replay.json_lines] == ["replayed", "replayed"]


def test_operator_revoke_rules(context: Context, tmp_path: Path) -> None:
    pair = issue(context, tmp_path, "r1")
    sig = pair.issued[CertKind.SIGNATURE].serial
    auth = pair.issued[CertKind.AUTHENTICATION].serial
    for bad in ("removeFromCRL", "8", "privilegeWithdrawn", "7"):
        result = jpki(context.data_dir, "revoke", sig, "--reason", bad)
        assert result.code == 2 and "reason:" in result.err
    held = jpki(context.data_dir, "revoke", sig, "--reason", "certificateHold")
    assert held.code == 0 and held.json["reason"] == "certificateHold"
    again = jpki(context.data_dir, "revoke", sig, "--reason", "keyCompromise")
    assert again.code == 4 and "already revoked (certificateHold" in again.err
    too_old = jpki(context.data_dir, "revoke", auth, "--reason", "keyCompromise",
                   "--at", "2020-01-01T00:00:00+09:00")
    assert too_old.code == 2 and "at:" in too_old.err
    future = jpki(context.data_dir, "revoke", auth, "--reason", "1",
                  "--at", "2999-01-01T00:00:00+00:00")
    assert future.code == 2
    now = context.clock()
    recent = (now.replace(microsecond=0) - __import__("datetime").timedelta(hours=2))
    ok = jpki(context.data_dir, "revoke", auth, "--reason", "keyCompromise",
              "--at", recent.isoformat())
    assert ok.code == 0
    assert ok.json["revoked_at"] == recent.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_renew_supersedes_and_links(context: Context, tmp_path: Path) -> None:
    old = issue(context, tmp_path, "r1")
    facts = Facts.parse(**MOVE)
    new = context.issuer.renew(IssueRequest("r1", facts, tmp_path / "new", "abc12345", "1234"))
    for kind in CertKind:
        old_serial = old.issued[kind].serial
        new_serial = new.issued[kind].serial
        shown = jpki(context.data_dir, "show", old_serial).json
        assert (shown["status"], shown["reason"]) == ("revoked", "superseded")
        link = context.store.one("SELECT new_serial, kind FROM successors WHERE old_serial = ?",
                                 (old_serial,))
        assert link == {"new_serial": new_serial, "kind": kind.value}
    assert certificates.counterpart(context.store, new.issued[CertKind.SIGNATURE].serial) == \
        new.issued[CertKind.AUTHENTICATION].serial
    assert sorted(new.superseded) == sorted(p.serial for p in old.issued.values())


def test_renewal_after_a_move_links_the_revoked_signature_certificate(
        context: Context, tmp_path: Path) -> None:
    old = issue(context, tmp_path, "r1")
    EventApplier(context.store, context.clock).apply(event("m1", "r1", "change", **MOVE))
    new = context.issuer.renew(IssueRequest("r1", Facts.parse(**MOVE), tmp_path / "new",
                                            "abc12345", "1234"))
    old_sig = old.issued[CertKind.SIGNATURE].serial
    assert new.superseded == [old.issued[CertKind.AUTHENTICATION].serial]
    shown = jpki(context.data_dir, "show", old_sig).json
    assert shown["reason"] == "affiliationChanged"  # not overwritten by the renewal
    link = context.store.one("SELECT new_serial FROM successors WHERE old_serial = ?",
                             (old_sig,))
    assert link == {"new_serial": new.issued[CertKind.SIGNATURE].serial}


def test_renew_via_cli_needs_a_live_pair(data_dir: Path, tmp_path: Path) -> None:
    from tests.helpers import issue_args

    args = issue_args("r1", tmp_path / "a")
    refused = jpki(data_dir, "renew", *args[1:])
    assert refused.code == 3  # unknown resident
    assert jpki(data_dir, *args).code == 0
    renewed = jpki(data_dir, "renew", *issue_args("r1", tmp_path / "b")[1:])
    assert renewed.code == 0, renewed.err
    assert len(renewed.json["superseded"]) == 2


def test_subscribers_hear_of_each_revocation(context: Context, tmp_path: Path) -> None:
    pair = issue(context, tmp_path, "r1")
    heard: list[tuple[str, str]] = []
    unsubscribe = hub.subscribe(lambda serial, status: heard.append((serial, status)))
    try:
        EventApplier(context.store, context.clock).apply(event("e1", "r1", "deletion"))
    finally:
        unsubscribe()
    assert sorted(heard) == sorted((p.serial, "revoked") for p in pair.issued.values())


def test_state_changes_rows_let_other_processes_notice(context: Context, tmp_path: Path) -> None:
    pair = issue(context, tmp_path, "r1")
    jpki(context.data_dir, "revoke", pair.issued[CertKind.SIGNATURE].serial, "--reason", "1")
    other = context.store.reopen()  # another connection, as another process would hold
    try:
        rows = other.query("SELECT serial, status FROM state_changes")
    finally:
        other.close()
    assert rows == [{"serial": pair.issued[CertKind.SIGNATURE].serial, "status": "revoked"}]


def test_ca_compromise_revokes_every_certificate_of_that_key(context: Context,
                                                            tmp_path: Path) -> None:
    first = issue(context, tmp_path, "r1")
    assert jpki(context.data_dir, "ca", "rotate", "--kind", "signature").code == 0
    second = issue(context, tmp_path, "r2")
    refused = jpki(context.data_dir, "ca", "compromise", "--kind", "signature",
                   "--generation", "1")
    assert refused.code == 2  # --confirm is required
    result = jpki(context.data_dir, "ca", "compromise", "--kind", "signature",
                  "--generation", "1", "--confirm")
    assert result.code == 0 and result.json["revoked"] == 1
    shown = jpki(context.data_dir, "show", first.issued[CertKind.SIGNATURE].serial).json
    assert (shown["status"], shown["reason"]) == ("revoked", "cACompromise")
    for pair, kind in ((first, CertKind.AUTHENTICATION), (second, CertKind.SIGNATURE)):
        assert jpki(context.data_dir, "show", pair.issued[kind].serial).json["status"] == "good"
    assert jpki(context.data_dir, "ca", "compromise", "--kind", "sign", "--generation", "7",
                "--confirm").code == 3
