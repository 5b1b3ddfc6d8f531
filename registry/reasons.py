"""RFC 5280 §5.3.1 reason codes that the practice statement allows (0-6).

certificateHold is terminal here (a hold is never released), so removeFromCRL (8) is never
emitted, and privilegeWithdrawn / aACompromise (9, 10) are not ours to use.
"""

from __future__ import annotations

from enum import IntEnum

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
