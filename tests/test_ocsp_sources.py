"""The layers of the responder, each driven alone in-process with a frozen clock (no mocks).

The clock is built from the data directory's own times (`data_clock`), never read from the
wall clock: what a test asserts about an answer's times is relative to that clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import ocsp
from cryptography import x509

from ca import authority, responders
from ca.kinds import CertKind
from httpapi.arrivals import Arrivals
from jpki.context import Context
from jpki.settings import load_settings
from jpki.wiring import responder_policy
from ocsp.errors import TryLater, Unauthorized
from ocsp.presign import make_cert_id
from ocsp.responder import Responder
from ocsp.watch import RegistryWatch
from registry import certificates
from registry.clock import FrozenClock
from registry.reasons import Reason
from registry.store import Store
from registry.verifiers import Verifier
from tests.helpers import CONFIG
from tests.ocsp_support import build, data_clock

pytestmark = pytest.mark.engines


class RecordingMeter:
    def __init__(self) -> None:
        self.calls: list[tuple[str | None, str, str]] = []

    async def record(self, verifier: Verifier | None, answered: Sequence[tuple[str, str]],
                     at: datetime, *, status_confirmation: bool = False) -> None:
        for kind, serial in answered:
            self.calls.append((verifier.name if verifier else None, kind, serial))


def request_for(responder: Responder, kind: CertKind, serial: str, algorithm: str = "sha1"
                ) -> bytes:
    issuer = next(i for i in responder.issuers.issuers if i.ca.kind is kind)
    cert_id = make_cert_id(issuer, algorithm, int(serial, 16))
    return ocsp.OCSPRequest({"tbs_request": {"request_list": [
        {"req_cert": ocsp.CertId.load(cert_id.der)}]}}).dump()


def single(der: bytes) -> ocsp.SingleResponse:
    return ocsp.OCSPResponse.load(der).basic_ocsp_response["tbs_response_data"]["responses"][0]


async def test_in_process_revocation_drops_the_cached_answer(data_dir: Path, issued: dict,
                                                            context: Context) -> None:
    clock = data_clock(data_dir)
    meter = RecordingMeter()
    responder = build(data_dir, clock, meter=meter)
    serial = issued["signature"]["serial"]
    body = request_for(responder, CertKind.SIGNATURE, serial)
    first = await responder.answer(body, None)
    assert first.outcome == "good" and first.cached is not None
    assert (await responder.answer(body, None)).der == first.der  # served from the cache
    certificates.revoke(context.store, clock, serial, Reason.affiliationChanged, actor="test")
    after = await responder.answer(body, None)
    assert after.outcome == "revoked"
    status = single(after.der)["cert_status"]
    assert status.name == "revoked"
    assert status.chosen["revocation_reason"].native == "affiliation_changed"
    assert meter.calls == [(None, "signature", serial)] * 3
    await responder.close()


async def test_stale_answers_are_resigned_and_next_update_respects_the_signer(
        data_dir: Path, issued: dict) -> None:
    clock = data_clock(data_dir)
    responder = build(data_dir, clock)
    body = request_for(responder, CertKind.AUTHENTICATION, issued["authentication"]["serial"],
                       "sha256")
    first = await responder.answer(body, None)
    clock.advance(timedelta(hours=13))  # past refresh_fraction of 24 h: stale, still valid
    stale = await responder.answer(body, None)
    assert stale.der == first.der
    await asyncio.sleep(0)
    for _ in range(100):
        entry = responder.cache.get(first.cached.cert_id.der)  # type: ignore[union-attr]
        if entry is not None and entry.der != first.der:
            break
        await asyncio.sleep(0.01)
    assert entry is not None and entry.this_update > first.cached.this_update  # type: ignore[union-attr]
    signer = responder.issuers.issuers[0].signer
    assert signer is not None
    clock.now = signer.not_after - timedelta(hours=1)
    responder.cache.clear()
    late = await responder.answer(body, None)
    assert single(late.der)["next_update"].native == signer.not_after
    await responder.close()


def test_responder_certificates_are_renewed_before_expiry(context: Context) -> None:
    keys, policy = context.responder_keys, responder_policy(context.settings)
    start = data_clock(context.settings.data_dir)
    assert responders.ensure(context.store, context.keys, keys, start, policy) == []
    later = FrozenClock(start() + timedelta(days=policy.validity_days
                                                     - policy.renew_before_days + 1))
    renewed = responders.ensure(context.store, context.keys, keys, later, policy)
    assert len(renewed) == len(authority.generations(context.store))
    for record in renewed:
        cert = record.certificate
        assert cert.extensions.get_extension_for_class(x509.OCSPNoCheck)
        assert cert.not_valid_after_utc - later() <= timedelta(days=policy.validity_days)


async def test_anonymous_setting_and_bounded_live_signing(data_dir: Path, issued: dict) -> None:
    clock = data_clock(data_dir)
    closed = build(data_dir, clock, anonymous=False)
    body = request_for(closed, CertKind.SIGNATURE, issued["signature"]["serial"])
    with pytest.raises(Unauthorized):
        await closed.answer(body, None)
    await closed.close()
    bounded = build(data_dir, clock, queue_limit=1)
    bodies = [request_for(bounded, CertKind.SIGNATURE, issued["signature"]["serial"]),
              request_for(bounded, CertKind.AUTHENTICATION, issued["authentication"]["serial"])]
    results = await asyncio.gather(*(bounded.answer(b, None) for b in bodies),
                                   return_exceptions=True)
    assert sum(isinstance(r, TryLater) for r in results) == 1
    await bounded.close()


def test_fast_parser_agrees_with_the_full_parser(env_requests: list[bytes]) -> None:
    # the two paths inside parse_request, compared directly: private on purpose
    from ocsp.request import _parse_fast, _parse_full

    allowed = frozenset({"sha1", "sha256"})
    for der in env_requests:
        fast = _parse_fast(der, allowed)
        assert fast is not None
        assert fast == _parse_full(der, allowed)


@pytest.fixture
def env_requests(tmp_path: Path, issued: dict, data_dir: Path) -> list[bytes]:
    from tests.helpers import openssl

    ca = tmp_path / "ca.pem"
    context = Context(load_settings(CONFIG, data_dir))
    from cryptography.hazmat.primitives.serialization import Encoding

    ca.write_bytes(authority.current(context.store, CertKind.SIGNATURE).certificate
                   .public_bytes(Encoding.PEM))
    context.store.close()
    result = []
    for extra in ([], ["-no_nonce"], ["-sha256"], ["-sha256", "-no_nonce"]):
        out = tmp_path / "r.der"
        openssl("ocsp", "-issuer", str(ca), *extra, "-cert", issued["signature"]["certificate"],
                "-reqout", str(out))
        result.append(out.read_bytes())
    return result


def nonce_request(responder: Responder, kind: CertKind, serial: str, nonce: bytes) -> bytes:
    issuer = next(i for i in responder.issuers.issuers if i.ca.kind is kind)
    cert_id = make_cert_id(issuer, "sha1", int(serial, 16))
    return ocsp.OCSPRequest({"tbs_request": {
        "request_list": [{"req_cert": ocsp.CertId.load(cert_id.der)}],
        "request_extensions": [{"extn_id": "nonce", "critical": False,
                                "extn_value": nonce}],  # asn1crypto wraps it (RFC 9654)
    }}).dump()


async def test_live_answers_read_a_memoized_status_that_a_revocation_elsewhere_drops(
        data_dir: Path, issued: dict) -> None:
    """The status memo spares the signing threads a database read, and is never stale: a
    revocation committed on another connection (another process, for the responder) is in
    the very next nonce answer, once a byte of that request has arrived."""
    clock = data_clock(data_dir)
    arrivals = Arrivals()
    arrivals.counting = True  # as httpapi/deadline.listen() sets it
    responder = build(data_dir, clock, arrivals=arrivals)
    serial = issued["signature"]["serial"]
    ca_id = next(i.ca.id for i in responder.issuers.issuers if i.ca.kind is CertKind.SIGNATURE)
    arrivals.count += 1
    first = await responder.answer(nonce_request(responder, CertKind.SIGNATURE, serial, b"1"),
                                   None)
    assert first.outcome == "good" and first.cached is None  # live: nothing cached
    assert responder.cache.status(serial, ca_id) is not None  # memoized for the next one
    other = Store.open(data_dir)  # another connection, as `jpki revoke` would be
    try:
        certificates.revoke(other, clock, serial, Reason.keyCompromise, actor="test")
    finally:
        other.close()
    arrivals.count += 1  # the next request's bytes
    after = await responder.answer(nonce_request(responder, CertKind.SIGNATURE, serial, b"22"),
                                   None)
    assert after.outcome == "revoked"
    status = single(after.der)["cert_status"]
    assert status.chosen["revocation_reason"].native == "key_compromise"
    basic = ocsp.OCSPResponse.load(after.der).basic_ocsp_response
    extensions = basic["tbs_response_data"]["response_extensions"]
    assert [e["extn_value"].parsed.native for e in extensions] == [b"22"]  # echoed, RFC 9654
    await responder.close()


def test_a_freshness_proof_covers_exactly_the_requests_that_arrived_before_it(
        data_dir: Path, issued: dict) -> None:
    store, other = Store.open(data_dir), Store.open(data_dir)
    arrivals = Arrivals()
    arrivals.counting = True  # as httpapi/deadline.listen() sets it
    watch = RegistryWatch(store.conn, arrivals)
    try:
        arrivals.count += 1
        assert watch.poll() is None  # a first proof: nothing changed
        certificates.revoke(other, data_clock(data_dir), issued["signature"]["serial"],
                            Reason.superseded, actor="test")
        # No byte arrived since the proof: whatever is being handled arrived before the
        # commit, and the proof still holds for it.
        assert watch.poll() is None
        arrivals.count += 1  # a request that may have been sent after the commit
        changes = watch.poll()
        assert changes is not None and changes.serials == (issued["signature"]["serial"],)
        arrivals.count += 1
        assert watch.poll() is None  # proven again, nothing new
        # Arrivals nobody counts (an app served without httpapi/deadline.py): every poll
        # proves afresh, although the count never moves.
        uncounted = RegistryWatch(store.conn, Arrivals())
        assert uncounted.poll() is None
        certificates.revoke(other, data_clock(data_dir),
                            issued["authentication"]["serial"], Reason.superseded, actor="test")
        assert uncounted.poll() is not None
    finally:
        store.close()
        other.close()


@pytest.mark.engines("postgresql")
async def test_answers_are_served_while_presigning_reads_the_registry(data_dir: Path,
                                                                      issued: dict) -> None:
    """At national scale pre-signing's read of the newest certificates sorts millions of rows.
    Here another session's lock on the table holds that read for as long as the test wants:
    it waits on its thread, and the loop answers meanwhile (PostgreSQL only: SQLite's WAL
    readers cannot be held by another connection)."""
    responder = build(data_dir, data_clock(data_dir))
    refresher = responder.refresher
    body = request_for(responder, CertKind.SIGNATURE, issued["signature"]["serial"])
    assert (await responder.answer(body, None)).cached is not None  # cached before the lock
    blocker = Store.open(data_dir)
    raw = blocker.conn.raw
    try:
        with raw.transaction():
            # Should the read block the loop, the server ends this session after 30 s idle
            # (the lock goes with it) and the test fails instead of waiting forever.
            raw.execute("SET LOCAL idle_in_transaction_session_timeout = '30s'")
            raw.execute("LOCK TABLE certificates IN ACCESS EXCLUSIVE MODE")
            presigning = asyncio.ensure_future(refresher.presign(1000, ("sha1", "sha256")))
            for _ in range(3000):  # until pre-signing's read waits for the lock
                await asyncio.sleep(0.01)
                row = raw.execute("SELECT COUNT(*) FROM pg_locks WHERE NOT granted"
                                  " AND relation = 'certificates'::regclass").fetchone()
                if row is not None and row[0]:
                    break
            else:
                raise AssertionError("pre-signing never read the certificates")
            answer = await responder.answer(body, None)
            assert answer.outcome == "good"
            assert refresher.presigning and not presigning.done()  # still reading
        assert await presigning >= 1  # the lock released: the read ends, answers are signed
        assert not refresher.presigning
    finally:
        blocker.close()
        await responder.close()
