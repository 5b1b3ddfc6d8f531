"""Rotating the signature CA and the OCSP responder keys under a running daemon, for both key
backends (encrypted files; PKCS#11 on a SoftHSM2 token set up here).

Everything runs as the operator would: `jpki` subprocesses against a `jpki serve` subprocess,
`openssl verify`, `openssl ocsp` and `openssl crl` as the verifiers, while a bounded load of
OCSP queries runs throughout and must see no failure.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from tests.helpers import (
    REPO,
    SOFTHSM_MODULE,
    Daemon,
    config_text,
    free_port,
    issue_args,
    key_backend_replacements,
    openssl,
    registry_rows,
    softhsm_tokens,
)

pytestmark = pytest.mark.engines

LINT = Path(sys.executable).parent / "lint_pkix_cert"
PIN = "4711"
OCSP_PIN = "8152"
MAX_QUERIES = 5000  # the background load is bounded whatever happens


def _config(tmp: Path, backend: str) -> Path:
    """The test configuration with absolute paths, and the chosen key backend."""
    text = config_text({
        **key_backend_replacements(backend, "jpki-test", "jpki-test-ocsp"),
        # CRLs with entries not encoded yet are signed by worker processes: with the token too
        "parallel_threshold = 50000": "parallel_threshold = 1",
    })
    path = tmp / f"{backend}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _softhsm(tmp: Path) -> dict[str, str]:
    """The CA keys' token and the responder keys' own token (never the same one)."""
    env = softhsm_tokens(tmp, {"jpki-test": PIN, "jpki-test-ocsp": OCSP_PIN})
    return {**env, "JPKI_PKCS11_PIN": PIN, "JPKI_OCSP_PKCS11_PIN": OCSP_PIN}


@dataclass
class Site:
    backend: str
    tmp: Path
    data_dir: Path
    config: Path
    env: dict[str, str]
    daemon: Daemon | None = None
    token: str = ""
    outputs: dict[str, dict] = field(default_factory=dict)

    def jpki(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "jpki.cli", *args, "--config", str(self.config),
             "--data-dir", str(self.data_dir)],
            capture_output=True, text=True, env={**os.environ, **self.env}, cwd=REPO,
            timeout=300)
        if check:
            assert result.returncode == 0, (args, result.stderr)
        return result

    def json(self, *args: str) -> dict:
        lines = [line for line in self.jpki(*args).stdout.splitlines() if line.strip()]
        return json.loads(lines[-1])

    @property
    def url(self) -> str:
        assert self.daemon is not None
        return self.daemon.url

    def fetch(self, path: str, name: str) -> Path:
        target = self.tmp / name
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            target.write_bytes(response.read())
        return target


class Load:
    """OCSP queries in a loop on a thread until stopped (at most MAX_QUERIES)."""

    def __init__(self, site: Site, cert: Path, issuer: Path) -> None:
        leaf = x509.load_pem_x509_certificate(cert.read_bytes())
        ca = x509.load_pem_x509_certificate(issuer.read_bytes())
        self.body = (ocsp.OCSPRequestBuilder().add_certificate(leaf, ca, hashes.SHA1())
                     .build().public_bytes(Encoding.DER))
        self.site = site
        self.stop = threading.Event()
        self.done = 0
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set() and self.done < MAX_QUERIES:
            request = urllib.request.Request(
                self.site.url + "/ocsp", data=self.body, method="POST",
                headers={"Content-Type": "application/ocsp-request",
                         "Authorization": f"Bearer {self.site.token}"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    answer = ocsp.load_der_ocsp_response(response.read())
                if answer.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
                    self.failures.append(answer.response_status.name)
                elif answer.certificate_status is not ocsp.OCSPCertStatus.GOOD:
                    self.failures.append(answer.certificate_status.name)
            except Exception as exc:  # any transport error is a failed query
                self.failures.append(repr(exc))
            self.done += 1

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.fixture(scope="module", params=["file", "pkcs11"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Site]:
    backend: str = request.param
    tmp = tmp_path_factory.mktemp(f"rotation-{backend}")
    env = _softhsm(tmp) if backend == "pkcs11" else {}
    site = Site(backend, tmp, tmp / "data", _config(tmp, backend), env)
    site.jpki("init")
    site.outputs["old"] = site.json(*issue_args("rot-old", tmp / "old"))
    site.outputs["revoked"] = site.json(*issue_args("rot-revoked", tmp / "revoked"))
    site.jpki("revoke", site.outputs["revoked"]["signature"]["serial"], "--reason",
              "keyCompromise")
    site.token = site.json("verifier", "add", "bank")["token"]
    # The serving daemon is never given the CA token's PIN (it opens responder keys only).
    serve_env = {k: v for k, v in env.items() if k != "JPKI_PKCS11_PIN"}
    site.daemon = Daemon(site.data_dir, free_port(), extra_env=serve_env,
                         config=site.config).start()
    old_root = site.fetch("/ca/sign/g1.pem", "sign-g1.pem")
    old_cert = Path(site.outputs["old"]["signature"]["certificate"])
    try:
        with Load(site, old_cert, old_root) as load:
            site.outputs["rotate"] = site.json("ca", "rotate", "--kind", "signature",
                                               "--operator", "alice", "--reason", "test rotation")
            site.outputs["new"] = site.json(*issue_args("rot-new", tmp / "new"))
            site.outputs["ocsp"] = site.json("ocsp", "rotate", "--kind", "signature",
                                             "--operator", "bob")
            site.outputs["after"] = site.json(*issue_args("rot-after", tmp / "after"))
        site.outputs["load"] = {"done": load.done, "failures": load.failures}
        yield site
    finally:
        site.daemon.stop()


def _verify(*args: str) -> str:
    result = openssl("verify", *args)
    return result.stdout + result.stderr


def _links(site: Site) -> dict[str, Path]:
    listing = json.loads(urllib.request.urlopen(site.url + "/ca/", timeout=10).read())
    paths = {}
    for link in listing["links"]:
        assert link["kind"] == "signature"
        paths[link["direction"]] = site.fetch(urllib.parse.urlsplit(link["pem"]).path,
                                              f"{link['direction']}.pem")
    return paths


def test_no_query_failed_during_the_rotations(site: Site) -> None:
    load = site.outputs["load"]
    assert load["done"] > 0
    assert load["failures"] == []


def test_new_certificates_come_from_the_new_generation(site: Site) -> None:
    created = site.outputs["rotate"]["created"]
    assert [(c["kind"], c["generation"], c["previous"]) for c in created] == [
        ("signature", 2, "sign-g1")]
    new_root = x509.load_pem_x509_certificate(site.fetch("/ca/sign/g2.pem", "g2.pem").read_bytes())
    old_root = x509.load_pem_x509_certificate(site.fetch("/ca/sign/g1.pem", "g1.pem").read_bytes())
    assert new_root.subject == old_root.subject and new_root.serial_number != old_root.serial_number
    assert new_root.public_key() != old_root.public_key()
    years = new_root.not_valid_after_utc.year - new_root.not_valid_before_utc.year
    assert years == 10
    new_ski = new_root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    for name in ("new", "after"):
        leaf = x509.load_pem_x509_certificate(
            Path(site.outputs[name]["signature"]["certificate"]).read_bytes())
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == new_ski
        assert "OK" in _verify("-CAfile", str(site.tmp / "g2.pem"),
                               site.outputs[name]["signature"]["certificate"])
    # The authentication CA was not rotated: its certificates still come from generation 1.
    auth_leaf = x509.load_pem_x509_certificate(
        Path(site.outputs["new"]["authentication"]["certificate"]).read_bytes())
    auth_root = x509.load_pem_x509_certificate(
        site.fetch("/ca/auth/g1.pem", "auth-g1.pem").read_bytes())
    assert auth_leaf.issuer == auth_root.subject


def test_old_certificate_verifies_with_old_root_and_through_the_link(site: Site) -> None:
    old_cert = site.outputs["old"]["signature"]["certificate"]
    old_root, new_root = site.fetch("/ca/sign/g1.pem", "g1.pem"), site.fetch("/ca/sign/g2.pem",
                                                                             "g2.pem")
    links = _links(site)
    assert set(links) == {"new_with_old", "old_with_new"}
    assert f"{old_cert}: OK" in _verify("-CAfile", str(old_root), old_cert)
    # Trusting only the new root, the OldWithNew link bridges to the old certificate ...
    text = _verify("-CAfile", str(new_root), "-untrusted", str(links["old_with_new"]), old_cert)
    assert f"{old_cert}: OK" in text, text
    assert f"{old_cert}: OK" not in _verify("-CAfile", str(new_root), old_cert)
    # ... and trusting only the old root, NewWithOld bridges to a new certificate.
    new_cert = site.outputs["new"]["signature"]["certificate"]
    text = _verify("-CAfile", str(old_root), "-untrusted", str(links["new_with_old"]), new_cert)
    assert f"{new_cert}: OK" in text, text


def _ocsp(site: Site, issuer: Path, cert: str, trust: Path, *extra: str) -> str:
    result = openssl("ocsp", "-url", site.url + "/ocsp", "-issuer", str(issuer), "-cert", cert,
                     "-CAfile", str(trust), "-header", f"Authorization=Bearer {site.token}",
                     *extra)
    return result.stdout + result.stderr


def test_openssl_ocsp_answers_for_both_generations(site: Site) -> None:
    old_root, new_root = site.fetch("/ca/sign/g1.pem", "g1.pem"), site.fetch("/ca/sign/g2.pem",
                                                                             "g2.pem")
    trust = site.tmp / "trust.pem"
    trust.write_bytes(old_root.read_bytes() + new_root.read_bytes())
    for name, root in (("old", old_root), ("new", new_root), ("after", new_root)):
        cert = site.outputs[name]["signature"]["certificate"]
        for extra in ((), ("-no_nonce",)):
            text = _ocsp(site, root, cert, trust, *extra)
            assert "Response verify OK" in text, text
            assert f"{cert}: good" in text, text


def _responder_serial(site: Site, leaf: x509.Certificate, ca: x509.Certificate,
                      nonce: bool) -> int:
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, ca, hashes.SHA1())
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(os.urandom(16)), critical=False)
    request = urllib.request.Request(
        site.url + "/ocsp", data=builder.build().public_bytes(Encoding.DER),
        headers={"Content-Type": "application/ocsp-request",
                 "Authorization": f"Bearer {site.token}"})
    answer = ocsp.load_der_ocsp_response(urllib.request.urlopen(request, timeout=10).read())
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    return answer.certificates[0].serial_number


def test_answers_switch_to_the_new_responder_key(site: Site) -> None:
    new_serials = {int(item["serial"], 16) for item in site.outputs["ocsp"]["issued"]}
    assert len(new_serials) == 2  # one per live signature generation
    for name, root in (("old", "/ca/sign/g1.pem"), ("new", "/ca/sign/g2.pem")):
        leaf = x509.load_pem_x509_certificate(
            Path(site.outputs[name]["signature"]["certificate"]).read_bytes())
        ca = x509.load_pem_x509_certificate(site.fetch(root, "root.pem").read_bytes())
        # A live (nonce) answer is signed by the new key at once.
        assert _responder_serial(site, leaf, ca, nonce=True) in new_serials, name
        # A cached answer signed by the old key is replaced in the background; it stays valid
        # (and served) until then. Bounded wait, no timing asserted.
        for _attempt in range(100):
            if _responder_serial(site, leaf, ca, nonce=False) in new_serials:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the cached answer for the {name} certificate was never re-signed")


def test_each_generation_crl_verifies_against_its_own_key(site: Site) -> None:
    roots = {g: site.fetch(f"/ca/sign/g{g}.pem", f"g{g}.pem") for g in (1, 2)}
    for generation in (1, 2):
        crl = site.fetch(f"/crl/sign/g{generation}/full.crl", f"g{generation}.crl")
        result = openssl("crl", "-inform", "DER", "-in", str(crl), "-noout",
                         "-CAfile", str(roots[generation]))
        assert "verify OK" in result.stdout + result.stderr, result.stderr
        listed = x509.load_der_x509_crl(crl.read_bytes())
        revoked = int(site.outputs["revoked"]["signature"]["serial"], 16)
        assert (listed.get_revoked_certificate_by_serial_number(revoked) is not None) == (
            generation == 1)
        other = roots[3 - generation]
        result = openssl("crl", "-inform", "DER", "-in", str(crl), "-noout",
                         "-CAfile", str(other))
        assert "verify OK" not in result.stdout + result.stderr


def test_pkilint_finds_no_error_in_new_ca_and_links(site: Site) -> None:
    paths = [site.fetch("/ca/sign/g2.pem", "g2.pem"), *_links(site).values()]
    for path in paths:
        result = subprocess.run([str(LINT), "lint", "-s", "ERROR", str(path)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (path, result.stdout, result.stderr)


def test_key_operations_are_audited_with_operator_and_fingerprints(site: Site) -> None:
    assert site.json("audit", "verify")["ok"] is True
    rows = registry_rows(site.data_dir, "SELECT actor, action, detail FROM audit_log"
                         " WHERE action IN ('ca.generation.create', 'ca.link.issue',"
                         " 'ocsp.signer.issue') ORDER BY id")
    status = site.json("ca", "status")
    prints = {(g["kind"], g["generation"]): g["fingerprint"] for g in status["generations"]}
    created = [json.loads(d) for actor, action, d in rows
               if action == "ca.generation.create" and actor == "alice"]
    assert len(created) == 1
    assert created[0]["reason"] == "test rotation"
    assert created[0]["old_key"] == prints[("signature", 1)]
    assert created[0]["new_key"] == prints[("signature", 2)]
    links = [(actor, json.loads(d)) for actor, action, d in rows if action == "ca.link.issue"]
    assert sorted(d["direction"] for _a, d in links) == ["new_with_old", "old_with_new"]
    assert {a for a, _d in links} == {"alice"}
    rotated = [json.loads(d) for actor, action, d in rows
               if action == "ocsp.signer.issue" and actor == "bob"]
    assert len(rotated) == 2
    assert all(d["old_key"] and d["new_key"] and d["old_key"] != d["new_key"] for d in rotated)


def test_ca_status_shows_every_generation(site: Site) -> None:
    status = site.json("ca", "status")
    by_label = {(g["kind"], g["generation"]): g for g in status["generations"]}
    assert set(by_label) == {("signature", 1), ("signature", 2), ("authentication", 1)}
    old, new = by_label[("signature", 1)], by_label[("signature", 2)]
    assert (old["current"], new["current"]) == (False, True)
    assert old["live_certificates"] == 1 and new["live_certificates"] == 2
    assert old["responder_not_after"] and new["responder_not_after"]
    assert len(status["links"]) == 2
    # Retiring the old generation is refused while it covers an unexpired certificate.
    refused = site.jpki("ca", "retire", "--kind", "signature", "--generation", "1", check=False)
    assert refused.returncode == 4
    assert "2 unexpired certificate" in refused.stderr


def test_private_keys_stay_in_their_backend(site: Site) -> None:
    if site.backend == "file":
        keys = sorted((site.data_dir / "ca").glob("*.key.pem"))
        assert len(keys) == 3 + 1  # 3 CA keys and the audit key (ca/auditkey.py)
        for key in keys:
            assert key.stat().st_mode & 0o077 == 0
            assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
        return
    assert not list((site.data_dir / "ca").glob("*.key.pem"))
    assert not list((site.data_dir / "ocsp").glob("*.key.pem"))
    probe = (
        "import pkcs11, sys\n"
        "from pkcs11 import Attribute, ObjectClass\n"
        f"lib = pkcs11.lib({SOFTHSM_MODULE!r})\n"
        "with lib.get_token(token_label=sys.argv[1]).open(user_pin=sys.argv[2]) as s:\n"
        "    keys = list(s.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}))\n"
        "    print(len(keys), all(k[Attribute.SENSITIVE] and not k[Attribute.EXTRACTABLE]"
        " for k in keys))\n"
    )
    # 3 CA keys and the audit key on the CA token; the responders' 5 (3 at rotation time + 2
    # rotated) on their own
    for token, pin, expected in (("jpki-test", PIN, 3 + 1), ("jpki-test-ocsp", OCSP_PIN, 5)):
        result = subprocess.run([sys.executable, "-c", probe, token, pin], capture_output=True,
                                text=True, env={**os.environ, **site.env}, timeout=60)
        assert result.returncode == 0, result.stderr
        count, protected = result.stdout.split()
        assert int(count) == expected
        assert protected == "True"


def test_sighup_reloads_without_dropping_connections(site: Site) -> None:
    assert site.daemon is not None and site.daemon.process is not None
    leaf = x509.load_pem_x509_certificate(
        Path(site.outputs["new"]["signature"]["certificate"]).read_bytes())
    ca = x509.load_pem_x509_certificate(site.fetch("/ca/sign/g2.pem", "g2.pem").read_bytes())
    body = (ocsp.OCSPRequestBuilder().add_certificate(leaf, ca, hashes.SHA1()).build()
            .public_bytes(Encoding.DER))
    headers = {"Content-Type": "application/ocsp-request",
               "Authorization": f"Bearer {site.token}"}
    connection = http.client.HTTPConnection("127.0.0.1", site.daemon.port, timeout=10)
    try:
        for signal_first in (False, True):
            if signal_first:
                site.daemon.process.send_signal(signal.SIGHUP)
            connection.request("POST", "/ocsp", body=body, headers=headers)
            response = connection.getresponse()
            answer = ocsp.load_der_ocsp_response(response.read())
            assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
        assert site.daemon.process.poll() is None
    finally:
        connection.close()
    log = (site.data_dir / f"daemon-{site.daemon.port}.log").read_text()
    assert "SIGHUP: reloading" in log


RETIRE_LATER = """
import json, sys
from datetime import timedelta
from pathlib import Path
from ca import authority, rotation
from ca.kinds import CertKind
from jpki.context import Context
from registry.clock import FrozenClock, from_epoch
from registry.errors import JPKIError

