"""Fixtures: one initialised data directory per session, copied per test (CA keygen is slow)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import keys as asn1_keys
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jpki.context import Context
from jpki.settings import load_settings
from registry.pg import close_pools
from tests.helpers import (
    CONFIG,
    REGISTRY_CLONERS,
    REGISTRY_URLS,
    Daemon,
    copy_data_dir,
    issue_args,
    jpki,
    registry_env,
    registry_environment,
)
from tests.pg_cluster import Cluster

os.environ.pop("JPKI_CA_PASSPHRASE", None)


ENGINES = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engines: run this module's tests on both registry"
                            " engines (SQLite and a throwaway PostgreSQL cluster)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules marked `engines` run on both registry engines (or on those the marker names:
    `engines("postgresql")`); the others on SQLite only."""
    if "engine" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("engines")
        chosen = ENGINES[:1] if marker is None else tuple(marker.args) or ENGINES
        metafunc.parametrize("engine", chosen, indirect=True, scope="session")


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    cluster = Cluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def template_dir(engine: str, tmp_path_factory: pytest.TempPathFactory,
                 request: pytest.FixtureRequest) -> Path:
    data_dir = tmp_path_factory.mktemp(f"template-{engine}") / "data"
    if engine == "postgresql":
        cluster: Cluster = request.getfixturevalue("pg_cluster")
        url = cluster.create_database()
        REGISTRY_URLS[data_dir.resolve()] = url
        template_db = url.split("/")[3].split("?")[0]
        REGISTRY_CLONERS[data_dir.resolve()] = lambda: cluster.create_database(template_db)
    result = jpki(data_dir, "init")
    assert result.code == 0, result.err
    if engine == "postgresql":
        close_pools()  # a template database must have no sessions to be copied
    return data_dir


@pytest.fixture
def data_dir(template_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[Path]:
    """A copy of the template; on PostgreSQL the test's own process sees its registry URL
    (contexts and stores the test builds itself), as an operator's shell would."""
    target = copy_data_dir(template_dir, tmp_path / "data")
    for name, value in registry_env(target).items():
        monkeypatch.setenv(name, value)
    yield target
    for url in registry_env(target).values():
        close_pools(url)  # this test's database is not used again: free its sessions


@pytest.fixture
def context(data_dir: Path) -> Iterator[Context]:
    with registry_environment(data_dir):
        ctx = Context(load_settings(CONFIG, data_dir))
    yield ctx
    if "store" in ctx.__dict__:
        ctx.store.close()


@pytest.fixture
def daemon(data_dir: Path) -> Iterator[Daemon]:
    server = Daemon(data_dir).start()
    yield server
    server.stop()


# -- responder keys for the OCSP unit tier (no data directory, no daemon) ---------------------
@dataclass(frozen=True)
class ResponderUnderTest:
    """A delegated responder certificate made with cryptography, signed by a test CA."""

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    name_hashes: dict[str, bytes]  # CertID issuerNameHash per hash algorithm
    key_hashes: dict[str, bytes]  # CertID issuerKeyHash per hash algorithm


NOT_BEFORE = datetime(2026, 1, 1, tzinfo=UTC)  # fixed: no test reads the wall clock


@pytest.fixture(scope="session")
def test_responders() -> dict[str, ResponderUnderTest]:
    """One responder per key type: `rsa` (RSA-2048, as today), `p256`, `p384`."""
    ca_key = rsa.generate_private_key(65537, 2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    spki = ca_key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    key_bits = asn1_keys.PublicKeyInfo.load(spki)["public_key"].contents[1:]
    name_der = ca_name.public_bytes()
    result = {}
    keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey] = {
        "rsa": rsa.generate_private_key(65537, 2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
    }
    for label, key in keys.items():
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"OCSP {label}")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(0x1234 + len(label))
            .not_valid_before(NOT_BEFORE).not_valid_after(NOT_BEFORE + timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), True)
            .add_extension(x509.OCSPNoCheck(), False)
            .sign(ca_key, hashes.SHA256()))
        result[label] = ResponderUnderTest(
            key, certificate,
            {a: hashlib.new(a, name_der).digest() for a in ("sha1", "sha256")},
            {a: hashlib.new(a, key_bits).digest() for a in ("sha1", "sha256")})
    return result


@pytest.fixture
def issued(data_dir: Path, tmp_path: Path) -> dict[str, Any]:
    """One resident's pair of certificates issued into the test's data directory."""
    result = jpki(data_dir, *issue_args("src-1", tmp_path / "out"))
    assert result.code == 0, result.err
    assert isinstance(result.json, dict)
    return result.json
