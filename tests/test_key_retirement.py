"""Retiring an old CA generation, and the file backend's refusals (real keys, real registry)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from ca import authority, responders, rotation
from ca.kinds import CertKind
from jpki.context import Context
from jpki.settings import load_settings
from jpki.wiring import crl_generator, responder_policy
from ocsp.issuers import IssuerIndex, cert_id_hashes
from registry.clock import FrozenClock, from_epoch
from registry.errors import ConfigError, Conflict, JPKIError
from tests.helpers import CONFIG, issue_args, jpki

pytestmark = pytest.mark.engines


@pytest.fixture
def rotated(context: Context, tmp_path: Path) -> dict:
    issued = jpki(context.data_dir, *issue_args("retire-1", tmp_path / "one"))
    assert issued.code == 0, issued.err
    result = jpki(context.data_dir, "ca", "rotate", "--kind", "signature", "--operator", "carol")
    assert result.code == 0, result.err
    return issued.json


def test_retire_is_refused_while_certificates_are_unexpired(context: Context,
                                                            rotated: dict) -> None:
    result = jpki(context.data_dir, "ca", "retire", "--kind", "signature", "--generation", "1")
    assert result.code == 4
    assert "still covers 1 unexpired certificate" in result.err
    current = jpki(context.data_dir, "ca", "retire", "--kind", "signature", "--generation", "2")
    assert current.code == 4 and "current generation" in current.err
    missing = jpki(context.data_dir, "ca", "retire", "--kind", "signature", "--generation", "9")
    assert missing.code == 3
    assert authority.generations(context.store, CertKind.SIGNATURE)[0].retired is False


def test_retire_after_the_last_expiry_archives_the_key(context: Context, rotated: dict) -> None:
    old = authority.generations(context.store, CertKind.SIGNATURE)[0]
    last_expiry = rotation.coverage(context.store, old.id, context.clock()).last_expiry
    assert last_expiry is not None
    later = FrozenClock(from_epoch(last_expiry) + timedelta(seconds=1))
    retired = rotation.retire(context.store, context.keys, context.responder_keys, later,
                              CertKind.SIGNATURE, 1, operator="dave", reason="all expired")
    assert retired.retired and retired.key_file.startswith("archive/")
    assert not (context.data_dir / "ca" / old.key_file).exists()
    assert (context.data_dir / "ca" / "archive" / old.key_file).stat().st_mode & 0o077 == 0
    with pytest.raises(JPKIError, match="archived"):
        context.keys.load(old.key_file)
    with pytest.raises(JPKIError, match="retired"):
        retired.private_key(context.keys)
    with pytest.raises(Conflict, match="already retired"):
        rotation.retire(context.store, context.keys, context.responder_keys, later,
                        CertKind.SIGNATURE, 1, operator="dave", reason="again")
    # It no longer signs: no CRLs, no responder certificate, not in the OCSP index.
    generator = crl_generator(context.store, context.keys, later, context.settings)
    assert old.id not in [ca.id for ca in generator.live_generations(later())]
    renewed = responders.ensure(context.store, context.keys, context.responder_keys, later,
                                responder_policy(context.settings), force=True)
    assert old.id not in [record.ca_id for record in renewed]
    index = IssuerIndex(context.store, context.responder_keys, ("sha1",))
    index.reload_if_changed()
    assert index.find("sha1", *cert_id_hashes(old, "sha1")) is None
    current = authority.current(context.store, CertKind.SIGNATURE)
    assert index.find("sha1", *cert_id_hashes(current, "sha1")) is not None
    row = context.store.one("SELECT actor, detail FROM audit_log WHERE action ="
                            " 'ca.generation.retire'")
    assert row is not None and row["actor"] == "dave"
    detail = json.loads(row["detail"])
    assert detail["old_key"] == old.fingerprint and detail["new_key"] is None
    assert detail["reason"] == "all expired"


def test_status_lists_generations_and_links(context: Context, rotated: dict) -> None:
    result = jpki(context.data_dir, "ca", "status")
    assert result.code == 0, result.err
    status = result.json
    signature = [g for g in status["generations"] if g["kind"] == "signature"]
    assert [(g["generation"], g["current"], g["state"]) for g in signature] == [
        (1, False, "live"), (2, True, "live")]
    assert signature[0]["unexpired_certificates"] == 1
    assert signature[0]["fingerprint"].startswith("SHA256:")
    assert {link["direction"] for link in status["links"]} == {"new_with_old", "old_with_new"}


def test_file_backend_refuses_a_group_readable_key(context: Context) -> None:
    ca = authority.current(context.store, CertKind.AUTHENTICATION)
    path = context.data_dir / "ca" / ca.key_file
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="readable by group or others"):
        context.keys.load(ca.key_file)
    result = jpki(context.data_dir, "crl", "generate", "--kind", "authentication")
    assert result.code == 78
    assert "chmod 600" in result.err
    assert ca.key_file in result.err and "PRIVATE KEY" not in result.err


def test_operator_names_are_checked(context: Context) -> None:
    result = jpki(context.data_dir, "ocsp", "rotate", "--operator", "bad name;rm")
    assert result.code == 2
    assert "--operator" in result.err


def test_status_table_for_people(context: Context, rotated: dict) -> None:
    result = jpki(context.data_dir, "ca", "status", "--format", "table")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split()[:3] == ["CA", "STATE", "FINGERPRINT"]
    assert any(line.startswith("signature g2 *") and " live " in line for line in lines)
    assert any(line.startswith("signature g1 ") and "SHA256:" in line for line in lines)
    assert "2 link certificate(s)" in lines[-1]


def test_init_audits_its_keys_under_the_operator(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    result = jpki(data_dir, "init", "--operator", "frank")
    assert result.code == 0, result.err
    context = Context(load_settings(CONFIG, data_dir))
    try:
        rows = context.store.query("SELECT actor, action, detail FROM audit_log WHERE action IN"
                                   " ('ca.generation.create', 'ocsp.signer.issue')")
        assert len(rows) == 4 and {row["actor"] for row in rows} == {"frank"}
        for row in rows:
            detail = json.loads(row["detail"])
            assert detail["old_key"] is None and detail["new_key"].startswith("SHA256:")
        prints = {ca.fingerprint for ca in authority.generations(context.store)}
        assert prints == {json.loads(row["detail"])["new_key"] for row in rows
                          if row["action"] == "ca.generation.create"}
    finally:
        context.store.close()
