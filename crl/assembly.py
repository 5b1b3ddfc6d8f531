"""Signed CRLs assembled with asn1crypto from already-encoded entries.

Entries are encoded once (by pyca, crl.builder.EntryEncoder) and cached; a CRL's
revokedCertificates (RFC 5280 §5.1.2.6) is then the concatenation of its entries' encodings,
carried into the TBSCertList as opaque contents. Every revoked certificate of a CA belongs to
exactly one partition, so the full CRL's list is the concatenation of the partitions' lists.
asn1crypto encodes the outer structure; no ASN.1 is written by hand.
"""

from __future__ import annotations

from datetime import datetime

from asn1crypto import algos, core
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509

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


def signed_crl(ca: CAGeneration, key: PrivateKey, *, number: int, this_update: datetime,
               next_update: datetime, contents: list[bytes],
               idp: x509.IssuingDistributionPoint | None = None) -> bytes:
    """A v2 CRL signed with the CA key's own scheme (ca/keyalgorithm.py):
    sha256WithRSAEncryption (NULL parameters, RFC 4055 §5) for an RSA generation,
    ecdsa-with-SHA384 (parameters absent, RFC 5758 §3.2) for a P-384 one.

    Extensions, as `builder.build` makes them: authorityKeyIdentifier by key id (§5.2.1,
    MUST; generations share the DN), cRLNumber (§5.2.3, MUST), and for a partition the
    issuingDistributionPoint (§5.2.5, MUST be critical).
    """
    scheme = KeyAlgorithm.of(key)
    algorithm = algos.SignedDigestAlgorithm(
        {"algorithm": scheme.asn1_signature_algorithm, "parameters": core.Null()}
        if scheme.family == "rsa" else {"algorithm": scheme.asn1_signature_algorithm})
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
    if idp is not None:
        tbs["crl_extensions"].append({  # type: ignore[attr-defined]  # the list built above
            "extn_id": "issuing_distribution_point", "critical": True,
            "extn_value": asn1_crl.IssuingDistributionPoint.load(idp.public_bytes()),
        })
    joined = b"".join(contents)
    if joined:  # §5.1.2.6: absent when there are no revoked certificates
        tbs["revoked_certificates"] = asn1_crl.RevokedCertificates(contents=joined)
    tbs_cert_list = asn1_crl.TbsCertList(tbs)
    signature = scheme.sign(key, tbs_cert_list.dump())
    der: bytes = asn1_crl.CertificateList({
        "tbs_cert_list": tbs_cert_list,
        "signature_algorithm": algorithm,
        "signature": signature,
    }).dump()
    return der
