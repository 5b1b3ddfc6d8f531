"""GET /crl/... against a real `jpki serve`: headers, 304, catch-up at start, metrics, CLI."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from cryptography import x509

from ca import authority
from ca.kinds import CertKind
from jpki.commands.crl import ProgressBar
from registry.store import Store
from tests.helpers import Daemon, Signer, jpki

pytestmark = pytest.mark.engines


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_crl_served_with_cache_headers_and_304(data_dir: Path) -> None:
    result = jpki(data_dir, "crl", "generate")
    assert result.code == 0, result.err
    server = Daemon(data_dir).start()
    try:
        status, headers, body = get(server.url + "/crl/sign/g1/13104.crl")
        assert status == 200
        assert body == (data_dir / "crl/sign/g1/13104.crl").read_bytes()
        assert headers["Content-Type"] == "application/pkix-crl"
        crl = x509.load_der_x509_crl(body)
        assert parsedate_to_datetime(headers["Last-Modified"]) == crl.last_update_utc
        max_age = int(headers["Cache-Control"].split("max-age=")[1].split(",")[0])
        assert 0 < max_age <= (crl.next_update_utc - crl.last_update_utc).total_seconds()
        status, headers_304, body = get(server.url + "/crl/sign/g1/13104.crl",
                                        {"If-None-Match": headers["ETag"]})
        assert status == 304 and body == b""
        assert headers_304["ETag"] == headers["ETag"]
        status, _, _ = get(server.url + "/crl/sign/g1/13104.crl", {"If-None-Match": '"other"'})
        assert status == 200
        status, _, body = get(server.url + "/crl/auth/g1/full.crl")
        assert status == 200 and x509.load_der_x509_crl(body) is not None
        assert get(server.url + "/crl/sign/g9/full.crl")[0] == 404
        assert get(server.url + "/crl/sign/g1/99999.crl")[0] == 404
        # A new publication is picked up at once (atomic rename, new ETag).
        assert jpki(data_dir, "crl", "generate", "--partition", "13104").code == 0
        status, fresh, _ = get(server.url + "/crl/sign/g1/13104.crl",
                               {"If-None-Match": headers["ETag"]})
        assert status == 200 and fresh["ETag"] != headers["ETag"]
        status, _, body = get(server.metrics_url)
        text = body.decode()
        assert 'jpki_crl_entries{generation="1",kind="signature",partition="13104"}' in text
        assert "jpki_crl_age_seconds" in text and "jpki_crl_size_bytes" in text
        status, _, body = get(server.url + "/ca/")
        assert {(c["kind"], c["generation"]) for c in json.loads(body)["certificates"]} == {
            ("signature", 1), ("authentication", 1)}
    finally:
        server.stop()


def test_identified_downloads_are_metered_free(data_dir: Path) -> None:
    assert jpki(data_dir, "crl", "generate").code == 0
    token = jpki(data_dir, "verifier", "add", "crl-bank").json["token"]
    server = Daemon(data_dir).start()
    try:
        url = server.url + "/crl/sign/g1/full.crl"
        assert get(url)[0] == 200  # anonymous: public, not metered
        assert get(url, {"Authorization": f"Bearer {token}"})[0] == 200
        assert get(url, {"Authorization": "Bearer vf_not-a-token"})[0] == 401
    finally:
        server.stop()
    usage = jpki(data_dir, "fees", "usage", "--verifier", "crl-bank").json["usage"]
    assert [(row["check_type"], row["checks"], row["yen"]) for row in usage] == [
        ("crl_download", 1, 0)]


def test_signer_publishes_missing_crls_at_start(daemon: Daemon) -> None:
    """A fresh data directory has no CRLs: serve says so; the signer publishes them at once."""
    assert get(daemon.url + "/crl/sign/g1/full.crl")[0] == 404
    status, _, body = get(daemon.url + "/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "degraded"
    assert "no CRL published yet" in health["problems"]["crl signature g1"]
    signer = Signer(daemon.data_dir).start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            sign_status, _, sign_body = get(daemon.url + "/crl/sign/g1/full.crl")
            auth_status, _, auth_body = get(daemon.url + "/crl/auth/g1/full.crl")
            if sign_status == 200 and auth_status == 200:
                break
            time.sleep(0.1)
        # both CRLs waited for are served, and each is a CRL of its own CA
        assert (sign_status, auth_status) == (200, 200)
        store = Store.open(daemon.data_dir)
        try:
            cas = {ca.kind: ca for ca in authority.generations(store) if ca.generation == 1}
        finally:
            store.close()
        for body, kind in ((sign_body, CertKind.SIGNATURE),
                           (auth_body, CertKind.AUTHENTICATION)):
            crl = x509.load_der_x509_crl(body)
            assert crl.issuer == cas[kind].certificate.subject
            assert crl.is_signature_valid(cas[kind].certificate.public_key())
        assert json.loads(get(daemon.url + "/healthz")[2]) == {"status": "ok"}
    finally:
        signer.stop()


def test_cli_generate_partition_and_populate(data_dir: Path) -> None:
    result = jpki(data_dir, "demo", "populate", "--residents", "300", "--revoked-fraction", "0.5")
    assert result.code == 0, result.err
    assert result.json["residents"] == 300 and result.json["certificates"] == 600
    revoked = result.json["revoked"]
    assert 200 < revoked < 400
    result = jpki(data_dir, "crl", "generate")
    assert result.code == 0, result.err
    crls = result.json["crls"]
    assert len(crls) == 2 * 70
    assert sum(c["entries"] for c in crls if c["partition"] == "full") == revoked
    assert sum(c["entries"] for c in crls if c["partition"] != "full") == revoked
    assert "CRLs" in result.err  # plain summary line when stderr is not a terminal
    result = jpki(data_dir, "crl", "generate", "--partition", "13104", "--kind", "sign")
    assert result.code == 0, result.err
    assert [(c["partition"], c["number"]) for c in result.json["crls"]] == [("13104", 2),
                                                                            ("full", 2)]
    result = jpki(data_dir, "crl", "generate", "--partition", "00000")
    assert result.code == 2 and "partition" in result.err


@pytest.mark.parametrize("fraction", ["1.5", "-0.1"])
def test_populate_refuses_bad_fraction(data_dir: Path, fraction: str) -> None:
    result = jpki(data_dir, "demo", "populate", "--residents", "1", "--revoked-fraction",
                  fraction)
    assert result.code == 2 and "revoked_fraction" in result.err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_only_on_a_terminal() -> None:
    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        bar = ProgressBar(stream, "CRLs")
        for done in range(4):
            bar(done, 3, f"sign-g1/{done}")
    assert "\r[" in terminal.getvalue() and "3/3 CRLs" in terminal.getvalue()
    assert terminal.getvalue().endswith("\n")
    assert pipe.getvalue() == ""


def test_ranges_lengths_and_expires_on_every_crl_file(data_dir: Path) -> None:
    """Range (resuming a large download), If-Range, Content-Length and Expires = nextUpdate,
    on complete CRLs and on delta CRLs alike."""
    from crl.delta import DeltaIssuer
    from jpki.context import Context
    from jpki.settings import load_settings
    from jpki.wiring import crl_generator
    from tests.helpers import CONFIG

    assert jpki(data_dir, "crl", "generate").code == 0
    ctx = Context(load_settings(CONFIG, data_dir))
    try:
        generator = crl_generator(ctx.store, ctx.keys, ctx.clock, ctx.settings)
        DeltaIssuer(generator, ctx.settings.crl.delta_interval_minutes).run()
    finally:
        ctx.store.close()
    server = Daemon(data_dir).start()
    try:
        for name in ("sign/g1/full", "sign/g1/13104", "sign/g1/full.delta",
                     "auth/g1/01100.delta"):
            url = f"{server.url}/crl/{name}.crl"
            whole = (data_dir / "crl" / f"{name}.crl").read_bytes()
            crl = x509.load_der_x509_crl(whole)
            status, headers, body = get(url)
            assert status == 200 and body == whole
            assert int(headers["Content-Length"]) == len(whole)
            assert headers["Accept-Ranges"] == "bytes"
            assert parsedate_to_datetime(headers["Expires"]) == crl.next_update_utc
            etag = headers["ETag"]
            # A download resumed after 100 bytes, then the last 10 bytes, then a closed range.
            status, part, body = get(url, {"Range": "bytes=100-"})
            assert status == 206 and body == whole[100:]
            assert part["Content-Range"] == f"bytes 100-{len(whole) - 1}/{len(whole)}"
            assert int(part["Content-Length"]) == len(whole) - 100
            assert part["ETag"] == etag and "Expires" in part
            status, _, body = get(url, {"Range": "bytes=-10"})
            assert status == 206 and body == whole[-10:]
            status, _, body = get(url, {"Range": "bytes=0-9", "If-Range": etag})
            assert status == 206 and body == whole[:10]
            # The client holds part of another CRL: the whole new one, not a splice.
            status, _, body = get(url, {"Range": "bytes=0-9", "If-Range": '"older"'})
            assert status == 200 and body == whole
            status, bad, _ = get(url, {"Range": f"bytes={len(whole)}-"})
            assert status == 416 and bad["Content-Range"] == f"bytes */{len(whole)}"
            for ignored in ("bytes=0-1,5-6", "bytes=9-3", "items=0-1", "bytes=\u00b2-", "bytes=-"):
                status, _, body = get(url, {"Range": ignored})
                assert status == 200 and body == whole, ignored
            status, _, _ = get(url, {"If-None-Match": etag, "Range": "bytes=0-9"})
            assert status == 304
            head = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(head, timeout=10) as response:
                assert response.status == 200 and response.read() == b""
                assert int(response.headers["Content-Length"]) == len(whole)
        assert get(server.url + "/crl/sign/g1/13104-7.crl")[0] == 404  # no such shard yet
        assert get(server.url + "/crl/sign/g1/13104.delta.delta.crl")[0] == 404
    finally:
        server.stop()
