"""The OCSP responder against the real `openssl ocsp` client and a real `jpki serve`.

One data directory per module: two generations of both CAs, certificates under each, two
verifiers (a bearer token and a registered request-signing certificate). Assertions read what
openssl prints (status lines, "Response verify OK"), never its exit code (PEERS.md).
"""

from __future__ import annotations

import base64
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import core, ocsp

from tests.helpers import Daemon, copy_data_dir, issue_args, jpki, openssl

pytestmark = pytest.mark.engines

LINT = Path(sys.executable).parent / "lint_ocsp_response"


@dataclass
class Env:
    data_dir: Path
    tmp: Path
    daemon: Daemon
    token: str
    # CA certificates by (kind short, generation), certificates by name
    cas: dict[tuple[str, int], Path]
    trust: Path
    certs: dict[str, tuple[Path, str]]  # name -> (PEM path, serial hex)
    client_cert: Path
    client_key: Path

    @property
    def url(self) -> str:
        return self.daemon.url + "/ocsp"

    def ca(self, kind: str, generation: int) -> str:
        return str(self.cas[(kind, generation)])


def _fetch(url: str, path: Path) -> Path:
    with urllib.request.urlopen(url) as response:
        path.write_bytes(response.read())
    return path


def _issue(data_dir: Path, tmp: Path, resident: str) -> dict:
    result = jpki(data_dir, *issue_args(resident, tmp / "out"))
    assert result.code == 0, result.err
    return result.json


@pytest.fixture(scope="module")
def env(template_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("ocsp")
    data_dir = tmp / "data"
    copy_data_dir(template_dir, data_dir)
    certs: dict[str, tuple[Path, str]] = {}
    first = _issue(data_dir, tmp, "ocsp-g1")
    for kind in ("signature", "authentication"):
        certs[f"{kind}-g1"] = (Path(first[kind]["certificate"]), first[kind]["serial"])
    rotated = jpki(data_dir, "ca", "rotate", "--kind", "all")
    assert rotated.code == 0, rotated.err
    second = _issue(data_dir, tmp, "ocsp-g2")
    third = _issue(data_dir, tmp, "ocsp-g2b")
    for kind in ("signature", "authentication"):
        certs[f"{kind}-g2"] = (Path(second[kind]["certificate"]), second[kind]["serial"])
        certs[f"{kind}-g2b"] = (Path(third[kind]["certificate"]), third[kind]["serial"])
    added = jpki(data_dir, "verifier", "add", "bank")
    assert added.code == 0, added.err
    assert set(added.json) == {"verifier", "token"}
    client_key, client_cert = tmp / "client.key", tmp / "client.pem"
    made = openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(client_key),
                   "-out", str(client_cert), "-subj", "/CN=broker OCSP client", "-days", "30")
    assert made.returncode == 0, made.stderr
    signer = jpki(data_dir, "verifier", "add", "broker", "--signer-cert", str(client_cert))
    assert signer.code == 0, signer.err
    daemon = Daemon(data_dir).start()
    try:
        cas = {}
        for kind in ("sign", "auth"):
            for generation in (1, 2):
                cas[(kind, generation)] = _fetch(f"{daemon.url}/ca/{kind}/g{generation}.pem",
                                                 tmp / f"{kind}-g{generation}.pem")
        trust = tmp / "trust.pem"
        trust.write_bytes(b"".join(path.read_bytes() for path in cas.values()))
        yield Env(data_dir, tmp, daemon, added.json["token"], cas, trust, certs, client_cert,
                  client_key)
    finally:
        daemon.stop()


def query(env: Env, *args: str, auth: bool = True) -> subprocess.CompletedProcess[str]:
    extra = ["-header", f"Authorization=Bearer {env.token}"] if auth else []
    return openssl("ocsp", "-url", env.url, "-CAfile", str(env.trust), *extra, *args)


def assert_verified(result: subprocess.CompletedProcess[str]) -> str:
    text = result.stdout + result.stderr
    assert "Response verify OK" in text, text
    assert "Response Verify Failure" not in text, text
    return text


def status_line(env: Env, name: str, status: str) -> str:
    return f"{env.certs[name][0]}: {status}"


