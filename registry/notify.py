"""In-process notification of certificate state changes.

Caches (the OCSP responder's pre-signed answers) subscribe and drop an entry the moment a serial
changes state. Revocations may commit on a worker thread (the daemon's events writer); a
subscriber that lives on an event loop passes that loop and is called on the loop's thread, in
order, before any response the committing request sends. Changes made by another process (the
CLI) reach the daemon through the `state_changes` table instead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

log = logging.getLogger("jpki.notify")

Listener = Callable[[str, str], None]


class StateChanges:
    """Fan-out of "serial X changed state" to subscribers."""

    def __init__(self) -> None:
        self._listeners: list[tuple[Listener, asyncio.AbstractEventLoop | None]] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener, loop: asyncio.AbstractEventLoop | None = None
                  ) -> Callable[[], None]:
        entry = (listener, loop)
        with self._lock:
            self._listeners.append(entry)

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._listeners:
                    self._listeners.remove(entry)

        return unsubscribe

    def publish(self, serial: str, status: str) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener, loop in listeners:
            if loop is not None and not loop.is_closed() and not _on_loop(loop):
                loop.call_soon_threadsafe(_safe_call, listener, serial, status)
            else:
                _safe_call(listener, serial, status)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _safe_call(listener: Listener, serial: str, status: str) -> None:
    try:
        listener(serial, status)
    except Exception:  # a broken subscriber must not undo a committed revocation
        log.exception("state-change listener failed for serial %s", serial)


# The process-wide hub: the registry publishes here after each committed change.
hub = StateChanges()
