"""The answer builder alone (ocsp/builder.py): templates of pyca's encoding are byte for byte
pyca's own answers; signature schemes the template does not own (ECDSA) fall back to pyca.

RSA PKCS#1 v1.5 is deterministic, so an answer rendered from a template and the answer pyca's
builder makes for the same values must be the same bytes, signature included. pyca stamps
producedAt from the wall clock: the comparison reads that stamp from pyca's answer and renders
the template with it, so no test depends on when it runs. Fast tier: responder certificates
made with cryptography (tests/conftest.py), no data directory, no daemon.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from asn1crypto import ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp as pyca_ocsp

from ocsp.builder import AnswerBuilder, PycaInputs, SignatureScheme, scheme_for, with_certificates
from ocsp.request import CertID, cert_id_for
from ocsp.status import Status
from ocsp.template import cut, generalized_time
from registry.clock import epoch, from_epoch
from registry.reasons import Reason
from tests.conftest import ResponderUnderTest

HOUR = 3600
T0 = 1_767_300_000  # 2026-01-01T20:40:00Z, inside the test responders' validity
T1 = T0 + 24 * HOUR + 1234
SERIAL = 0x3F2A5B6C7D8E9F00112233
REVOKED_AT = datetime(2026, 1, 1, 5, 6, 7, tzinfo=UTC)
STATUSES = [
    Status("good", "signature"),
    Status("revoked", "signature", REVOKED_AT, Reason.keyCompromise),
    Status("revoked", "signature", REVOKED_AT, Reason.unspecified),  # no reason encoded
    Status("revoked", "signature", REVOKED_AT, Reason.affiliationChanged),
    Status("unknown", "unknown"),
]


def cert_id(responder: ResponderUnderTest, algorithm: str, serial: int) -> CertID:
    return cert_id_for(algorithm, responder.name_hashes[algorithm],
                       responder.key_hashes[algorithm], serial)


def inputs(responder: ResponderUnderTest, builder: AnswerBuilder, cid: CertID, status: Status,
           this_update: int, next_update: int, nonce: bytes | None) -> PycaInputs:
    return PycaInputs(cid, status, responder.certificate, responder.key,
                      scheme_for(responder.key),
                      builder.parts(responder.certificate).certs_field, this_update,
                      next_update, nonce)


def build(builder: AnswerBuilder, responder: ResponderUnderTest, cids: list[CertID],
          statuses: list[Status], this_update: int, next_update: int,
          nonce: bytes | None = None) -> bytes:
    extn = ocsp.OctetString(nonce).dump() if nonce is not None else None
    return builder.build(key=responder.key, certificate=responder.certificate, cert_ids=cids,
                         statuses=statuses, this_update=this_update, next_update=next_update,
                         nonce=extn, nonce_value=nonce)


def produced_at(der: bytes) -> int:
    return epoch(pyca_ocsp.load_der_ocsp_response(der).produced_at_utc)


@pytest.mark.parametrize("status", STATUSES, ids=lambda s: f"{s.state}-{s.reason}")
@pytest.mark.parametrize("nonce_length", [None, 1, 32, 127, 128])
@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_rendered_answers_are_pycas_answers_byte_for_byte(
        test_responders: dict[str, ResponderUnderTest], status: Status, nonce_length: int | None,
        algorithm: str) -> None:
    responder, builder = test_responders["rsa"], AnswerBuilder()
    # The template is cut from an answer about another certificate (a serial of the same
    # length), made a day earlier with another validity and another nonce...
    other = cert_id(responder, algorithm, SERIAL ^ 0x5A5A5A5A5A)
    first_nonce = bytes(range(1, 1 + nonce_length)) if nonce_length else None
    build(builder, responder, [other], [status], T0, T0 + 2 * HOUR, first_nonce)
    assert len(builder) == 1
    # ...and rendered for this certificate: pyca makes exactly the same bytes.
    cid = cert_id(responder, algorithm, SERIAL)
    nonce = bytes(reversed(range(100, 100 + nonce_length))) if nonce_length else None
    now = inputs(responder, builder, cid, status, T1, T1 + 24 * HOUR, nonce)
    template = builder.template(now)  # the key is derived from the inputs handed to pyca
    assert template is not None
    expected = now.build()
    assert template.render(responder.key, cid.der, T1, T1 + 24 * HOUR, nonce,  # type: ignore[arg-type]
                           produced_at=produced_at(expected)) == expected
    # The builder's own answer is that template's, producedAt = thisUpdate.
    ours = build(builder, responder, [cid], [status], T1, T1 + 24 * HOUR, nonce)
    assert produced_at(ours) == T1 and len(ours) == len(expected)
    # A nonce or a CertID of another length does not fit: no answer rather than a wrong one.
    longer = b"x" * ((nonce_length or 0) + 1)
    assert template.render(responder.key, cid.der, T1, T1 + HOUR, longer) is None  # type: ignore[arg-type]
    wider = cert_id(responder, algorithm, 1 << 170)  # a 22-octet serial
    assert template.render(responder.key, wider.der, T1, T1 + HOUR, nonce) is None  # type: ignore[arg-type]


def test_the_rendered_answer_verifies_under_the_responder_key(
        test_responders: dict[str, ResponderUnderTest]) -> None:
    """Independently of pyca's builder: parse it and check its signature and fields."""
    responder, builder = test_responders["rsa"], AnswerBuilder()
    cid = cert_id(responder, "sha1", SERIAL)
    status = Status("good", "authentication")
    build(builder, responder, [cid], [status], T0, T0 + HOUR, b"a" * 20)
    der = build(builder, responder, [cid], [status], T1, T1 + 5 * HOUR, b"b" * 20)
    assert len(builder) == 1  # the second came from the template
    response = pyca_ocsp.load_der_ocsp_response(der)
    key = responder.key.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(response.signature, response.tbs_response_bytes, padding.PKCS1v15(),
               hashes.SHA256())
    assert epoch(response.produced_at_utc) == T1
    assert epoch(response.this_update_utc) == T1
    assert epoch(response.next_update_utc) == T1 + 5 * HOUR
    assert response.serial_number == SERIAL
    assert response.certificate_status == pyca_ocsp.OCSPCertStatus.GOOD
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"b" * 20
    assert response.certificates == [responder.certificate]


