"""Issue 14, defect 6: rewriting the audit log or the registry behind the code's back is caught.

Each attack is made with plain SQL on the real registry, as someone who can write the database
file but does not hold the CA passphrase: delete the last rows, edit a row and recompute the
whole chain (the hash chain alone holds afterwards), and revive a revoked certificate. The
checkpoints are signed by the real commands (`jpki init`, `issue`, `revoke`) with the audit key.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import pytest

from registry import audit
from tests.helpers import issue_args, jpki, registry_connection

pytestmark = pytest.mark.engines


def _issue_and_revoke(data_dir: Path, tmp_path: Path) -> str:
    for index in range(2):
        issued = jpki(data_dir, *issue_args(f"r-{index}", tmp_path / f"o{index}"))
        assert issued.code == 0, issued.err
    serial = issued.json["authentication"]["serial"]
    revoked = jpki(data_dir, "revoke", serial, "--reason", "keyCompromise")
    assert revoked.code == 0, revoked.err
    return str(serial)


def _verify(data_dir: Path) -> dict:
    result = jpki(data_dir, "audit", "verify")
    assert result.code == (0 if result.json["ok"] else 1)
    return dict(result.json)


def _chain_alone_holds(conn: Any) -> bool:
    """What `audit verify` checked before checkpoints: the rows' own links and hashes."""
    prev = audit.GENESIS
    for row_id, at, actor, action, serial, detail, row_prev, row_hash in conn.execute(
            "SELECT id, at, actor, action, serial, detail, prev_hash, hash FROM audit_log"
            " ORDER BY id"):
        if row_prev != prev or audit._row_hash(prev, row_id, at, actor, action, serial,
                                               detail) != row_hash:
            return False
        prev = row_hash
    return True


def test_untouched_registry_verifies_with_checkpoints(data_dir: Path, tmp_path: Path) -> None:
    _issue_and_revoke(data_dir, tmp_path)
    report = _verify(data_dir)
    assert report["ok"] is True, report
    assert report["checkpoints"] >= 3  # init, each issue, the revocation
    assert report["last_checkpoint"]["row"] == report["rows"]
    assert report["audit_key"].startswith("SHA256:")
    assert report["registry_mismatches"] == []
    pinned = jpki(data_dir, "audit", "verify", "--audit-key", report["audit_key"])
    assert pinned.code == 0
    other = jpki(data_dir, "audit", "verify", "--audit-key", "SHA256:" + "0" * 64)
    assert other.code == 1 and "audit key" in other.json["problem"]


def test_deleting_the_last_rows_is_named_as_truncation(data_dir: Path, tmp_path: Path) -> None:
    _issue_and_revoke(data_dir, tmp_path)
    rows = _verify(data_dir)["rows"]
    with registry_connection(data_dir) as conn:
        conn.execute("DELETE FROM audit_log WHERE id > ?", (rows - 3,))
        assert _chain_alone_holds(conn)  # the attack that used to pass
    report = _verify(data_dir)
    assert report["ok"] is False
    assert "truncated" in report["problem"] and f"row {rows}" in report["problem"], report
    assert f"ends at row {rows - 3}" in report["problem"]
    # a signer refuses to anchor the shortened log
    assert jpki(data_dir, "audit", "checkpoint").code == 4


def test_an_edit_with_the_whole_chain_recomputed_is_named_by_its_checkpoint(
        data_dir: Path, tmp_path: Path) -> None:
    _issue_and_revoke(data_dir, tmp_path)
    with registry_connection(data_dir) as conn:
        conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = 2")
        prev = audit.GENESIS
        for row in list(conn.execute("SELECT id, at, actor, action, serial, detail"
                                     " FROM audit_log ORDER BY id")):
            digest = audit._row_hash(prev, *row)
            conn.execute("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE id = ?",
                         (prev, digest, row[0]))
            prev = digest
        assert _chain_alone_holds(conn)  # the attack that used to pass
        first = conn.execute("SELECT id, row_id FROM audit_checkpoints WHERE row_id >= 2"
                             " ORDER BY id LIMIT 1").fetchone()
    report = _verify(data_dir)
    assert report["ok"] is False
    assert report["problem"].startswith(f"checkpoint {first[0]} ")
    assert "recomputed" in report["problem"] and report["first_broken_row"] == first[1]
    assert jpki(data_dir, "audit", "checkpoint").code == 4


def test_a_forged_checkpoint_signature_is_named(data_dir: Path, tmp_path: Path) -> None:
    _issue_and_revoke(data_dir, tmp_path)
    with registry_connection(data_dir) as conn:
        conn.execute("UPDATE audit_checkpoints SET signature = ?"
                     " WHERE id = (SELECT MAX(id) FROM audit_checkpoints)", (bytes(256),))
    report = _verify(data_dir)
    assert report["ok"] is False and "signature does not verify" in report["problem"]


def test_a_revoked_certificate_set_good_is_named(data_dir: Path, tmp_path: Path) -> None:
    serial = _issue_and_revoke(data_dir, tmp_path)
    with registry_connection(data_dir) as conn:
        conn.execute("UPDATE certificates SET status = 'good', reason = NULL, revoked_at = NULL"
                     " WHERE serial = ?", (serial,))
    report = _verify(data_dir)
    assert report["ok"] is False and report["problem"] is None  # the log itself is intact
    assert [m for m in report["registry_mismatches"] if serial in m] == report[
        "registry_mismatches"] != []
    assert "good in the registry" in report["registry_mismatches"][0]


def test_a_changed_revocation_reason_or_a_silent_revocation_is_named(
        data_dir: Path, tmp_path: Path) -> None:
    serial = _issue_and_revoke(data_dir, tmp_path)
    with registry_connection(data_dir) as conn:
        conn.execute("UPDATE certificates SET reason = 4 WHERE serial = ?", (serial,))
        other = conn.execute("SELECT serial FROM certificates WHERE status = 'good'"
                             " LIMIT 1").fetchone()[0]
        conn.execute("UPDATE certificates SET status = 'revoked', reason = 1, revoked_at = 1"
                     " WHERE serial = ?", (other,))
    mismatches = _verify(data_dir)["registry_mismatches"]
    assert any(serial in m and "superseded" in m and "keyCompromise" in m for m in mismatches)
    assert any(other in m and "0 audit rows" in m for m in mismatches)


def test_audit_rows_name_the_real_actor(data_dir: Path, tmp_path: Path) -> None:
    _issue_and_revoke(data_dir, tmp_path)
    added = jpki(data_dir, "verifier", "add", "bank", "--log-level", "ERROR")
    assert added.code == 0, added.err
    with registry_connection(data_dir) as conn:
        actors = dict(conn.execute(
            "SELECT action, actor FROM audit_log WHERE action IN"
            " ('certificate.issue', 'certificate.revoke', 'verifier.add')"))
    assert actors == {"certificate.issue": getpass.getuser(),
                      "certificate.revoke": getpass.getuser(),
                      "verifier.add": getpass.getuser()}
