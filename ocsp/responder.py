"""The responder: the sources composed in the order a request meets them, and its Refresher.

    web.py -> Responder.answer
           -> Refresher.catch_up        the registry view proven current (ocsp/watch.py)
           -> DecodeSource              bytes -> ParsedRequest
           -> IdentifySource            bearer token or registered request signer
           -> MeteringSource            the fees hook, once the answer is known
           -> IssuerFilter              our issuer? one generation?
           -> PresignedSource           cached answer (nonce-less, one CertID)
           -> LiveSource                signed now on the signing pool

This module only builds that chain; each layer is its own module (ocsp/README.md).
"""

from __future__ import annotations

from httpapi.arrivals import Arrivals
from ocsp.auth import VerifierDirectory
from ocsp.cache import PresignedCache
from ocsp.decode import DecodeSource
from ocsp.filter import IssuerFilter
from ocsp.identify import IdentifySource
from ocsp.issuers import IssuerIndex
from ocsp.live import AnswerPolicy, LiveSource
from ocsp.meter import CheckMeter
from ocsp.metering import MeteringSource
from ocsp.presigned import PresignedSource
from ocsp.refresher import Refresher
from ocsp.signing import SigningPool
from ocsp.source import Query, Reply, Source
from ocsp.status import StatusReader
from ocsp.watch import RegistryWatch
from registry.clock import Clock, epoch_reader
from registry.store import Store

__all__ = ["AnswerPolicy", "Reply", "Responder"]


class Responder:
    def __init__(self, *, store: Store, issuers: IssuerIndex, cache: PresignedCache,
                 pool: SigningPool, directory: VerifierDirectory, meter: CheckMeter,
                 clock: Clock, policy: AnswerPolicy, arrivals: Arrivals | None = None) -> None:
        self.store = store
        self.issuers = issuers
        self.cache = cache
        self.pool = pool
        self.directory = directory
        self.live = LiveSource(pool, cache, StatusReader(store.reader), clock,
                               policy.response_validity)
        self.presigned = PresignedSource(self.live, cache, policy.refresh_fraction)
        self.stack: Source = DecodeSource(
            IdentifySource(
                MeteringSource(
                    IssuerFilter(self.presigned, issuers),
                    meter),
                directory),
            policy.algorithms, cache.limit)
        # On PostgreSQL the watch only holds the proof's state; the proof itself has a
        # session of its own on the loop (ocsp/watch.py `SharedProof`).
        self.refresher = Refresher(store=store, watch=RegistryWatch(store.conn, arrivals),
                                   issuers=issuers, directory=directory,
                                   presigned=self.presigned, cache=cache, clock=clock)
        self._epoch_now = epoch_reader(clock)

    async def answer(self, body: bytes, authorization: str | None, *,
                     status_confirmation: bool = False) -> Reply:
        await self.refresher.catch_up_shared()
        return await self.stack.answer(Query(body, authorization, status_confirmation,
                                             self._epoch_now()))

    def reload(self) -> None:
        """SIGHUP (jpki/daemon.py)."""
        self.refresher.reload()

    async def close(self) -> None:
        self.refresher.close()
        self.pool.close()
        self.directory.close()
