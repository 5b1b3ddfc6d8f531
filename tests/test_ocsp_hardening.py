"""Attacks from the hardening review (issue 14), each reproduced against the real parts.

- signed OCSP requests: the signer is looked up before any public-key work, keys outside the
  policy are refused, and verification runs off the event loop;
- a revocation through POST /registry/events is handled on the responder's event loop;
- anonymous input (/ca/, /crl/ paths, malformed HTTP, bad certificates in requests) gets 4xx or
  an OCSP error status, is logged at debug level only and counted in /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import random
import socket
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asn1crypto import ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.kinds import CertKind
from jpki.context import Context
from ocsp import web as ocsp_web
from ocsp.auth import SignerKeyPolicy
from ocsp.errors import ERROR_RESPONSES, MalformedRequest, Unauthorized
from ocsp.presign import make_cert_id
from ocsp.responder import Responder
from registry import verifiers
from registry.clock import FrozenClock, system_clock
from registry.store import Store
from tests.helpers import Daemon, jpki, openssl
from tests.ocsp_support import build, data_clock, forged_certificate
from tests.stack import running
from tests.test_revocation_events import event, issue

pytestmark = pytest.mark.engines

OCSP_REQUEST = {"Content-Type": "application/ocsp-request"}


def plain_request(responder: Responder, kind: CertKind, serial: str) -> bytes:
    """An unsigned, nonce-less request for one certificate, encoded as openssl does."""
    issuer = next(i for i in responder.issuers.issuers
                  if i.ca.kind is kind and i.signer is not None)
    cert_id = make_cert_id(issuer, "sha1", int(serial, 16))
    return ocsp.OCSPRequest({"tbs_request": {"request_list": [
        {"req_cert": ocsp.CertId.load(cert_id.der)}]}}).dump()


def cert_status(der: bytes) -> str:
    response = ocsp.OCSPResponse.load(der)
    assert response["response_status"].native == "successful", response.native
    single = response.basic_ocsp_response["tbs_response_data"]["responses"][0]
    return str(single["cert_status"].name)


# -- defect 3: change notifications on the responder's loop -----------------------------------
PROBLEMS = ("no current event loop", "never awaited", "Traceback", "listener failed")


async def test_events_revocation_invalidates_on_the_loop_and_logs_no_error(
        context: Context, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """POST /registry/events commits on the events worker thread; the OCSP cache must still be
    touched only on its event loop (dicts are not locked), and the next answer says revoked."""
    caplog.set_level(logging.DEBUG)
    pair = issue(context, tmp_path, "r-loop")
    serial = pair.issued[CertKind.SIGNATURE].serial
    operator = jpki(context.data_dir, "operator", "add", "feed").json["token"]
    verifier = jpki(context.data_dir, "verifier", "add", "bank").json["token"]
    bearer = {"Authorization": f"Bearer {verifier}"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with running(context, FrozenClock(datetime.now(UTC))) as stack:
            responder = stack.app[ocsp_web.RESPONDER]
            body = plain_request(responder, CertKind.SIGNATURE, serial)
            url = stack.url + "/ocsp"
            async with stack.session.post(url, data=body,
                                          headers={**OCSP_REQUEST, **bearer}) as response:
                assert cert_status(await response.read()) == "good"
            assert any(e.cert_id.serial_hex == serial for e in responder.cache.entries.values())
            deletion = json.dumps(event("e-loop", "r-loop", "deletion")).encode()
            async with stack.session.post(
                    stack.url + "/registry/events", data=deletion,
                    headers={"Authorization": f"Bearer {operator}",
                             "Content-Type": "application/json"}) as response:
                assert response.status == 200, await response.text()
            # the notification was handled on the loop before the events answer was sent:
            # the good answer is gone (a revoked one may already be re-signed in its place)
            assert [e.state for e in responder.cache.entries.values()
                    if e.cert_id.serial_hex == serial] in ([], ["revoked"])
            async with stack.session.post(url, data=body,
                                          headers={**OCSP_REQUEST, **bearer}) as response:
                assert cert_status(await response.read()) == "revoked"
            await asyncio.sleep(0.2)  # let the background re-signature finish
        gc.collect()  # an un-awaited coroutine warns when it is collected
    text = caplog.text + "".join(str(w.message) for w in caught)
    for problem in PROBLEMS:
        assert problem not in text, text
    assert not [r for r in caplog.records if r.exc_info], caplog.text


# -- defect 1: signed requests cost nothing until the signer is known -------------------------
UNAUTHORIZED = ERROR_RESPONSES["unauthorized"]
MALFORMED = ERROR_RESPONSES["malformed_request"]
BIG_EXPONENT = 2**64 - 59  # odd, the largest OpenSSL accepts on a modulus over 3,072 bits


def forged_request(rng: random.Random, cert_id_der: bytes, certificate: asn1_x509.Certificate,
                   bits: int) -> bytes:
    """A signed request whose signature is random (below the modulus, so OpenSSL would do
    the whole exponentiation before finding it wrong)."""
    tbs = ocsp.TBSRequest({"request_list": [{"req_cert": ocsp.CertId.load(cert_id_der)}]})
    return ocsp.OCSPRequest({"tbs_request": tbs, "optional_signature": {
        "signature_algorithm": {"algorithm": "sha256_rsa"},
        "signature": rng.getrandbits(bits - 1).to_bytes(bits // 8, "big"),
        "certs": [certificate]}}).dump()


@dataclass
class Signers:
    daemon: Daemon
    ca_pem: Path
    cert_pem: Path
    cert_id_der: bytes
    client_cert: Path
    client_key: Path
    registered_big: asn1_x509.Certificate


def _post(url: str, body: bytes) -> bytes:
    request = urllib.request.Request(url, data=body, method="POST", headers=OCSP_REQUEST)
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return bytes(response.read())


def _metric(url: str, name: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    values: dict[str, float] = {}
    for line in lines:
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            values[labels[len(name):]] = float(value)
    return values


@pytest.fixture
def signers(data_dir: Path, tmp_path: Path) -> Iterator[Signers]:
    """A daemon with two signing verifiers: an ordinary RSA-2048 one (made by openssl) and one
    whose operator registered a 16,384-bit key with a 64-bit exponent."""
    issued = jpki(data_dir, "issue", "--resident-id", "r-sig", "--out", str(tmp_path / "o"),
                  "--name", "山田 太郎", "--dob", "1980-04-02", "--sex", "male",
                  "--address", "東京都新宿区西新宿二丁目8番1号", "--municipality-code", "13104",
                  "--sign-pin", "abc12345", "--auth-pin", "1234")
    assert issued.code == 0, issued.err
    client_key, client_cert = tmp_path / "client.key", tmp_path / "client.pem"
    made = openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(client_key),
                   "-out", str(client_cert), "-subj", "/CN=broker OCSP client", "-days", "30")
    assert made.returncode == 0, made.stderr
    added = jpki(data_dir, "verifier", "add", "broker", "--signer-cert", str(client_cert))
    assert added.code == 0, added.err
    big = forged_certificate(random.Random(14), 16384, BIG_EXPONENT)
    big_der = tmp_path / "big.der"
    big_der.write_bytes(big.dump())
    # The CLI refuses this key at registration (tests/test_signer_registration.py); a registry
    # may still hold one from before that check, so it is written below the CLI.
    assert jpki(data_dir, "verifier", "add", "bigkey").code == 0
    store = Store.open(data_dir)
    try:
        verifiers.add_signer(store, system_clock, "bigkey",
                             x509.load_der_x509_certificate(big.dump()), actor="test")
    finally:
        store.close()
    daemon = Daemon(data_dir).start()
    try:
        ca_pem = tmp_path / "ca.pem"
        with urllib.request.urlopen(daemon.url + "/ca/sign/g1.pem") as response:
            ca_pem.write_bytes(response.read())
        cert_pem = Path(issued.json["signature"]["certificate"])
        out = tmp_path / "req.der"
        openssl("ocsp", "-issuer", str(ca_pem), "-cert", str(cert_pem), "-no_nonce",
                "-reqout", str(out))
        cert_id = ocsp.OCSPRequest.load(out.read_bytes())["tbs_request"]["request_list"][0]
        yield Signers(daemon, ca_pem, cert_pem, cert_id["req_cert"].dump(), client_cert,
                      client_key, big)
    finally:
        daemon.stop()


def test_big_key_signed_requests_are_refused_before_any_signature_work(
        signers: Signers) -> None:
    """The issue's attack, unregistered and registered: refused unverified (a forged
    signature can never verify, so a verification would count as bad_signature), while the
    registered RSA-2048 verifier is answered, its signature verified."""
    url = signers.daemon.url
    rng = random.Random(1)
    stranger = forged_certificate(rng, 16384, BIG_EXPONENT)
    for _ in range(5):
        answer = _post(url + "/ocsp", forged_request(rng, signers.cert_id_der, stranger, 16384))
        assert answer == UNAUTHORIZED
        answer = _post(url + "/ocsp", forged_request(rng, signers.cert_id_der,
                                                     signers.registered_big, 16384))
        assert answer == UNAUTHORIZED
    result = openssl("ocsp", "-url", url + "/ocsp", "-issuer", str(signers.ca_pem),
                     "-CAfile", str(signers.ca_pem), "-cert", str(signers.cert_pem),
                     "-signer", str(signers.client_cert), "-signkey", str(signers.client_key))
    text = result.stdout + result.stderr
    assert "Response verify OK" in text and "Response Verify Failure" not in text, text
    assert f"{signers.cert_pem}: good" in text, text
    verdicts = _metric(f"http://{signers.daemon.metrics_listen}",
                       "jpki_ocsp_signed_requests_total")
    assert verdicts.get('{verdict="unregistered"}') == 5, verdicts
    assert verdicts.get('{verdict="key_refused"}') == 5, verdicts
    assert verdicts.get('{verdict="verified"}') == 1, verdicts
    assert '{verdict="bad_signature"}' not in verdicts, verdicts
    log = (signers.daemon.data_dir / f"daemon-{signers.daemon.port}.log").read_text()
    assert log.count("request-signing certificate") == 1, log  # the operator is told once
    assert "Traceback" not in log, log


async def test_a_refused_big_key_request_costs_a_fraction_of_a_millisecond(
        data_dir: Path, tmp_path: Path) -> None:
    """The figure behind the fix, in-process through the whole responder: a 16,384-bit key with
    a 64-bit exponent cost 5.7 ms of event-loop time per request before (a plain request about
    0.4 ms). Best of several rounds, so a busy machine does not fail it."""
    issued = jpki(data_dir, "issue", "--resident-id", "r-cost", "--out", str(tmp_path / "o"),
                  "--name", "山田 太郎", "--dob", "1980-04-02", "--sex", "male",
                  "--address", "東京都新宿区西新宿二丁目8番1号", "--municipality-code", "13104",
                  "--sign-pin", "abc12345", "--auth-pin", "1234")
    assert issued.code == 0, issued.err
    responder = build(data_dir, data_clock(data_dir))
    try:
        plain = plain_request(responder, CertKind.SIGNATURE, issued.json["signature"]["serial"])
        rng = random.Random(2)
        cert_id_der = ocsp.OCSPRequest.load(plain)["tbs_request"]["request_list"][0][
            "req_cert"].dump()
        attacks = [forged_request(rng, cert_id_der, forged_certificate(rng, 16384, BIG_EXPONENT),
                                  16384) for _ in range(20)]
        await responder.answer(plain, None)  # signed and cached once

        async def best(bodies: list[bytes]) -> float:
            rounds = []
            for _ in range(5):
                started = time.perf_counter()
                for body in bodies:
                    with contextlib.suppress(Unauthorized):  # the attack's answer
                        await responder.answer(body, None)
                rounds.append((time.perf_counter() - started) / len(bodies))
            return min(rounds)

        # plain requests differ by serial so that none hits the body cache's fast path
        plains = [plain_request(responder, CertKind.SIGNATURE, format(0x5000 + i, "x"))
                  for i in range(20)]
        plain_cost, attack_cost = await best(plains), await best(attacks)
        print(f"\nper request: refused 16384-bit signed {attack_cost * 1e3:.3f} ms,"
              f" plain (repeated, answered from the cache) {plain_cost * 1e3:.3f} ms")
        assert attack_cost < 1.5e-3, (attack_cost, plain_cost)
    finally:
        await responder.close()


def test_signer_key_policy_bounds() -> None:
    """Real public keys at the edges of the policy (built from numbers: no key generation)."""
    rng = random.Random(3)
    policy = SignerKeyPolicy()

    def rsa_key(bits: int, exponent: int) -> rsa.RSAPublicKey:
        modulus = rng.getrandbits(bits) | (1 << (bits - 1)) | 1
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()

    assert policy.refusal(rsa_key(2048, 65537)) is None
    assert policy.refusal(rsa_key(4096, 65537)) is None
    assert policy.refusal(rsa_key(3072, 3)) is None
    assert "4097 bits" in (policy.refusal(rsa_key(4097, 65537)) or "")
    assert "2047 bits" in (policy.refusal(rsa_key(2047, 65537)) or "")
    assert "exponent" in (policy.refusal(rsa_key(2048, 65539)) or "")
    assert "exponent" in (policy.refusal(rsa_key(4096, BIG_EXPONENT)) or "")
    assert "bits" in (policy.refusal(rsa_key(8192, 65537)) or "")
    assert policy.refusal(ec.generate_private_key(ec.SECP256R1()).public_key()) is None
    assert policy.refusal(ec.generate_private_key(ec.SECP521R1()).public_key()) is None
    assert "curve" in (policy.refusal(ec.generate_private_key(ec.SECP256K1()).public_key())
                       or "")


def test_a_signer_certificate_with_a_bad_version_is_a_malformed_request(
        signers: Signers) -> None:
    """pyca's InvalidVersion is no ValueError: it escaped the parser as internalError."""
    rng = random.Random(4)
    bad = forged_certificate(rng, 2048, 65537, version=7)
    answer = _post(signers.daemon.url + "/ocsp",
                   forged_request(rng, signers.cert_id_der, bad, 2048))
    assert answer == MALFORMED
    log = (signers.daemon.data_dir / f"daemon-{signers.daemon.port}.log").read_text()
    assert "Traceback" not in log and "internal" not in log, log


