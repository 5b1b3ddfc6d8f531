"""Revoking and rotating tokens while `jpki serve` runs (issue 14, defect 8).

The CLI commits in this process; the daemon is a real subprocess on 127.0.0.1. The request
right after each command must be refused with the old token (OCSP: `unauthorized`; linkage
and events: 401) and accepted with the new one; every change is an audit row naming who made
it.
"""

from __future__ import annotations

import getpass
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from ca import authority
from ca.kinds import CertKind
from jpki.context import Context
from tests.helpers import Daemon, jpki, registry_connection
from tests.test_events_http import post
from tests.test_revocation_events import issue

pytestmark = pytest.mark.engines

LOGIN = os.environ.get("JPKI_OPERATOR") or getpass.getuser()

ACTOR = "alice"


def ocsp_status(daemon: Daemon, request_der: bytes, token: str) -> ocsp.OCSPResponseStatus:
    request = urllib.request.Request(
        daemon.url + "/ocsp", data=request_der, method="POST",
        headers={"Content-Type": "application/ocsp-request",
                 "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return ocsp.load_der_ocsp_response(response.read()).response_status


def linkage_status(daemon: Daemon, serial: str, token: str) -> int:
    """401 for an unknown token; 403 (no consent) once the verifier is recognised."""
    request = urllib.request.Request(daemon.url + f"/linkage/v1/counterpart/{serial}",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def audit_rows(data_dir: Path, prefix: str) -> list[tuple[str, str, dict[str, str]]]:
    with registry_connection(data_dir) as conn:
        rows = conn.execute("SELECT actor, action, detail FROM audit_log WHERE action LIKE ?"
                            " ORDER BY id", (prefix + "%",)).fetchall()
    return [(actor, action, json.loads(detail)) for actor, action, detail in rows]


def test_verifier_token_rotation_and_revocation_reach_a_running_daemon(
        context: Context, tmp_path: Path) -> None:
    pair = issue(context, tmp_path, "r1")
    record = pair.issued[CertKind.SIGNATURE]
    leaf = x509.load_pem_x509_certificate(record.files.certificate.read_bytes())
    ca = authority.current(context.store, CertKind.SIGNATURE).certificate
    request_der = ocsp.OCSPRequestBuilder().add_certificate(
        leaf, ca, hashes.SHA1()).build().public_bytes(Encoding.DER)
    first = jpki(context.data_dir, "verifier", "add", "bank").json["token"]
    daemon = Daemon(context.data_dir).start()
    try:
        ok, refused = ocsp.OCSPResponseStatus.SUCCESSFUL, ocsp.OCSPResponseStatus.UNAUTHORIZED
        assert ocsp_status(daemon, request_der, first) is ok
        assert linkage_status(daemon, record.serial, first) == 403

        rotated = jpki(context.data_dir, "verifier", "rotate-token", "bank",
                       "--operator", ACTOR, "--reason", "token leaked")
        assert rotated.code == 0, rotated.err
        second = rotated.json["token"]
        assert second != first
        assert ocsp_status(daemon, request_der, first) is refused  # the very next request
        assert linkage_status(daemon, record.serial, first) == 401
        assert ocsp_status(daemon, request_der, second) is ok
        assert linkage_status(daemon, record.serial, second) == 403

        revoked = jpki(context.data_dir, "verifier", "revoke", "bank", "--operator", ACTOR)
        assert revoked.code == 0 and revoked.json == {"verifier": "bank", "revoked": True}
        assert ocsp_status(daemon, request_der, second) is refused
        assert linkage_status(daemon, record.serial, second) == 401
        # a revoked verifier stays revoked: no new token, no second revocation
        assert jpki(context.data_dir, "verifier", "rotate-token", "bank").code == 4
        assert jpki(context.data_dir, "verifier", "revoke", "bank").code == 4
        assert jpki(context.data_dir, "verifier", "revoke", "nobody").code == 3
        listing = jpki(context.data_dir, "verifier", "list").json["verifiers"]
        assert [(v["name"], v["revoked"]) for v in listing] == [("bank", True)]
    finally:
        daemon.stop()
    assert audit_rows(context.data_dir, "verifier.") == [
        (LOGIN, "verifier.add", {"verifier": "bank"}),  # no --operator: the login name
        (ACTOR, "verifier.token.rotate", {"verifier": "bank", "reason": "token leaked"}),
        (ACTOR, "verifier.revoke", {"verifier": "bank", "reason": "verifier withdrawn"}),
    ]
    assert jpki(context.data_dir, "audit", "verify").json["ok"]


def test_operator_token_rotation_and_revocation_reach_a_running_daemon(
        data_dir: Path) -> None:
    first = jpki(data_dir, "operator", "add", "registry-feed").json["token"]
    daemon = Daemon(data_dir).start()
    try:
        assert post(daemon.url, b"[]", first)[0] == 200
        rotated = jpki(data_dir, "operator", "rotate-token", "registry-feed",
                       "--operator", ACTOR)
        assert rotated.code == 0, rotated.err
        second = rotated.json["token"]
        assert post(daemon.url, b"[]", first)[0] == 401  # the very next request
        assert post(daemon.url, b"[]", second)[0] == 200
        revoked = jpki(data_dir, "operator", "revoke", "registry-feed", "--operator", ACTOR,
                       "--reason", "feed retired")
        assert revoked.code == 0, revoked.err
        assert post(daemon.url, b"[]", second)[0] == 401
        assert jpki(data_dir, "operator", "rotate-token", "registry-feed").code == 4
        assert jpki(data_dir, "operator", "revoke", "nobody").code == 3
    finally:
        daemon.stop()
    assert audit_rows(data_dir, "operator.")[1:] == [
        (ACTOR, "operator.token.rotate", {"operator": "registry-feed",
                                          "reason": "token rotation"}),
        (ACTOR, "operator.revoke", {"operator": "registry-feed", "reason": "feed retired"}),
    ]
