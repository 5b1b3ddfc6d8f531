"""`jpki verifier add-signer` refuses, at registration, what the responder would refuse on every
request (issue 14, defect 1): unreadable certificates and keys outside the request-signing key
policy. Nothing is written (the verifier's token, its signers and the audit log stay as they
were). Real certificates: openssl-made, and asn1crypto-built ones no toolkit would issue."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from tests.helpers import jpki, openssl
from tests.ocsp_support import forged_certificate


def _counts(data_dir: Path) -> tuple[int, int]:
    with sqlite3.connect(data_dir / "registry.db") as conn:
        signers = conn.execute("SELECT COUNT(*) FROM verifier_signers").fetchone()[0]
        audit = conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    return int(signers), int(audit)


def _openssl_cert(tmp: Path, name: str, *key_args: str) -> Path:
    key, cert = tmp / f"{name}.key", tmp / f"{name}.pem"
    made = openssl("req", "-x509", *key_args, "-nodes", "-keyout", str(key), "-out", str(cert),
                   "-subj", f"/CN={name}", "-days", "30")
    assert made.returncode == 0, made.stderr
    return cert


def test_keys_outside_the_policy_are_refused_at_registration(data_dir: Path,
                                                             tmp_path: Path) -> None:
    assert jpki(data_dir, "verifier", "add", "bank").code == 0
    before = _counts(data_dir)
    rng = random.Random(14)
    cases = {
        "small": _openssl_cert(tmp_path, "small", "-newkey", "rsa:1024"),
        "exponent": tmp_path / "exponent.der",
        "curve": _openssl_cert(tmp_path, "curve", "-newkey", "ec",
                               "-pkeyopt", "ec_paramgen_curve:secp256k1"),
        "version": tmp_path / "version.der",
        "garbage": tmp_path / "garbage.der",
    }
    cases["exponent"].write_bytes(forged_certificate(rng, 2048, 2**64 - 59).dump())
    cases["version"].write_bytes(forged_certificate(rng, 2048, 65537, version=7).dump())
    cases["garbage"].write_bytes(b"\x30\x03\x02\x01\x07")
    expected = {"small": "RSA key of 1024 bits", "exponent": "RSA exponent",
                "curve": "curve secp256k1", "version": "is not a PEM or DER certificate",
                "garbage": "is not a PEM or DER certificate"}
    for label, path in cases.items():
        result = jpki(data_dir, "verifier", "add-signer", "bank", str(path))
        assert result.code == 2, (label, result.err)
        assert expected[label] in result.err, (label, result.err)
        assert "Traceback" not in result.err
    assert _counts(data_dir) == before

    # `verifier add --signer-cert` refuses as a whole: no verifier without its signer.
    refused = jpki(data_dir, "verifier", "add", "broker", "--signer-cert", str(cases["small"]))
    assert refused.code == 2 and "RSA key of 1024 bits" in refused.err
    assert jpki(data_dir, "verifier", "rotate-token", "broker").code == 3  # never created

    good = _openssl_cert(tmp_path, "good", "-newkey", "rsa:2048")
    accepted = jpki(data_dir, "verifier", "add-signer", "bank", str(good))
    assert accepted.code == 0, accepted.err
    assert accepted.json["signer_fingerprint"]
    assert _counts(data_dir)[0] == before[0] + 1
