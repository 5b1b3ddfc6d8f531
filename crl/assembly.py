"""Signed CRLs assembled with asn1crypto from already-encoded entries.

Entries are encoded once (by pyca, crl.builder.EntryEncoder) and cached; a CRL's
revokedCertificates (RFC 5280 §5.1.2.6) is then the concatenation of its entries' encodings,
carried into the TBSCertList as opaque contents. Every revoked certificate of a CA belongs to
exactly one partition, so the full CRL's list is the concatenation of the partitions' lists.
asn1crypto encodes the outer structure; no ASN.1 is written by hand.

At national scale a CRL is streamed (`write_streamed`): its entries' encodings go from the
registry to the staging file in batches, the lengths of the enclosing SEQUENCEs are worked out
beforehand from the sum of the entries' lengths (DER lengths come first, X.690 §8.1.3), and the
signature covers the tbsCertList hashed as it is written (RFC 5280 §5.1.1.3), then signed as a
digest (Prehashed). Every header is asn1crypto's (`core._dump_header` given the length), every
structure asn1crypto's encoding: the stream only concatenates encodings they made, and the bytes
equal `signed_crl`'s for the same inputs (tests/test_crl_streaming.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from asn1crypto import algos, core
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ca.authority import CAGeneration
from ca.keyalgorithm import KeyAlgorithm
from ca.keybackend import PrivateKey

UTC_TIME_LIMIT = 2050  # RFC 5280 §5.1.2.4: UTCTime through 2049, GeneralizedTime from 2050


def revoked_contents(der: bytes) -> bytes:
    """The encoded entries (contents of revokedCertificates) of a CRL, b'' when it has none."""
    tbs = asn1_crl.CertificateList.load(der)["tbs_cert_list"]
    value = tbs["revoked_certificates"]
    if isinstance(value, asn1_crl.RevokedCertificates):
        return bytes(value.contents or b"")
    return b""


def _time(moment: datetime) -> asn1_x509.Time:
    if moment.year < UTC_TIME_LIMIT:
        return asn1_x509.Time({"utc_time": moment})
    return asn1_x509.Time({"general_time": moment})


_SEQUENCE = 16
_ALGORITHM = algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa", "parameters": core.Null()})


def _signature_algorithm(scheme: KeyAlgorithm) -> algos.SignedDigestAlgorithm:
    """The CA key's own scheme (ca/keyalgorithm.py): sha256WithRSAEncryption with NULL
    parameters (RFC 4055 §5), or ecdsa-with-SHA384 with parameters absent (RFC 5758 §3.2)."""
    if scheme.family == "rsa":
        return _ALGORITHM
    return algos.SignedDigestAlgorithm({"algorithm": scheme.asn1_signature_algorithm})


def _sign_digest(key: PrivateKey, scheme: KeyAlgorithm, digest: bytes) -> bytes:
    """Sign a digest computed as the tbsCertList was written (Prehashed)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(digest, ec.ECDSA(Prehashed(scheme.hash)))
    return key.sign(digest, padding.PKCS1v15(), Prehashed(scheme.hash))


@dataclass(frozen=True)
class Delta:
    """What makes a CRL a delta CRL (RFC 5280 §5.2.4): the number of the complete CRL it
    updates; it carries the same IssuingDistributionPoint as that base."""

    base_number: int


def _tbs_fields(ca: CAGeneration, *, number: int, this_update: datetime, next_update: datetime,
                idp: x509.IssuingDistributionPoint | None, freshest_url: str | None,
                delta: Delta | None) -> dict[str, object]:
    """Every tbsCertList field but revokedCertificates.

    Extensions, as `builder.build` makes them: authorityKeyIdentifier by key id (§5.2.1,
    MUST; generations share the DN), cRLNumber (§5.2.3, MUST), for a partition the
    issuingDistributionPoint (§5.2.5, MUST be critical); for a delta CRL the
    deltaCRLIndicator (§5.2.4, MUST be critical); on a complete CRL that has deltas, the
    freshestCRL pointing at its delta (§5.2.6, MUST be non-critical).
    """
    extensions: list[dict[str, object]] = [
        {"extn_id": "authority_key_identifier", "critical": False,
         "extn_value": {"key_identifier": bytes.fromhex(ca.key_id)}},
        {"extn_id": "crl_number", "critical": False, "extn_value": number},
    ]
    if delta is not None:
        extensions.append({"extn_id": "delta_crl_indicator", "critical": True,
                           "extn_value": delta.base_number})
    if idp is not None:
        extensions.append({
            "extn_id": "issuing_distribution_point", "critical": True,
            "extn_value": asn1_crl.IssuingDistributionPoint.load(idp.public_bytes()),
        })
    if freshest_url is not None:
        extensions.append({
            "extn_id": "freshest_crl", "critical": False,
            "extn_value": asn1_x509.CRLDistributionPoints.load(x509.FreshestCRL([
                x509.DistributionPoint([x509.UniformResourceIdentifier(freshest_url)], None,
                                       None, None)]).public_bytes()),
        })
    return {
        "version": "v2",
        "signature": _signature_algorithm(ca.algorithm),
        "issuer": asn1_x509.Name.load(ca.certificate.subject.public_bytes()),
        "this_update": _time(this_update),
        "next_update": _time(next_update),
        "crl_extensions": extensions,
    }


