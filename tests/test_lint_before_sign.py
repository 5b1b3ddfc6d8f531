"""Lint before you sign (ca/lint.py): a certificate pkilint flags is never signed or recorded.

The bad certificate is made through the real path: `jpki issue` under a configuration whose
`server.public_base_url` has a space in its host. The settings only check the scheme, the
builder accepts any string as a URI, and pkilint's RFC 5280 validators flag the CRL
distribution point and OCSP URIs (`pkix.invalid_uri_syntax`, ERROR).
"""

from __future__ import annotations

import contextlib
import io
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ca import lint
from ca.keyalgorithm import KeyAlgorithm
from jpki.cli import main
from tests.helpers import CONFIG, issue_args, jpki


def _config(tmp_path: Path, base_url: str) -> Path:
    config = tmp_path / "bad-url.toml"
    config.write_text(
        CONFIG.read_text()
        .replace('public_base_url = "http://127.0.0.1:8080"', f'public_base_url = "{base_url}"')
        .replace('"municipalities.csv"', f'"{CONFIG.parent / "municipalities.csv"}"')
        .replace('"tariff.toml"', f'"{CONFIG.parent / "tariff.toml"}"'))
    return config


def _run(config: Path, data_dir: Path, *args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*args, "--config", str(config), "--data-dir", str(data_dir)])
    return code, out.getvalue() + err.getvalue()


def _counts(data_dir: Path) -> tuple[int, int, int]:
    with sqlite3.connect(f"file:{data_dir / 'registry.db'}?mode=ro", uri=True) as conn:
        return (conn.execute("SELECT COUNT(*) FROM certificates").fetchone()[0],
                conn.execute("SELECT COUNT(*) FROM residents").fetchone()[0],
                conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0])


def test_a_certificate_with_an_invalid_uri_is_refused_and_nothing_is_written(
        data_dir: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, "http://jpki example.jp")
    before = _counts(data_dir)
    out = tmp_path / "out"
    code, text = _run(config, data_dir, *issue_args("LINT1", out))
    assert code == lint.LintRefused.exit_code == 70, text
    assert "refused to sign the signature certificate" in text
    assert "ERROR pkix.invalid_uri_syntax" in text and "jpki example.jp" in text, text
    assert _counts(data_dir) == before  # no certificate, resident or audit row
    assert not out.exists() or not any(out.iterdir())  # no key or certificate file
    assert jpki(data_dir, "audit", "verify").json["ok"] is True


def test_a_normal_pair_passes_the_gate_and_pkilint_agrees(data_dir: Path,
                                                          tmp_path: Path) -> None:
    result = jpki(data_dir, *issue_args("LINT2", tmp_path / "out"))
    assert result.code == 0, result.err
    for kind in ("signature", "authentication"):
        pem = Path(result.json[kind]["certificate"]).read_bytes()
        certificate = x509.load_pem_x509_certificate(pem)
        assert lint.findings(certificate.public_bytes(Encoding.DER)) == []


def test_the_gate_names_a_missing_authority_key_identifier() -> None:
    """A leaf without AKI (RFC 5280 §4.2.1.1 MUST) is refused before the real key signs."""
    key = lint.stand_in_key(KeyAlgorithm.rsa(2048))
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + timedelta(days=1)))
    with pytest.raises(lint.LintRefused) as refused:
        lint.sign(builder, key, "test leaf")
    assert "pkix.authority_key_identifier_extension_absent" in str(refused.value)
