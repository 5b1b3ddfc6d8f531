"""Decoding an OCSPRequest (RFC 6960 §4.1) into what the sources need, or MalformedRequest.

asn1crypto parses requests with several CertIDs, which pyca refuses (PEERS.md); `strict=True`
refuses trailing garbage. Every field is read here, inside one try, so that a lazily parsed
field can never raise later, deep inside a source.

A request signature is decoded here but never verified: its cost is chosen by the sender (a
16,384-bit modulus with a 64-bit exponent costs 5.7 ms, fifteen plain requests), so `auth.py`
first looks the certificate up among the registered signers and checks its key.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from dataclasses import dataclass

from asn1crypto import core, ocsp
from asn1crypto import parser as asn1_parser
from cryptography import x509 as pyca_x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp as pyca_ocsp

from ocsp.errors import MalformedRequest, Unauthorized

DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
# RFC 6960 §4.1.2 leaves the signature algorithm open; these are the ones auth.py verifies.
SIGNATURE_ALGORITHMS = frozenset({"rsassa_pkcs1v15", "ecdsa"})
MAX_NONCE = 128  # RFC 9654 §2.1: 1..128 octets; responders reject anything else
MAX_CERT_IDS = 64
# AlgorithmIdentifier DER with NULL parameters, as pyca writes them in a CertID.
CANONICAL_ALGORITHMS = {
    "sha1": bytes.fromhex("300906052b0e03021a0500"),
    "sha256": bytes.fromhex("300d06096086480165030402010500"),
}


@dataclass(frozen=True)
class CertID:
    hash_algorithm: str
    name_hash: bytes
    key_hash: bytes
    serial: int
    der: bytes  # echoed verbatim in the SingleResponse and used as the cache key

    @property
    def canonical(self) -> bool:
        """True when pyca's encoding of this CertID (parameters NULL) equals the request's.

        Then the fast Rust builder can answer it; otherwise asn1crypto echoes it verbatim.
        """
        prefix = CANONICAL_ALGORITHMS.get(self.hash_algorithm)
        return prefix is not None and self.der[2:2 + len(prefix)] == prefix

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")


@dataclass(frozen=True)
class RequestSignature:
    """A request's optionalSignature (RFC 6960 §4.1.2), decoded and NOT verified.

    Whoever sent it chose the key in `certificate`; auth.py decides whether it is worth a
    verification (a registered signer, a key inside the policy) and verifies off the loop.
    """

    certificate: bytes  # DER of the first of `certs`: the certificate that claims to sign
    algorithm: str  # asn1crypto's signature_algo: one of SIGNATURE_ALGORITHMS
    hash_algorithm: str  # a key of HASHES
    value: bytes
    signed_data: bytes  # the DER of tbsRequest, as received


@dataclass(frozen=True)
class ParsedRequest:
    cert_ids: tuple[CertID, ...]
    nonce: bytes | None  # the extnValue contents (an OCTET STRING), echoed as received
    nonce_value: bytes | None  # the nonce itself (inside that OCTET STRING)
    signature: RequestSignature | None  # a signed request's signature, not yet verified

    @property
    def cacheable(self) -> bool:
        """RFC 5019 §2.1: a one-CertID, nonce-less request may get a pre-signed answer."""
        return self.nonce is None and len(self.cert_ids) == 1


def decode_get_path(raw: str) -> bytes:
    """RFC 5019 §5: the path segment is URL-encoded base64; tolerate missing padding.

    Some clients leave '+' unencoded and some proxies turn it into a space; both are repaired.
    """
    text = urllib.parse.unquote(raw).replace(" ", "+").strip()
    if not text:
        raise MalformedRequest("empty GET request")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.urlsafe_b64decode(text)
        except (binascii.Error, ValueError):
            raise MalformedRequest("GET path is not base64") from None


def _cert_id(request: ocsp.Request, allowed: frozenset[str]) -> CertID:
    req_cert = request["req_cert"]
    algorithm = req_cert["hash_algorithm"]["algorithm"].native
    if algorithm not in allowed:
        raise MalformedRequest(f"CertID hash algorithm {algorithm} is not supported")
    # RFC 5754 §2: parameters absent or NULL. Read now: the CertID is echoed in the answer,
    # where asn1crypto would parse them only while encoding it (an internal error then).
    if req_cert["hash_algorithm"]["parameters"].native is not None:
        raise MalformedRequest("CertID hash algorithm parameters are neither absent nor NULL")
    name_hash = req_cert["issuer_name_hash"].native
    key_hash = req_cert["issuer_key_hash"].native
    size = DIGEST_SIZES[algorithm]
    if len(name_hash) != size or len(key_hash) != size:
        raise MalformedRequest("CertID hash lengths do not match the algorithm")
    serial = req_cert["serial_number"].native
    if serial < 0:
        raise MalformedRequest("negative serial number")
    return CertID(algorithm, name_hash, key_hash, serial, req_cert.dump())


def _nonce(tbs: ocsp.TBSRequest) -> tuple[bytes, bytes] | None:
    extensions = tbs["request_extensions"]
    if not extensions:
        return None
    nonce = None
    for extension in extensions:
        name = extension["extn_id"].native
        if name == "nonce":
            value = extension["extn_value"].parsed  # RFC 9654 §2.1: OCTET STRING (SIZE(1..128))
            inner = value.native
            if not 1 <= len(inner) <= MAX_NONCE:
                raise MalformedRequest(f"nonce of {len(inner)} octets (RFC 9654: 1..128)")
            nonce = bytes(extension["extn_value"].contents), bytes(inner)
        elif extension["critical"].native:
            raise MalformedRequest(f"unsupported critical request extension {name}")
    return nonce


def _signature(request: ocsp.OCSPRequest) -> RequestSignature:
    """A signed request (RFC 6960 §4.1.2): its parts, checked for shape only (no key work).

    The certificate goes through pyca's parser, which reads the structure and keeps the key
    as bytes: a certificate pyca cannot read (a bad version raises InvalidVersion, which is no
    ValueError) is malformed here rather than an internal error later.
    """
    signature = request["optional_signature"]
    certs = signature["certs"]
    if not certs:
        raise Unauthorized("signed request without its signer certificate")
    algorithm = signature["signature_algorithm"]
    kind, hash_algorithm = algorithm.signature_algo, algorithm.hash_algo
    if kind not in SIGNATURE_ALGORITHMS or hash_algorithm not in HASHES:
        raise MalformedRequest(f"unsupported request signature algorithm {kind}/{hash_algorithm}")
    certificate = bytes(certs[0].dump())
    try:
        pyca_x509.load_der_x509_certificate(certificate)
    except pyca_x509.InvalidVersion:
        raise MalformedRequest("request signer certificate has an invalid version") from None
    return RequestSignature(certificate, kind, hash_algorithm,
                            bytes(signature["signature"].native),
                            bytes(request["tbs_request"].dump()))


_CANONICAL: dict[tuple[str, bytes, bytes, int], bytes] = {}


def canonical_cert_id(algorithm: str, name_hash: bytes, key_hash: bytes, serial: int) -> bytes:
    """The CertID DER with NULL parameters (asn1crypto encodes it; memoised, bounded)."""
    key = (algorithm, name_hash, key_hash, serial)
    der = _CANONICAL.get(key)
    if der is None:
        der = ocsp.CertId({
            "hash_algorithm": {"algorithm": algorithm, "parameters": core.Null()},
            "issuer_name_hash": name_hash, "issuer_key_hash": key_hash, "serial_number": serial,
        }).dump()
        if len(_CANONICAL) >= 100_000:
            _CANONICAL.clear()
        _CANONICAL[key] = der
    return der


def cert_id_for(algorithm: str, name_hash: bytes, key_hash: bytes, serial: int) -> CertID:
    """The CertID as pyca and `openssl ocsp` encode it (parameters NULL): the one encoder."""
    return CertID(algorithm, name_hash, key_hash, serial,
                  canonical_cert_id(algorithm, name_hash, key_hash, serial))


def _parse_fast(der: bytes, allowed: frozenset[str]) -> ParsedRequest | None:
    """The common request, decoded by pyca's Rust parser in ~10 µs instead of ~75 µs.

    Only an unsigned request with one canonical CertID and at most a well-formed nonce takes
    this path; anything else (several CertIDs, which pyca refuses, a signature, other
    extensions, any doubt) returns None and goes through `_parse_full`, which decides and explains.
    """
    try:
        request = pyca_ocsp.load_der_ocsp_request(der)
        algorithm = request.hash_algorithm.name
        if algorithm not in allowed or algorithm not in CANONICAL_ALGORITHMS:
            return None
        name_hash, key_hash = request.issuer_name_hash, request.issuer_key_hash
        serial = request.serial_number
        size = DIGEST_SIZES[algorithm]
        if len(name_hash) != size or len(key_hash) != size or serial < 0:
            return None
        nonce_value = nonce = None
        for extension in request.extensions:
            if not isinstance(extension.value, pyca_x509.OCSPNonce):
                return None
            nonce_value = extension.value.nonce
            nonce = extension.value.public_bytes()  # the extnValue contents: OCTET STRING
        if nonce_value is not None and not 1 <= len(nonce_value) <= MAX_NONCE:
            return None
        # pyca does not expose optionalSignature: a signed request has a second element in
        # the outer SEQUENCE. asn1crypto's parser measures the first without decoding it.
        contents = asn1_parser.parse(der, strict=True)[4]
        if asn1_parser.peek(contents) != len(contents):
            return None
    except Exception:  # noqa: BLE001 - any doubt: the full parser gives the verdict
        return None
    cert_id_der = canonical_cert_id(algorithm, name_hash, key_hash, serial)
    if der.count(cert_id_der) != 1:  # the request's CertID is not byte-for-byte canonical
        return None
    return ParsedRequest((CertID(algorithm, name_hash, key_hash, serial, cert_id_der),), nonce,
                         nonce_value, None)


def _parse_full(der: bytes, allowed: frozenset[str]) -> ParsedRequest:
    """Decode and check a DER OCSPRequest; raise MalformedRequest with a loggable reason."""
    try:
        request = ocsp.OCSPRequest.load(der, strict=True)
        tbs = request["tbs_request"]
        if tbs["version"].native not in (None, "v1"):
            raise MalformedRequest("unsupported request version")
        items = tbs["request_list"]
        if len(items) == 0:
            raise MalformedRequest("empty requestList")
        if len(items) > MAX_CERT_IDS:
            raise MalformedRequest(f"more than {MAX_CERT_IDS} CertIDs")
        cert_ids = tuple(_cert_id(item, allowed) for item in items)
        nonce = _nonce(tbs)
        signature = None
        if not isinstance(request["optional_signature"], core.Void):
            signature = _signature(request)
    except (MalformedRequest, Unauthorized):
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        raise MalformedRequest(f"undecodable request: {type(exc).__name__}") from None
    return ParsedRequest(cert_ids, nonce[0] if nonce else None, nonce[1] if nonce else None,
                         signature)


def parse_request(der: bytes, allowed: frozenset[str]) -> ParsedRequest:
    """The one way in: pyca's fast parse for the common request, else the full parse, which
    decides (and explains) every error."""
    return _parse_fast(der, allowed) or _parse_full(der, allowed)
