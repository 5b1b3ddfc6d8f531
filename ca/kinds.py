"""The two certificate kinds and what the profile fixes for each (DOMAIN.md, "profile")."""

from __future__ import annotations

from enum import StrEnum

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier


class CertKind(StrEnum):
    SIGNATURE = "signature"
    AUTHENTICATION = "authentication"

    @property
    def short(self) -> str:
        """The token used in URLs and file names."""
        return "sign" if self is CertKind.SIGNATURE else "auth"

    @classmethod
    def from_short(cls, token: str) -> CertKind:
        for kind in cls:
            if token in (kind.short, kind.value):
                return kind
        raise ValueError(f"unknown certificate kind {token!r}")

    @property
    def ca_unit(self) -> str:
        if self is CertKind.SIGNATURE:
            return "JPKI for digital signature"
        return "JPKI for user authentication"

    @property
    def policy_oid(self) -> ObjectIdentifier:
        if self is CertKind.SIGNATURE:
            return ObjectIdentifier("1.2.392.200149.8.5.1.1.20")
        return ObjectIdentifier("1.2.392.200149.8.5.1.3.30")


AGENCY_UNIT = "Japan Agency for Local Authority Information Systems"


def ca_name(kind: CertKind) -> x509.Name:
    """Subject = issuer of the self-signed CA; every generation shares it (pick CAs by key)."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "JPKI"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind.ca_unit),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, AGENCY_UNIT),
        ]
    )
