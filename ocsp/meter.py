"""The metering hook: every answered CertID is reported here, and awaited before the answer
leaves (DOMAIN.md, "Fees": metering is per check, per verifier, by kind of certificate).

The fees role provides the durable implementation (`fees.meter.OCSPMeter`): the response to an
identified verifier is sent only once its ledger rows are committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import Protocol

from registry.verifiers import Verifier


class CheckMeter(Protocol):
    def record(self, verifier: Verifier | None, answered: Sequence[tuple[str, str]],
               at: datetime, *, status_confirmation: bool = False) -> Awaitable[None] | None:
        """The answered CertIDs as (kind, serial); kind is `signature`, `authentication` or
        `unknown`. Called for every answer, cached ones included. Returns what to await
        before the answer may leave (the checks' durability), or None when nothing was
        recorded (an anonymous answer).

        A plain call, not a coroutine: on the hot path of every metered answer, each
        coroutine level is one more frame to create, suspend and resume."""


class NoMeter:
    """Nothing is recorded (tests of the responder alone)."""

    def record(self, verifier: Verifier | None, answered: Sequence[tuple[str, str]],
               at: datetime, *, status_confirmation: bool = False) -> Awaitable[None] | None:
        return None
