"""Two security contexts: `jpki serve` works without any CA key; `jpki signer` alone signs.

Real processes on 127.0.0.1, real keys (encrypted files, or a SoftHSM2 token whose PIN the
serving process is never given), the real `openssl` client and CRL parser.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509

from ca.keyaccess import KeyAccessDenied
from jpki.context import Context
from jpki.daemon import build_app
from jpki.settings import load_settings
from registry.errors import ConfigError
from tests.helpers import (
    CONFIG,
    REPO,
    Daemon,
    Signer,
    config_text,
    free_port,
    issue_args,
    key_backend_replacements,
    openssl,
    softhsm_tokens,
)

pytestmark = pytest.mark.engines

PIN = "2468"
OCSP_PIN = "1357"
URGENT_DELAY = 3.0


def _config(tmp: Path, backend: str) -> Path:
    text = config_text({
        **key_backend_replacements(backend, "split-ca", "split-ocsp"),
        "urgent_delay_seconds = 60": f"urgent_delay_seconds = {URGENT_DELAY}",
        "poll_seconds = 1.0": "poll_seconds = 0.1",
    })
    path = tmp / f"split-{backend}.toml"
    # What init and serve run with: responder certificates that soon need renewal.
    path.write_text(text.replace("responder_validity_days = 30", "responder_validity_days = 3"),
                    encoding="utf-8")
    (tmp / f"signer-{backend}.toml").write_text(text, encoding="utf-8")
    return path


@dataclass
class Site:
    backend: str
    tmp: Path
    data_dir: Path
    config: Path
    operator_env: dict[str, str]  # what the CA operator's commands and the signer get
    serve_env: dict[str, str]  # what the serving daemon gets: no CA passphrase, no CA PIN
    outputs: dict[str, dict] = field(default_factory=dict)
    daemon: Daemon | None = None

    def jpki(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "jpki.cli", "--config", str(self.config), "--data-dir",
             str(self.data_dir), *args], capture_output=True, text=True, cwd=REPO,
            env={**os.environ, **self.operator_env}, timeout=300)
        if check:
            assert result.returncode == 0, (args, result.stderr)
        return result

    def json(self, *args: str) -> dict:
        return json.loads(self.jpki(*args).stdout.strip().splitlines()[-1])

    @property
    def url(self) -> str:
        assert self.daemon is not None
        return self.daemon.url

    def get(self, path: str, token: str | None = None) -> bytes:
        request = urllib.request.Request(self.url + path)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def ocsp(self, serial: str, kind: str = "sign") -> str:
        ca = self.tmp / f"{kind}-g1.pem"
        if not ca.exists():
            ca.write_bytes(self.get(f"/ca/{kind}/g1.pem"))
        result = openssl("ocsp", "-issuer", str(ca), "-CAfile", str(ca), "-serial",
                         "0x" + serial, "-url", self.url + "/ocsp", "-no_nonce", "-resp_text",
                         "-header", f"Authorization=Bearer {self.outputs['bank']['token']}")
        text = result.stdout + result.stderr
        assert "Response verify OK" in text, text
        return text

    def crl(self, certificate: Path) -> x509.CertificateRevocationList:
        """The partition CRL named in the certificate's cRLDistributionPoints, as served."""
        cert = x509.load_pem_x509_certificate(certificate.read_bytes())
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        uri = next(name.value for point in points for name in point.full_name or []
                   if isinstance(name, x509.UniformResourceIdentifier))
        return x509.load_der_x509_crl(self.get("/" + uri.split("/", 3)[3]))


def _ca_secrets_away(site: Site) -> Path:
    """Take every CA secret out of the data directory (file backend): keys and passphrase."""
    away = site.tmp / "ca-secrets-elsewhere"
    away.mkdir()
    shutil.move(site.data_dir / "ca", away / "ca")
    shutil.move(site.data_dir / "ca-passphrase", away / "ca-passphrase")
    return away


def _ca_secrets_back(site: Site, away: Path) -> None:
    shutil.move(away / "ca", site.data_dir / "ca")
    shutil.move(away / "ca-passphrase", site.data_dir / "ca-passphrase")


