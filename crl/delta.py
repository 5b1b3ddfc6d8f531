"""Delta CRLs (RFC 5280 §5.2.4): what was revoked since each complete CRL, every hour.

A verifier that holds the day's complete CRL (a partition or the full CRL) fetches the small
delta named in the complete CRL's freshestCRL (§5.2.6) instead of the whole list again. For every
published complete CRL, `DeltaIssuer.run` publishes `<scope>.delta.crl`:
- deltaCRLIndicator (critical) naming the number of the complete CRL it updates;
- the same IssuingDistributionPoint (§5.2.4: "the same scope") and authorityKeyIdentifier;
- its own cRLNumber taken from the complete CRL's sequence (§5.2.3: a delta and a complete CRL
  of one scope never share a number);
- the entries of the scope's certificates whose revocation was committed after the registry
  state change the complete CRL was read after (its watermark). A revocation close to that
  moment may be in both, which §5.2.4 allows; none is in neither. Revocation is final here
  (no certificateHold release), so a delta never has to remove an entry (removeFromCRL).

Deltas are due every `crl.delta_interval_minutes`, and at once when a complete CRL was
re-issued (daily or urgent run) so that the served delta always names the served base.
nextUpdate is two intervals ahead: one late run does not leave verifiers with an expired delta.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from ca.authority import CAGeneration
from ca.urls import DELTA_SUFFIX
from crl import assembly, builder, entries
from crl.generator import Generator
from crl.publisher import FULL, Published
from registry import crl_state
from registry.clock import epoch

log = logging.getLogger("jpki.crl.delta")


class DeltaIssuer:
    """Publishes the delta CRLs of every live CA generation's complete CRLs."""

    def __init__(self, generator: Generator, interval_minutes: int) -> None:
        if interval_minutes <= 0:
            raise ValueError("delta CRLs need a positive interval")
        self.generator = generator
        self.interval = timedelta(minutes=interval_minutes)
        self.encoder = builder.EntryEncoder()

    def _bases(self, ca: CAGeneration) -> list[tuple[str, int, int]]:
        """(scope, number, watermark) of every complete CRL published with a watermark."""
        return crl_state.delta_bases(self.generator.store, ca.id, DELTA_SUFFIX)

    def _due(self, every: bool) -> list[tuple[CAGeneration, str, int, int]]:
        """The complete CRLs whose delta is missing, names a base no longer served, or is
        older than the interval (all of them with `every`)."""
        now = self.generator.clock()
        publisher = self.generator.publisher
        due = []
        for ca in self.generator.live_generations(now):
            for scope, number, mark in self._bases(ca):
                state = publisher.state(ca.id, scope + DELTA_SUFFIX)
                if (every or state is None or state["published_number"] is None
                        or state["base_number"] != number
                        or int(state["this_update"]) + self.interval.total_seconds()  # type: ignore[call-overload]
                        <= epoch(now)):
                    due.append((ca, scope, number, mark))
        return due

    def due(self) -> bool:
        return bool(self._due(every=False))

    def tick(self, should_yield: Callable[[], bool] = lambda: False) -> list[Published]:
        """Publish the deltas that are due, stopping early (the rest stay due) when
        `should_yield` says more urgent work waits: the signer's urgent CRL runs must not
        queue behind an hourly burst of deltas."""
        return self._publish_all(self._due(every=False), should_yield)

    def run(self) -> list[Published]:
        """Publish every delta now."""
        return self._publish_all(self._due(every=True), lambda: False)

    def _publish_all(self, due: list[tuple[CAGeneration, str, int, int]],
                     should_yield: Callable[[], bool]) -> list[Published]:
        results: list[Published] = []
        if not due:
            return results
        with self.generator.locked():
            now = self.generator.clock().replace(microsecond=0)
            for ca, scope, number, mark in due:
                if should_yield():
                    break
                # The base may have been re-issued since `due` was read: name the served one.
                state = self.generator.publisher.state(ca.id, scope)
                if state is not None and state["published_number"] is not None:
                    number = int(state["published_number"])  # type: ignore[call-overload]
                    mark = int(state["watermark"])  # type: ignore[call-overload]
                results.append(self._publish(ca, scope, number, mark, now))
        if results:
            log.info("published %d delta CRL(s), %d entries in all", len(results),
                     sum(r.entries for r in results))
        return results

    def _publish(self, ca: CAGeneration, scope: str, base_number: int, watermark: int,
                 now: datetime) -> Published:
        started = time.perf_counter()
        generator = self.generator
        partition = None if scope == FULL else scope
        revoked = entries.revoked_since(generator.store, ca.id, partition, watermark,
                                        generator.cutoff(now))
        idp = None
        if partition is not None:
            municipality = generator.municipality(ca, partition)
            if municipality is None:
                raise RuntimeError(f"{ca.label}/{scope} has a published CRL but no municipality")
            idp = builder.partition_idp(ca.kind, ca.generation, municipality,
                                        generator.policy.base_url, partition)
        next_update = min(now + 2 * self.interval, ca.not_after)
        number = generator.publisher.reserve_delta(ca, scope)
        der = assembly.signed_crl(ca, ca.private_key(generator.keys), number=number,
                                  this_update=now, next_update=next_update,
                                  contents=self.encoder.encode(revoked), idp=idp,
                                  delta=assembly.Delta(base_number))
        staged = generator.publisher.stage(ca, scope + DELTA_SUFFIX, der, len(revoked))
        return generator.publisher.commit(staged, int((time.perf_counter() - started) * 1000),
                                          base_number=base_number)
