"""The fast tier: each OCSP source driven alone, in-process, with no daemon and no subprocess.

Every layer gets a real `Query` and a tiny next source (`Answering`) that records what
reached it; the objects around it are the real ones (a real data directory's CA generations
and responder keys, real DER requests, real signatures). Time comes from a clock built on
the data's own certificates, never the wall clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import core
from asn1crypto import ocsp as asn1_ocsp
from cryptography.x509 import OCSPNonce
from cryptography.x509 import ocsp as pyca_ocsp

from ca.kinds import CertKind
from jpki.context import Context
from jpki.settings import load_settings
from ocsp.auth import VerifierDirectory
from ocsp.cache import PresignedCache
from ocsp.decode import DecodeSource
from ocsp.errors import MalformedRequest, TryLater, Unauthorized
from ocsp.filter import IssuerFilter
from ocsp.identify import IdentifySource
from ocsp.issuers import IssuerIndex, ServedGeneration
from ocsp.live import LiveSource, Signed
from ocsp.metering import MeteringSource
from ocsp.presign import make_cert_id
from ocsp.presigned import PresignedSource
from ocsp.request import CertID, cert_id_for, parse_request
from ocsp.signing import SigningPool
from ocsp.source import Query, Reply
from ocsp.status import StatusReader
from registry import verifiers
from registry.clock import FrozenClock, epoch, from_epoch
from registry.store import Store
from registry.verifiers import Verifier
from tests.helpers import CONFIG

ALGORITHMS = frozenset({"sha1", "sha256"})


class Answering:
    """The next source: records every query that reaches it and answers with `reply`."""

    def __init__(self, reply: Reply | None = None, error: Exception | None = None) -> None:
        self.queries: list[Query] = []
        self.reply = reply or Reply(b"answer", None, "good", "signature", 0,
                                    [("signature", "01")])
        self.error = error

    async def answer(self, query: Query) -> Reply:
        self.queries.append(query)
        if self.error is not None:
            raise self.error
        return self.reply


class RecordingMeter:
    def __init__(self) -> None:
        self.calls: list[tuple[str | None, tuple[tuple[str, str], ...], datetime, bool]] = []

    async def record(self, verifier: Verifier | None, answered: Sequence[tuple[str, str]],
                     at: datetime, *, status_confirmation: bool = False) -> None:
        self.calls.append((verifier.name if verifier else None, tuple(answered), at,
                           status_confirmation))


def request(*cert_ids: CertID, nonce: bytes | None = None) -> bytes:
    tbs: dict[str, object] = {"request_list": [
        {"req_cert": asn1_ocsp.CertId.load(c.der)} for c in cert_ids]}
    if nonce is not None:
        tbs["request_extensions"] = [{"extn_id": "nonce", "critical": False,
                                      "extn_value": core.OctetString(nonce)}]
    return bytes(asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump())


def query(body: bytes = b"", now: int = 0, authorization: str | None = None) -> Query:
    return Query(body, authorization, False, now)


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    opened = Store.open(data_dir)
    yield opened
    opened.close()


@pytest.fixture
def issuers(data_dir: Path, store: Store) -> IssuerIndex:
    context = Context(load_settings(CONFIG, data_dir))
    index = IssuerIndex(store, context.responder_keys, ("sha1", "sha256"))
    index.reload_if_changed()
    return index


def generation(index: IssuerIndex, kind: CertKind) -> ServedGeneration:
    return next(i for i in index.issuers if i.ca.kind is kind)


def data_clock(index: IssuerIndex) -> FrozenClock:
    """One minute after the newest responder certificate's notBefore: inside every validity
    period of the data directory, and independent of when the test runs."""
    start = max(i.signer.certificate.not_valid_before_utc for i in index.issuers if i.signer)
    return FrozenClock(start + timedelta(minutes=1))


# -- decode ---------------------------------------------------------------------------------

async def test_decode_fills_in_the_parse_and_memoizes_plain_requests() -> None:
    cert_id = cert_id_for("sha1", b"\x01" * 20, b"\x02" * 20, 0x1234)
    nxt = Answering()
    source = DecodeSource(nxt, ALGORITHMS, memo_limit=1)
    plain = request(cert_id)
    await source.answer(query(plain))
    await source.answer(query(plain))
    first, second = (q.parsed for q in nxt.queries)
    assert first is not None and first.cert_ids == (cert_id,) and first.nonce is None
    assert second is first  # decoded once
    # a nonce request is never memoized (its bytes do not repeat)
    with_nonce = request(cert_id, nonce=b"\x07" * 16)
    await source.answer(query(with_nonce))
    assert nxt.queries[-1].parsed is not None and nxt.queries[-1].parsed.nonce_value == b"\x07" * 16
    assert with_nonce not in source._parsed
    # a bounded memo: a second plain request clears the first
    other = request(cert_id_for("sha1", b"\x01" * 20, b"\x02" * 20, 0x5678))
    await source.answer(query(other))
    assert list(source._parsed) == [other]


async def test_decode_refuses_bad_bytes_before_the_next_layer() -> None:
    nxt = Answering()
    source = DecodeSource(nxt, frozenset({"sha256"}), memo_limit=8)
    for body in (b"", b"\x30\x03\x02\x01\x01", request(cert_id_for(
            "sha1", b"\x01" * 20, b"\x02" * 20, 1))):  # sha1 not allowed here
        with pytest.raises(MalformedRequest):
            await source.answer(query(body))
    assert nxt.queries == []


# -- identify -------------------------------------------------------------------------------

async def test_identify_names_the_bearer_and_refuses_anonymous(store: Store,
                                                                issuers: IssuerIndex) -> None:
    clock = data_clock(issuers)
    verifier, token = verifiers.add(store, clock, "unit-bank")
    body = request(cert_id_for("sha1", b"\x01" * 20, b"\x02" * 20, 1))
    parsed = parse_request(body, ALGORITHMS)
    nxt = Answering()
    closed = VerifierDirectory(store, allow_anonymous=False)
    try:
        source = IdentifySource(nxt, closed)
        named = query(body, authorization=f"Bearer {token}")
        named.parsed = parsed
        await source.answer(named)
        assert nxt.queries[-1].verifier is not None
        assert nxt.queries[-1].verifier.name == verifier.name == "unit-bank"
        for authorization in (None, "Bearer not-a-token", "Basic abc"):
            refused = query(body, authorization=authorization)
            refused.parsed = parsed
            with pytest.raises(Unauthorized):
                await source.answer(refused)
        assert len(nxt.queries) == 1
    finally:
        closed.close()
    opened = VerifierDirectory(store, allow_anonymous=True)
    try:
        anonymous = query(body)
        anonymous.parsed = parsed
        await IdentifySource(nxt, opened).answer(anonymous)
        assert nxt.queries[-1].verifier is None
    finally:
        opened.close()


# -- metering -------------------------------------------------------------------------------

async def test_metering_records_every_answered_certid_after_the_answer() -> None:
    meter = RecordingMeter()
    reply = Reply(b"x", None, "multi", "signature", 1_700_000_000,
                  [("signature", "0a"), ("unknown", "0b")])
    source = MeteringSource(Answering(reply), meter)
    asked = Query(b"", None, True, 1_700_000_000)
    assert await source.answer(asked) is reply
    assert meter.calls == [(None, (("signature", "0a"), ("unknown", "0b")),
                            from_epoch(1_700_000_000), True)]
    # an error is not metered: it passes through untouched
    failing = MeteringSource(Answering(error=TryLater("pool full")), meter)
    with pytest.raises(TryLater):
        await failing.answer(query(now=1_700_000_001))
    assert len(meter.calls) == 1


# -- filter ---------------------------------------------------------------------------------

async def test_filter_finds_our_generation_and_refuses_others(issuers: IssuerIndex) -> None:
    signature = generation(issuers, CertKind.SIGNATURE)
    authentication = generation(issuers, CertKind.AUTHENTICATION)
    nxt = Answering()
    source = IssuerFilter(nxt, issuers)
    for algorithm in ("sha1", "sha256"):
        ours = query()
        ours.parsed = parse_request(request(make_cert_id(signature, algorithm, 7)), ALGORITHMS)
        await source.answer(ours)
        assert nxt.queries[-1].generation is signature
    several = query()  # two CertIDs of one generation: one answer
    several.parsed = parse_request(request(make_cert_id(authentication, "sha1", 1),
                                           make_cert_id(authentication, "sha256", 2)),
                                   ALGORITHMS)
    await source.answer(several)
    assert nxt.queries[-1].generation is authentication
    foreign = query()
    foreign.parsed = parse_request(request(cert_id_for("sha1", b"\x01" * 20, b"\x02" * 20, 1)),
                                   ALGORITHMS)
    mixed = query()  # RFC 6960 §4.2.2.2: one delegated signer speaks for one generation
    mixed.parsed = parse_request(request(make_cert_id(signature, "sha1", 1),
                                         make_cert_id(authentication, "sha1", 1)), ALGORITHMS)
    for refused in (foreign, mixed):
        with pytest.raises(Unauthorized):
            await source.answer(refused)
    assert len(nxt.queries) == 3


# -- live -----------------------------------------------------------------------------------

@pytest.fixture
def live(issuers: IssuerIndex, data_dir: Path) -> Iterator[tuple[LiveSource, FrozenClock]]:
    clock = data_clock(issuers)
    pool = SigningPool(1, 4)
    source = LiveSource(pool, PresignedCache(100), StatusReader(issuers.store.reader), clock,
                        timedelta(hours=24))
    yield source, clock
    pool.close()


async def test_live_signs_now_with_the_nonce_within_the_signer_validity(
        live: tuple[LiveSource, FrozenClock], issuers: IssuerIndex) -> None:
    source, clock = live
    signature = generation(issuers, CertKind.SIGNATURE)
    asked = query(now=epoch(clock()))
    asked.parsed = parse_request(request(make_cert_id(signature, "sha256", 0x99),
                                         nonce=b"\x42" * 32), ALGORITHMS)
    asked.generation = signature
    reply = await source.answer(asked)
    assert reply.cached is None and reply.outcome == "unknown" and reply.kind == "signature"
    assert reply.metered == [("unknown", "99")]
    response = pyca_ocsp.load_der_ocsp_response(reply.der)
    assert response.response_status is pyca_ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is pyca_ocsp.OCSPCertStatus.UNKNOWN
    nonce = response.extensions.get_extension_for_class(OCSPNonce).value.nonce
    assert nonce == b"\x42" * 32
    assert response.this_update_utc == clock()  # the clock passed in, not the wall clock
    assert response.next_update_utc == clock() + timedelta(hours=24)
    # nextUpdate never passes the signer's notAfter
    assert signature.signer is not None
    clock.advance(signature.signer.not_after - clock() - timedelta(hours=1))
    this_update, next_update = source.window(signature)
    assert next_update == epoch(signature.signer.not_after) == this_update + 3600
    clock.advance(timedelta(hours=1))
    with pytest.raises(TryLater):  # expired signer: tryLater, never an answer past notAfter
        source.window(signature)
    with pytest.raises(TryLater):  # no signer at all
        source.window(ServedGeneration(signature.ca, None))


# -- pre-signed ------------------------------------------------------------------------------

class CountingLive:
    """The pre-signed layer's next source: a real LiveSource that counts what reaches it."""

    def __init__(self, inner: LiveSource) -> None:
        self.inner = inner
        self.signed: list[tuple[CertID, ...]] = []
        self.answered = 0

    async def answer(self, query: Query) -> Reply:
        self.answered += 1
        return await self.inner.answer(query)

    async def sign(self, generation: ServedGeneration, cert_ids: Sequence[CertID],
                   nonce: bytes | None = None, nonce_value: bytes | None = None) -> Signed:
        self.signed.append(tuple(cert_ids))
        return await self.inner.sign(generation, cert_ids, nonce, nonce_value)


