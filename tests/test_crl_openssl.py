"""Partition and full CRLs, checked by real openssl and pkilint (no mocks)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from tests.crl_support import Issued, ca_pem, copy_template, der_to_pem, issue
from tests.helpers import jpki, openssl

pytestmark = pytest.mark.engines

LINT_CRL = Path(sys.executable).parent / "lint_crl"


@dataclass(frozen=True)
class World:
    data_dir: Path
    work: Path
    revoked: Issued  # signature revoked (affiliationChanged), auth revoked (unspecified)
    good: Issued
    ca_sign: Path
    ca_auth: Path


@pytest.fixture(scope="module")
def world(template_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("crl-openssl")
    data_dir = copy_template(template_dir, base / "data")
    out = base / "out"
    revoked = issue(data_dir, out, "r-moved", municipality_code="13104")
    good = issue(data_dir, out, "r-good", municipality_code="01100",
                 address="北海道札幌市中央区北1条西2丁目")
    assert jpki(data_dir, "revoke", revoked.signature, "--reason", "affiliationChanged").code == 0
    assert jpki(data_dir, "revoke", revoked.authentication, "--reason", "unspecified").code == 0
    result = jpki(data_dir, "crl", "generate")
    assert result.code == 0, result.err
    work = base / "work"
    work.mkdir()
    return World(data_dir, work, revoked, good, ca_pem(data_dir, "sign", 1, work),
                 ca_pem(data_dir, "auth", 1, work))


def crl_file(world: World, short: str, name: str) -> Path:
    return world.data_dir / "crl" / short / "g1" / f"{name}.crl"


def test_every_partition_and_full_crl_verifies_with_openssl(world: World) -> None:
    for short, ca in (("sign", world.ca_sign), ("auth", world.ca_auth)):
        files = sorted((world.data_dir / "crl" / short / "g1").glob("*.crl"))
        assert len(files) == 69 + 1  # every municipality of the table, plus full.crl
        for path in files:
            result = openssl("crl", "-in", str(path), "-inform", "DER", "-CAfile", str(ca),
                             "-noout", "-verify")
            assert "verify OK" in result.stderr + result.stdout, (path, result.stderr)


def test_revoked_certificate_fails_crl_check_all(world: World) -> None:
    partition = der_to_pem(crl_file(world, "sign", "13104"), world.work)
    full = der_to_pem(crl_file(world, "sign", "full"), world.work)
    bundle = world.work / "sign-crls.pem"
    bundle.write_bytes(partition.read_bytes() + full.read_bytes())
    result = openssl("verify", "-crl_check_all", "-CRLfile", str(bundle), "-CAfile",
                     str(world.ca_sign), str(world.revoked.signature_pem))
    assert result.returncode != 0
    assert "certificate revoked" in result.stdout + result.stderr


def test_good_certificate_passes_crl_check_all(world: World) -> None:
    for short, ca, leaf, code in (
        ("sign", world.ca_sign, world.good.signature_pem, "01100"),
        ("auth", world.ca_auth, world.good.authentication_pem, "01100"),
    ):
        bundle = world.work / f"{short}-good.pem"
        bundle.write_bytes(der_to_pem(crl_file(world, short, code), world.work).read_bytes()
                           + der_to_pem(crl_file(world, short, "full"), world.work).read_bytes())
        result = openssl("verify", "-crl_check_all", "-CRLfile", str(bundle), "-CAfile",
                         str(ca), str(leaf))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip().endswith("OK")


def test_partition_crl_alone_is_in_scope_for_its_certificates(world: World) -> None:
    """-crl_check (leaf only) with only the partition CRL: openssl must match the IDP to the
    certificate's cRLDistributionPoints (error 44 "different CRL scope" otherwise)."""
    partition = der_to_pem(crl_file(world, "sign", "13104"), world.work)
    result = openssl("verify", "-crl_check", "-CRLfile", str(partition), "-CAfile",
                     str(world.ca_sign), str(world.revoked.signature_pem))
    assert "certificate revoked" in result.stdout + result.stderr
    partition = der_to_pem(crl_file(world, "auth", "13104"), world.work)
    result = openssl("verify", "-crl_check", "-CRLfile", str(partition), "-CAfile",
                     str(world.ca_auth), str(world.revoked.authentication_pem))
    assert "certificate revoked" in result.stdout + result.stderr
    other = der_to_pem(crl_file(world, "sign", "13104"), world.work)
    result = openssl("verify", "-crl_check", "-CRLfile", str(other), "-CAfile",
                     str(world.ca_sign), str(world.good.signature_pem))
    assert "different CRL scope" in result.stdout + result.stderr  # Tokyo's CRL, Sapporo's cert
    own = der_to_pem(crl_file(world, "sign", "01100"), world.work)
    result = openssl("verify", "-crl_check", "-CRLfile", str(own), "-CAfile",
                     str(world.ca_sign), str(world.good.signature_pem))
    assert result.returncode == 0, result.stdout + result.stderr


def test_idp_names_match_the_certificates_distribution_points(world: World) -> None:
    leaf = x509.load_pem_x509_certificate(world.revoked.signature_pem.read_bytes())
    cdp = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    crl = x509.load_der_x509_crl(crl_file(world, "sign", "13104").read_bytes())
    idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    assert idp.critical
    assert idp.value.only_contains_user_certs
    assert idp.value.full_name == cdp[0].full_name
    full = x509.load_der_x509_crl(crl_file(world, "sign", "full").read_bytes())
    with pytest.raises(x509.ExtensionNotFound):
        full.extensions.get_extension_for_class(x509.IssuingDistributionPoint)


def test_entries_carry_time_and_reason_and_omit_unspecified(world: World) -> None:
    sign = x509.load_der_x509_crl(crl_file(world, "sign", "13104").read_bytes())
    entry = sign.get_revoked_certificate_by_serial_number(int(world.revoked.signature, 16))
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.affiliation_changed
    auth = x509.load_der_x509_crl(crl_file(world, "auth", "13104").read_bytes())
    entry = auth.get_revoked_certificate_by_serial_number(int(world.revoked.authentication, 16))
    assert entry is not None
    assert len(entry.extensions) == 0  # RFC 5280 §5.3.1: unspecified is omitted
    assert entry.revocation_date_utc <= auth.last_update_utc
    assert sign.get_revoked_certificate_by_serial_number(int(world.good.signature, 16)) is None


@pytest.mark.parametrize("short,name", [("sign", "13104"), ("auth", "13104"), ("sign", "full"),
                                        ("auth", "01100")])
def test_pkilint_finds_no_error(world: World, short: str, name: str) -> None:
    result = subprocess.run([str(LINT_CRL), "lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING",
                             str(crl_file(world, short, name))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
