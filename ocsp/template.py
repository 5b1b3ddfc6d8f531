"""Templates of pyca's own encoding, for ocsp/builder.py only: only the signature is new.

The builder decides when a template may be used (its key, the signature algorithms it owns);
this module cuts an answer into a template and renders one.

Why: on the live (nonce) path the signing threads hand the GIL back and forth with the event
loop after every RSA signature, and whatever they do while holding it stalls every connection.
pyca's builder holds it ~30 µs per answer to encode, plus the Python around it; with that
removed the live path measured 0.95-1.0 of the raw sign rate instead of 0.73 (bench-ocsp,
interleaved runs). A template holds it for a few µs.

How: for one signer, status, CertID length and nonce length, every answer pyca would build
differs only in the contents of the CertID, of three fixed-length times (producedAt,
thisUpdate, nextUpdate: always `YYYYMMDDHHMMSSZ`, whole seconds) and of the nonce, and then in
the signature over tbsResponseData (always the modulus length for RSA). No length and no header
changes, so a handful of templates (good and unknown, per signer and hash algorithm) serve
every certificate; a revoked one has its own (its revocation time is in the answer). The
first answer of each kind is built by pyca (and served); its bytes are cut around those
fields; later answers write the new values into the same places, sign the new
tbsResponseData with the same key, padding and hash that pyca's builder uses, and put it back
together. Nothing is encoded
here: every byte outside those fields is pyca's, and an RSA PKCS#1 v1.5 signature is
deterministic, so the result is byte for byte what pyca would have built
(tests/test_ocsp_template.py checks exactly that). Any doubt while cutting (a field found
other than exactly where expected) means no template, and pyca builds every such answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

from asn1crypto import ocsp as asn1_ocsp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_TIME_TAG = b"\x18\x0f"  # GeneralizedTime, 15 octets: YYYYMMDDHHMMSSZ
_PADDING = padding.PKCS1v15()
_HASH = hashes.SHA256()
# The only signature algorithm a template is cut for: sha256WithRSAEncryption (RFC 4055 §5,
# parameters NULL), deterministic and of the modulus' length. pyca's bytes must say exactly
# this, else no template (an ECDSA signature is neither deterministic nor of fixed length).
SHA256_WITH_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")


@lru_cache(maxsize=4096)
def generalized_time(seconds: int) -> bytes:
    """The contents of a whole-second GeneralizedTime, as pyca encodes it (RFC 5280 §4.1.2.5.2)."""
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(seconds)).encode("ascii")


def _nonce_header(length: int) -> bytes:
    """The inner OCTET STRING's header of an RFC 9654 nonce of 1..128 octets."""
    return b"\x04" + (bytes([length]) if length < 128 else b"\x81" + bytes([length]))


@dataclass(frozen=True, slots=True)
class ResponseTemplate:
    """A signed response cut around its variable fields (offsets are into tbsResponseData)."""

    head: bytes  # every header up to tbsResponseData
    tbs: bytes  # tbsResponseData as pyca encoded it
    middle: bytes  # signatureAlgorithm and the BIT STRING's header, up to the signature
    tail: bytes  # after the signature: the `certs` field
    cert_id_at: int  # the SingleResponse's CertID
    cert_id_length: int
    now_at: tuple[int, int]  # producedAt, thisUpdate: both "now" (pyca's own stamp may differ)
    next_at: int  # nextUpdate
    nonce_length: int  # 0: no nonce; else it ends tbsResponseData
    signature_length: int

    def render(self, key: rsa.RSAPrivateKey, cert_id: bytes, this_update: int,
               next_update: int, nonce: bytes | None,
               produced_at: int | None = None) -> bytes | None:
        """The answer for these values, or None if they do not fit this template.

        producedAt is thisUpdate unless given (a test gives pyca's own stamp).
        """
        if (len(nonce) if nonce is not None else 0) != self.nonce_length \
                or len(cert_id) != self.cert_id_length:
            return None
        this = generalized_time(this_update)
        produced = this if produced_at is None else generalized_time(produced_at)
        nxt = generalized_time(next_update)
        if len(this) != 15 or len(nxt) != 15 or len(produced) != 15:  # past 9999: pyca decides
            return None
        tbs = bytearray(self.tbs)
        tbs[self.cert_id_at:self.cert_id_at + len(cert_id)] = cert_id
        produced_offset, this_offset = self.now_at
        tbs[produced_offset:produced_offset + 15] = produced
        tbs[this_offset:this_offset + 15] = this
        tbs[self.next_at:self.next_at + 15] = nxt
        if nonce is not None:
            tbs[len(tbs) - len(nonce):] = nonce
        tbs_der = bytes(tbs)
        signature = key.sign(tbs_der, _PADDING, _HASH)
        if len(signature) != self.signature_length:
            return None
        return b"".join((self.head, tbs_der, self.middle, signature, self.tail))


