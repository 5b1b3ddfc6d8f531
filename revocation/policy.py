"""THE REVOCATION POLICY: which resident-register event revokes which certificate, and why.

This table is the policy an auditor reads; the code that applies events only looks it up.
It transcribes DOMAIN.md, "Revocation: which event revokes what", with RFC 5280 §5.3.1 reason
codes restricted to 0-6 by the practice statement:

| event type                | card signature | card auth.     | phone signature | phone auth.    |
|---------------------------|----------------|----------------|-----------------|----------------|
| change (a 4-fact differs) | 3              | stays valid    | 3               | stays valid    |
| change (nothing differs)  | stays valid    | stays valid    | stays valid     | stays valid    |
| emigration_keep_card      | 3              | stays valid    | 3               | stays valid    |
| deletion                  | 5              | 5              | 5               | 5              |
| stop_request              | 5              | 5              | 5               | 5              |
| card_lost                 | 6, final       | 6, final       | stays valid     | stays valid    |
| key_compromise            | 1              | 1              | 1               | 1              |
| record_error              | 3              | 3 if its own   | 3               | 3 if its own   |
|                           |                | contents wrong |                 | contents wrong |
| destroyed_before_delivery | 0              | 0              | 0               | 0              |
| phone_lost (device)       | stays valid    | stays valid    | 6, that device  | 6, that device |

Reasons: 0 unspecified, 1 keyCompromise, 3 affiliationChanged, 5 cessationOfOperation,
6 certificateHold (final: never released).

Smartphone columns (issue 18;
the reasons are the README's "Smartphone certificates" decisions):
- card_lost: the phones' pairs stay valid. Their keys are in the phone, not on the lost card;
  whoever finds the card cannot use them, and the resident keeps a working signature while
  the card is replaced. A resident who lost both reports phone_lost as well.
- key_compromise revokes the phones too: whoever held the card signature key could have
  obtained phone pairs in the resident's name (the card key's signature is the issuing proof).
- destroyed_before_delivery: a phone pair issued on a card that never reached the resident
  stands on a proof nobody legitimate made.
- phone_lost: certificateHold, like a lost card, not keyCompromise: the key sits in the phone's
  keystore behind the resident's password, and nothing says it was extracted.

Renewal (superseded, 4) is not an event: `jpki renew` applies it (and moves the phones' link
to the new card certificate without revoking them); `jpki phone issue` supersedes the same
device kind's previous pair. A CA key compromise
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
    IF_NAMED_DEVICE = "if it is the phone the event names"


@dataclass(frozen=True)
class RevocationRule:
    """One row: the scope for each of the four certificate kinds a resident can hold."""

    signature: Scope
    authentication: Scope
    phone_signature: Scope
    phone_authentication: Scope
    reason: Reason
    updates_facts: bool = False
    names_device: bool = False


A, N = Scope.ALWAYS, Scope.NEVER
REVOCATION_POLICY: dict[str, RevocationRule] = {
    # columns: card signature, card authentication, phone signature, phone authentication
    "change": RevocationRule(Scope.IF_FACTS_DIFFER, N, Scope.IF_FACTS_DIFFER, N,
                   Reason.affiliationChanged, updates_facts=True),
    "emigration_keep_card": RevocationRule(A, N, A, N, Reason.affiliationChanged),
    "deletion": RevocationRule(A, A, A, A, Reason.cessationOfOperation),
    "stop_request": RevocationRule(A, A, A, A, Reason.cessationOfOperation),
    "card_lost": RevocationRule(A, A, N, N, Reason.certificateHold),
    "key_compromise": RevocationRule(A, A, A, A, Reason.keyCompromise),
    "record_error": RevocationRule(A, Scope.IF_OWN_CONTENTS_WRONG, A, Scope.IF_OWN_CONTENTS_WRONG,
                         Reason.affiliationChanged),
    "destroyed_before_delivery": RevocationRule(A, A, A, A, Reason.unspecified),
    "phone_lost": RevocationRule(N, N, Scope.IF_NAMED_DEVICE, Scope.IF_NAMED_DEVICE,
                       Reason.certificateHold, names_device=True),
}

EVENT_TYPES = tuple(REVOCATION_POLICY)
