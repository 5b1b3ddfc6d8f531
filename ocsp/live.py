"""The live source: answers signed now, on the signing pool (ocsp/signing.py).

It answers what the pre-signed source cannot (a nonce, RFC 9654; several CertIDs) and signs
the pre-signed source's misses and refreshes (`sign`). One job on the pool reads what the
status memo lacks, encodes and signs: the event loop keeps HTTP and parsing only. The loop
carries every connection, so on the live path it is the critical path, while the signing
threads wait for the GIL between signatures anyway (bench-ocsp: encoding on the loop measured
0.81 of the raw sign rate, on the signing threads 0.90).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from ocsp.builder import AnswerBuilder
from ocsp.cache import PresignedCache
from ocsp.errors import TryLater
from ocsp.issuers import ServedGeneration, Signer
from ocsp.request import CertID
from ocsp.signing import SigningPool
from ocsp.source import Query, Reply
from ocsp.status import Status, StatusReader
from registry.clock import Clock, epoch, epoch_reader


@dataclass(frozen=True)
class AnswerPolicy:
    """How long answers are valid and when a cached one is re-signed (RFC 5019 §2.2.4)."""

    response_validity: timedelta
    refresh_fraction: float
    algorithms: frozenset[str]  # CertID hash algorithms accepted


@dataclass(frozen=True, slots=True)
class Signed:
    """A signed answer and the statuses it states, one per CertID."""

    statuses: list[Status]
    der: bytes
    this_update: int
    next_update: int


class LiveSource:
    def __init__(self, pool: SigningPool, memo: PresignedCache, statuses: StatusReader,
                 clock: Clock, response_validity: timedelta) -> None:
        self.pool = pool
        self.memo = memo  # the status memo lives beside the answers it follows
        self.statuses = statuses
        self.response_validity = int(response_validity.total_seconds())
        self._epoch_now = epoch_reader(clock)
        self.builder = AnswerBuilder()

    async def answer(self, query: Query) -> Reply:
        """Nonce (RFC 9654) or several CertIDs: read every status now and sign now."""
        parsed, generation = query.parsed, query.generation
        assert parsed is not None and generation is not None  # decode and filter come first
        signed = await self.sign(generation, parsed.cert_ids, parsed.nonce, parsed.nonce_value)
        statuses = signed.statuses
        outcome = statuses[0].state if len(statuses) == 1 else "multi"
        return Reply(signed.der, None, outcome, generation.kind, query.now,
                     [(status.kind, cert_id.serial_hex)
                      for cert_id, status in zip(parsed.cert_ids, statuses, strict=True)])

    def window(self, generation: ServedGeneration) -> tuple[int, int]:
        """thisUpdate = now; nextUpdate never passes the signer's notAfter."""
        signer = generation.signer
        now = self._epoch_now()
        if signer is None:
            raise TryLater(f"no responder certificate for {generation.ca.label}")
        next_update = min(now + self.response_validity, epoch(signer.not_after))
        if next_update <= now:
            raise TryLater(f"responder certificate for {generation.ca.label} has expired")
        return now, next_update

    async def sign(self, generation: ServedGeneration, cert_ids: Sequence[CertID],
                   nonce: bytes | None = None, nonce_value: bytes | None = None) -> Signed:
        """Read the statuses (memo, else the registry) and sign, on the pool."""
        this_update, next_update = self.window(generation)
        signer = generation.signer
        assert signer is not None  # window() refused a missing signer
        ca_id = generation.ca.id
        version = self.memo.version
        memo = [self.memo.status(c.serial_hex, ca_id) for c in cert_ids]
        statuses, der = await self.pool.run(partial(
            self._sign_job, signer, ca_id, list(cert_ids), memo, this_update, next_update,
            nonce, nonce_value))
        for cert_id, status in zip(cert_ids, statuses, strict=True):
            self.memo.remember_status(cert_id.serial_hex, ca_id, status, version)
        return Signed(statuses, der, this_update, next_update)

    def _sign_job(self, signer: Signer, ca_id: int, cert_ids: list[CertID],
                  memo: list[Status | None], this_update: int, next_update: int,
                  nonce: bytes | None, nonce_value: bytes | None) -> tuple[list[Status], bytes]:
        """On the pool: statuses (memo, else the registry), then the builder."""
        statuses = [known if known is not None else self.statuses.status(c.serial_hex, ca_id)
                    for c, known in zip(cert_ids, memo, strict=True)]
        return statuses, self.builder.build(
            key=signer.key, certificate=signer.certificate, cert_ids=cert_ids,
            statuses=statuses, this_update=this_update, next_update=next_update, nonce=nonce,
            nonce_value=nonce_value)
