"""Issued pairs against the real verifiers: openssl verify, the SAN encodings, pkilint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from cryptography.x509.oid import ExtensionOID

from ca import authority
from ca.kinds import CertKind
from jpki.context import Context
from tests.helpers import issue_args, jpki, openssl

LINT_BIN = Path(sys.executable).parent


def _ca_pem(context: Context, kind: CertKind, path: Path) -> Path:
    path.write_bytes(authority.current(context.store, kind).certificate.public_bytes(Encoding.PEM))
    return path


@pytest.fixture
def issued(data_dir: Path, tmp_path: Path) -> dict:
    result = jpki(data_dir, *issue_args(
        "res-0001", tmp_path / "out", name="髙橋 一郎", name_alt="高橋 一郎", dob="1990-06-15",
        sex="female"))
    assert result.code == 0, result.err
    return result.json


def test_both_certificates_verify_with_openssl(issued: dict, context: Context,
                                               tmp_path: Path) -> None:
    for kind in CertKind:
        ca_file = _ca_pem(context, kind, tmp_path / f"{kind.short}-ca.pem")
        result = openssl("verify", "-CAfile", str(ca_file), issued[kind.value]["certificate"])
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith(": OK")
        # and never under the other CA
        other = CertKind.AUTHENTICATION if kind is CertKind.SIGNATURE else CertKind.SIGNATURE
        wrong = openssl("verify", "-CAfile", str(_ca_pem(context, other, tmp_path / "o.pem")),
                        issued[kind.value]["certificate"])
        assert wrong.returncode != 0


def _other_names(cert: x509.Certificate) -> dict[str, str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    values = {}
    for name in san:
        assert isinstance(name, x509.OtherName)
        values[name.type_id.dotted_string] = core.UTF8String.load(name.value).native
    return values


def test_signature_san_carries_the_six_facts_in_order(issued: dict) -> None:
    cert = x509.load_pem_x509_certificate(Path(issued["signature"]["certificate"]).read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [n.type_id.dotted_string for n in san] == [
        "1.2.392.200149.8.5.5.1", "1.2.392.200149.8.5.5.4", "1.2.392.200149.8.5.5.3",
        "1.2.392.200149.8.5.5.5", "1.2.392.200149.8.5.5.2", "1.2.392.200149.8.5.5.6"]
    values = _other_names(cert)
    assert values["1.2.392.200149.8.5.5.1"] == "高橋\u3000一郎"
    assert values["1.2.392.200149.8.5.5.4"] == "419900615"  # Heisei
    assert values["1.2.392.200149.8.5.5.3"] == "2"
    assert values["1.2.392.200149.8.5.5.5"] == "東京都新宿区西新宿二丁目8番1号"
    assert values["1.2.392.200149.8.5.5.2"] == "10000"  # 髙 -> 高 substituted
    assert values["1.2.392.200149.8.5.5.6"] == "0" * len("東京都新宿区西新宿二丁目8番1号")
    # each otherName value is [0] EXPLICIT UTF8String, as openssl decodes it too
    text = openssl("x509", "-in", issued["signature"]["certificate"], "-noout", "-ext",
                   "subjectAltName").stdout
    assert "othername: 1.2.392.200149.8.5.5.4::419900615" in text


def test_profile_extensions_order_and_criticality(issued: dict) -> None:
    sig = x509.load_pem_x509_certificate(Path(issued["signature"]["certificate"]).read_bytes())
    auth = x509.load_pem_x509_certificate(
        Path(issued["authentication"]["certificate"]).read_bytes())
    order = [ext.oid for ext in sig.extensions]
    assert order == [
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER, ExtensionOID.KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.ISSUER_ALTERNATIVE_NAME,
        ExtensionOID.CRL_DISTRIBUTION_POINTS, ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS, ExtensionOID.SUBJECT_KEY_IDENTIFIER]
    assert [ext.oid for ext in auth.extensions] == [o for o in order
                                                    if o != ExtensionOID.SUBJECT_ALTERNATIVE_NAME]
    policies = sig.extensions.get_extension_for_class(x509.CertificatePolicies)
    assert policies.critical
    assert policies.value[0].policy_identifier.dotted_string == "1.2.392.200149.8.5.1.1.20"
    auth_policies = auth.extensions.get_extension_for_class(x509.CertificatePolicies)
    assert not auth_policies.critical
    assert auth_policies.value[0].policy_identifier.dotted_string == "1.2.392.200149.8.5.1.3.30"
    ku = sig.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.content_commitment
    auth_ku = auth.extensions.get_extension_for_class(x509.KeyUsage).value
    assert auth_ku.digital_signature and not auth_ku.content_commitment
    aki = sig.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.authority_cert_serial_number is not None
    assert aki.authority_cert_issuer[0].value == sig.issuer
    dp = sig.extensions.get_extension_for_class(x509.CRLDistributionPoints).value[0]
    kinds = [type(name) for name in dp.full_name]
    assert kinds == [x509.DirectoryName, x509.UniformResourceIdentifier]
    assert dp.full_name[1].value.endswith("/crl/sign/g1/13104.crl")
    assert "CN=Shinjuku-ku" in dp.full_name[0].value.rfc4514_string()
    assert sig.subject.rfc4514_string().startswith("CN=13104")
    assert "L=Shinjuku-ku,L=Tokyo,C=JP" in sig.subject.rfc4514_string()
    assert auth.subject.rfc4514_string().startswith("CN=13104")
    assert "L=" not in auth.subject.rfc4514_string()


def test_pkcs12_opens_with_its_pin_only(issued: dict) -> None:
    data = Path(issued["signature"]["key"]).read_bytes()
    key, cert, _extra = pkcs12.load_key_and_certificates(data, b"abc12345")
    assert cert is not None and key is not None
    assert format(cert.serial_number, "x") == issued["signature"]["serial"]
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(data, b"wrong-pin")
    result = openssl("pkcs12", "-in", issued["authentication"]["key"], "-passin", "pass:1234",
                     "-nokeys", "-noout")
    assert result.returncode == 0, result.stderr


def _pkilint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_BIN / "lint_pkix_cert"), "lint", "-s", "ERROR", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_pkilint_finds_no_error(issued: dict, context: Context, tmp_path: Path) -> None:
    paths = [Path(issued["signature"]["certificate"]),
             Path(issued["authentication"]["certificate"])]
    paths += [_ca_pem(context, kind, tmp_path / f"{kind.short}.pem") for kind in CertKind]
    for path in paths:
        result = _pkilint(path)
        assert result.returncode == 0, (path, result.stdout, result.stderr)


def test_ca_certificates_match_the_profile(context: Context) -> None:
    for kind in CertKind:
        ca = authority.current(context.store, kind).certificate
        assert ca.subject == ca.issuer
        assert ca.subject.rfc4514_string() == (
            f"OU=Japan Agency for Local Authority Information Systems,OU={kind.ca_unit},"
            "O=JPKI,C=JP")
        assert ca.public_key().key_size == 2048
        bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca
        ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
        years = (ca.not_valid_after_utc - ca.not_valid_before_utc).days / 365.25
        assert 9.99 < years < 10.01


def test_ca_keys_are_encrypted_at_rest(data_dir: Path) -> None:
    for path in (data_dir / "ca").glob("*.key.pem"):
        text = path.read_text()
        assert "ENCRYPTED PRIVATE KEY" in text
        assert path.stat().st_mode & 0o777 == 0o600
