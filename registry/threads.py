"""Registry work that an HTTP handler awaits, on a few threads with a store of their own each.

A handler that queries the registry on the event loop holds every other connection for the
query's length: a network round trip each on PostgreSQL, a disk read or an fsync on SQLite.
`StoreThreads.run(work)` calls `work(store)` on one of its threads with that thread's own
`Store` (opened on its first call, like the OCSP signing threads' readers, ocsp/status.py), so
the loop serves others meanwhile. Stores are never shared across threads; each opens the way
`Store.open` does (from PostgreSQL's pool, or a connection of its own to the SQLite file).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from registry.store import Store

T = TypeVar("T")


class StoreThreads:
    def __init__(self, open_store: Callable[[], Store], workers: int, name: str) -> None:
        self.open_store = open_store  # e.g. the loop's store's `reopen`
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._local = threading.local()
        self._opened: list[Store] = []
        self._lock = threading.Lock()

    def _store(self) -> Store:
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = self.open_store()
            self._local.store = store
            with self._lock:
                self._opened.append(store)
        return store

    def _call(self, work: Callable[[Store], T]) -> T:
        return work(self._store())

    async def run(self, work: Callable[[Store], T]) -> T:
        """`work(store)` on one of the threads; its exceptions are raised here."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call,
                                                                work)

    def close(self) -> None:
        """Wait for the work under way, then close every thread's store."""
        self._executor.shutdown(wait=True)
        with self._lock:
            opened, self._opened = self._opened, []
        for store in opened:
            store.close()