# -- defect 4: anonymous input gets 4xx, a counter, and no log line above debug ---------------
def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _raw(port: int, data: bytes) -> bytes:
    """One raw exchange: what aiohttp's parser refuses never gets through urllib."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)  # aiohttp closes the connection after a 400
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


BAD_PATHS = [
    "/ca/sign/g99999999999999999999.der",  # OverflowError in SQLite's bind
    "/ca/sign/g1-g" + "9" * 5000 + "-new-with-old.der",  # int() refuses > 4,300 digits
    "/ca/auth/g0-g99999999999999999999-old-with-new.pem",
    "/crl/sign/g" + "9" * 300 + "/full.crl",  # file name too long for os.stat
    "/crl/sign/g99999999999999999999/00001.crl",
    "/crl/" + "x" * 300 + "/g1/full.crl",
]
BAD_HTTP = [
    b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /ocsp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"b" * 20000 + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\x00\x01 / HTTP/9\r\n\r\n",
]


def test_anonymous_bad_input_is_4xx_counted_and_not_logged(daemon: Daemon) -> None:
    for path in BAD_PATHS:
        assert _status(daemon.url + path) == 404, path[:60]
    for data in BAD_HTTP:
        answer = _raw(daemon.port, data)
        assert b" 400 Bad Request" in answer and b" 500 " not in answer, (data[:60], answer)
    for body in (b"\x30\x03\x02\x01", b"not DER", b""):
        request = urllib.request.Request(daemon.url + "/ocsp", data=body, method="POST",
                                         headers=OCSP_REQUEST)
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.read() == MALFORMED
    assert _status(daemon.url + "/ocsp/%%%not-base64") == 200
    assert _status(daemon.url + "/healthz") == 200
    counted = _metric(f"http://{daemon.metrics_listen}", "jpki_bad_requests_total")
    assert counted.get('{surface="http"}', 0) >= len(BAD_HTTP), counted
    assert counted.get('{surface="ocsp"}', 0) >= 4, counted
    log = (daemon.data_dir / f"daemon-{daemon.port}.log").read_text()
    for problem in ("Traceback", "ERROR", "Error handling request", "malformed", "bad "):
        assert problem not in log, log


async def test_cert_id_hash_parameters_other_than_null_are_malformed(
        data_dir: Path, tmp_path: Path) -> None:
    """Found by tests/test_fuzz_ocsp.py: a CertID's hash parameters were parsed only when the
    answer echoing it was encoded, so a [0] or an OCTET STRING there was an internalError
    with a traceback on the several-CertID (asn1crypto) path."""
    responder = build(data_dir, data_clock(data_dir))
    try:
        issuer = next(i for i in responder.issuers.issuers if i.ca.kind is CertKind.SIGNATURE)
        cert_ids = [ocsp.CertId.load(make_cert_id(issuer, "sha1", serial).der)
                    for serial in (0x10, 0x11)]
        der = ocsp.OCSPRequest({"tbs_request": {"request_list": [
            {"req_cert": cert_id} for cert_id in cert_ids]}}).dump()
        null_sha1 = bytes.fromhex("06052b0e03021a0500")
        assert der.count(null_sha1) == 2
        for parameters in ("0700", "a000", "0400", "3000"):
            bad = der.replace(null_sha1, null_sha1[:-2] + bytes.fromhex(parameters), 1)
            with pytest.raises(MalformedRequest):
                await responder.answer(bad, None)
        assert (await responder.answer(der, None)).outcome == "multi"
    finally:
        await responder.close()
