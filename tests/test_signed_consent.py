"""Consent signed by the resident: `openssl cms -sign` over the statement, POSTed to a real
daemon; what is refused records nothing (issue 18, part 3)."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Daemon, issue_args, jpki, openssl, registry_connection

pytestmark = pytest.mark.engines


@dataclass
class World:
    data_dir: Path
    work: Path
    daemon: Daemon
    bank: str
    shop: str
    card: dict[str, Any]
    key_pem: Path


@pytest.fixture
def world(data_dir: Path, tmp_path: Path) -> Iterator[World]:
    issued = jpki(data_dir, *issue_args("r1", tmp_path / "card"))
    assert issued.code == 0, issued.err
    card = issued.json
    bank = jpki(data_dir, "verifier", "add", "bank").json["token"]
    shop = jpki(data_dir, "verifier", "add", "shop").json["token"]
    key_pem = tmp_path / "sign-key.pem"
    # the resident's signature key out of its PKCS#12 file, with the real openssl
    extracted = openssl("pkcs12", "-in", card["signature"]["key"], "-nocerts", "-nodes",
                        "-passin", "pass:abc12345", "-out", str(key_pem))
    assert extracted.returncode == 0, extracted.stderr
    daemon = Daemon(data_dir).start()
    yield World(data_dir, tmp_path, daemon, bank, shop, card, key_pem)
    daemon.stop()


def statement(world: World, **overrides: Any) -> dict[str, Any]:
    body = {"type": "jpki-consent/v1", "action": "grant",
            "signature_serial": world.card["signature"]["serial"], "verifier": "bank",
            "service": "linkage", "items": [],
            "signed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "nonce": secrets.token_urlsafe(16)}
    body.update(overrides)
    return body


def sign(world: World, body: dict[str, Any], *, cert: str | None = None,
         key: Path | None = None) -> bytes:
    """What a verifier runs (README): openssl cms -sign, DER, content included."""
    name = f"s-{secrets.token_hex(4)}"
    source = world.work / f"{name}.json"
    source.write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
    out = world.work / f"{name}.der"
    result = openssl("cms", "-sign", "-binary", "-nodetach", "-md", "sha256",
                     "-in", str(source), "-signer", cert or world.card["signature"]["certificate"],
                     "-inkey", str(key or world.key_pem), "-outform", "DER", "-out", str(out))
    assert result.returncode == 0, result.stderr
    return out.read_bytes()


def post(world: World, der: bytes, token: str | None = None) -> tuple[int, dict[str, Any], str]:
    request = urllib.request.Request(
        world.daemon.url + "/linkage/v1/consents", data=der, method="POST",
        headers={"Authorization": f"Bearer {token or world.bank}",
                 "Content-Type": "application/pkcs7-mime"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers[
                "Content-Type"]
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers["Content-Type"]


def rows(world: World) -> tuple[int, int]:
    with registry_connection(world.data_dir) as conn:
        evidence = conn.execute("SELECT COUNT(*) FROM signed_consents").fetchone()[0]
        consents = conn.execute("SELECT COUNT(*) FROM consents").fetchone()[0]
    return int(evidence), int(consents)


def counterpart(world: World, token: str | None = None) -> int:
    request = urllib.request.Request(
        f"{world.daemon.url}/linkage/v1/counterpart/{world.card['signature']['serial']}",
        headers={"Authorization": f"Bearer {token or world.bank}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_signed_grant_then_signed_withdrawal(world: World) -> None:
    assert counterpart(world) == 403
    cms = sign(world, statement(world))
    # the CMS verifies with the real openssl against our signature CA (what we accept)
    status, body, _ = post(world, cms)
    assert status == 201, body
    assert body["action"] == "grant" and body["verifier"] == "bank"
    assert body["signature_serial"] == world.card["signature"]["serial"]
    assert counterpart(world) == 200
    assert counterpart(world, world.shop) == 403  # per verifier
    with registry_connection(world.data_dir) as conn:
        stored = conn.execute("SELECT cms, signer_serial FROM signed_consents").fetchone()
        audit_rows = conn.execute("SELECT actor, detail FROM audit_log WHERE action ="
                                  " 'consent.grant'").fetchall()
    assert stored[0] == cms and stored[1] == world.card["signature"]["serial"]
    assert audit_rows[-1][0] == f"resident:{world.card['signature']['serial']}"
    assert json.loads(audit_rows[-1][1])["via"] == "signed statement"
    status, body, _ = post(world, sign(world, statement(world, action="withdraw")))
    assert status == 201, body
    assert counterpart(world) == 403
    assert rows(world)[0] == 2


def test_latest_facts_items_are_signed(world: World) -> None:
    status, body, _ = post(world, sign(world, statement(
        world, service="latest-facts", items=["name", "address"])))
    assert status == 201, body
    assert body["items"] == ["name", "address"]


def test_operator_grant_is_audited_as_operator(world: World) -> None:
    result = jpki(world.data_dir, "consent", "grant", "--resident-id", "r1", "--verifier",
                  "bank", "--service", "age", "--operator", "clerk-7")
    assert result.code == 0, result.err
    with registry_connection(world.data_dir) as conn:
        actor, detail = conn.execute("SELECT actor, detail FROM audit_log WHERE action ="
                                     " 'consent.grant' ORDER BY id DESC").fetchone()
    assert actor == "clerk-7" and json.loads(detail)["via"] == "operator"
    assert rows(world)[0] == 0  # no evidence: nobody signed


def _refused(world: World, der: bytes, status: int, field: str,
             token: str | None = None) -> None:
    before = rows(world)
    got, body, content_type = post(world, der, token)
    assert got == status, body
    assert content_type.startswith("application/problem+json")
    assert body["field"] == field, body
    assert rows(world) == before  # nothing recorded


def test_replayed_statement_is_refused(world: World) -> None:
    cms = sign(world, statement(world))
    assert post(world, cms)[0] == 201
    _refused(world, cms, 409, "nonce")


def test_another_verifiers_name_is_refused(world: World) -> None:
    _refused(world, sign(world, statement(world, verifier="shop")), 403, "verifier")


def test_stale_statement_is_refused(world: World) -> None:
    old = (datetime.now(UTC) - timedelta(minutes=11)).isoformat(timespec="seconds")
    _refused(world, sign(world, statement(world, signed_at=old)), 400, "signed_at")


def test_bad_signature_is_refused(world: World) -> None:
    cms = bytearray(sign(world, statement(world)))
    index = bytes(cms).index(b'"bank"')
    cms[index + 1] = ord("B")  # the content no longer matches its messageDigest
    _refused(world, bytes(cms), 400, "cms")
    _refused(world, b"not a cms at all", 400, "cms")


def test_revoked_certificate_is_refused(world: World) -> None:
    cms = sign(world, statement(world))
    assert jpki(world.data_dir, "revoke", world.card["signature"]["serial"], "--reason",
                "keyCompromise").code == 0
    _refused(world, cms, 400, "cms")


def test_authentication_certificate_and_other_key_are_refused(world: World) -> None:
    auth_key = world.work / "auth-key.pem"
    assert openssl("pkcs12", "-in", world.card["authentication"]["key"], "-nocerts", "-nodes",
                   "-passin", "pass:1234", "-out", str(auth_key)).returncode == 0
    # signed with the authentication key, naming it: not a signature certificate
    auth_statement = statement(world, signature_serial=world.card["authentication"]["serial"])
    _refused(world, sign(world, auth_statement, cert=world.card["authentication"]["certificate"],
                         key=auth_key), 400, "cms")
    # a self-made certificate with the same serial would not chain; a statement naming the
    # signature serial but signed by the authentication certificate names another signer
    _refused(world, sign(world, statement(world),
                         cert=world.card["authentication"]["certificate"], key=auth_key),
             400, "signature_serial")
