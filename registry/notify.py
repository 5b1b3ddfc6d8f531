"""In-process notification of certificate state changes.

Caches (the OCSP responder's pre-signed answers) subscribe and drop an entry the moment a serial
changes state. Changes made by another process (the CLI) reach the daemon through the
`state_changes` table: `StateWatcher.poll()` reads rows after the last sequence number it saw.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("jpki.notify")

Listener = Callable[[str, str], None]


class StateChanges:
    """Fan-out of "serial X changed state" to subscribers."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def publish(self, serial: str, status: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(serial, status)
            except Exception:  # a broken subscriber must not undo a committed revocation
                log.exception("state-change listener failed for serial %s", serial)


# The process-wide hub: the registry publishes here after each committed change.
hub = StateChanges()
