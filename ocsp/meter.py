"""The metering hook: every answered CertID is reported here (the fees role fills it in).

DOMAIN.md, "Fees": metering is per check, per verifier, by kind of certificate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from registry.verifiers import Verifier


class Meter(Protocol):
    def record(self, verifier: Verifier | None, kind: str, serial: str, at: datetime) -> None:
        """One answered CertID; kind is `signature`, `authentication` or `unknown`.

        Called on the event loop for every answer, cached ones included: must not block.
        """


class NoMeter:
    """The default until fees are charged (OCSP is free until 2026-01, DOMAIN.md)."""

    def record(self, verifier: Verifier | None, kind: str, serial: str, at: datetime) -> None:
        return None
