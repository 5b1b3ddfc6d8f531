"""One generation run: every partition CRL and the full CRL of every live CA generation.

A generation is live while its CA certificate is valid and it is either the current one (its
partitions' URLs are about to be used) or still has certificates within the look-back window.
Unchanged partitions are re-signed anyway: a verifier needs a fresh nextUpdate every day.

A full run builds each partition's entries once and reuses them for the generation's full CRL
(which carries no IssuingDistributionPoint, so it also covers the self-signed CA certificate
that `openssl verify -crl_check_all` checks; PEERS.md). An on-demand run for one partition
streams the full CRL from the registry instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cryptography import x509

from ca import authority
from ca.authority import CAGeneration
from ca.keystore import KeyStore
from ca.kinds import CertKind
from crl import builder, entries
from crl.publisher import FULL, Published, Publisher
from registry import municipalities
from registry.clock import Clock, epoch
from registry.errors import InvalidInput, NotFound
from registry.store import Store

if TYPE_CHECKING:
    from jpki.settings import Settings

log = logging.getLogger("jpki.crl.generator")
# progress(done, total, label)
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class CRLPolicy:
    base_url: str
    grace_hours: int = 6
    lookback_days: int = 30


class Generator:
    """Holds the CA keys while it signs (like Boulder's crl-updater); nothing else does here."""

    def __init__(self, store: Store, keys: KeyStore, clock: Clock, policy: CRLPolicy,
                 publisher: Publisher) -> None:
        self.store = store
        self.keys = keys
        self.clock = clock
        self.policy = policy
        self.publisher = publisher

    def cutoff(self, now: datetime) -> int:
        """Certificates whose notAfter is before this drop off the CRL (RFC 5280 §3.3)."""
        return epoch(now - timedelta(days=self.policy.lookback_days))

    def live_generations(self, now: datetime, kind: CertKind | None = None
                         ) -> list[CAGeneration]:
        result = []
        for ca in authority.generations(self.store, kind):
            if ca.not_after <= now:
                continue
            newest = authority.current(self.store, ca.kind).id == ca.id
            if newest or entries.has_certificates_since(self.store, ca.id, self.cutoff(now)):
                result.append(ca)
        return result

    def expected_scopes(self, now: datetime) -> list[tuple[CAGeneration, str]]:
        scopes = []
        for ca in self.live_generations(now):
            scopes += [(ca, partition) for partition in entries.partitions(self.store, ca.id)]
            scopes.append((ca, FULL))
        return scopes

    def last_complete_run(self, now: datetime) -> int | None:
        """The oldest thisUpdate among the CRLs a daily run produces; None if one is missing."""
        oldest: int | None = None
        for ca, partition in self.expected_scopes(now):
            state = self.publisher.state(ca.id, partition)
            if state is None or state["this_update"] is None:
                return None
            value = int(state["this_update"])  # type: ignore[call-overload]
            oldest = value if oldest is None else min(oldest, value)
        return oldest

    def run(self, kind: CertKind | None = None, partition: str | None = None,
            progress: Progress | None = None) -> list[Published]:
        """Generate and publish; all CRLs of the run share one thisUpdate."""
        now = self.clock().replace(microsecond=0)
        generations = self.live_generations(now, kind)
        if not generations:
            raise NotFound("no live CA generation to generate CRLs for; run `jpki init`")
        plan: list[tuple[CAGeneration, list[str]]] = []
        for ca in generations:
            known = entries.partitions(self.store, ca.id)
            if partition is not None:
                if partition not in known:
                    raise InvalidInput(f"{partition} is not a partition of {ca.label}",
                                       field="partition")
                plan.append((ca, [partition]))
            else:
                plan.append((ca, known))
        total = sum(len(parts) + 1 for _ca, parts in plan)
        done = 0
        results: list[Published] = []
        for ca, parts in plan:
            key = ca.private_key(self.keys)
            collected: list[x509.RevokedCertificate] = []
            for code in parts:
                if progress:
                    progress(done, total, f"{ca.label}/{code}")
                started = time.perf_counter()
                revoked = builder.revoked_certificates(
                    entries.stream(self.store, ca.id, code, self.cutoff(now)))
                published = self._sign_and_publish(ca, key, code, revoked, now, started)
                if published is not None:
                    results.append(published)
                if partition is None:
                    collected += revoked
                done += 1
            if progress:
                progress(done, total, f"{ca.label}/{FULL}")
            started = time.perf_counter()
            if partition is not None:
                collected = builder.revoked_certificates(
                    entries.stream(self.store, ca.id, None, self.cutoff(now)))
            published = self._sign_and_publish(ca, key, FULL, collected, now, started)
            if published is not None:
                results.append(published)
            log.info("generated CRLs of %s: %d partition(s) and full, %d entries in full",
                     ca.label, len(parts), len(collected))
            del collected
            done += 1
        if progress:
            progress(done, total, "done")
        return results

    def full(self, ca: CAGeneration) -> Published:
        """The full CRL of one generation alone, streamed from the registry (the benchmark)."""
        now = self.clock().replace(microsecond=0)
        started = time.perf_counter()
        revoked = builder.revoked_certificates(
            entries.stream(self.store, ca.id, None, self.cutoff(now)))
        published = self._sign_and_publish(ca, ca.private_key(self.keys), FULL, revoked, now,
                                           started)
        assert published is not None  # the full CRL has no partition to look up
        return published

    def _idp(self, ca: CAGeneration, partition: str) -> x509.IssuingDistributionPoint | None:
        municipality = municipalities.get(self.store, partition)
        return builder.partition_idp(ca.kind, ca.generation, municipality, self.policy.base_url)

    def _sign_and_publish(self, ca: CAGeneration, key: authority.PrivateKey, partition: str,
                          revoked: list[x509.RevokedCertificate], now: datetime,
                          started: float) -> Published | None:
        idp = None
        if partition != FULL:
            try:
                idp = self._idp(ca, partition)
            except NotFound:
                # Certificates name a partition the table no longer has: the DirectoryName of
                # their cRLDistributionPoints cannot be rebuilt; the full CRL still lists them.
                log.warning("partition %s of %s is not in the municipality table; its entries"
                            " are published in the full CRL only", partition, ca.label)
                return None
        number = self.publisher.reserve(ca, partition)
        crl = builder.build(
            ca, key, number=number, this_update=now,
            next_update=builder.next_update(now, self.policy.grace_hours, ca.not_after),
            revoked=revoked, idp=idp,
        )
        staged = self.publisher.stage(ca, partition, crl, len(revoked))
        duration_ms = int((time.perf_counter() - started) * 1000)
        return self.publisher.commit(staged, duration_ms)


def from_settings(store: Store, keys: KeyStore, clock: Clock, settings: Settings) -> Generator:
    """Wire a generator from the settings; the CLI and the daemon both call this."""
    policy = CRLPolicy(base_url=settings.server.public_base_url,
                       grace_hours=settings.crl.grace_hours,
                       lookback_days=settings.crl.lookback_days)
    publisher = Publisher(store, settings.data_dir, clock, settings.crl.versions_kept)
    return Generator(store, keys, clock, policy, publisher)