def signed_crl(ca: CAGeneration, key: PrivateKey, *, number: int, this_update: datetime,
               next_update: datetime, contents: list[bytes],
               idp: x509.IssuingDistributionPoint | None = None,
               freshest_url: str | None = None, delta: Delta | None = None) -> bytes:
    """A v2 CRL signed with sha256WithRSAEncryption (NULL parameters, RFC 4055 §5), assembled
    in memory: the reference that `write_streamed` must equal byte for byte."""
    tbs = _tbs_fields(ca, number=number, this_update=this_update, next_update=next_update,
                      idp=idp, freshest_url=freshest_url, delta=delta)
    joined = b"".join(contents)
    if joined:  # §5.1.2.6: absent when there are no revoked certificates
        tbs["revoked_certificates"] = asn1_crl.RevokedCertificates(contents=joined)
    tbs_cert_list = asn1_crl.TbsCertList(tbs)
    scheme = KeyAlgorithm.of(key)
    signature = scheme.sign(key, tbs_cert_list.dump())
    der: bytes = asn1_crl.CertificateList({
        "tbs_cert_list": tbs_cert_list,
        "signature_algorithm": _signature_algorithm(scheme),
        "signature": signature,
    }).dump()
    return der


class _Length:
    """Stands for contents of a known length, so asn1crypto writes the header (tag and DER
    length, X.690 §8.1.3) of a structure whose contents are still in the registry."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length


def _sequence_header(length: int) -> bytes:
    return bytes(core._dump_header(0, 1, _SEQUENCE, _Length(length)))


@dataclass(frozen=True)
class CRLFrame:
    """A CRL without its entries: the encoded fields before revokedCertificates (version
    through nextUpdate) and after it (crlExtensions), in RFC 5280 §5.1 order."""

    head: bytes
    extensions: bytes

    @classmethod
    def make(cls, ca: CAGeneration, *, number: int, this_update: datetime,
             next_update: datetime, idp: x509.IssuingDistributionPoint | None = None,
             freshest_url: str | None = None, delta: Delta | None = None) -> CRLFrame:
        tbs = asn1_crl.TbsCertList(_tbs_fields(
            ca, number=number, this_update=this_update, next_update=next_update, idp=idp,
            freshest_url=freshest_url, delta=delta))
        head = b"".join(tbs[name].dump() for name in
                        ("version", "signature", "issuer", "this_update", "next_update"))
        extensions = tbs["crl_extensions"].dump()
        if head + extensions != tbs.contents:
            raise RuntimeError("asn1crypto encoded the tbsCertList fields differently alone")
        return cls(head, extensions)


@dataclass(frozen=True)
class Streamed:
    """What was written: the file's size and SHA-256, and where its entries lie in it."""

    size: int
    sha256: str
    entries_offset: int
    entries_length: int


