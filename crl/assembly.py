"""The full CRL of a generation, assembled from its partitions' entries with asn1crypto.

Every revoked certificate of a CA belongs to exactly one partition, so the full CRL's
revokedCertificates (RFC 5280 §5.1.2.6) is the concatenation of the partitions' lists: each
partition CRL is built by pyca/cryptography (in parallel), and the already-encoded entry lists
are carried into the full TBSCertList as opaque contents. asn1crypto encodes the outer
structure; no entry is encoded twice and no ASN.1 is written by hand.
"""

from __future__ import annotations

from datetime import datetime

from asn1crypto import algos, core
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from ca.authority import CAGeneration
from ca.keystore import PrivateKey

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


def full_crl(ca: CAGeneration, key: PrivateKey, *, number: int, this_update: datetime,
             next_update: datetime, contents: list[bytes]) -> bytes:
    """A v2 CRL without IssuingDistributionPoint: authorityKeyIdentifier (§5.2.1) and
    cRLNumber (§5.2.3) only, the same profile as the partition CRLs of `builder.build`."""
    algorithm = algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa",
                                             "parameters": core.Null()})
    tbs: dict[str, object] = {
        "version": "v2",
        "signature": algorithm,
        "issuer": asn1_x509.Name.load(ca.certificate.subject.public_bytes()),
        "this_update": _time(this_update),
        "next_update": _time(next_update),
        "crl_extensions": [
            {"extn_id": "authority_key_identifier", "critical": False,
             "extn_value": {"key_identifier": bytes.fromhex(ca.key_id)}},
            {"extn_id": "crl_number", "critical": False, "extn_value": number},
        ],
    }
    joined = b"".join(contents)
    if joined:  # §5.1.2.6: absent when there are no revoked certificates
        tbs["revoked_certificates"] = asn1_crl.RevokedCertificates(contents=joined)
    tbs_cert_list = asn1_crl.TbsCertList(tbs)
    signature = key.sign(tbs_cert_list.dump(), padding.PKCS1v15(), hashes.SHA256())
    return asn1_crl.CertificateList({
        "tbs_cert_list": tbs_cert_list,
        "signature_algorithm": algorithm,
        "signature": signature,
    }).dump()
