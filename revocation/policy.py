"""THE REVOCATION POLICY: which resident-register event revokes which certificate, and why.

This table is the policy an auditor reads; the code that applies events only looks it up.
It transcribes DOMAIN.md, "Revocation: which event revokes what", with RFC 5280 §5.3.1 reason
codes restricted to 0-6 by the practice statement:

| event type                | signature certificate        | authentication certificate     |
|---------------------------|------------------------------|--------------------------------|
| change (a 4-fact differs) | affiliationChanged (3)       | stays valid                    |
| change (nothing differs)  | stays valid                  | stays valid                    |
| emigration_keep_card      | affiliationChanged (3)       | stays valid                    |
| deletion                  | cessationOfOperation (5)     | cessationOfOperation (5)       |
| stop_request              | cessationOfOperation (5)     | cessationOfOperation (5)       |
| card_lost                 | certificateHold (6), final   | certificateHold (6), final     |
| key_compromise            | keyCompromise (1)            | keyCompromise (1)              |
| record_error              | affiliationChanged (3)       | affiliationChanged (3) only if |
|                           |                              | its own contents are wrong     |
| destroyed_before_delivery | unspecified (0)              | unspecified (0)                |

Renewal (superseded, 4) is not an event: `jpki renew` applies it. A CA key compromise
(cACompromise, 2) is an operator action on a whole generation, not a resident event.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from registry.reasons import Reason


class Scope(Enum):
    """When a certificate of one kind is revoked for an event."""

    ALWAYS = "always"
    NEVER = "never"
    IF_FACTS_DIFFER = "if one of the 4 facts differs"
    IF_OWN_CONTENTS_WRONG = "if its own contents are wrong"


@dataclass(frozen=True)
class RevocationRule:
    signature: Scope
    authentication: Scope
    reason: Reason
    updates_facts: bool = False


REVOCATION_POLICY: dict[str, RevocationRule] = {
    "change": RevocationRule(Scope.IF_FACTS_DIFFER, Scope.NEVER, Reason.affiliationChanged,
                             updates_facts=True),
    "emigration_keep_card": RevocationRule(Scope.ALWAYS, Scope.NEVER, Reason.affiliationChanged),
    "deletion": RevocationRule(Scope.ALWAYS, Scope.ALWAYS, Reason.cessationOfOperation),
    "stop_request": RevocationRule(Scope.ALWAYS, Scope.ALWAYS, Reason.cessationOfOperation),
    "card_lost": RevocationRule(Scope.ALWAYS, Scope.ALWAYS, Reason.certificateHold),
    "key_compromise": RevocationRule(Scope.ALWAYS, Scope.ALWAYS, Reason.keyCompromise),
    "record_error": RevocationRule(Scope.ALWAYS, Scope.IF_OWN_CONTENTS_WRONG,
                                   Reason.affiliationChanged),
    "destroyed_before_delivery": RevocationRule(Scope.ALWAYS, Scope.ALWAYS, Reason.unspecified),
}

EVENT_TYPES = tuple(REVOCATION_POLICY)
