"""Urgent CRL runs after revocations: which CRLs to re-issue, and when.

DOMAIN.md: a revocation is effective at once; a verifier that relies on CRLs learns of it only
when the CRLs that list it are re-issued. A revocation must be on its partition CRL and on the
full CRL within `crl.urgent_delay_seconds`. Revocations arriving close together (a municipality's
batch of events) share one run: the first one opens a window of a quarter of the delay (at most
15 s); the run starts when the window closes, leaving the rest of the delay for the run itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

# (CA generation id, partition code)
Scope = tuple[int, str]
MAX_WINDOW = 15.0


class UrgentRuns:
    def __init__(self, delay_seconds: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.window = min(delay_seconds / 4, MAX_WINDOW)
        self.monotonic = monotonic
        self._pending: dict[int, set[str]] = {}
        self._opened: float | None = None

    def add(self, scopes: Iterable[Scope]) -> None:
        for ca_id, partition in scopes:
            self._pending.setdefault(ca_id, set()).add(partition)
            if self._opened is None:
                self._opened = self.monotonic()

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def due(self) -> bool:
        return self._opened is not None and self.monotonic() - self._opened >= self.window

    def take(self) -> dict[int, frozenset[str]]:
        """The scopes of the run that starts now, per CA generation; the batch is closed."""
        taken = {ca_id: frozenset(parts) for ca_id, parts in self._pending.items()}
        self._pending, self._opened = {}, None
        return taken

    def retry(self, scopes: dict[int, frozenset[str]]) -> None:
        """A failed run's scopes wait for the next window (a locked key, a full disk)."""
        self.add((ca_id, part) for ca_id, parts in scopes.items() for part in parts)
