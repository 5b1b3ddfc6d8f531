"""The answer builder: every signed OCSP answer (RFC 6960 §4.2.1) is made by `AnswerBuilder.build`.

What an answer is, whatever path made it: a BasicOCSPResponse, responderID byKey (RFC 5019
§2.2.3: SHA-1 of the responder's public key BIT STRING), producedAt = thisUpdate (whole
seconds), the responder certificate in `certs` so that a verifier can check the delegation
(RFC 6960 §4.2.2.2), the nonce echoed (RFC 9654), signed with the responder's key:
sha256WithRSAEncryption for RSA, ECDSA with SHA-256/384/512 for P-256/384/521 (RFC 5758 §3.2).

How, fastest first:

1. **Template** (ocsp/template.py): one canonical CertID and a signature scheme the template
   owns (RSA PKCS#1 v1.5 with SHA-256 only: deterministic, of the modulus' length). The
   template's key is derived here from the very inputs handed to pyca (`PycaInputs`), with the
   variable fields (CertID contents, times, nonce bytes) replaced by their lengths; the answer
   is byte for byte what pyca would build (tests/test_ocsp_builder.py).
2. **pyca**: one canonical CertID otherwise (the first answer of each template key, any ECDSA
   key: an ECDSA signature is randomized and of variable length, so no template holds).
   pyca's Rust builder, with the responder certificate appended rather than re-encoded.
3. **asn1crypto**: several CertIDs (pyca builds one SingleResponse only) or a CertID that is not
   byte-for-byte canonical (it is echoed verbatim).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from asn1crypto import core, ocsp, parser
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp as pyca_ocsp

from ocsp import metrics
from ocsp.request import CertID
from ocsp.status import Status
from ocsp.template import ResponseTemplate, cut
from registry.clock import from_epoch
from registry.reasons import Reason, ocsp_reason_name, pyca_reason_flag

ResponderKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_BY_TEMPLATE = metrics.ENCODED.labels("template")
_BY_PYCA = metrics.ENCODED.labels("pyca")
_PYCA_HASHES = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}
_PYCA_STATUS = {"good": pyca_ocsp.OCSPCertStatus.GOOD,
                "revoked": pyca_ocsp.OCSPCertStatus.REVOKED,
                "unknown": pyca_ocsp.OCSPCertStatus.UNKNOWN}


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: a few constants
class SignatureScheme:
    """How a responder key signs: the hash, the AlgorithmIdentifier, whether templates hold."""

    hash: hashes.HashAlgorithm
    asn1_name: str  # asn1crypto's SignedDigestAlgorithmId name
    templated: bool  # deterministic and fixed-length: owned by the template path


RSA_SHA256 = SignatureScheme(hashes.SHA256(), "sha256_rsa", templated=True)
_ECDSA = {  # RFC 5758 §3.2, the hash sized to the curve
    "secp256r1": SignatureScheme(hashes.SHA256(), "sha256_ecdsa", templated=False),
    "secp384r1": SignatureScheme(hashes.SHA384(), "sha384_ecdsa", templated=False),
    "secp521r1": SignatureScheme(hashes.SHA512(), "sha512_ecdsa", templated=False),
}


def scheme_for(key: ResponderKey) -> SignatureScheme:
    if isinstance(key, rsa.RSAPrivateKey):
        return RSA_SHA256
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _ECDSA:
        return _ECDSA[key.curve.name]
    raise ValueError(f"no OCSP signature scheme for a {type(key).__name__}")


def _sign(key: ResponderKey, scheme: SignatureScheme, data: bytes) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), scheme.hash)
    return key.sign(data, ec.ECDSA(scheme.hash))


@dataclass(frozen=True)
class ResponderParts:
    """What the builder derives once per responder certificate."""

    key_hash: bytes  # responderID byKey
    certs_field: bytes  # `certs [0] EXPLICIT SEQUENCE OF Certificate`, encoded once
    certificate_der: bytes


@dataclass(frozen=True, slots=True)
class PycaInputs:
    """Everything handed to pyca's builder for one single-CertID answer."""

    cert_id: CertID
    status: Status
    certificate: x509.Certificate
    key: ResponderKey
    scheme: SignatureScheme
    certs_field: bytes
    this_update: int
    next_update: int
    nonce: bytes | None  # the nonce itself (pyca wraps it in its OCTET STRING)

    def template_key(self) -> tuple[object, ...]:
        """Every input, but the template's slots (the CertID's contents, the times, the
        nonce's bytes) by their lengths: two answers with one key differ only in those."""
        return (self.certificate, self.key, self.scheme, self.certs_field,
                self.cert_id.hash_algorithm, len(self.cert_id.der), self.status,
                -1 if self.nonce is None else len(self.nonce))

    def build(self) -> bytes:
        """pyca's answer; the responder certificate is appended, not re-encoded by pyca
        (~75 µs of GIL time for ours, a quarter of an RSA signature)."""
        if self.next_update <= self.this_update:
            raise ValueError("nextUpdate must be after thisUpdate")
        status, cert_id = self.status, self.cert_id
        revoked = status.state == "revoked"
        reason = pyca_reason_flag(status.reason) if revoked and status.reason is not None \
            else None
        builder = pyca_ocsp.OCSPResponseBuilder().add_response_by_hash(
            cert_id.name_hash, cert_id.key_hash, cert_id.serial,
            _PYCA_HASHES[cert_id.hash_algorithm], _PYCA_STATUS[status.state],
            from_epoch(self.this_update), from_epoch(self.next_update),
            status.revoked_at if revoked else None, reason,
        ).responder_id(pyca_ocsp.OCSPResponderEncoding.HASH, self.certificate)
        if self.nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(self.nonce), critical=False)
        der = builder.sign(self.key, self.scheme.hash).public_bytes(Encoding.DER)
        return with_certificates(der, self.certs_field)


