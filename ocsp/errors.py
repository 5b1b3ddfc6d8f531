"""OCSP error statuses (RFC 6960 §4.2.1) as domain exceptions, and their pre-encoded answers.

An error answer carries no responseBytes and is unsigned (§2.3), so each one is a constant.
"""

from __future__ import annotations

from asn1crypto import ocsp


class OCSPError(Exception):
    """A request the responder answers with an error status; the message is for the log only."""

    status = "internal_error"

    @property
    def der(self) -> bytes:
        return ERROR_RESPONSES[self.status]


class MalformedRequest(OCSPError):
    status = "malformed_request"


class InternalError(OCSPError):
    status = "internal_error"


class TryLater(OCSPError):
    status = "try_later"


class Unauthorized(OCSPError):
    """RFC 6960 §2.3: the client may not query, or this responder is not authoritative."""

    status = "unauthorized"


ERROR_RESPONSES: dict[str, bytes] = {
    name: ocsp.OCSPResponse({"response_status": name}).dump()
    for name in ("malformed_request", "internal_error", "try_later", "sign_required",
                 "unauthorized")
}