@pytest.fixture(scope="module", params=["file", "pkcs11"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Site]:
    backend: str = request.param
    tmp = tmp_path_factory.mktemp(f"split-{backend}")
    operator_env: dict[str, str] = {}
    serve_env: dict[str, str] = {}
    if backend == "pkcs11":
        tokens = softhsm_tokens(tmp, {"split-ca": PIN, "split-ocsp": OCSP_PIN})
        operator_env = {**tokens, "JPKI_PKCS11_PIN": PIN, "JPKI_OCSP_PKCS11_PIN": OCSP_PIN}
        serve_env = {**tokens, "JPKI_OCSP_PKCS11_PIN": OCSP_PIN}
    site = Site(backend, tmp, tmp / "data", _config(tmp, backend), operator_env, serve_env)
    site.jpki("init")
    site.outputs["good"] = site.json(*issue_args("split-good", tmp / "good"))
    site.outputs["gone"] = site.json(*issue_args("split-gone", tmp / "gone"))
    site.outputs["moved"] = site.json(*issue_args("split-moved", tmp / "moved"))
    site.jpki("revoke", site.outputs["gone"]["signature"]["serial"], "--reason",
              "keyCompromise")
    site.jpki("crl", "generate")  # published while the CA keys were at hand
    site.outputs["bank"] = site.json("verifier", "add", "bank")
    site.outputs["feed"] = site.json("operator", "add", "registry-feed")
    site.jpki("consent", "grant", "--resident-id", "split-good", "--verifier", "bank",
              "--service", "linkage")
    # The responder certificates `jpki init` made are due for renewal (3 days left, renewal
    # 7 days ahead): the signer, configured for 30-day certificates, must renew them.
    site.outputs["short_signers"] = {"serials": [
        generation["responder_serial"]
        for generation in site.json("ca", "status")["generations"]]}
    away = _ca_secrets_away(site) if backend == "file" else None
    site.daemon = Daemon(site.data_dir, free_port(), extra_env=serve_env,
                         config=site.config).start()
    try:
        if away is not None:
            site.outputs["away"] = {"path": str(away)}
        yield site
    finally:
        site.daemon.stop()


def _post_event(site: Site, event: dict) -> dict:
    request = urllib.request.Request(
        site.url + "/registry/events", data=json.dumps(event).encode(), method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {site.outputs['feed']['token']}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_serve_answers_without_any_ca_key(site: Site) -> None:
    if site.backend == "file":
        assert not (site.data_dir / "ca").exists()
        assert not (site.data_dir / "ca-passphrase").exists()
    assert "JPKI_CA_PASSPHRASE" not in site.daemon.env  # type: ignore[union-attr]
    assert "JPKI_PKCS11_PIN" not in site.daemon.env  # type: ignore[union-attr]
    good = site.outputs["good"]["signature"]["serial"]
    gone = site.outputs["gone"]["signature"]["serial"]
    assert ": good" in site.ocsp(good)
    assert ": revoked" in site.ocsp(gone)
    # CA distribution and the CRLs that `jpki init` published are served.
    listing = json.loads(site.get("/ca/"))["certificates"]
    assert {item["kind"] for item in listing} == {"signature", "authentication"}
    crl = site.crl(Path(site.outputs["gone"]["signature"]["certificate"]))
    assert crl.get_revoked_certificate_by_serial_number(int(gone, 16)) is not None
    # Linkage (with the resident's consent, after a validity check) and fees work.
    auth = site.outputs["good"]["authentication"]["serial"]
    body = json.loads(site.get(f"/linkage/v1/counterpart/{auth}",
                               site.outputs["bank"]["token"]))
    assert body["counterpart"]["serial"] == good
    usage = site.json("fees", "usage")
    assert "bank" in json.dumps(usage)


def _revoke_moved(site: Site) -> str:
    """The operator feed reports a key compromise (exactly once: a replay changes nothing)."""
    return str(_post_event(site, {
        "event_id": f"split-{site.backend}-1", "resident_id": "split-moved",
        "type": "key_compromise", "occurred_at": "2026-11-20T10:00:00+09:00"})["status"])


def test_events_revoke_and_the_next_answer_says_so(site: Site) -> None:
    moved = site.outputs["moved"]["signature"]["serial"]
    assert ": good" in site.ocsp(moved)
    assert _revoke_moved(site) == "applied"
    assert ": revoked" in site.ocsp(moved)


def test_healthz_degraded_not_failing_while_the_signer_is_down(site: Site) -> None:
    with urllib.request.urlopen(site.url + "/healthz", timeout=10) as response:
        assert response.status == 200
        health = json.load(response)
    assert health["status"] == "degraded"
    assert any("renewal is overdue" in problem for problem in health["problems"].values())


def test_signer_publishes_urgently_and_renews_responders(site: Site) -> None:
    """Starts the signer with the keys: the revocation made while it was down, and one made
    while it runs, reach the served partition CRL (urgent runs, not the daily one); the short-lived
    responder certificate is renewed and the running daemon answers with the new one."""
    certificate = Path(site.outputs["moved"]["signature"]["certificate"])
    assert _revoke_moved(site) in ("applied", "replayed")
    before = site.crl(certificate)
    number_before = before.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    moved = int(site.outputs["moved"]["signature"]["serial"], 16)
    assert before.get_revoked_certificate_by_serial_number(moved) is None
    if "away" in site.outputs:
        _ca_secrets_back(site, Path(site.outputs["away"]["path"]))
    signer = Signer(site.data_dir, site.tmp / f"signer-{site.backend}.toml",
                    site.operator_env).start()
    try:
        deadline = time.monotonic() + URGENT_DELAY + 20  # the catch-up run, then margin
        while time.monotonic() < deadline:
            after = site.crl(certificate)
            if after.get_revoked_certificate_by_serial_number(moved) is not None:
                break
            time.sleep(0.1)
        number = after.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        assert after.get_revoked_certificate_by_serial_number(moved) is not None
        assert number > number_before

        # A revocation while the signer runs: on the served partition CRL (the bound below is
        # generous on a loaded machine; `make bench-crl-urgent` measures the delay itself).
        auth_cert = Path(site.outputs["good"]["authentication"]["certificate"])
        auth_serial = site.outputs["good"]["authentication"]["serial"]
        started = time.monotonic()
        site.jpki("revoke", auth_serial, "--reason", "keyCompromise")
        while time.monotonic() - started < URGENT_DELAY + 30:
            served = site.crl(auth_cert)
            if served.get_revoked_certificate_by_serial_number(int(auth_serial, 16)):
                break
            time.sleep(0.05)
        assert served.get_revoked_certificate_by_serial_number(int(auth_serial, 16))

        # The short-lived responder certificates were renewed by the signer, and the running
        # daemon answers with the renewed one (no restart).
        short = set(site.outputs["short_signers"]["serials"])
        good = site.outputs["good"]["signature"]["serial"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answered_by = _responder_serial(site.ocsp(good))
            if answered_by not in short:
                break
            time.sleep(0.2)
        renewed = {generation["responder_serial"]
                   for generation in site.json("ca", "status")["generations"]}
        assert not renewed & short
        assert answered_by in renewed
        with urllib.request.urlopen(site.url + "/healthz", timeout=10) as response:
            assert json.load(response) == {"status": "ok"}
    finally:
        signer.stop()
    log = signer.log.read_text()
    assert "urgent CRL run" in log
    assert "Traceback" not in log
    # The rows the serving daemon appended (the event) are anchored by the signer's checkpoint.
    verified = site.json("audit", "verify")
    assert verified["ok"] is True and verified["last_checkpoint"]["row"] == verified["rows"]


def _responder_serial(text: str) -> str:
    """The serial of the responder certificate embedded in `openssl ocsp -resp_text` output."""
    marker = "Serial Number:"
    index = text.index(marker, text.index("Certificate:"))
    rest = text[index + len(marker):].strip().splitlines()
    first = rest[0].strip()
    if first and "(" in first:  # a small serial: "1234 (0x4d2)"
        return format(int(first.split()[0]), "x")
    return (first or rest[1].strip()).replace(":", "").lower().lstrip("0")


def test_serve_role_refuses_to_open_a_ca_key(data_dir: Path) -> None:
    serve = Context(load_settings(CONFIG, data_dir)).as_holder("serve")
    with pytest.raises(KeyAccessDenied, match="serve role cannot open CA private keys"):
        serve.keys.load("anything")
    # ...also through the app the serving daemon builds: its context is the serve one.
    app = build_app(Context(load_settings(CONFIG, data_dir)))
    context = next(v for k, v in app.items() if isinstance(v, Context))
    with pytest.raises(KeyAccessDenied):
        _ = context.keys
    assert context.responder_keys is not None  # responder keys stay available


def test_responder_token_must_not_be_the_ca_token(tmp_path: Path) -> None:
    config = tmp_path / "same-token.toml"
    config.write_text('[keys]\nbackend = "pkcs11"\nresponder_backend = "pkcs11"\n'
                      'pkcs11_token = "one"\nresponder_pkcs11_token = "one"\n')
    context = Context(load_settings(config, tmp_path / "data")).as_holder("serve")
    with pytest.raises(ConfigError, match="must not be the CA keys' token"):
        _ = context.responder_keys


@pytest.mark.parametrize("workers", [1, 2])
def test_jpki_run_starts_both_and_ctrl_c_stops_both(data_dir: Path, workers: int) -> None:
    port = free_port()
    log_path = data_dir.parent / "run.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jpki.cli", "run", "--config", str(CONFIG), "--data-dir",
             str(data_dir), "--host", "127.0.0.1", "--port", str(port), "--metrics-listen",
             f"127.0.0.1:{free_port()}", "--workers", str(workers)],
            stdout=log, stderr=log, cwd=REPO, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        up = False
        while time.monotonic() < deadline and not up:
            text = log_path.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    up = "signer running" in text
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        assert up, log_path.read_text()
        children = _children(process.pid)
        assert len(children) == 2
        serve = next(pid for pid in children if b" serve" in _cmdline(pid))
        while workers > 1 and f"with {workers} workers" not in log_path.read_text():
            time.sleep(0.1)  # the serving parent's workers, all listening
        assert len(_children(serve)) == (0 if workers == 1 else workers)
        children += _children(serve)
        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(30) == 0
        for pid in children:
            assert not _alive(pid), f"child {pid} still running"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    assert "signer stopped" in log_path.read_text()


def test_jpki_run_reports_a_child_that_dies(data_dir: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "jpki.cli", "run", "--config", str(CONFIG), "--data-dir",
         str(data_dir), "--host", "127.0.0.1", "--port", str(port), "--metrics-listen", ""],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        children: list[int] = []
        while time.monotonic() < deadline and len(children) < 2:
            children = _children(process.pid)
            time.sleep(0.1)
        assert len(children) == 2
        signer = next(pid for pid in children if b" signer" in _cmdline(pid))
        os.kill(signer, signal.SIGKILL)
        _out, err = process.communicate(timeout=30)
        assert process.returncode == 1
        assert b"signer exited with code -9; stopping the other process" in err
        assert not any(_alive(pid) for pid in children)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status
