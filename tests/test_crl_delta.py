"""Delta CRLs (RFC 5280 §5.2.4) with real keys, real openssl (-use_deltas) and pkilint: a
delta lists exactly the revocations since its base, names the base, shares its scope."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from ca import authority
from ca.kinds import CertKind
from crl.delta import DeltaIssuer
from crl.generator import Generator
from jpki.context import Context
from jpki.settings import load_settings
from jpki.wiring import crl_generator
from registry.clock import FrozenClock
from tests.crl_support import Issued, ca_pem, der_to_pem, issue
from tests.helpers import CONFIG, jpki, openssl
from tests.test_crl_openssl import LINT_CRL

pytestmark = pytest.mark.engines


def number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def serials(crl: x509.CertificateRevocationList) -> set[int]:
    return {entry.serial_number for entry in crl}


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5))


@pytest.fixture
def ctx(data_dir: Path, clock: FrozenClock) -> Context:
    context = Context(load_settings(CONFIG, data_dir), clock)
    yield context
    context.store.close()


@pytest.fixture
def generator(ctx: Context) -> Generator:
    return crl_generator(ctx.store, ctx.keys, ctx.clock, ctx.settings)


def revoke(data_dir: Path, serial: str, reason: str = "keyCompromise") -> None:
    result = jpki(data_dir, "revoke", serial, "--reason", reason)
    assert result.code == 0, result.err


def test_delta_lists_the_revocations_since_its_base_and_openssl_uses_it(
        data_dir: Path, tmp_path: Path, ctx: Context, generator: Generator,
        clock: FrozenClock) -> None:
    early: Issued = issue(data_dir, tmp_path / "early", "delta-early")
    late: Issued = issue(data_dir, tmp_path / "late", "delta-late")
    kept: Issued = issue(data_dir, tmp_path / "kept", "delta-kept")
    other: Issued = issue(data_dir, tmp_path / "other", "delta-other",
                          municipality_code="01100", address="北海道札幌市中央区北1条西2丁目")
    revoke(data_dir, early.signature)
    generator.run()
    deltas = DeltaIssuer(generator, ctx.settings.crl.delta_interval_minutes)
    assert deltas.due()  # no delta yet
    deltas.run()
    assert not deltas.due()
    root = ca_pem(data_dir, "sign", 1, tmp_path)
    crl_dir = data_dir / "crl" / "sign" / "g1"
    empty = x509.load_der_x509_crl((crl_dir / "13104.delta.crl").read_bytes())
    assert len(empty) == 0

    clock.advance(timedelta(minutes=10))
    revoke(data_dir, late.signature, "affiliationChanged")
    revoke(data_dir, other.signature)
    assert not deltas.due()  # within the interval, the base unchanged
    clock.advance(timedelta(minutes=ctx.settings.crl.delta_interval_minutes))
    assert deltas.due()
    published = deltas.run()
    ca = authority.current(ctx.store, CertKind.SIGNATURE)
    scopes = {(p.kind, p.partition) for p in published}
    assert ("signature", "13104.delta") in scopes and ("signature", "full.delta") in scopes

    base = x509.load_der_x509_crl((crl_dir / "13104.crl").read_bytes())
    delta = x509.load_der_x509_crl((crl_dir / "13104.delta.crl").read_bytes())
    full = x509.load_der_x509_crl((crl_dir / "full.crl").read_bytes())
    full_delta = x509.load_der_x509_crl((crl_dir / "full.delta.crl").read_bytes())
    # Exactly what was revoked since the base, in the delta's scope.
    assert serials(delta) == {int(late.signature, 16)}
    assert serials(full_delta) == {int(late.signature, 16), int(other.signature, 16)}
    assert int(early.signature, 16) in serials(base)
    for complete, partial in ((base, delta), (full, full_delta)):
        indicator = partial.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
        assert indicator.critical and indicator.value.crl_number == number(complete)
        assert number(partial) > number(complete)
        assert partial.is_signature_valid(ca.certificate.public_key())
        freshest = complete.extensions.get_extension_for_class(x509.FreshestCRL)
        assert not freshest.critical
    idp = x509.IssuingDistributionPoint
    assert (base.extensions.get_extension_for_class(idp).value
            == delta.extensions.get_extension_for_class(idp).value)
    freshest = base.extensions.get_extension_for_class(x509.FreshestCRL).value[0].full_name
    assert freshest is not None
    assert freshest[0].value.endswith("/crl/sign/g1/13104.delta.crl")

    base_pem = der_to_pem(crl_dir / "13104.crl", tmp_path)
    delta_pem = der_to_pem(crl_dir / "13104.delta.crl", tmp_path)

    def verify(cert: Path, *crls: Path) -> str:
        # -extended_crl as well: without it OpenSSL 3.0 scores a delta CRL as a complete one
        # (its "don't process deltas at this stage" test sits in the extended branch) and, on
        # equal scores, prefers the later thisUpdate: the delta alone, missing the base.
        args = ["verify", "-crl_check", "-extended_crl", "-use_deltas", "-attime",
                str(int(clock().timestamp())), "-CAfile", str(root)]
        for crl in crls:
            args += ["-CRLfile", str(crl)]
        result = openssl(*args, str(cert))
        return result.stdout + result.stderr

    # The base alone does not know of the late revocation; base + delta does.
    assert ": OK" in verify(late.signature_pem, base_pem)
    assert "certificate revoked" in verify(late.signature_pem, base_pem, delta_pem)
    assert "certificate revoked" in verify(early.signature_pem, base_pem, delta_pem)
    assert ": OK" in verify(kept.signature_pem, base_pem, delta_pem)

    # A new complete CRL makes its delta due at once, and takes the next number.
    generator.run()
    assert deltas.due()
    rebased = x509.load_der_x509_crl((crl_dir / "13104.crl").read_bytes())
    assert number(rebased) > number(delta)
    deltas.run()
    fresh = x509.load_der_x509_crl((crl_dir / "13104.delta.crl").read_bytes())
    assert fresh.extensions.get_extension_for_class(
        x509.DeltaCRLIndicator).value.crl_number == number(rebased)
    assert len(fresh) == 0

    for name in ("13104.delta", "full.delta"):
        lint = subprocess.run([str(LINT_CRL), "lint", "-t", "CRL", "-p", "PKIX", "-s",
                               "WARNING", str(crl_dir / f"{name}.crl")],
                              capture_output=True, text=True, timeout=120)
        assert lint.returncode == 0, lint.stdout + lint.stderr


def test_the_signer_publishes_deltas_after_complete_crls(data_dir: Path, ctx: Context) -> None:
    from jpki.signer import SignerProcess

    signer = SignerProcess(ctx)
    signer.open()
    signer.step()  # no CRL yet: the daily run, then the deltas of what it published
    crl_dir = data_dir / "crl" / "sign" / "g1"
    base = x509.load_der_x509_crl((crl_dir / "13104.crl").read_bytes())
    delta = x509.load_der_x509_crl((crl_dir / "13104.delta.crl").read_bytes())
    assert delta.extensions.get_extension_for_class(
        x509.DeltaCRLIndicator).value.crl_number == number(base)
    assert (data_dir / "crl" / "auth" / "g1" / "full.delta.crl").exists()
    assert signer.deltas is not None and not signer.deltas.due()
