"""Background work of the responder, apart from the request path.

- **Freshness** (`catch_up`, once per request before the stack answers): the proof of
  ocsp/watch.py; what other connections committed drops the answers and memoized statuses of
  the serials concerned, re-signed at once in the background; unknown answers are dropped too
  (the serial may just have been issued); verifier credentials and signers are reloaded.
- **In-process revocations** arrive through `registry.notify.hub`, on the responder's loop.
- **Pre-signing** the newest certificates at start-up, **refreshing** answers past their
  refresh point (RFC 5019 §2.2.4), **re-signing** answers of a superseded responder key after
  a rotation (the old answer stays served until its replacement is cached, so no query fails).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from ocsp import metrics
from ocsp.auth import VerifierDirectory
from ocsp.cache import PresignedCache
from ocsp.errors import TryLater
from ocsp.issuers import IssuerIndex
from ocsp.presign import cert_ids_for, newest_serials
from ocsp.presigned import PresignedSource
from ocsp.request import CertID
from ocsp.watch import Changes, RegistryWatch, SharedProof
from registry.changes import LoopFeed
from registry.clock import Clock, epoch
from registry.notify import hub
from registry.store import Store

log = logging.getLogger("jpki.ocsp")


class Refresher:
    def __init__(self, *, store: Store, watch: RegistryWatch, issuers: IssuerIndex,
                 directory: VerifierDirectory, presigned: PresignedSource,
                 cache: PresignedCache, clock: Clock) -> None:
        self.store = store
        self.watch = watch
        self.issuers = issuers
        self.directory = directory
        self.presigned = presigned
        self.cache = cache
        self.clock = clock
        self._background: set[asyncio.Task[Any]] = set()
        self.presigning = False  # start-up pre-signing under way (`presign`)
        presigned.on_stale = self.resign_later
        # Revocations commit on worker threads too (POST /registry/events); the cache and the
        # background tasks belong to the serving loop, so the hub hands changes over to it
        # (call_soon_threadsafe). web.py builds the responder in on_startup, on that loop;
        # only a responder built outside any loop (a synchronous test) is called in place.
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self._unsubscribe = hub.subscribe(self._on_change, loop)
        issuers.reload_if_changed()
        # PostgreSQL: the proof is a network round trip, shared, and awaited on the loop.
        self.shared = (SharedProof(watch, LoopFeed(store.url), self.apply)
                       if store.dialect == "postgresql" else None)

    # -- freshness -------------------------------------------------------------------------
    def catch_up(self) -> None:
        """Once per request: one PRAGMA when nothing changed elsewhere (ocsp/watch.py)."""
        changes = self.watch.poll()
        if changes is not None:
            self.apply(changes)

    async def catch_up_shared(self) -> None:
        """Once per request with a registry across the network: the shared, asynchronous
        proof (ocsp/watch.py `SharedProof`); plain `catch_up` otherwise."""
        if self.shared is None:
            self.catch_up()
        else:
            await self.shared.prove()

    def apply(self, changes: Changes) -> None:
        """What another connection committed: answers and memoized statuses to drop."""
        self.cache.drop_unknown()
        if changes.serials:
            self._invalidate(changes.serials)
        self.directory.reload()
        if self.issuers.reload_if_changed():
            log.info("OCSP issuers or signers changed")
            self.spawn(self.resign_for_new_signers())

    def _on_change(self, serial: str, status: str) -> None:
        """In-process revocations (registry.notify.hub), on this responder's loop: drop at
        once, re-sign in background. The hub schedules it before the committing request's
        answer, so whoever was told "revoked" finds the cached answer gone."""
        self._invalidate((serial,))

    def _invalidate(self, serials: tuple[str, ...]) -> None:
        dropped = self.cache.drop_serials(serials)
        if dropped:
            metrics.INVALIDATIONS.inc(len(dropped))
            log.info("OCSP cache: dropped %d answers for serials %s", len(dropped),
                     ",".join(serials))
        for cached in dropped:
            self.resign_later(cached.cert_id)

    def reload(self) -> None:
        """SIGHUP: re-read issuers, signers and verifiers even if the registry looks unchanged
        (e.g. a key replaced on the token behind the registry's back)."""
        self.issuers.forget()
        self.directory.reload()
        self.issuers.reload_if_changed()
        self.spawn(self.resign_for_new_signers())

    # -- signing ahead and again -----------------------------------------------------------
    def resign_later(self, cert_id: CertID) -> None:
        self.spawn(self.resign(cert_id))

    async def resign(self, cert_id: CertID) -> None:
        """Sign this CertID's answer again with the generation's current signer."""
        current = self.issuers.find(cert_id.hash_algorithm, cert_id.name_hash, cert_id.key_hash)
        if current is not None:
            await self.presigned.refill(cert_id, current)

    async def presign(self, limit: int, algorithms: tuple[str, ...]) -> int:
        """Sign ahead of time the answers verifiers will ask for (newest certificates first).

        The registry read runs on a thread (ocsp/presign.py): at 10 M rows it took seconds,
        during which the loop answered nothing. `presigning` says it is still under way."""
        self.presigning = True
        try:
            generations = [g for g in self.issuers.issuers if g.signer is not None]
            newest = await asyncio.to_thread(newest_serials, self.store,
                                             [g.ca.id for g in generations], limit)
            count = 0
            for generation in generations:
                for cert_id in cert_ids_for(generation, algorithms, newest[generation.ca.id]):
                    if self.cache.get(cert_id.der) is not None:
                        continue
                    try:
                        await self.presigned.refill(cert_id, generation)
                    except TryLater:
                        await asyncio.sleep(0.05)
                    count += 1
            return count
        finally:
            self.presigning = False

    async def resign_for_new_signers(self) -> int:
        """After a responder key rotation: replace answers signed by a superseded key.

        The old answers stay valid (and served) until their replacement is cached, so no
        query fails during a rotation; answers of a generation that left the index (retired)
        are dropped.
        """
        outdated: list[CertID] = []
        for cached in self.cache.answers():
            cert_id = cached.cert_id
            current = self.issuers.find(cert_id.hash_algorithm, cert_id.name_hash,
                                        cert_id.key_hash)
            if current is None:
                self.cache.drop_serials([cert_id.serial_hex])
            elif current.signer is not None and (cached.generation.signer is None
                                                 or cached.generation.signer.serial
                                                 != current.signer.serial):
                outdated.append(cert_id)
        for cert_id in outdated:
            await self.resign(cert_id)
        if outdated:
            log.info("OCSP cache: re-signed %d answers with the new responder keys",
                     len(outdated))
        return len(outdated)

    async def refresh_stale(self) -> int:
        """Re-sign answers past their refresh point (RFC 5019 §2.2.4: fresh before nextUpdate)."""
        now = epoch(self.clock())
        stale = [c.cert_id for c in self.cache.answers() if now >= c.refresh_at]
        for cert_id in stale:
            await self.resign(cert_id)
        return len(stale)

    def oldest_age(self) -> int:
        """Age of the oldest cached answer (the response-age gauge, updated periodically)."""
        now = epoch(self.clock())
        return max((now - c.this_update for c in self.cache.answers()), default=0)

    async def run_periodically(self, interval_seconds: float) -> None:
        """Signer expiry gauges, a freshness check when idle, refresh, cache gauges."""
        while True:
            await asyncio.sleep(interval_seconds)
            now = self.clock()
            for generation in self.issuers.issuers:
                if generation.signer is not None:
                    metrics.SIGNER_SECONDS_LEFT.labels(generation.ca.label).set(
                        (generation.signer.not_after - now).total_seconds())
            await self.catch_up_shared()
            await self.refresh_stale()
            metrics.RESPONSE_AGE.set(self.oldest_age())
            metrics.CACHED.set(len(self.cache))

    # -- tasks -----------------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("OCSP background signing failed: %s", task.exception())

    def close(self) -> None:
        self._unsubscribe()
        if self.shared is not None:
            self.shared.close()
        for task in list(self._background):
            task.cancel()
