"""Templates of pyca's encoding (ocsp/template.py): every answer byte for byte pyca's own.

RSA PKCS#1 v1.5 is deterministic, so an answer rendered from a template and the answer pyca's
builder makes for the same values must be the same bytes, signature included.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asn1crypto import ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509 import ocsp as pyca_ocsp

from ca.kinds import CertKind
from ocsp.issuers import ServedGeneration, Signer
from ocsp.presign import make_cert_id
from ocsp.request import CertID
from ocsp.response import Status, sign_single
from ocsp.template import Templates, cut, generalized_time
from registry.clock import FrozenClock, epoch, from_epoch
from registry.reasons import Reason
from tests.test_ocsp_sources import build, issued  # noqa: F401 - `issued` is a fixture

HOUR = 3600


def pyca(signer: Signer, cert_id: CertID, status: Status, this_update: int, next_update: int,
         nonce: bytes | None) -> bytes:
    return sign_single(cert_id=cert_id, status=status, certs_field=signer.certs_field,
                       certificate=signer.pyca_certificate, key=signer.key,
                       this_update=from_epoch(this_update), next_update=from_epoch(next_update),
                       nonce=nonce)


def now_pyca(signer: Signer, cert_id: CertID, status: Status, next_in: int,
             nonce: bytes | None) -> tuple[int, bytes]:
    """pyca's answer with thisUpdate = its own producedAt stamp (the wall clock's second)."""
    for _ in range(5):
        now = int(datetime.now(UTC).timestamp())
        der = pyca(signer, cert_id, status, now, now + next_in, nonce)
        produced = pyca_ocsp.load_der_ocsp_response(der).produced_at_utc
        if epoch(produced) == now:
            return now, der
    raise AssertionError("the clock kept crossing a second boundary")


@pytest.fixture
def parts(data_dir: Path, issued: dict) -> tuple[Signer, Signer, int, int]:  # noqa: F811
    responder = build(data_dir, FrozenClock(datetime.now(UTC)))
    signers = {i.ca.kind: i.signer for i in responder.issuers.issuers}
    asyncio.run(responder.close())
    responder.store.close()
    return (signers[CertKind.SIGNATURE], signers[CertKind.AUTHENTICATION],  # type: ignore[return-value]
            int(issued["signature"]["serial"], 16), int(issued["authentication"]["serial"], 16))


REVOKED_AT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
STATUSES = [
    Status("good", "signature"),
    Status("revoked", "signature", REVOKED_AT, Reason.keyCompromise),
    Status("revoked", "signature", REVOKED_AT, Reason.unspecified),  # no reason encoded
    Status("revoked", "signature", REVOKED_AT, Reason.affiliationChanged),
    Status("unknown", "unknown"),
]


@pytest.mark.parametrize("status", STATUSES, ids=lambda s: f"{s.state}-{s.reason}")
@pytest.mark.parametrize("nonce_length", [None, 1, 32, 127, 128])
@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_rendered_answers_are_pycas_answers_byte_for_byte(
        parts: tuple[Signer, Signer, int, int], status: Status, nonce_length: int | None,
        algorithm: str) -> None:
    signer, _, serial, _ = parts
    issuer = _issuer(signer)
    # The template is cut from an answer about another certificate (a serial of the same
    # length), made a day ago with another validity and another nonce...
    other = make_cert_id(issuer, algorithm, serial ^ 0x5A5A5A5A5A)
    first_nonce = bytes(range(1, 1 + nonce_length)) if nonce_length else None
    made_at = int(datetime.now(UTC).timestamp()) - 24 * HOUR
    template = cut(pyca(signer, other, status, made_at, made_at + 2 * HOUR, first_nonce),
                   other.der, made_at, made_at + 2 * HOUR, first_nonce)
    assert template is not None
    # ...and rendered now for this certificate: pyca makes exactly the same bytes.
    cert_id = make_cert_id(issuer, algorithm, serial)
    nonce = bytes(reversed(range(100, 100 + nonce_length))) if nonce_length else None
    now, expected = now_pyca(signer, cert_id, status, 24 * HOUR, nonce)
    assert template.render(signer.key, cert_id.der, now, now + 24 * HOUR, nonce) == expected
    # A nonce or a CertID of another length does not fit: no answer rather than a wrong one.
    longer = b"x" * ((nonce_length or 0) + 1)
    assert template.render(signer.key, cert_id.der, now, now + HOUR, longer) is None
    wider = make_cert_id(issuer, algorithm, 1 << 170)  # a 22-octet serial
    assert template.render(signer.key, wider.der, now, now + HOUR, nonce) is None


def _issuer(signer: Signer) -> ServedGeneration:
    return ServedGeneration(signer.ca, signer)


def test_the_rendered_answer_verifies_under_the_responder_key(
        parts: tuple[Signer, Signer, int, int]) -> None:
    """Independently of pyca's builder: parse it and check its signature and fields."""
    _, signer, _, serial = parts  # the authentication CA's responder this time
    cert_id = make_cert_id(_issuer(signer), "sha1", serial)
    status = Status("good", "authentication")
    made_at = int(datetime.now(UTC).timestamp()) - 3 * HOUR
    template = cut(pyca(signer, cert_id, status, made_at, made_at + HOUR, b"a" * 20),
                   cert_id.der, made_at, made_at + HOUR, b"a" * 20)
    assert template is not None
    this_update = made_at + 1234
    der = template.render(signer.key, cert_id.der, this_update, this_update + 5 * HOUR,
                          b"b" * 20)
    assert der is not None
    response = pyca_ocsp.load_der_ocsp_response(der)
    signer.key.public_key().verify(response.signature, response.tbs_response_bytes,
                                   padding.PKCS1v15(), hashes.SHA256())
    assert epoch(response.produced_at_utc) == this_update
    assert epoch(response.this_update_utc) == this_update
    assert epoch(response.next_update_utc) == this_update + 5 * HOUR
    assert response.serial_number == serial
    assert response.certificate_status == pyca_ocsp.OCSPCertStatus.GOOD
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"b" * 20
    assert response.certificates == [signer.pyca_certificate]