@pytest.mark.parametrize("name,kind,generation", [
    ("signature-g1", "sign", 1), ("authentication-g1", "auth", 1),
    ("signature-g2", "sign", 2), ("authentication-g2", "auth", 2),
])
def test_good_for_both_kinds_and_generations(env: Env, name: str, kind: str,
                                             generation: int) -> None:
    cert = str(env.certs[name][0])
    text = assert_verified(query(env, "-issuer", env.ca(kind, generation), "-cert", cert))
    assert status_line(env, name, "good") in text
    assert "WARNING: no nonce in response" not in text
    text = assert_verified(query(env, "-issuer", env.ca(kind, generation), "-sha256",
                                 "-cert", cert, "-no_nonce"))
    assert status_line(env, name, "good") in text


def test_serial_form_and_unknown(env: Env) -> None:
    serial = env.certs["authentication-g2"][1]
    text = assert_verified(query(env, "-issuer", env.ca("auth", 2), "-serial", f"0x{serial}"))
    assert f"0x{serial}: good" in text
    text = assert_verified(query(env, "-issuer", env.ca("auth", 2), "-serial", "0x1234abcd"))
    assert "0x1234abcd: unknown" in text
    # Generations share a DN: the key hash decides, so a g1 serial asked of g2 is unknown.
    g1 = env.certs["authentication-g1"][1]
    text = assert_verified(query(env, "-issuer", env.ca("auth", 2), "-serial", f"0x{g1}"))
    assert f"0x{g1}: unknown" in text


def test_revocation_is_visible_to_the_very_next_query(env: Env) -> None:
    name = "signature-g2b"
    cert, serial = env.certs[name]
    args = ["-issuer", env.ca("sign", 2), "-cert", str(cert), "-no_nonce"]
    assert status_line(env, name, "good") in assert_verified(query(env, *args))
    assert status_line(env, name, "good") in assert_verified(query(env, *args))  # cached now
    live = args[:-1]  # with a nonce: signed now, from the memoized status
    assert status_line(env, name, "good") in assert_verified(query(env, *live))
    revoked = jpki(env.data_dir, "revoke", serial, "--reason", "certificateHold")
    assert revoked.code == 0, revoked.err
    text = assert_verified(query(env, *live))  # the first query after the revocation
    assert status_line(env, name, "revoked") in text and "Reason: certificateHold" in text
    assert "WARNING: no nonce" not in text
    text = assert_verified(query(env, *args))
    assert status_line(env, name, "revoked") in text
    assert "Reason: certificateHold" in text
    assert "Revocation Time:" in text
    text = assert_verified(query(env, "-sha256", *args[:2], "-cert", str(cert)))
    assert "Reason: certificateHold" in text
    # The pair's authentication certificate is untouched (DOMAIN.md: revocation per kind).
    other = "authentication-g2b"
    text = assert_verified(query(env, "-issuer", env.ca("auth", 2), "-cert",
                                 str(env.certs[other][0]), "-no_nonce"))
    assert status_line(env, other, "good") in text


def test_several_cert_ids_get_one_single_response_each(env: Env) -> None:
    text = assert_verified(query(
        env, "-issuer", env.ca("sign", 2), "-cert", str(env.certs["signature-g2"][0]),
        "-serial", "0x77", "-cert", str(env.certs["signature-g2b"][0])))
    assert status_line(env, "signature-g2", "good") in text
    assert "0x77: unknown" in text
    assert status_line(env, "signature-g2b", "revoked") in text or \
        status_line(env, "signature-g2b", "good") in text


def test_unidentified_and_foreign_requests_are_unauthorized(env: Env) -> None:
    args = ["-issuer", env.ca("sign", 1), "-cert", str(env.certs["signature-g1"][0])]
    assert "Responder Error: unauthorized" in query(env, *args, auth=False).stdout
    wrong = openssl("ocsp", "-url", env.url, "-CAfile", str(env.trust), "-header",
                    "Authorization=Bearer not-a-token", *args)
    assert "Responder Error: unauthorized" in wrong.stdout
    # An issuer that is not ours: the client's own self-signed certificate.
    foreign = query(env, "-issuer", str(env.client_cert), "-serial", "0x10")
    assert "Responder Error: unauthorized" in foreign.stdout


def test_signed_request_identifies_the_verifier(env: Env) -> None:
    args = ["-issuer", env.ca("auth", 1), "-cert", str(env.certs["authentication-g1"][0])]
    text = assert_verified(query(env, *args, "-signer", str(env.client_cert), "-signkey",
                                 str(env.client_key), auth=False))
    assert status_line(env, "authentication-g1", "good") in text
    stranger_key, stranger = env.tmp / "stranger.key", env.tmp / "stranger.pem"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(stranger_key),
            "-out", str(stranger), "-subj", "/CN=stranger", "-days", "1")
    result = query(env, *args, "-signer", str(stranger), "-signkey", str(stranger_key),
                   auth=False)
    assert "Responder Error: unauthorized" in result.stdout


