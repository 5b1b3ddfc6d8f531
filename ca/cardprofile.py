"""The two card profiles a pair can be issued under: today's cards and the next generation.

`[issuance] profile` picks the default, `--profile` on `jpki issue` / `jpki renew` overrides it
per command. The table is the rule; the code only looks it up (as revocation/policy.py does):

| | `current` (today's cards) | `next` (announced for FY2028) |
|---|---|---|
| issuing CA generation | the current one, RSA or P-384 | the current one; P-384 or refused |
| resident keys | RSA, `ca.key_size` bits | ECDSA P-384 (RFC 5480) |
| certificate signature | the CA key's scheme (keyalgorithm.py) | ecdsa-with-SHA384 (RFC 5758) |
| certificates end on | `issuance.birthdays`-th (5th) birthday | the 10th birthday after issue |
| renewal window (+1 birthday) | last 3 months (92 days) | last year (366 days) |
| default card expiry (a cap) | 10th birthday, 5th under 18 | +1 birthday after renewal in window |
| other caps | card expiry, CA notAfter (validity.py) | the same |

Sources and decisions (README, "The next-generation card profile"): the Digital Agency's plan
for the next card announces certificates valid 10 years instead of 5, ECDSA P-384 with
SHA-384 instead of RSA-2048 with SHA-256, and renewal from one year before expiry instead of
three months. Decided here: "valid 10 years" is read as the 5-year rule scaled (to the 10th
birthday after issue, end of day JST), capped exactly as today; the renewal window plays the
role the 3 months play today (a renewal inside it runs to one birthday more, so renewing early
loses nothing); since the next card and its certificates are renewed together, the default card
expiry moves by the same birthday; residents under 18 keep a 5-year card, which caps their
certificates as today. `current` under a P-384 generation (after an early rotation) is allowed:
the leaves keep RSA keys and the 5-year rule and are signed by the CA with ecdsa-with-SHA384.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ca.keyalgorithm import KeyAlgorithm
from registry.errors import Conflict, InvalidInput

ProfileName = Literal["current", "next"]
PROFILES: tuple[ProfileName, ...] = ("current", "next")


@dataclass(frozen=True)
class CardProfile:
    """One column of the module docstring's table."""

    name: ProfileName
    resident_key: KeyAlgorithm | None  # None: RSA of the configured size (ca.key_size)
    birthdays: int | None  # None: `issuance.birthdays`
    renewal_window_days: int
    ca_family: Literal["rsa", "ec"] | None  # the issuing generation's key family; None: any
    renewal_extends_card: bool  # the default card expiry moves with a renewal in the window

    def resident_algorithm(self, rsa_bits: int) -> KeyAlgorithm:
        return self.resident_key or KeyAlgorithm.rsa(rsa_bits)

    def check_ca(self, ca_label: str, ca_algorithm: KeyAlgorithm) -> None:
        """Refuse a CA generation of the wrong key family, naming the remedy."""
        if self.ca_family is not None and ca_algorithm.family != self.ca_family:
            raise Conflict(
                f"the {self.name!r} profile issues under a P-384 CA generation, and the current"
                f" one ({ca_label}) is {ca_algorithm.name}: run `jpki ca rotate --kind ..."
                " --algorithm ecdsa-p384` first, or issue with --profile current",
                field="profile")


CURRENT = CardProfile("current", resident_key=None, birthdays=None, renewal_window_days=92,
                      ca_family=None, renewal_extends_card=False)
NEXT = CardProfile("next", resident_key=KeyAlgorithm.ecdsa_p384(), birthdays=10,
                   renewal_window_days=366, ca_family="ec", renewal_extends_card=True)


def profile(name: str) -> CardProfile:
    if name == "current":
        return CURRENT
    if name == "next":
        return NEXT
    raise InvalidInput(f"unknown profile {name!r}: current or next", field="profile")