class AnswerBuilder:
    """The one way to make a signed answer; shared by the signing threads.

    Its memos (templates, responder parts) are bounded and cleared when full; reads and
    writes are single dict operations, atomic under the GIL, and two threads making the same
    entry at once make the same bytes.
    """

    def __init__(self, template_limit: int = 4096) -> None:
        self.template_limit = template_limit
        self._templates: dict[tuple[object, ...], ResponseTemplate] = {}
        self._parts: dict[bytes, ResponderParts] = {}

    def __len__(self) -> int:
        """Templates held."""
        return len(self._templates)

    def build(self, *, key: ResponderKey, certificate: x509.Certificate,
              cert_ids: Sequence[CertID], statuses: Sequence[Status], this_update: int,
              next_update: int, nonce: bytes | None = None,
              nonce_value: bytes | None = None) -> bytes:
        """The signed answer: one SingleResponse per CertID, in order.

        `nonce` is the request's nonce extnValue contents (echoed as received when asn1crypto
        encodes), `nonce_value` the nonce inside it (what pyca is handed).
        """
        if len(cert_ids) != len(statuses) or not cert_ids:
            raise ValueError("one status per CertID, at least one")
        scheme = scheme_for(key)
        parts = self.parts(certificate)
        if len(cert_ids) == 1 and cert_ids[0].canonical:
            return self._single(PycaInputs(cert_ids[0], statuses[0], certificate, key, scheme,
                                           parts.certs_field, this_update, next_update,
                                           nonce_value))
        return _asn1crypto(key, scheme, parts, cert_ids, statuses, from_epoch(this_update),
                           from_epoch(next_update), nonce)

    def parts(self, certificate: x509.Certificate) -> ResponderParts:
        der = certificate.public_bytes(Encoding.DER)
        parts = self._parts.get(der)
        if parts is None:
            loaded = asn1_x509.Certificate.load(der)
            parts = ResponderParts(
                key_hash=hashlib.sha1(loaded.public_key["public_key"].contents[1:]).digest(),
                certs_field=ocsp.Certificates([loaded], explicit=0).dump(),
                certificate_der=der)
            if len(self._parts) >= 64:
                self._parts.clear()
            self._parts[der] = parts
        return parts

    def _single(self, inputs: PycaInputs) -> bytes:
        if not inputs.scheme.templated:  # ECDSA: no template can hold, pyca every time
            _BY_PYCA.inc()
            return inputs.build()
        assert isinstance(inputs.key, rsa.RSAPrivateKey)  # the only templated scheme
        key = inputs.template_key()
        template = self._templates.get(key)
        nonce = inputs.nonce
        if template is not None:
            der = template.render(inputs.key, inputs.cert_id.der, inputs.this_update,
                                  inputs.next_update, nonce)
            if der is not None:
                _BY_TEMPLATE.inc()
                return der
        _BY_PYCA.inc()
        der = inputs.build()
        made = cut(der, inputs.cert_id.der, inputs.this_update, inputs.next_update, nonce)
        if made is not None:
            if len(self._templates) >= self.template_limit:
                self._templates.clear()
            self._templates[key] = made
        return der

    def template(self, inputs: PycaInputs) -> ResponseTemplate | None:
        """The template held for these inputs (tests)."""
        return self._templates.get(inputs.template_key())


