"""CRLs signed by a CA key on a PKCS#11 token (SoftHSM2) are streamed like any other: the token
signs the digest of the tbsCertList hashed as it was written (ca/pkcs11store.py: CKM_RSA_PKCS
over a DigestInfo, CKM_ECDSA over the digest), and nothing is read back from the file.

Judged by the real verifiers: `openssl crl -verify` and `openssl verify -crl_check` on the
files `jpki crl generate` published with token keys, RSA (today's generation) and P-384 (the
next card profile). In-process token work runs in a spawned child: a process initialises one
PKCS#11 library once (PKCS#11 v2.40 §5.4, C_Initialize), and SoftHSM2 reads its token
directory then, so this module's tokens must not meet another module's in one process.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo, Prehashed
from cryptography.hazmat.primitives.serialization import Encoding

from tests.crl_support import der_to_pem
from tests.helpers import (
    REPO,
    config_text,
    issue_args,
    key_backend_replacements,
    openssl,
    softhsm_tokens,
)

PIN = "8642"
OCSP_PIN = "9753"
MESSAGE = b"the tbsCertList of a national-scale CRL, or any other signed bytes"


@dataclass(frozen=True)
class TokenSite:
    tmp: Path
    data_dir: Path
    config: Path
    env: dict[str, str]
    issued: dict[str, tuple[str, Path]]  # resident: (signature serial, its certificate)

    def issue(self, resident: str, **overrides: str) -> None:
        body = json.loads(self.jpki(*issue_args(resident, self.tmp / resident, **overrides))
                          .strip().splitlines()[-1])["signature"]
        self.issued[resident] = (body["serial"], Path(body["certificate"]))

    def jpki(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "jpki.cli", "--config", str(self.config), "--data-dir",
             str(self.data_dir), *args], capture_output=True, text=True, cwd=REPO,
            env={**os.environ, **self.env}, timeout=300)
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    def crl(self, generation: int, scope: str) -> Path:
        return self.data_dir / "crl" / "sign" / f"g{generation}" / f"{scope}.crl"

    def ca_pem(self, generation: int) -> Path:
        from tests.crl_support import ca_pem
        return ca_pem(self.data_dir, "sign", generation, self.tmp)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenSite]:
    """A CA whose keys are on SoftHSM2: an RSA generation with a revoked certificate, then a
    P-384 generation (`jpki ca rotate --algorithm ecdsa-p384`) with one, CRLs published."""
    tmp = tmp_path_factory.mktemp("token-crl")
    tokens = softhsm_tokens(tmp, {"crl-ca": PIN, "crl-ocsp": OCSP_PIN})
    config = tmp / "token.toml"
    config.write_text(config_text(key_backend_replacements("pkcs11", "crl-ca", "crl-ocsp")),
                      encoding="utf-8")
    env = {**tokens, "JPKI_PKCS11_PIN": PIN, "JPKI_OCSP_PKCS11_PIN": OCSP_PIN}
    made = TokenSite(tmp, tmp / "data", config, env, {})
    made.jpki("init")
    for resident in ("token-rsa-kept", "token-rsa-lost"):
        made.issue(resident)
    made.jpki("ca", "rotate", "--kind", "all", "--algorithm", "ecdsa-p384")
    for resident in ("token-p384-kept", "token-p384-lost"):
        made.issue(resident, profile="next")
    for resident in ("token-rsa-lost", "token-p384-lost"):
        made.jpki("revoke", made.issued[resident][0], "--reason", "keyCompromise")
    made.jpki("crl", "generate")
    yield made


@pytest.mark.parametrize("generation", [1, 2], ids=["rsa", "p384"])
def test_openssl_verifies_streamed_crls_signed_on_the_token(site: TokenSite,
                                                           generation: int) -> None:
    ca = site.ca_pem(generation)
    for scope in ("full", "13104"):
        path = site.crl(generation, scope)
        crl = x509.load_der_x509_crl(path.read_bytes())
        expected = hashes.SHA256 if generation == 1 else hashes.SHA384
        assert isinstance(crl.signature_hash_algorithm, expected)
        result = openssl("crl", "-in", str(path), "-inform", "DER", "-CAfile", str(ca),
                         "-noout", "-verify")
        assert "verify OK" in result.stdout + result.stderr, (scope, result.stderr)
    partition = der_to_pem(site.crl(generation, "13104"), site.tmp)
    stem = "rsa" if generation == 1 else "p384"
    lost = openssl("verify", "-crl_check", "-CRLfile", str(partition), "-CAfile", str(ca),
                   str(site.issued[f"token-{stem}-lost"][1]))
    assert "certificate revoked" in lost.stdout + lost.stderr, lost.stdout + lost.stderr
    kept = openssl("verify", "-crl_check", "-CRLfile", str(partition), "-CAfile", str(ca),
                   str(site.issued[f"token-{stem}-kept"][1]))
    assert kept.returncode == 0, kept.stdout + kept.stderr


@dataclass(frozen=True)
class Signed:
    """What the child made with one token key: signatures over MESSAGE, one over the data and
    one over its digest, and a CRL streamed into a write-only file beside the in-memory one."""

    algorithm: str
    public_pem: bytes
    over_data: bytes
    over_digest: bytes
    streamed: bytes
    in_memory: bytes
    refusals: list[str]


def _sign_on_the_token(config: Path, data_dir: Path, env: dict[str, str], generation: int
                       ) -> Signed:
    """In a spawned child: load generation `generation`'s signature CA key from the token."""
    os.environ.update(env)
    from cryptography.hazmat.primitives.serialization import PublicFormat

    from ca import authority
    from ca.kinds import CertKind
    from crl import assembly, builder
    from crl.entries import RevokedEntry
    from jpki.context import Context
    from jpki.settings import load_settings

    context = Context(load_settings(config, data_dir))
    ca = next(item for item in authority.generations(context.store, CertKind.SIGNATURE,
                                                     include_retired=False)
              if item.generation == generation)
    key = ca.private_key(context.keys)
    scheme = ca.algorithm
    digest = hashes.Hash(scheme.hash)
    digest.update(MESSAGE)
    refusals = []
    if isinstance(key, rsa.RSAPrivateKey):
        over_data = key.sign(MESSAGE, padding.PKCS1v15(), scheme.hash)
        over_digest = key.sign(digest.finalize(), padding.PKCS1v15(), Prehashed(scheme.hash))
        for wrong in ((b"\0" * 5, padding.PKCS1v15(), Prehashed(scheme.hash)),
                      (MESSAGE, padding.PKCS1v15(), NoDigestInfo()),
                      (MESSAGE, padding.PSS(padding.MGF1(hashes.SHA256()), 32), scheme.hash)):
            try:
                key.sign(*wrong)  # type: ignore[arg-type]
            except (ValueError, UnsupportedAlgorithm) as exc:
                refusals.append(type(exc).__name__)
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        over_data = key.sign(MESSAGE, ec.ECDSA(scheme.hash))
        over_digest = key.sign(digest.finalize(), ec.ECDSA(Prehashed(scheme.hash)))
        try:
            key.sign(b"\0" * 5, ec.ECDSA(Prehashed(scheme.hash)))
        except ValueError as exc:
            refusals.append(type(exc).__name__)
    moment = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    encoded = builder.EntryEncoder().encode([
        RevokedEntry(format(0x4000_0000_0000_0000_0000 + index * 104_729, "x"),
                     moment + 86400 * 900, moment + index, [None, 1, 4][index % 3])
        for index in range(2_000)])
    now = datetime.now(UTC).replace(microsecond=0)
    fields = {"number": 5, "this_update": now, "next_update": now + timedelta(hours=30)}
    frame = assembly.CRLFrame.make(ca, **fields)  # type: ignore[arg-type]
    staged = data_dir / f"streamed-g{generation}.crl"
    # RSA: opened for writing only, so a signer that read the tbsCertList back would fail
    # here. ECDSA: a signature shorter than the longest has the outer header rewritten and
    # the file hashed again in 1 MiB chunks (assembly._finish_shorter), which needs reading.
    with staged.open("wb" if isinstance(key, rsa.RSAPrivateKey) else "w+b") as handle:
        assembly.write_streamed(handle, frame, key, sum(map(len, encoded)),
                                iter([b"".join(encoded[:700]), b"".join(encoded[700:])]))
    in_memory = assembly.signed_crl(ca, key, contents=encoded, **fields)  # type: ignore[arg-type]
    context.store.close()
    return Signed(scheme.name, key.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo), over_data, over_digest,
        staged.read_bytes(), in_memory, refusals)


