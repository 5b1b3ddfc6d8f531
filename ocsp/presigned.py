"""The pre-signed source: nonce-less single-CertID answers (RFC 5019 §2.1), signed ahead of
time or on the first miss, served until their refresh point (then re-signed behind a still
valid answer) and never past nextUpdate.

Concurrent misses for one CertID share one signature (single flight), but only while no
invalidation happened since it began: its status may predate a revocation, and the next query
must see the revocation. Everything else goes to the live source.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ocsp import metrics
from ocsp.cache import CachedAnswer, PresignedCache
from ocsp.issuers import ServedGeneration
from ocsp.live import LiveSource
from ocsp.request import CertID
from ocsp.source import Query, Reply


def _nothing(cert_id: CertID) -> None:
    return None


class PresignedSource:
    def __init__(self, live: LiveSource, cache: PresignedCache, refresh_fraction: float) -> None:
        self.live = live
        self.cache = cache
        self.refresh_fraction = refresh_fraction
        # Called with a stale answer's CertID: the Refresher re-signs it in the background.
        self.on_stale: Callable[[CertID], None] = _nothing
        self._inflight: dict[bytes, tuple[tuple[int, int], asyncio.Future[CachedAnswer]]] = {}

    async def answer(self, query: Query) -> Reply:
        parsed, generation = query.parsed, query.generation
        assert parsed is not None and generation is not None  # decode and filter come first
        if not parsed.cacheable:
            return await self.live.answer(query)
        cert_id, now = parsed.cert_ids[0], query.now
        cached = self.cache.get(cert_id.der)
        if cached is not None:
            if now < cached.refresh_at:
                metrics.CACHE.inc("hit")
                return _reply(cached, now)
            metrics.CACHE.inc("stale")
            if now < cached.next_update:  # still valid: serve it, re-sign behind it
                self.on_stale(cert_id)
                return _reply(cached, now)
        else:
            metrics.CACHE.inc("miss")
        return _reply(await self.refill(cert_id, generation), now)

    async def refill(self, cert_id: CertID, generation: ServedGeneration) -> CachedAnswer:
        """Sign one nonce-less answer and cache it; concurrent misses share one signature."""
        version = self.cache.version
        pending = self._inflight.get(cert_id.der)
        if pending is not None and pending[0] == version:
            return await asyncio.shield(pending[1])
        future: asyncio.Future[CachedAnswer] = asyncio.get_running_loop().create_future()
        self._inflight[cert_id.der] = (version, future)
        try:
            signed = await self.live.sign(generation, [cert_id])
            status = signed.statuses[0]
            cached = CachedAnswer.make(signed.der, cert_id, generation, status.state,
                                       status.kind, signed.this_update, signed.next_update,
                                       self.refresh_fraction)
            self.cache.put(cached, version)
            future.set_result(cached)
            return cached
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody else must log it
            raise
        finally:
            current = self._inflight.get(cert_id.der)
            if current is not None and current[1] is future:
                del self._inflight[cert_id.der]


def _reply(cached: CachedAnswer, now: int) -> Reply:
    return Reply(cached.der, cached, cached.state, cached.issuer_kind, now, cached.metered)