def test_ambiguous_answers_are_never_templated(
        test_responders: dict[str, ResponderUnderTest]) -> None:
    responder, builder = test_responders["rsa"], AnswerBuilder()
    cid = cert_id(responder, "sha1", SERIAL)

    def pyca(status: Status, nonce: bytes | None) -> bytes:
        return inputs(responder, builder, cid, status, T0, T0 + HOUR, nonce).build()

    # A revocation time in the same second as thisUpdate: which of the two is which?
    status = Status("revoked", "signature", from_epoch(T0), Reason.keyCompromise)
    assert cut(pyca(status, None), cid.der, T0, T0 + HOUR, None) is None
    # A nonce that spells out the time field.
    spelled = b"\x18\x0f" + generalized_time(T0)
    good = Status("good", "signature")
    assert cut(pyca(good, spelled), cid.der, T0, T0 + HOUR, spelled) is None
    # A CertID that is not the one answered.
    elsewhere = cert_id(responder, "sha1", SERIAL + 1)
    assert cut(pyca(good, None), elsewhere.der, T0, T0 + HOUR, None) is None
    # Not an answer at all.
    assert cut(b"\x30\x03\x0a\x01\x01", cid.der, T0, T0 + HOUR, None) is None


def test_signature_algorithms_the_template_does_not_own_are_never_cut(
        test_responders: dict[str, ResponderUnderTest]) -> None:
    """Only sha256WithRSAEncryption: the cut checks pyca's signatureAlgorithm bytes."""
    responder, builder = test_responders["rsa"], AnswerBuilder()
    cid = cert_id(responder, "sha1", SERIAL)
    good = Status("good", "signature")
    sha384 = SignatureScheme(hashes.SHA384(), "sha384_rsa", templated=True)
    made = PycaInputs(cid, good, responder.certificate, responder.key, sha384,
                      builder.parts(responder.certificate).certs_field, T0, T0 + HOUR, None)
    assert cut(made.build(), cid.der, T0, T0 + HOUR, None) is None
    for label in ("p256", "p384"):
        ec_responder = test_responders[label]
        ec_id = cert_id(ec_responder, "sha1", SERIAL)
        der = inputs(ec_responder, builder, ec_id, good, T0, T0 + HOUR, None).build()
        assert cut(der, ec_id.der, T0, T0 + HOUR, None) is None


def _verify_ecdsa(responder: ResponderUnderTest, der: bytes, hash_name: str) -> Any:
    response = pyca_ocsp.load_der_ocsp_response(der)
    key = responder.key.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert response.signature_hash_algorithm is not None
    assert response.signature_hash_algorithm.name == hash_name
    key.verify(response.signature, response.tbs_response_bytes,
               ec.ECDSA(response.signature_hash_algorithm))
    assert response.certificates == [responder.certificate]
    return response