async def test_presigned_hits_refreshes_and_single_flight(
        live: tuple[LiveSource, FrozenClock], issuers: IssuerIndex) -> None:
    inner, clock = live
    counting = CountingLive(inner)
    cache = PresignedCache(100)
    source = PresignedSource(counting, cache, 0.5)  # type: ignore[arg-type]  # duck-typed
    stale: list[CertID] = []
    source.on_stale = stale.append
    signature = generation(issuers, CertKind.SIGNATURE)
    cert_id = make_cert_id(signature, "sha1", 0x77)

    def asked() -> Query:
        q = query(now=epoch(clock()))
        q.parsed = parse_request(request(cert_id), ALGORITHMS)
        q.generation = signature
        return q

    # two concurrent misses share one signature
    first, second = await asyncio.gather(source.answer(asked()), source.answer(asked()))
    assert len(counting.signed) == 1 and first.der == second.der
    assert first.cached is not None and cache.get(cert_id.der) is first.cached
    hit = await source.answer(asked())
    assert hit.der == first.der and len(counting.signed) == 1
    # past the refresh point, still valid: served as is, re-signing asked of the Refresher
    clock.advance(timedelta(hours=13))
    stale_reply = await source.answer(asked())
    assert stale_reply.der == first.der and stale == [cert_id] and len(counting.signed) == 1
    # past nextUpdate: never served, signed again on the request path
    clock.advance(timedelta(hours=12))
    fresh = await source.answer(asked())
    assert len(counting.signed) == 2 and fresh.der != first.der
    assert fresh.cached is not None and fresh.cached.this_update == epoch(clock())
    # a nonce request is not the pre-signed layer's: it goes to the live source
    nonce = query(now=epoch(clock()))
    nonce.parsed = parse_request(request(cert_id, nonce=b"\x01" * 8), ALGORITHMS)
    nonce.generation = signature
    live_reply = await source.answer(nonce)
    assert counting.answered == 1 and live_reply.cached is None
