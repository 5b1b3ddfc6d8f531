"""RFC 5280 §5.3.1 reason codes that the practice statement allows (0-6).

certificateHold is terminal here (a hold is never released), so removeFromCRL (8) is never
emitted, and privilegeWithdrawn / aACompromise (9, 10) are not ours to use.
"""

from __future__ import annotations

from enum import IntEnum

from cryptography import x509

from registry.errors import InvalidInput


class Reason(IntEnum):
    unspecified = 0
    keyCompromise = 1
    cACompromise = 2
    affiliationChanged = 3
    superseded = 4
    cessationOfOperation = 5
    certificateHold = 6

    @classmethod
    def parse(cls, text: str) -> Reason:
        """Accept the RFC 5280 name (any case) or the number."""
        token = text.strip()
        if token.isdigit() and int(token) in cls._value2member_map_:
            return cls(int(token))
        for member in cls:
            if member.name.lower() == token.lower():
                return member
        allowed = ", ".join(member.name for member in cls)
        raise InvalidInput(f"{text!r} is not an allowed reason ({allowed})", field="reason")


# The one table from our reason codes to the names the encoders use (RFC 5280 §5.3.1): the
# OCSP revocationReason (RFC 6960 §4.2.1, asn1crypto's CRLReason names) and pyca's
# ReasonFlags, used for OCSP answers and CRL entries alike.
_ASN1_NAMES = {
    Reason.unspecified: "unspecified",
    Reason.keyCompromise: "key_compromise",
    Reason.cACompromise: "ca_compromise",
    Reason.affiliationChanged: "affiliation_changed",
    Reason.superseded: "superseded",
    Reason.cessationOfOperation: "cessation_of_operation",
    Reason.certificateHold: "certificate_hold",
}


def ocsp_reason_name(reason: Reason) -> str:
    """asn1crypto's name of the CRLReason value."""
    return _ASN1_NAMES[reason]


def pyca_reason_flag(reason: Reason) -> x509.ReasonFlags | None:
    """pyca's flag for a reasonCode; None for unspecified, which is expressed by leaving the
    reason out (RFC 5280 §5.3.1: "SHOULD be absent instead of using the unspecified (0)
    reasonCode value")."""
    if reason is Reason.unspecified:
        return None
    return x509.ReasonFlags(reason.name)
