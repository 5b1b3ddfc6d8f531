"""Issue 14, defect 7: key files must make every password guess expensive.

The attack: residents' PKCS#12 files used 2,048 PBKDF2 iterations (a 4-digit PIN fell in under
2 s) and the CA / responder PKCS#8 keys pyca's BestAvailableEncryption (PBKDF2, 2,048
iterations). These tests read the files with real `openssl` and pyca, at the default settings.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ca.keybackend import BackendSpec, KeyAlgorithm
from ca.keystore import FileKeyStore
from jpki.cli import main
from tests.helpers import CONFIG, REPO, issue_args, openssl

DEFAULT_CONFIG = REPO / "configs" / "default.toml"


# The one deliberate difference besides the KDF costs: test daemons run one process (server
# workers = 1, not one per core), so that a test's daemon is the process it kills, signals and
# reads; tests/test_serve_workers.py asks for 2 workers itself.
DEFAULT_ONLY = ("workers = 0  # 0: one per usable core (the CPU affinity: taskset, cpusets)",)


def test_the_test_configuration_differs_only_in_the_kdf_costs() -> None:
    default = [line for line in DEFAULT_CONFIG.read_text(encoding="utf-8").splitlines()
               if line not in DEFAULT_ONLY]
    test = [line for line in CONFIG.read_text(encoding="utf-8").splitlines()
            if "test:" not in line and not line.startswith(("# The test suite", "# process (",
                                                               "# the KDFs themselves"))]
    assert test == default


def test_pkcs12_is_pbes2_aes256_with_600000_iterations_and_a_mac_as_costly(
        data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main([*issue_args("r1", out), "--config", str(DEFAULT_CONFIG),
                     "--data-dir", str(data_dir)])
    assert code == 0
    files = sorted(out.glob("*.p12"))
    assert len(files) == 2
    for path in files:
        pin = "abc12345" if path.name.startswith("signature") else "1234"
        info = openssl("pkcs12", "-info", "-noout", "-in", str(path), "-passin", f"pass:{pin}")
        text = info.stdout + info.stderr
        assert info.returncode == 0, text
        assert "MAC: sha256, Iteration 1200000" in text, text
        bags = re.findall(r"(Shrouded Keybag|PKCS7 Encrypted data): (.*)", text)
        assert {kind for kind, _ in bags} == {"Shrouded Keybag", "PKCS7 Encrypted data"}, text
        for _, algorithm in bags:
            assert algorithm == ("PBES2, PBKDF2, AES-256-CBC, Iteration 600000,"
                                 " PRF hmacWithSHA256"), text
        wrong = openssl("pkcs12", "-info", "-noout", "-in", str(path), "-passin", "pass:0000")
        assert wrong.returncode != 0 and "mac verify error" in wrong.stderr.lower()
        loaded = pkcs12.load_key_and_certificates(path.read_bytes(), pin.encode())
        assert loaded[0] is not None and loaded[1] is not None
        assert loaded[0].public_key() == loaded[1].public_key()
        with pytest.raises(ValueError):
            pkcs12.load_key_and_certificates(path.read_bytes(), b"0000")


def _kdf_of(pem: Path) -> list[str]:
    parsed = openssl("asn1parse", "-in", str(pem))
    assert parsed.returncode == 0, parsed.stderr
    return [line.split(":")[-1].strip() for line in parsed.stdout.splitlines()[:14]]


def test_ca_keys_are_pbes2_scrypt_and_openssl_reads_them(tmp_path: Path) -> None:
    store = FileKeyStore(BackendSpec(kind="file", data_dir=tmp_path, role="ca"))
    store.ensure_passphrase()
    ref, key = store.generate("probe", KeyAlgorithm.rsa(2048))
    pem = tmp_path / "ca" / ref
    fields = _kdf_of(pem)
    # PBES2 / scrypt with N = 2^14 (0x4000), r = 8, p = 5 (the default), AES-256-CBC
    assert fields[2] == "PBES2" and fields[5] == "scrypt", fields
    assert fields[8:11] == ["4000", "08", "05"] and "aes-256-cbc" in fields, fields
    passphrase = tmp_path / "ca-passphrase"
    read = openssl("pkey", "-in", str(pem), "-passin", f"file:{passphrase}", "-pubout")
    assert read.returncode == 0, read.stderr
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    assert read.stdout.encode() == public
    wrong = openssl("pkey", "-in", str(pem), "-passin", "pass:not-it", "-noout")
    assert wrong.returncode != 0
    assert FileKeyStore(store.spec).load(ref).private_numbers() == key.private_numbers()


def test_keys_of_an_initialised_data_dir_are_scrypt_and_readable(data_dir: Path) -> None:
    keys = sorted((data_dir / "ca").glob("*.key.pem")) + sorted(
        (data_dir / "ocsp").glob("*.key.pem"))
    assert keys
    for pem in keys:
        assert _kdf_of(pem)[5] == "scrypt"
        role = pem.parent.name
        read = openssl("pkey", "-in", str(pem), "-passin",
                       f"file:{data_dir / f'{role}-passphrase'}", "-noout")
        assert read.returncode == 0, read.stderr
