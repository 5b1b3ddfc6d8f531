"""What `jpki serve` shows the network: TLS on the public port, /metrics only on its own
listener, and a `Server` header that names no library or version (issue 14, defects 10, 12).

A real daemon on 127.0.0.1 with a server certificate made here by real openssl (a test CA,
a leaf for 127.0.0.1 with an IP SAN); the real `openssl ocsp` client asks over https.
"""

from __future__ import annotations

import contextlib
import io
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jpki.cli import main
from tests.helpers import CONFIG, Daemon, copy_data_dir, issue_args, jpki, openssl


@dataclass
class Served:
    daemon: Daemon
    tmp: Path
    server_ca: Path
    token: str
    leaf: Path
    issuer: Path


def _server_certificate(tmp: Path) -> tuple[Path, Path, Path]:
    """A test CA and its server certificate for 127.0.0.1 (IP SAN, serverAuth)."""
    ca_key, ca_pem = tmp / "server-ca.key", tmp / "server-ca.pem"
    made = openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
                   "-out", str(ca_pem), "-subj", "/CN=test server CA", "-days", "2",
                   "-addext", "basicConstraints=critical,CA:TRUE",
                   "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    assert made.returncode == 0, made.stderr
    key, csr, pem = tmp / "server.key", tmp / "server.csr", tmp / "server.pem"
    made = openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                   "-subj", "/CN=127.0.0.1")
    assert made.returncode == 0, made.stderr
    extensions = tmp / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
                          "keyUsage=critical,digitalSignature,keyEncipherment\n")
    made = openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_key),
                   "-CAcreateserial", "-out", str(pem), "-days", "2", "-extfile", str(extensions))
    assert made.returncode == 0, made.stderr
    key.chmod(0o600)
    return ca_pem, pem, key


def _config(tmp: Path, cert: Path, key: Path) -> Path:
    config = tmp / "tls.toml"
    config.write_text(
        CONFIG.read_text()
        .replace('# tls_cert_file = "server.pem"', f'tls_cert_file = "{cert}"')
        .replace('# tls_key_file = "server.key"', f'tls_key_file = "{key}"')
        .replace('"municipalities.csv"', f'"{CONFIG.parent / "municipalities.csv"}"')
        .replace('"tariff.toml"', f'"{CONFIG.parent / "tariff.toml"}"'))
    return config


@pytest.fixture(scope="module")
def served(template_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("surfaces")
    data_dir = tmp / "data"
    copy_data_dir(template_dir, data_dir)
    issued = jpki(data_dir, *issue_args("TLS1", tmp / "out"))
    assert issued.code == 0, issued.err
    token = jpki(data_dir, "verifier", "add", "tls-bank").json["token"]
    server_ca, cert, key = _server_certificate(tmp)
    daemon = Daemon(data_dir, config=_config(tmp, cert, key), tls_ca=server_ca).start()
    try:
        issuer = tmp / "sign-g1.pem"
        with urllib.request.urlopen(daemon.url + "/ca/sign/g1.pem", context=daemon.ssl) as r:
            issuer.write_bytes(r.read())
        yield Served(daemon, tmp, server_ca, token, Path(issued.json["signature"]["certificate"]),
                     issuer)
    finally:
        daemon.stop()


def _get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_openssl_ocsp_over_https_answers_good_and_verifies(served: Served) -> None:
    trust = served.tmp / "trust.pem"  # the responder chain: the JPKI signature CA
    trust.write_bytes(served.issuer.read_bytes())
    result = openssl("ocsp", "-url", served.daemon.url + "/ocsp", "-issuer", str(served.issuer),
                     "-cert", str(served.leaf), "-CAfile", str(trust),
                     "-header", f"Authorization=Bearer {served.token}")
    text = result.stdout + result.stderr
    assert served.daemon.url.startswith("https://127.0.0.1:")
    assert "Response verify OK" in text and "Response Verify Failure" not in text, text
    assert f"{served.leaf}: good" in text, text


def test_the_server_certificate_verifies_for_127_0_0_1(served: Served) -> None:
    """`openssl ocsp` does not check the TLS peer, so check it as a verifier's client would."""
    result = openssl("s_client", "-connect", f"127.0.0.1:{served.daemon.port}",
                     "-CAfile", str(served.server_ca), "-verify_ip", "127.0.0.1",
                     "-verify_return_error", "-brief", input=b"Q\n")
    text = result.stdout + result.stderr
    assert "Verification: OK" in text, text
    assert "Protocol version: TLSv1.3" in text or "Protocol version: TLSv1.2" in text, text


def test_plain_http_on_the_tls_port_gets_no_answer(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.daemon.port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert b"HTTP/1.1 200" not in answer and b'"ok"' not in answer


def test_metrics_only_on_the_metrics_listener(served: Served) -> None:
    daemon = served.daemon
    status, _, _ = _get(daemon.url + "/metrics", daemon.ssl)
    assert status == 404
    status, headers, body = _get(daemon.metrics_url)
    assert status == 200 and headers["Server"] == "jpki"
    text = body.decode()
    assert "jpki_ocsp_requests_total" in text and "jpki_http_request_deadline_closed" in text
    # the metrics listener serves nothing else
    base = daemon.metrics_url.removesuffix("/metrics")
    assert _get(base + "/healthz")[0] == 404 and _get(base + "/ca/")[0] == 404


def test_server_header_names_no_library(served: Served) -> None:
    daemon = served.daemon
    for path in ("/healthz", "/ca/", "/no-such-route", "/ocsp/%%%not-base64"):
        status, headers, _ = _get(daemon.url + path, daemon.ssl)
        assert headers.get("Server") == "jpki", (path, status, headers)
    # a malformed request is answered by aiohttp itself, past every app signal
    assert daemon.ssl is not None
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as raw, \
            daemon.ssl.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(b"GARBAGE\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0], answer
    assert b"\r\nServer: jpki\r\n" in answer and b"aiohttp" not in answer, answer


def test_metrics_listener_can_be_turned_off(data_dir: Path) -> None:
    daemon = Daemon(data_dir)
    daemon.metrics_listen = ""  # server.metrics_listen = "": no metrics listener at all
    daemon.start()
    try:
        status, headers, _ = _get(daemon.url + "/metrics")
        assert status == 404 and headers["Server"] == "jpki"
    finally:
        daemon.stop()
    log = (data_dir / f"daemon-{daemon.port}.log").read_text()
    assert "serving on http://127.0.0.1" in log and "metrics on" not in log, log
    refused = jpki(data_dir, "serve", "--port", "1", "--metrics-listen", "9108")
    assert refused.code == 78 and "--metrics-listen" in refused.err, refused.err


def _main(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    return code, err.getvalue()


def test_tls_settings_are_checked_at_start_up(data_dir: Path, tmp_path: Path) -> None:
    half = tmp_path / "half.toml"
    half.write_text(CONFIG.read_text().replace('# tls_cert_file = "server.pem"',
                                               'tls_cert_file = "server.pem"'))
    code, err = _main("show", "00", "--config", str(half), "--data-dir", str(data_dir))
    assert code == 78 and "tls_cert_file and tls_key_file go together" in err, err
    readable = tmp_path / "readable.toml"
    _ca, cert, key = _server_certificate(tmp_path)
    key.chmod(0o644)
    readable.write_text(_config(tmp_path, cert, key).read_text())
    code, err = _main("serve", "--port", "1", "--config", str(readable),
                      "--data-dir", str(data_dir))
    assert code == 78 and "readable by group or others" in err, err
