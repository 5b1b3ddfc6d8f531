"""The leaf certificate profile, as observed on real cards (DOMAIN.md, "Certificate profile").

Extensions are added in the order the real cards carry them, and cryptography keeps that order:
AKI (key id + issuer DN + CA serial), keyUsage (critical), subjectAltName (signature only),
issuerAltName, cRLDistributionPoints (directory name and HTTP URI of the municipality's
partition), certificatePolicies (critical on the signature certificate), authorityInfoAccess
(design: the OCSP URL, which real cards do not carry) and subjectKeyIdentifier last.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import core
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID, ObjectIdentifier

from ca import lint
from ca.authority import CAGeneration
from ca.keybackend import PrivateKey, PublicKey
from ca.kinds import CertKind
from ca.urls import OCSP_PATH, crl_partition_path
from registry.facts import Facts, encode_dob
from registry.municipalities import Municipality

SAN_NAME = ObjectIdentifier("1.2.392.200149.8.5.5.1")
SAN_DOB = ObjectIdentifier("1.2.392.200149.8.5.5.4")
SAN_SEX = ObjectIdentifier("1.2.392.200149.8.5.5.3")
SAN_ADDRESS = ObjectIdentifier("1.2.392.200149.8.5.5.5")
SAN_NAME_FLAGS = ObjectIdentifier("1.2.392.200149.8.5.5.2")
SAN_ADDRESS_FLAGS = ObjectIdentifier("1.2.392.200149.8.5.5.6")
ISSUER_ALT_ORG = "公的個人認証サービス"


@dataclass(frozen=True)
class LeafRequest:
    kind: CertKind
    public_key: PublicKey  # RSA (today's cards) or P-384 (ca/cardprofile.py, `next`)
    municipality: Municipality
    not_before: datetime
    not_after: datetime
    facts: Facts | None  # signature certificates only
    # Policy OIDs after the kind's own: a smartphone certificate's mark (ca/phone.py).
    extra_policies: tuple[ObjectIdentifier, ...] = ()
    # The CRL partition fixed at issuance (registry/shards.py); None: the municipality code.
    partition: str | None = None


def issuance_id(municipality_code: str) -> str:
    """The opaque CN: the 5-digit local-government code then 15 random digits; no personal data."""
    return f"{municipality_code}{secrets.randbelow(10**15):015d}"


def leaf_subject(kind: CertKind, municipality: Municipality, cn: str) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, "JP")]
    if kind is CertKind.SIGNATURE:
        attributes += [
            x509.NameAttribute(NameOID.LOCALITY_NAME, municipality.prefecture_roman),
            x509.NameAttribute(NameOID.LOCALITY_NAME, municipality.name_roman),
        ]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attributes)


def crl_directory_name(kind: CertKind, municipality: Municipality,
                       partition: str | None = None) -> x509.Name:
    """The directory name of the municipality's partition, as on real cards.

    A shard of a large municipality (registry/shards.py) gets its own name: CN ends with the
    shard number as its URL does. The names of two shards must differ, or a relying party
    matching cRLDistributionPoints against IssuingDistributionPoint by any name (RFC 5280
    §6.3.3 (b)(2)(i)) would take one shard's CRL for another's.
    """
    common_name = municipality.name_roman
    if partition is not None and partition != municipality.code:
        common_name += partition.removeprefix(municipality.code)
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "JPKI"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind.ca_unit),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "CRL Distribution Points"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, municipality.prefecture_roman),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def distribution_point_names(kind: CertKind, generation: int, municipality: Municipality,
                             base_url: str, partition: str | None = None
                             ) -> list[x509.GeneralName]:
    """The partition's names; the CRL's IssuingDistributionPoint must carry the same ones.

    `partition` is the certificate's CRL partition fixed at issuance: the municipality code,
    or for a shard of a large municipality the code and shard number (registry/shards.py).
    """
    return [
        x509.DirectoryName(crl_directory_name(kind, municipality, partition)),
        x509.UniformResourceIdentifier(
            base_url + crl_partition_path(kind, generation, partition or municipality.code)
        ),
    ]


def _utf8(value: str) -> bytes:
    der: bytes = core.UTF8String(value).dump()
    return der


def signature_san(facts: Facts) -> x509.SubjectAlternativeName:
    """Six otherNames, each [0] EXPLICIT UTF8String, in the order of the real cards."""
    name = facts.certified_name()
    address = facts.certified_address()
    return x509.SubjectAlternativeName(
        [
            x509.OtherName(SAN_NAME, _utf8(name.text)),
            x509.OtherName(SAN_DOB, _utf8(encode_dob(facts.dob))),
            x509.OtherName(SAN_SEX, _utf8(facts.sex.digit)),
            x509.OtherName(SAN_ADDRESS, _utf8(address.text)),
            x509.OtherName(SAN_NAME_FLAGS, _utf8(name.flags)),
            x509.OtherName(SAN_ADDRESS_FLAGS, _utf8(address.flags)),
        ]
    )


def build_leaf(request: LeafRequest, ca: CAGeneration, ca_key: PrivateKey, *, serial: int,
               cn: str, base_url: str, cps_uri: str) -> x509.Certificate:
    kind = request.kind
    signature = kind is CertKind.SIGNATURE
    issuer_name = ca.certificate.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf_subject(kind, request.municipality, cn))
        .issuer_name(issuer_name)
        .public_key(request.public_key)
        .serial_number(serial)
        .not_valid_before(request.not_before)
        .not_valid_after(request.not_after)
        .add_extension(
            x509.AuthorityKeyIdentifier(
                key_identifier=bytes.fromhex(ca.key_id),
                authority_cert_issuer=[x509.DirectoryName(issuer_name)],
                authority_cert_serial_number=ca.serial,
            ),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=signature, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    )
    if signature:
        if request.facts is None:
            raise ValueError("a signature certificate needs the 4 facts")
        builder = builder.add_extension(signature_san(request.facts), critical=False)
    builder = (
        builder.add_extension(
            x509.IssuerAlternativeName(
                [
                    x509.DirectoryName(
                        x509.Name(
                            [
                                x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ISSUER_ALT_ORG),
                            ]
                        )
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=distribution_point_names(
                            kind, ca.generation, request.municipality, base_url,
                            request.partition,
                        ),
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.CertificatePolicies(
                [x509.PolicyInformation(kind.policy_oid, [cps_uri])]
                + [x509.PolicyInformation(oid, None) for oid in request.extra_policies]),
            critical=signature,
        )
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(base_url + OCSP_PATH),
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(request.public_key),
                       critical=False)
    )
    return lint.sign(builder, ca_key, f"{kind.value} certificate")