context = Context.load(Path(sys.argv[1]), Path(sys.argv[2]))
old = authority.generations(context.store, CertKind.SIGNATURE)[0]
last = rotation.coverage(context.store, old.id, context.clock()).last_expiry
later = FrozenClock(from_epoch(last) + timedelta(seconds=1))  # after its last certificate
retired = rotation.retire(context.store, context.keys, context.responder_keys, later,
                          CertKind.SIGNATURE, 1, operator="erin", reason="all expired")
try:
    context.keys.load(old.key_file)
    refused = False
except JPKIError:
    refused = True
print(json.dumps({"key_file": retired.key_file, "load_refused": refused}))
"""


def test_retiring_the_old_generation_archives_its_key_in_the_backend(site: Site) -> None:
    """Last test of the module: the old generation goes away (time moved past its leaves)."""
    result = subprocess.run([sys.executable, "-c", RETIRE_LATER, str(site.config),
                             str(site.data_dir)], capture_output=True, text=True,
                            env={**os.environ, **site.env}, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome["load_refused"] is True
    archived = "pkcs11:archived/ca/" if site.backend == "pkcs11" else "archive/"
    assert outcome["key_file"].startswith(archived)
    listing = json.loads(urllib.request.urlopen(site.url + "/ca/", timeout=10).read())
    retired = {(c["kind"], c["generation"]): c["retired"] for c in listing["certificates"]}
    assert retired[("signature", 1)] is True and retired[("signature", 2)] is False
    # The running daemon stops answering for the retired generation ...
    old_root = site.fetch("/ca/sign/g1.pem", "g1.pem")
    text = _ocsp(site, old_root, site.outputs["old"]["signature"]["certificate"], old_root)
    assert "unauthorized" in text, text
    # ... and keeps answering for the current one.
    new_root = site.fetch("/ca/sign/g2.pem", "g2.pem")
    cert = site.outputs["new"]["signature"]["certificate"]
    text = _ocsp(site, new_root, cert, new_root)
    assert "Response verify OK" in text and f"{cert}: good" in text, text