def _cert_status(status: Status) -> ocsp.CertStatus:
    if status.state == "good":
        return ocsp.CertStatus(name="good", value=core.Null())
    if status.state == "revoked":
        info: dict[str, object] = {"revocation_time": status.revoked_at}
        # RFC 5280 §5.3.1: unspecified is expressed by leaving the reason out.
        if status.reason is not None and status.reason is not Reason.unspecified:
            info["revocation_reason"] = ocsp_reason_name(status.reason)
        return ocsp.CertStatus(name="revoked", value=ocsp.RevokedInfo(info))
    return ocsp.CertStatus(name="unknown", value=core.Null())


def _asn1crypto(key: ResponderKey, scheme: SignatureScheme, parts: ResponderParts,
                cert_ids: Sequence[CertID], statuses: Sequence[Status], this_update: datetime,
                next_update: datetime, nonce_extn_value: bytes | None) -> bytes:
    """Several CertIDs, or one echoed verbatim: asn1crypto encodes (nothing by hand)."""
    if next_update <= this_update:  # pyca lets this through; pkilint flags it (PEERS.md)
        raise ValueError("nextUpdate must be after thisUpdate")
    singles = [
        ocsp.SingleResponse({
            "cert_id": ocsp.CertId.load(cert_id.der),
            "cert_status": _cert_status(status),
            "this_update": this_update,
            "next_update": next_update,
        })
        for cert_id, status in zip(cert_ids, statuses, strict=True)
    ]
    data: dict[str, object] = {
        "responder_id": ocsp.ResponderId(name="by_key", value=parts.key_hash),
        "produced_at": this_update,
        "responses": singles,
    }
    if nonce_extn_value is not None:
        extension = ocsp.ResponseDataExtension({"extn_id": "nonce", "critical": False})
        extension["extn_value"] = core.ParsableOctetString(nonce_extn_value)
        data["response_extensions"] = [extension]
    tbs = ocsp.ResponseData(data)
    basic = ocsp.BasicOCSPResponse({
        "tbs_response_data": tbs,
        "signature_algorithm": {"algorithm": scheme.asn1_name},
        "signature": _sign(key, scheme, tbs.dump()),
        # a private copy: asn1crypto parses lazily and the pool has threads
        "certs": [asn1_x509.Certificate.load(parts.certificate_der)],
    })
    return bytes(ocsp.OCSPResponse({
        "response_status": "successful",
        "response_bytes": {"response_type": "basic_ocsp_response", "response": basic},
    }).dump())


def _contents(der: bytes) -> bytes:
    """The contents octets of one DER value that must span all of `der`."""
    return bytes(parser.parse(der, strict=True)[4])


# (length of pyca's response, length of the certs field) -> (its headers, the new headers)
_HEADERS: dict[tuple[int, int], tuple[bytes, bytes]] = {}


def with_certificates(response: bytes, certs_field: bytes) -> bytes:
    """Add `certs` to a successful OCSPResponse that has none (RFC 6960 §4.2.1).

    Only the four enclosing headers change: OCSPResponse SEQUENCE > [0] EXPLICIT >
    ResponseBytes SEQUENCE (OID, OCTET STRING) > BasicOCSPResponse SEQUENCE, whose contents
    (tbsResponseData, signatureAlgorithm, signature, as signed) are kept byte for byte and end
    the response. asn1crypto's parser reads and emits every header. The headers of a response
    depend on nothing but its length, so they are worked out once per length and reused when
    the response begins with exactly the headers they were worked out from.
    """
    key = (len(response), len(certs_field))
    known = _HEADERS.get(key)
    if known is not None and response.startswith(known[0]):
        return known[1] + response[len(known[0]):] + certs_field
    outer = _contents(response)
    status_end = parser.peek(outer)
    response_bytes = _contents(_contents(outer[status_end:]))
    oid_end = parser.peek(response_bytes)
    contents = _contents(_contents(response_bytes[oid_end:]))
    basic = parser.emit(0, 1, 16, contents + certs_field)  # universal, constructed, SEQUENCE
    response_bytes = parser.emit(0, 1, 16, response_bytes[:oid_end]
                                 + parser.emit(0, 0, 4, basic))  # OCTET STRING
    result: bytes = parser.emit(0, 1, 16, outer[:status_end]
                                + parser.emit(2, 1, 0, response_bytes))  # [0] EXPLICIT
    if len(_HEADERS) >= 4096:
        _HEADERS.clear()
    _HEADERS[key] = (response[:len(response) - len(contents)],
                     result[:len(result) - len(contents) - len(certs_field)])
    return result
