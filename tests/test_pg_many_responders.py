"""Two responders (as on two hosts: each its own data directory) share one PostgreSQL registry.

A revocation committed anywhere (the CLI on the first host, `POST /registry/events` on the
first daemon, a transaction another client makes directly in the database) is `revoked` in
the very next answer of the *other* daemon, checked with the real `openssl ocsp`. The second
host serves the CRLs the signer's host published through a read-only view of its directory
(`crl.serve_dir`), and the signer, woken by the database's notification, re-issues them.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from cryptography import x509

from tests.helpers import (
    REGISTRY_URLS,
    Daemon,
    Signer,
    config_text,
    issue_args,
    jpki,
    openssl,
    registry_rows,
)
from tests.pg_cluster import Cluster

pytestmark = pytest.mark.engines("postgresql")


@dataclass
class Hosts:
    tmp: Path
    first: Daemon
    second: Daemon
    url: str
    tokens: dict[str, str]
    serials: dict[str, str]
    certificates: dict[str, Path]


@pytest.fixture
def hosts(data_dir: Path, tmp_path: Path) -> Iterator[Hosts]:
    url = REGISTRY_URLS[data_dir.resolve()]
    tokens = {"bank": jpki(data_dir, "verifier", "add", "bank").json["token"],
              "feed": jpki(data_dir, "operator", "add", "feed").json["token"]}
    serials: dict[str, str] = {}
    certificates: dict[str, Path] = {}
    for resident in ("cli", "event", "direct", "crl"):
        issued = jpki(data_dir, *issue_args(f"many-{resident}", tmp_path / resident))
        assert issued.code == 0, issued.err
        serials[resident] = issued.json["signature"]["serial"]
        certificates[resident] = Path(issued.json["signature"]["certificate"])
    assert jpki(data_dir, "crl", "generate").code == 0
    # The second host: its own data directory (responder keys copied, as an operator would
    # provision them), the same database, and the signer host's CRL directory mounted.
    second_dir = tmp_path / "second-host"
    shutil.copytree(data_dir, second_dir, ignore=shutil.ignore_patterns("crl", "fees-journal",
                                                                         "*.log"))
    REGISTRY_URLS[second_dir.resolve()] = url
    config = tmp_path / "second-host.toml"
    config.write_text(config_text({'serve_dir = ""': f'serve_dir = "{data_dir / "crl"}"'}))
    first = Daemon(data_dir).start()
    second = Daemon(second_dir, config=config).start()
    try:
        yield Hosts(tmp_path, first, second, url, tokens, serials, certificates)
    finally:
        first.stop()
        second.stop()


def ocsp(hosts: Hosts, daemon: Daemon, serial: str) -> str:
    ca = hosts.tmp / "sign-g1.pem"
    if not ca.exists():
        with urllib.request.urlopen(daemon.url + "/ca/sign/g1.pem", timeout=10) as response:
            ca.write_bytes(response.read())
    result = openssl("ocsp", "-issuer", str(ca), "-CAfile", str(ca), "-serial", "0x" + serial,
                     "-url", daemon.url + "/ocsp", "-no_nonce",
                     "-header", f"Authorization=Bearer {hosts.tokens['bank']}")
    text = result.stdout + result.stderr
    assert "Response verify OK" in text, text
    return text


def test_a_revocation_anywhere_is_in_the_other_daemons_next_answer(
        hosts: Hosts, data_dir: Path) -> None:
    for serial in hosts.serials.values():  # both daemons have answered (and cached) "good"
        assert f"0x{serial}: good" in ocsp(hosts, hosts.first, serial)
        assert f"0x{serial}: good" in ocsp(hosts, hosts.second, serial)

    assert jpki(data_dir, "revoke", hosts.serials["cli"], "--reason", "keyCompromise").code == 0
    assert f"0x{hosts.serials['cli']}: revoked" in ocsp(hosts, hosts.second, hosts.serials["cli"])

    event = {"event_id": "many-1", "resident_id": "many-event", "type": "key_compromise",
             "occurred_at": "2026-11-20T10:00:00+09:00"}
    request = urllib.request.Request(
        hosts.first.url + "/registry/events", data=json.dumps(event).encode(), method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {hosts.tokens['feed']}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.load(response)["status"] == "applied"
    assert f"0x{hosts.serials['event']}: revoked" in ocsp(hosts, hosts.second,
                                                          hosts.serials["event"])

    # Another client of the database: the revocation and its state change in one transaction.
    with psycopg.connect(hosts.url) as conn, conn.transaction():
        conn.execute("UPDATE certificates SET status = 'revoked', revoked_at = %s, reason = 1"
                     " WHERE serial = %s", (int(time.time()), hosts.serials["direct"]))
        conn.execute("INSERT INTO state_changes (serial, status, at) VALUES (%s, 'revoked', %s)",
                     (hosts.serials["direct"], int(time.time())))
    assert f"0x{hosts.serials['direct']}: revoked" in ocsp(hosts, hosts.second,
                                                           hosts.serials["direct"])
    assert f"0x{hosts.serials['direct']}: revoked" in ocsp(hosts, hosts.first,
                                                           hosts.serials["direct"])


def _served_crl(daemon: Daemon, certificate: Path) -> x509.CertificateRevocationList:
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    uri = next(name.value for point in points for name in point.full_name or []
               if isinstance(name, x509.UniformResourceIdentifier))
    with urllib.request.urlopen(daemon.url + "/" + uri.split("/", 3)[3], timeout=10) as resp:
        return x509.load_der_x509_crl(resp.read())


def test_the_other_host_serves_what_the_signer_publishes(hosts: Hosts, data_dir: Path) -> None:
    serial = hosts.serials["crl"]
    before = _served_crl(hosts.second, hosts.certificates["crl"])
    assert before.get_revoked_certificate_by_serial_number(int(serial, 16)) is None
    config = hosts.tmp / "urgent.toml"
    config.write_text(config_text({"urgent_delay_seconds = 60": "urgent_delay_seconds = 4"}))
    signer = Signer(data_dir, config=config).start()
    try:
        assert jpki(data_dir, "revoke", serial, "--reason", "keyCompromise").code == 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            served = _served_crl(hosts.second, hosts.certificates["crl"])
            if served.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the signer's urgent CRL never reached the other host")
    finally:
        signer.stop()
    assert served.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > \
        before.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert registry_rows(data_dir, "SELECT COUNT(*) FROM state_changes")[0][0] == 1


def test_daemons_outlive_a_postgresql_restart(hosts: Hosts, data_dir: Path,
                                              pg_cluster: Cluster) -> None:
    serial = hosts.serials["cli"]
    for daemon in (hosts.first, hosts.second):
        assert f"0x{serial}: good" in ocsp(hosts, daemon, serial)
    pg_cluster.restart()
    for daemon in (hosts.first, hosts.second):
        # The answer that meets the dead session is an OCSP error status (never an HTTP
        # error); the next ones come from a new session.
        texts = [_any_answer(hosts, daemon, serial) for _ in range(3)]
        assert f"0x{serial}: good" in texts[-1], texts
        assert all("good" in text or "internalerror" in text.lower() for text in texts), texts
    assert jpki(data_dir, "revoke", serial, "--reason", "keyCompromise").code == 0
    for daemon in (hosts.first, hosts.second):
        assert f"0x{serial}: revoked" in ocsp(hosts, daemon, serial)


def _any_answer(hosts: Hosts, daemon: Daemon, serial: str) -> str:
    ca = hosts.tmp / "sign-g1.pem"
    result = openssl("ocsp", "-issuer", str(ca), "-CAfile", str(ca), "-serial", "0x" + serial,
                     "-url", daemon.url + "/ocsp", "-no_nonce",
                     "-header", f"Authorization=Bearer {hosts.tokens['bank']}")
    return result.stdout + result.stderr