def _request_der(env: Env, *args: str) -> bytes:
    out = env.tmp / "req.der"
    result = openssl("ocsp", *args, "-no_nonce", "-reqout", str(out))
    assert out.exists(), result.stderr
    return out.read_bytes()


def _http(env: Env, method: str, url: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers={
        "Authorization": f"Bearer {env.token}", "Content-Type": "application/ocsp-request",
        **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_get_with_rfc5019_caching_headers_and_304(env: Env) -> None:
    der = _request_der(env, "-issuer", env.ca("auth", 2), "-cert",
                       str(env.certs["authentication-g2"][0]))
    # RFC 5019 §5: URL-encoded base64; padding stripped to check it is tolerated.
    path = urllib.parse.quote(base64.b64encode(der).decode().rstrip("="), safe="")
    status, headers, body = _http(env, "GET", f"{env.url}/{path}")
    assert status == 200
    assert headers["Content-Type"] == "application/ocsp-response"
    cache_control = headers["Cache-Control"]
    assert "public" in cache_control and "no-transform" in cache_control
    assert "must-revalidate" in cache_control and "max-age=" in cache_control
    assert int(cache_control.split("max-age=")[1].split(",")[0]) < 24 * 3600
    assert {"Last-Modified", "Expires", "ETag"} <= set(headers)
    resp = env.tmp / "get.der"
    resp.write_bytes(body)
    text = assert_verified(openssl("ocsp", "-respin", str(resp), "-CAfile", str(env.trust),
                                   "-issuer", env.ca("auth", 2), "-cert",
                                   str(env.certs["authentication-g2"][0]), "-no_nonce"))
    assert status_line(env, "authentication-g2", "good") in text
    status, _, body = _http(env, "GET", f"{env.url}/{path}",
                            headers={"If-None-Match": headers["ETag"]})
    assert status == 304 and body == b""
    # A nonce answer is never cacheable.
    nonce_der = _with_nonce(der, b"\x01" * 16)
    status, headers, _ = _http(env, "POST", env.url, nonce_der)
    assert "no-cache" in headers["Cache-Control"]


def _with_nonce(der: bytes, nonce: bytes) -> bytes:
    request = ocsp.OCSPRequest.load(der)
    extension = ocsp.TBSRequestExtension({"extn_id": "nonce", "critical": False,
                                          "extn_value": core.OctetString(nonce)})
    tbs = request["tbs_request"].copy()
    tbs["request_extensions"] = [extension]
    return ocsp.OCSPRequest({"tbs_request": tbs}).dump()


MALFORMED = bytes.fromhex("3003 0a01 01")


def test_bad_input_gets_error_statuses_and_the_daemon_keeps_serving(env: Env) -> None:
    der = _request_der(env, "-issuer", env.ca("sign", 1), "-cert",
                       str(env.certs["signature-g1"][0]))
    cases = {
        "garbage": b"\x30\x82\xff\xffnot der at all",
        "trailing": der + b"\x00\x00",
        "empty nonce": _with_nonce(der, b""),
        "long nonce": _with_nonce(der, b"\x02" * 129),
    }
    md5 = ocsp.OCSPRequest.load(der).copy()
    md5["tbs_request"]["request_list"][0]["req_cert"]["hash_algorithm"] = {"algorithm": "md5"}
    cases["md5 CertID"] = md5.dump()
    for label, body in cases.items():
        status, headers, answer = _http(env, "POST", env.url, body)
        assert (status, answer) == (200, MALFORMED), label
        assert "no-cache" in headers["Cache-Control"], label
    status, _, answer = _http(env, "GET", env.url + "/%%%not-base64***")
    assert answer == MALFORMED
    status, _, _ = _http(env, "POST", env.url, b"\x30" * (16 * 1024 + 1))
    assert status == 413
    ok = _with_nonce(der, b"\x03" * 128)
    status, _, answer = _http(env, "POST", env.url, ok)
    assert status == 200 and answer[:8] != MALFORMED[:8] and len(answer) > 100
    with urllib.request.urlopen(env.daemon.url + "/healthz") as response:
        assert response.status == 200


def test_pkilint_finds_no_error_in_good_revoked_and_unknown(env: Env) -> None:
    forms = {
        "good": ["-cert", str(env.certs["authentication-g1"][0])],
        "revoked": ["-cert", str(env.certs["signature-g2b"][0])],
        "unknown": ["-serial", "0x5eed"],
    }
    revoked = jpki(env.data_dir, "revoke", env.certs["signature-g2b"][1], "--reason",
                   "keyCompromise")
    assert revoked.code in (0, 4)  # already revoked by an earlier test is fine
    issuers = {"good": env.ca("auth", 1), "revoked": env.ca("sign", 2),
               "unknown": env.ca("sign", 1)}
    for label, args in forms.items():
        out = env.tmp / f"{label}.der"
        text = assert_verified(query(env, "-issuer", issuers[label], *args, "-respout",
                                     str(out)))
        assert f": {label}" in text
        lint = subprocess.run([str(LINT), "lint", "-s", "WARNING", str(out)],
                              capture_output=True, text=True, timeout=60)
        assert lint.returncode == 0, (label, lint.stdout, lint.stderr)


def test_healthz_and_metrics(env: Env) -> None:
    with urllib.request.urlopen(env.daemon.url + "/healthz") as response:
        assert response.read() == b'{"status": "ok"}'
    with urllib.request.urlopen(env.daemon.metrics_url) as response:
        text = response.read().decode()
    for name in ("jpki_ocsp_requests_total", "jpki_ocsp_cache_total",
                 "jpki_ocsp_signing_seconds", "jpki_ocsp_response_age_seconds"):
        assert name in text


def _encoded(env: Env) -> dict[str, float]:
    with urllib.request.urlopen(env.daemon.metrics_url) as response:
        lines = response.read().decode().splitlines()
    return {by: float(line.rsplit(" ", 1)[1]) for line in lines for by in ("template", "pyca")
            if line.startswith(f'jpki_ocsp_encoded_total{{by="{by}"}}')}


def test_live_answers_from_templates_verify_for_every_certificate(env: Env) -> None:
    """Nonce answers after the first of a kind are re-issued from a template of pyca's
    encoding (ocsp/template.py): openssl verifies each, for other certificates too, with its
    own fresh nonce echoed and the right status."""
    before = _encoded(env)
    cases = [("signature-g1", "sign", 1), ("authentication-g1", "auth", 1),
             ("signature-g2", "sign", 2), ("authentication-g2", "auth", 2)]
    for index, (name, kind, generation) in enumerate(cases):
        for _ in range(2):  # the first may be pyca's, the second is a template's
            text = assert_verified(query(env, "-issuer", env.ca(kind, generation), "-cert",
                                         str(env.certs[name][0])))
            assert status_line(env, name, "good") in text
            assert "nonce" not in text.lower()  # no "WARNING: no nonce", no nonce mismatch
        serial = f"0x{index + 1}cdef0123"
        text = assert_verified(query(env, "-issuer", env.ca(kind, generation), "-serial", serial))
        assert f"{serial}: unknown" in text
    after = _encoded(env)
    assert after["template"] - before.get("template", 0) >= len(cases)


def test_a_generation_created_while_serving_is_answered_at_once(env: Env) -> None:
    """`jpki ca rotate` in another process: the daemon loads the new issuer and its signer."""
    rotated = jpki(env.data_dir, "ca", "rotate", "--kind", "authentication")
    assert rotated.code == 0, rotated.err
    assert rotated.json["created"][0]["generation"] == 3
    pair = _issue(env.data_dir, env.tmp, "ocsp-g3")
    ca = _fetch(f"{env.daemon.url}/ca/auth/g3.pem", env.tmp / "auth-g3.pem")
    trust = env.tmp / "trust3.pem"
    trust.write_bytes(env.trust.read_bytes() + ca.read_bytes())
    cert = pair["authentication"]["certificate"]
    result = openssl("ocsp", "-url", env.url, "-CAfile", str(trust), "-header",
                     f"Authorization=Bearer {env.token}", "-issuer", str(ca), "-cert", cert)
    text = assert_verified(result)
    assert f"{cert}: good" in text


def test_new_certificates_name_the_responder_in_aia(env: Env) -> None:
    """Design over the real cards (which carry no AIA): verifiers find /ocsp by themselves."""
    text = openssl("x509", "-in", str(env.certs["signature-g2"][0]), "-noout", "-ext",
                   "authorityInfoAccess").stdout
    assert "OCSP - URI:" in text and text.strip().endswith("/ocsp")