def test_ambiguous_answers_are_never_templated(parts: tuple[Signer, Signer, int, int]) -> None:
    signer, _, serial, _ = parts
    cert_id = make_cert_id(_issuer(signer), "sha1", serial)
    now = int(datetime.now(UTC).timestamp())
    # A revocation time in the same second as thisUpdate: which of the two is which?
    status = Status("revoked", "signature", from_epoch(now), Reason.keyCompromise)
    assert cut(pyca(signer, cert_id, status, now, now + HOUR, None), cert_id.der, now,
               now + HOUR, None) is None
    # A nonce that spells out the time field.
    spelled = b"\x18\x0f" + generalized_time(now)
    good = Status("good", "signature")
    assert cut(pyca(signer, cert_id, good, now, now + HOUR, spelled), cert_id.der, now,
               now + HOUR, spelled) is None
    # A CertID that is not the one answered.
    elsewhere = make_cert_id(_issuer(signer), "sha1", serial + 1)
    assert cut(pyca(signer, cert_id, good, now, now + HOUR, None), elsewhere.der, now,
               now + HOUR, None) is None
    # Not an answer at all.
    assert cut(b"\x30\x03\x0a\x01\x01", cert_id.der, now, now + HOUR, None) is None


def test_templates_are_kept_per_key_and_bounded(parts: tuple[Signer, Signer, int, int]) -> None:
    signer, _, serial, _ = parts
    cert_id = make_cert_id(_issuer(signer), "sha1", serial)
    status = Status("good", "signature")
    templates = Templates(limit=2)
    calls: list[int] = []

    def built(now: int, nonce: bytes) -> bytes:
        calls.append(now)
        return pyca(signer, cert_id, status, now, now + HOUR, nonce)

    now = int(datetime.now(UTC).timestamp()) - 3 * HOUR  # pyca's producedAt differs: still cut
    first = templates.sign(("k", 5), signer.key, cert_id.der, now, now + HOUR, b"12345",
                           lambda: built(now, b"12345"))
    second = templates.sign(("k", 5), signer.key, cert_id.der, now + 1, now + 1 + HOUR,
                            b"54321", lambda: built(now + 1, b"54321"))
    assert calls == [now] and len(templates) == 1  # the second came from the template
    assert ocsp.OCSPResponse.load(first).basic_ocsp_response["tbs_response_data"][
        "responses"][0]["this_update"].native == from_epoch(now)
    assert ocsp.OCSPResponse.load(second).basic_ocsp_response["tbs_response_data"][
        "responses"][0]["this_update"].native == from_epoch(now + 1)
    templates.sign(("k", 2), signer.key, cert_id.der, now, now + HOUR, b"12",
                   lambda: built(now, b"12"))
    templates.sign(("k", 3), signer.key, cert_id.der, now, now + HOUR, b"123",
                   lambda: built(now, b"123"))
    assert len(templates) == 1  # full at 2: cleared, then the newest kept