def cut(response: bytes, cert_id: bytes, this_update: int, next_update: int,
        nonce: bytes | None) -> ResponseTemplate | None:
    """Cut pyca's answer (signed for these values) into a template; None at any doubt."""
    try:
        basic = asn1_ocsp.OCSPResponse.load(response)["response_bytes"]["response"].parsed
        tbs = basic["tbs_response_data"].dump()
        signature = basic["signature"].native
        produced = basic["tbs_response_data"]["produced_at"].native  # pyca stamps its own
        produced_at = int(produced.timestamp())
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if response.count(tbs) != 1 or response.count(signature) != 1:
        return None
    tbs_start = response.index(tbs)
    tbs_end = tbs_start + len(tbs)
    signature_start = response.index(signature)
    if signature_start < tbs_end or not response[tbs_end:].startswith(SHA256_WITH_RSA):
        return None
    # producedAt comes first in tbsResponseData, then the CertID, thisUpdate and nextUpdate,
    # and the nonce ends it. Each must be found exactly once where expected and nowhere else,
    # and no two may overlap (a revocationTime or a nonce with the same bytes as a time would
    # make the places ambiguous): else no template.
    values = [_TIME_TAG + generalized_time(t) for t in (produced_at, this_update, next_update)]
    found = {value: _all(tbs, value) for value in values}
    expected = {value: values.count(value) for value in values}
    if values[2] in values[:2] or any(len(found[v]) != n for v, n in expected.items()):
        return None
    times = sorted(offset for offsets in found.values() for offset in offsets)
    cert_id_at = _all(tbs, cert_id)
    if len(cert_id_at) != 1:
        return None
    # In this order, each ending before the next begins.
    slots = [(times[0], times[0] + len(values[0])), (cert_id_at[0], cert_id_at[0] + len(cert_id)),
             (times[1], times[1] + len(values[0])), (times[2], times[2] + len(values[0]))]
    if nonce is not None:
        if not tbs.endswith(_nonce_header(len(nonce)) + nonce):
            return None
        slots.append((len(tbs) - len(nonce), len(tbs)))
    if any(end > start for (_, end), (start, _) in zip(slots, slots[1:], strict=False)):
        return None
    return ResponseTemplate(
        head=response[:tbs_start], tbs=tbs, middle=response[tbs_end:signature_start],
        tail=response[signature_start + len(signature):], cert_id_at=cert_id_at[0],
        cert_id_length=len(cert_id), now_at=(times[0] + 2, times[1] + 2), next_at=times[2] + 2,
        nonce_length=len(nonce) if nonce is not None else 0, signature_length=len(signature))


def _all(data: bytes, needle: bytes) -> list[int]:
    """Every offset of `needle` in `data`, overlapping ones included."""
    found, start = [], data.find(needle)
    while start != -1:
        found.append(start)
        start = data.find(needle, start + 1)
    return found