@pytest.mark.parametrize(("label", "hash_name"), [("p256", "sha256"), ("p384", "sha384")])
def test_an_ecdsa_responder_falls_back_to_pyca_and_its_answers_verify(
        test_responders: dict[str, ResponderUnderTest], label: str, hash_name: str) -> None:
    """ECDSA signatures are randomized and of variable length: no template, pyca each time."""
    responder, builder = test_responders[label], AnswerBuilder()
    cid = cert_id(responder, "sha1", SERIAL)
    revoked = Status("revoked", "signature", REVOKED_AT, Reason.keyCompromise)
    answers = [build(builder, responder, [cid], [revoked], T0 + i, T0 + i + HOUR, b"n" * 16)
               for i in range(3)]
    assert len(builder) == 0
    for i, der in enumerate(answers):
        response = _verify_ecdsa(responder, der, hash_name)
        assert epoch(response.this_update_utc) == T0 + i
        assert response.revocation_reason == x509.ReasonFlags.key_compromise
        assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce \
            == b"n" * 16
    # Several CertIDs (asn1crypto encodes): signed with the same scheme.
    cids = [cid, cert_id(responder, "sha256", SERIAL + 1)]
    der = build(builder, responder, cids, [revoked, Status("good", "signature")], T1,
                T1 + HOUR, b"m" * 8)
    basic = ocsp.OCSPResponse.load(der).basic_ocsp_response
    assert basic["signature_algorithm"]["algorithm"].native == f"{hash_name}_ecdsa"
    key = responder.key.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(basic["signature"].native, basic["tbs_response_data"].dump(),
               ec.ECDSA(hashes.SHA256() if hash_name == "sha256" else hashes.SHA384()))
    assert [r["cert_id"].dump() for r in basic["tbs_response_data"]["responses"]] \
        == [c.der for c in cids]


def test_templates_are_kept_per_key_and_bounded(
        test_responders: dict[str, ResponderUnderTest]) -> None:
    responder, builder = test_responders["rsa"], AnswerBuilder(template_limit=2)
    cid = cert_id(responder, "sha1", SERIAL)
    good = Status("good", "signature")
    first = build(builder, responder, [cid], [good], T0, T0 + HOUR, b"12345")
    second = build(builder, responder, [cid], [good], T0 + 1, T0 + 1 + HOUR, b"54321")
    assert len(builder) == 1  # the second came from the template
    for der, this_update in ((first, T0), (second, T0 + 1)):
        assert ocsp.OCSPResponse.load(der).basic_ocsp_response["tbs_response_data"][
            "responses"][0]["this_update"].native == from_epoch(this_update)
    build(builder, responder, [cid], [good], T0, T0 + HOUR, b"12")
    build(builder, responder, [cid], [good], T0, T0 + HOUR, b"123")
    assert len(builder) == 1  # full at 2: cleared, then the newest kept


def test_the_responder_certificate_is_appended_exactly_as_pyca_would_encode_it(
        test_responders: dict[str, ResponderUnderTest]) -> None:
    """pyca re-encodes an included certificate slowly; the builder appends its DER. Every
    byte but producedAt and the signature (pyca's wall-clock stamp, signed) is pyca's own."""
    responder, builder = test_responders["rsa"], AnswerBuilder()
    cid = cert_id(responder, "sha1", SERIAL)

    def pyca(with_certificate: bool) -> bytes:
        made = pyca_ocsp.OCSPResponseBuilder().add_response_by_hash(
            cid.name_hash, cid.key_hash, cid.serial, hashes.SHA1(),
            pyca_ocsp.OCSPCertStatus.GOOD, from_epoch(T0), from_epoch(T0 + HOUR), None, None,
        ).responder_id(pyca_ocsp.OCSPResponderEncoding.HASH, responder.certificate
                       ).add_extension(x509.OCSPNonce(b"n" * 32), critical=False)
        if with_certificate:
            made = made.certificates([responder.certificate])
        assert isinstance(responder.key, rsa.RSAPrivateKey)
        return made.sign(responder.key, hashes.SHA256()).public_bytes(Encoding.DER)

    full, bare = pyca(True), pyca(False)
    certs_field = builder.parts(responder.certificate).certs_field
    ours = with_certificates(bare, certs_field)
    mine, theirs = (pyca_ocsp.load_der_ocsp_response(d) for d in (ours, full))
    same = ours.replace(mine.tbs_response_bytes, theirs.tbs_response_bytes) \
        .replace(mine.signature, theirs.signature)
    assert same == full
    assert with_certificates(bare, certs_field) == ours  # headers worked out once, reused
    assert mine.certificates == [responder.certificate]