def write_streamed(out: BinaryIO, frame: CRLFrame, key: PrivateKey, entries_length: int,
                   chunks: Iterable[bytes]) -> Streamed:
    """Write a signed CRL to `out` whose entries are `chunks` (concatenated entry encodings,
    `entries_length` bytes in all), holding no more than one chunk at a time.

    The signature (sha256WithRSAEncryption, PKCS #1 v1.5) is as long as the modulus, so every
    length is known before the first byte is written. Every CA key signs a digest: pyca's
    file keys and the PKCS#11 token's alike (ca/pkcs11store.py: CKM_RSA_PKCS over the
    DigestInfo, CKM_ECDSA over the digest), so nothing is read back from `out`.
    """
    revoked = _sequence_header(entries_length) if entries_length else b""
    tbs_length = len(frame.head) + len(revoked) + entries_length + len(frame.extensions)
    tbs_header = _sequence_header(tbs_length)
    scheme = KeyAlgorithm.of(key)
    algorithm = _signature_algorithm(scheme).dump()
    # RSA: as long as the modulus. ECDSA (a P-384 generation): a DER ECDSA-Sig-Value of
    # varying length (RFC 5480 §2.2, its INTEGERs lose leading zeros), so the longest is
    # assumed and the outer header is rewritten once the signature is known (below).
    signature_length = len(core.OctetBitString(
        b"\0" * (((key.key_size + 7) // 8) if scheme.family == "rsa"
                 else _ecdsa_max_length(key.key_size))).dump())
    total = len(tbs_header) + tbs_length + len(algorithm) + signature_length
    outer = _sequence_header(total)
    whole = hashlib.sha256()
    tbs_digest = hashlib.new(scheme.hash.name)  # the scheme's hash: SHA-256 or SHA-384

    def emit(data: bytes, signed: bool = True) -> None:
        out.write(data)
        whole.update(data)
        if signed:
            tbs_digest.update(data)

    emit(outer, signed=False)
    emit(tbs_header)
    emit(frame.head)
    emit(revoked)
    entries_offset = len(outer) + len(tbs_header) + len(frame.head) + len(revoked)
    written = 0
    for chunk in chunks:
        emit(chunk)
        written += len(chunk)
    if written != entries_length:
        raise RuntimeError(f"CRL entries changed while streamed: {written} bytes written,"
                           f" {entries_length} announced")
    emit(frame.extensions)
    signature = _sign_digest(key, scheme, tbs_digest.digest())
    encoded_signature = core.OctetBitString(signature).dump()
    if len(encoded_signature) != signature_length:
        if scheme.family == "rsa":
            raise RuntimeError("the signature is not as long as the modulus")
        return _finish_shorter(out, whole_length=total + len(outer), outer=outer,
                               algorithm=algorithm, encoded_signature=encoded_signature,
                               body_length=len(tbs_header) + tbs_length,
                               entries_offset=entries_offset, entries_length=entries_length)
    emit(algorithm, signed=False)
    emit(encoded_signature, signed=False)
    return Streamed(total + len(outer), whole.hexdigest(), entries_offset, entries_length)


def _ecdsa_max_length(key_bits: int) -> int:
    """The longest DER ECDSA-Sig-Value for a curve of `key_bits`: two INTEGERs of the order's
    size plus a leading zero octet each (X.690 §8.3.2), in a SEQUENCE."""
    integer = (key_bits + 7) // 8 + 1
    body = 2 * len(core.Integer(2 ** (8 * integer - 9)).dump())
    return len(_sequence_header(body)) + body


def _finish_shorter(out: BinaryIO, *, whole_length: int, outer: bytes, algorithm: bytes,
                    encoded_signature: bytes, body_length: int, entries_offset: int,
                    entries_length: int) -> Streamed:
    """An ECDSA signature shorter than the longest: rewrite the outer SEQUENCE header in place
    (the staging file is seekable, crl/publisher.py), then hash the file as written.

    The header's own size stays the same unless the total crosses a DER length boundary
    (X.690 §8.1.3.5), which a few octets do not at any size a CRL has (over 255 octets the
    boundaries are 2^16, 2^24...); that case is refused rather than written wrong.
    """
    total = body_length + len(algorithm) + len(encoded_signature)
    header = _sequence_header(total)
    if len(header) != len(outer):
        raise RuntimeError("the CRL's outer length crosses a DER length boundary")
    out.write(algorithm)
    out.write(encoded_signature)
    out.flush()
    out.seek(0)
    out.write(header)
    out.flush()
    out.seek(0)
    whole = hashlib.sha256()
    size = 0
    while chunk := out.read(1 << 20):
        whole.update(chunk)
        size += len(chunk)
    if size != len(header) + total or size > whole_length:
        raise RuntimeError("the streamed CRL is not as long as its header says")
    return Streamed(size, whole.hexdigest(), entries_offset, entries_length)

