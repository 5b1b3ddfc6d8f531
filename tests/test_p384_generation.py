"""The next-generation card profile end to end (issue 18, part 2): a P-384 CA generation after
an RSA one, links both ways, a `next`-profile pair, OCSP and CRLs for it.

Driven as an operator would (the real CLI, `jpki serve` as a subprocess) and judged by the
real verifiers: `openssl verify` (chains over the links, `-crl_check` with the partition CRL),
`openssl ocsp` (live nonce answers and pre-signed ones, good and revoked), `openssl crl`,
`openssl pkcs12`, and pkilint (`lint_pkix_cert`, `lint_crl`, `lint_ocsp_response`).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from ca import authority
from ca.keyalgorithm import KeyAlgorithm
from ca.keybackend import BackendSpec
from ca.keystore import FileKeyStore
from ca.kinds import CertKind
from ca.pkcs11store import PKCS11KeyStore
from registry.clock import JST
from registry.errors import JPKIError
from tests.crl_support import Issued, der_to_pem, issue
from tests.helpers import (
    ISSUE_DEFAULTS,
    SOFTHSM_MODULE,
    Daemon,
    copy_data_dir,
    issue_args,
    jpki,
    openssl,
    softhsm_tokens,
)

BIN = Path(sys.executable).parent
SIGN_PIN = ISSUE_DEFAULTS["sign_pin"]
AUTH_PIN = ISSUE_DEFAULTS["auth_pin"]


@dataclass(frozen=True)
class World:
    data_dir: Path
    tmp: Path
    daemon: Daemon
    token: str
    old_leaf: Issued  # RSA pair under g1
    good: Issued  # `next` pair under g2 (P-384)
    revoked: Issued  # `next` pair under g2, signature revoked (keyCompromise)
    next_json: dict

    def fetch(self, path: str, name: str) -> Path:
        target = self.tmp / name
        with urllib.request.urlopen(self.daemon.url + path) as response:
            target.write_bytes(response.read())
        return target


@pytest.fixture(scope="module")
def world(template_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("p384")
    data_dir = tmp / "data"
    copy_data_dir(template_dir, data_dir)
    out = tmp / "out"
    old_leaf = issue(data_dir, out, "p384-old")
    rotated = jpki(data_dir, "ca", "rotate", "--kind", "all", "--algorithm", "ecdsa-p384")
    assert rotated.code == 0, rotated.err
    assert [item["algorithm"] for item in rotated.json["created"]] == ["ecdsa-p384"] * 2
    made = jpki(data_dir, *issue_args("p384-next", out, profile="next"))
    assert made.code == 0, made.err
    body = made.json
    good = Issued(body["signature"]["serial"], body["authentication"]["serial"],
                  Path(body["signature"]["certificate"]),
                  Path(body["authentication"]["certificate"]))
    revoked = issue(data_dir, out, "p384-next-lost", profile="next")
    assert jpki(data_dir, "revoke", revoked.signature, "--reason", "keyCompromise").code == 0
    assert jpki(data_dir, "crl", "generate").code == 0
    added = jpki(data_dir, "verifier", "add", "bank")
    assert added.code == 0, added.err
    daemon = Daemon(data_dir).start()
    try:
        yield World(data_dir, tmp, daemon, added.json["token"], old_leaf, good, revoked, body)
    finally:
        daemon.stop()


def _lint_cert(path: Path) -> None:
    result = subprocess.run([str(BIN / "lint_pkix_cert"), "lint", "-s", "ERROR", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (path, result.stdout, result.stderr)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_file_backend_keeps_p384_keys_and_openssl_reads_them(tmp_path: Path) -> None:
    store = FileKeyStore(BackendSpec(kind="file", data_dir=tmp_path, role="ca", scrypt_p=1))
    store.ensure_passphrase()
    ref, key = store.generate("probe", KeyAlgorithm.ecdsa_p384())
    read = openssl("pkey", "-in", str(tmp_path / "ca" / ref), "-passin",
                   f"file:{tmp_path / 'ca-passphrase'}", "-noout", "-text")
    assert read.returncode == 0 and "NIST CURVE: P-384" in read.stdout, read.stderr
    loaded = FileKeyStore(store.spec).load(ref)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers() == key.private_numbers()  # type: ignore[union-attr]


def test_pkcs11_backend_keeps_p384_keys_on_the_token(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """SoftHSM2: a P-384 CA key made on the token signs its own CA certificate (CKM_ECDSA,
    r || s re-encoded as DER), is found again by label, and never leaves the token."""
    for name, value in {**softhsm_tokens(tmp_path, {"jpki-p384": "4711"}),
                        "JPKI_P384_PIN": "4711"}.items():
        monkeypatch.setenv(name, value)
    spec = BackendSpec(kind="pkcs11", data_dir=tmp_path, role="ca",
                       pkcs11_module=SOFTHSM_MODULE, pkcs11_token="jpki-p384",
                       pkcs11_pin_env="JPKI_P384_PIN")
    store = PKCS11KeyStore(spec)
    ref, key = store.generate("p384-probe", KeyAlgorithm.ecdsa_p384())
    assert KeyAlgorithm.of(key) == KeyAlgorithm.ecdsa_p384()
    certificate = authority.build_ca_certificate(CertKind.SIGNATURE, key, datetime.now(UTC),
                                                 10)
    assert isinstance(certificate.signature_hash_algorithm, hashes.SHA384)
    certificate.verify_directly_issued_by(certificate)
    pem = tmp_path / "token-ca.pem"
    pem.write_bytes(certificate.public_bytes(Encoding.PEM))
    verified = openssl("verify", "-CAfile", str(pem), str(pem))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    loaded = store.load(ref)
    assert loaded.public_key() == key.public_key()
    with pytest.raises(JPKIError, match="never leaves the token"):
        loaded.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    archived = store.archive(ref)
    with pytest.raises(JPKIError, match="archived"):
        store.load(ref)
    assert archived.endswith("archived/ca/p384-probe")


def test_next_profile_is_refused_under_an_rsa_generation(data_dir: Path, tmp_path: Path) -> None:
    result = jpki(data_dir, *issue_args("p384-too-early", tmp_path / "out", profile="next"))
    assert result.code != 0
    assert "P-384" in result.err and "--algorithm ecdsa-p384" in result.err, result.err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_new_generation_is_p384_and_lints(world: World) -> None:
    for kind in ("sign", "auth"):
        new = world.fetch(f"/ca/{kind}/g2.pem", f"{kind}-g2.pem")
        certificate = _cert(new)
        key = certificate.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
        assert isinstance(certificate.signature_hash_algorithm, hashes.SHA384)
        _lint_cert(new)
    status = jpki(world.data_dir, "ca", "status")
    algorithms = {(item["kind"], item["generation"]): item["algorithm"]
                  for item in status.json["generations"]}
    assert algorithms[("signature", 1)] == "rsa-2048"
    assert algorithms[("signature", 2)] == "ecdsa-p384"


@pytest.mark.parametrize("kind", ["sign", "auth"])
def test_links_verify_both_ways(world: World, kind: str) -> None:
    old = world.fetch(f"/ca/{kind}/g1.pem", f"{kind}-g1.pem")
    new = world.fetch(f"/ca/{kind}/g2.pem", f"{kind}-g2.pem")
    old_with_new = world.fetch(f"/ca/{kind}/g1-g2-old-with-new.pem", f"{kind}-owr.pem")
    new_with_old = world.fetch(f"/ca/{kind}/g1-g2-new-with-old.pem", f"{kind}-nwo.pem")
    # OldWithNew: an RSA key certified by the P-384 key (ecdsa-with-SHA384); the other way
    # round, a P-384 key certified by the RSA key (sha256WithRSAEncryption).
    assert isinstance(_cert(old_with_new).signature_hash_algorithm, hashes.SHA384)
    assert isinstance(_cert(old_with_new).public_key(), rsa.RSAPublicKey)
    assert isinstance(_cert(new_with_old).signature_hash_algorithm, hashes.SHA256)
    assert isinstance(_cert(new_with_old).public_key(), ec.EllipticCurvePublicKey)
    old_leaf = world.old_leaf.signature_pem if kind == "sign" \
        else world.old_leaf.authentication_pem
    new_leaf = world.good.signature_pem if kind == "sign" else world.good.authentication_pem
    # A relying party that trusts only the new (P-384) root accepts the old RSA leaf ...
    result = openssl("verify", "-CAfile", str(new), "-untrusted", str(old_with_new),
                     str(old_leaf))
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr
    # ... and one that trusts only the old RSA root accepts the new P-384 leaf.
    result = openssl("verify", "-CAfile", str(old), "-untrusted", str(new_with_old),
                     str(new_leaf))
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr
    # Without the link neither works: the generations share a DN, the keys decide.
    assert openssl("verify", "-CAfile", str(new), str(old_leaf)).returncode != 0
    for link in (old_with_new, new_with_old):
        _lint_cert(link)


def test_next_pair_profile(world: World) -> None:
    dob = date.fromisoformat(ISSUE_DEFAULTS["dob"])
    for path in (world.good.signature_pem, world.good.authentication_pem):
        certificate = _cert(path)
        key = certificate.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
        assert isinstance(certificate.signature_hash_algorithm, hashes.SHA384)
        end = certificate.not_valid_after_utc.astimezone(JST)
        start = certificate.not_valid_before_utc.astimezone(JST).date()
        # The 10th birthday strictly after the day of issue, 23:59:59 JST (ca/cardprofile.py)
        first = start.year if dob.replace(year=start.year) > start else start.year + 1
        assert end.date() == dob.replace(year=first + 9)
        assert (end.hour, end.minute, end.second) == (23, 59, 59)
        _lint_cert(path)
    new = world.fetch("/ca/sign/g2.pem", "sign-g2.pem")
    result = openssl("verify", "-CAfile", str(new), str(world.good.signature_pem))
    assert result.returncode == 0, result.stderr


def test_next_pkcs12_opens_in_openssl(world: World) -> None:
    for kind, pin in (("signature", SIGN_PIN), ("authentication", AUTH_PIN)):
        p12 = Path(world.next_json[kind]["key"])
        result = openssl("pkcs12", "-in", str(p12), "-passin", f"pass:{pin}", "-nodes")
        assert result.returncode == 0, result.stderr
        assert "-----BEGIN PRIVATE KEY-----" in result.stdout
        key_pem = world.tmp / f"{kind}-key.pem"
        key_pem.write_text(result.stdout[result.stdout.index("-----BEGIN PRIVATE KEY-----"):])
        shown = openssl("pkey", "-in", str(key_pem), "-noout", "-text")
        assert "NIST CURVE: P-384" in shown.stdout, shown.stdout + shown.stderr
        wrong = openssl("pkcs12", "-in", str(p12), "-passin", "pass:0000", "-nodes")
        assert wrong.returncode != 0


def _ocsp(world: World, issuer: Path, leaf: Path, *extra: str) -> str:
    result = openssl("ocsp", "-url", world.daemon.url + "/ocsp", "-CAfile", str(issuer),
                     "-issuer", str(issuer), "-cert", str(leaf), "-header",
                     f"Authorization=Bearer {world.token}", *extra)
    text = result.stdout + result.stderr
    assert "Response verify OK" in text, text
    assert "Response Verify Failure" not in text, text
    return text


@pytest.mark.parametrize("nonce", [True, False], ids=["live", "presigned"])
def test_ocsp_good_and_revoked_for_the_next_pair(world: World, nonce: bool) -> None:
    issuer = world.fetch("/ca/sign/g2.pem", "sign-g2.pem")
    extra = () if nonce else ("-no_nonce",)
    for leaf, status in ((world.good.signature_pem, "good"),
                         (world.revoked.signature_pem, "revoked")):
        answer = world.tmp / f"ocsp-{status}-{nonce}.der"
        text = _ocsp(world, issuer, leaf, *extra, "-respout", str(answer))
        assert f"{leaf}: {status}" in text
        if nonce:
            assert "WARNING: no nonce in response" not in text
        if status == "revoked":
            assert "Reason: keyCompromise" in text
        response = ocsp.load_der_ocsp_response(answer.read_bytes())
        assert isinstance(response.signature_hash_algorithm, hashes.SHA384)
        signer = response.certificates[0]
        key = signer.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
        assert isinstance(signer.signature_hash_algorithm, hashes.SHA384)  # by the P-384 CA
        lint = subprocess.run([str(BIN / "lint_ocsp_response"), "lint", "-s", "WARNING",
                               str(answer)], capture_output=True, text=True, timeout=120)
        assert lint.returncode == 0, (lint.stdout, lint.stderr)


def test_live_answers_repeat_correctly_whatever_the_signature_length(world: World) -> None:
    """ECDSA signatures vary in length (DER INTEGERs): every nonce answer must verify."""
    issuer = world.fetch("/ca/auth/g2.pem", "auth-g2.pem")
    for _ in range(12):
        assert f"{world.good.authentication_pem}: good" in _ocsp(
            world, issuer, world.good.authentication_pem)


def test_old_rsa_generation_still_answers(world: World) -> None:
    issuer = world.fetch("/ca/sign/g1.pem", "sign-g1.pem")
    text = _ocsp(world, issuer, world.old_leaf.signature_pem)
    assert f"{world.old_leaf.signature_pem}: good" in text


def _crl(world: World, short: str, name: str) -> Path:
    return world.data_dir / "crl" / short / "g2" / f"{name}.crl"


def test_partition_crl_of_the_p384_generation(world: World) -> None:
    new = world.fetch("/ca/sign/g2.pem", "sign-g2.pem")
    path = _crl(world, "sign", ISSUE_DEFAULTS["municipality_code"])
    crl = x509.load_der_x509_crl(path.read_bytes())
    assert isinstance(crl.signature_hash_algorithm, hashes.SHA384)
    result = openssl("crl", "-in", str(path), "-inform", "DER", "-CAfile", str(new), "-noout",
                     "-verify")
    assert "verify OK" in result.stdout + result.stderr, result.stderr
    partition = der_to_pem(path, world.tmp)
    result = openssl("verify", "-crl_check", "-CRLfile", str(partition), "-CAfile", str(new),
                     str(world.revoked.signature_pem))
    assert "certificate revoked" in result.stdout + result.stderr
    result = openssl("verify", "-crl_check", "-CRLfile", str(partition), "-CAfile", str(new),
                     str(world.good.signature_pem))
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (ISSUE_DEFAULTS["municipality_code"], "full"):
        lint = subprocess.run([str(BIN / "lint_crl"), "lint", "-t", "CRL", "-p", "PKIX", "-s",
                               "WARNING", str(_crl(world, "sign", name))],
                              capture_output=True, text=True, timeout=120)
        assert lint.returncode == 0, lint.stdout + lint.stderr


def test_consent_signed_with_a_p384_card_key(world: World) -> None:
    """Part 3 with a next-generation card: `openssl cms -sign` with the P-384 key verifies."""
    key_pem = world.tmp / "consent-key.pem"
    extracted = openssl("pkcs12", "-in", world.next_json["signature"]["key"], "-nocerts",
                        "-nodes", "-passin", f"pass:{SIGN_PIN}", "-out", str(key_pem))
    assert extracted.returncode == 0, extracted.stderr
    source = world.tmp / "consent.json"
    source.write_text(json.dumps({
        "type": "jpki-consent/v1", "action": "grant", "signature_serial": world.good.signature,
        "verifier": "bank", "service": "linkage", "items": [],
        "signed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "nonce": secrets.token_urlsafe(16)}), encoding="utf-8")
    der = world.tmp / "consent.der"
    signed = openssl("cms", "-sign", "-binary", "-nodetach", "-md", "sha384", "-in",
                     str(source), "-signer", str(world.good.signature_pem), "-inkey",
                     str(key_pem), "-outform", "DER", "-out", str(der))
    assert signed.returncode == 0, signed.stderr
    request = urllib.request.Request(
        world.daemon.url + "/linkage/v1/consents", data=der.read_bytes(), method="POST",
        headers={"Authorization": f"Bearer {world.token}",
                 "Content-Type": "application/pkcs7-mime"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)
    tampered = bytearray(der.read_bytes())
    tampered[-5] ^= 0x01  # inside the ECDSA signature, the last field of the SignerInfo
    request = urllib.request.Request(
        world.daemon.url + "/linkage/v1/consents", data=bytes(tampered), method="POST",
        headers={"Authorization": f"Bearer {world.token}",
                 "Content-Type": "application/pkcs7-mime"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert 400 <= refused.value.code < 500


def test_rotation_keeps_the_current_algorithm_by_default(world: World) -> None:
    rotated = jpki(world.data_dir, "ca", "rotate", "--kind", "auth")
    assert rotated.code == 0, rotated.err
    assert rotated.json["created"][0]["algorithm"] == "ecdsa-p384"