def _in_child(site: TokenSite, generation: int) -> Signed:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        return child.submit(_sign_on_the_token, site.config, site.data_dir, site.env,
                            generation).result(timeout=300)


def _tbs(der: bytes) -> bytes:
    return x509.load_der_x509_crl(der).tbs_certlist_bytes


def test_rsa_token_key_signs_a_digest_as_it_signs_the_data(site: TokenSite) -> None:
    """PKCS #1 v1.5 is deterministic: the DigestInfo signed with raw CKM_RSA_PKCS gives the
    very signature CKM_SHA256_RSA_PKCS gives over the data, so the streamed CRL is byte for
    byte the in-memory one."""
    signed = _in_child(site, 1)
    assert signed.algorithm == "rsa-2048"
    assert signed.over_digest == signed.over_data
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    public = load_pem_public_key(signed.public_pem)
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signed.over_digest, MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    assert signed.streamed == signed.in_memory
    assert x509.load_der_x509_crl(signed.streamed).is_signature_valid(public)
    assert len(x509.load_der_x509_crl(signed.streamed)) == 2_000
    # A digest of the wrong length, a signature without DigestInfo, PSS: refused, not signed.
    assert signed.refusals == ["ValueError", "UnsupportedAlgorithm", "UnsupportedAlgorithm"]
    path = site.tmp / "streamed-rsa.crl"
    path.write_bytes(signed.streamed)
    result = openssl("crl", "-in", str(path), "-inform", "DER", "-CAfile",
                     str(site.ca_pem(1)), "-noout", "-verify")
    assert "verify OK" in result.stdout + result.stderr, result.stderr


def test_p384_token_key_signs_a_digest_that_verifies_over_the_data(site: TokenSite) -> None:
    """ECDSA signatures differ at every signing: both verify over the data, and the streamed
    CRL has the in-memory one's tbsCertList and a signature that verifies."""
    signed = _in_child(site, 2)
    assert signed.algorithm == "ecdsa-p384"
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    public = load_pem_public_key(signed.public_pem)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    for signature in (signed.over_data, signed.over_digest):
        public.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA384()))
    assert _tbs(signed.streamed) == _tbs(signed.in_memory)
    assert x509.load_der_x509_crl(signed.streamed).is_signature_valid(public)
    assert signed.refusals == ["ValueError"]
    path = site.tmp / "streamed-p384.crl"
    path.write_bytes(signed.streamed)
    result = openssl("crl", "-in", str(path), "-inform", "DER", "-CAfile",
                     str(site.ca_pem(2)), "-noout", "-verify")
    assert "verify OK" in result.stdout + result.stderr, result.stderr
