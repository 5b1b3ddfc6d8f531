"""One generation run: every partition CRL and the full CRL of every live CA generation.

A generation is live while its CA certificate is valid and it is either the current one (its
partitions' URLs are about to be used) or still has certificates within the look-back window.
Unchanged partitions are re-signed anyway: a verifier needs a fresh nextUpdate every day.

Partition CRLs are signed by pyca/cryptography, in a pool of worker processes when the CA has
many revoked entries; the full CRL of the generation (no IssuingDistributionPoint, so it also
covers the self-signed CA certificate that `openssl verify -crl_check_all` checks; PEERS.md) is
streamed from the same cached encodings (crl.assembly, crl.partitions.stream_crl), so no entry
is built twice and no CRL is held in memory.
A run for one partition (an urgent revocation) publishes that partition and the full CRL; the
full CRL still has to list every partition's current entries, so they are all rebuilt.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ca import authority
from ca.authority import CAGeneration
from ca.keybackend import KeyBackend
from ca.kinds import CertKind
from ca.urls import crl_delta_path
from crl import assembly, builder, entries, partitions
from crl.partitions import PartitionJob, PartitionResult, PartitionSigner
from crl.publisher import FULL, Published, Publisher, Written
from registry import certificates, municipalities, shards
from registry.clock import Clock, epoch
from registry.datadir import create_private_file, make_private_dirs
from registry.errors import InvalidInput, NotFound
from registry.store import Store

log = logging.getLogger("jpki.crl.generator")
# progress(done, total, label)
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class CRLPolicy:
    base_url: str
    grace_hours: int = 6
    lookback_days: int = 30
    # Worker processes for partition signing (0: one per CPU); used only when a CA has at
    # least `parallel_threshold` entries to encode (spawning costs about half a second).
    workers: int = 0
    parallel_threshold: int = 50_000
    # "spawn" wherever threads run (the daemon: forking a threaded process is unsafe);
    # the single-threaded CLI may use "fork", which starts workers in milliseconds.
    start_method: str = "spawn"
    # Delta CRLs (crl/delta.py) every this many minutes; 0: none, and no freshestCRL.
    delta_interval_minutes: int = 0


class Generator:
    """Holds the CA keys while it signs (like Boulder's crl-updater); nothing else does here."""

    def __init__(self, store: Store, keys: KeyBackend, clock: Clock, policy: CRLPolicy,
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
        for ca in authority.generations(self.store, kind, include_retired=False):
            if ca.not_after <= now:
                continue
            newest = authority.current(self.store, ca.kind).id == ca.id
            if newest or entries.has_certificates_since(self.store, ca.id, self.cutoff(now)):
                result.append(ca)
        return result

    def last_complete_run(self, now: datetime) -> int | None:
        """The oldest thisUpdate among the CRLs a daily run produces; None if one is missing.

        Called once a minute by the daemon: one query per live generation.
        """
        oldest: int | None = None
        for ca in self.live_generations(now):
            published = self.publisher.published_this_updates(ca.id)
            for scope in [*entries.partitions(self.store, ca.id), FULL]:
                value = published.get(scope)
                if value is None:
                    if scope != FULL and not self._known_municipality(scope):
                        continue  # never published on its own (see _municipality)
                    return None
                oldest = value if oldest is None else min(oldest, value)
        return oldest

    def _known_municipality(self, partition: str) -> bool:
        return municipalities.exists(self.store, shards.municipality_of(partition))

    def run(self, kind: CertKind | None = None, partition: str | None = None,
            progress: Progress | None = None,
            scopes: dict[int, frozenset[str]] | None = None) -> list[Published]:
        """Generate and publish; all CRLs of the run share one thisUpdate.

        `scopes` (an urgent run after revocations, crl/urgent.py) limits the run to those CA
        generations, publishing only the named partitions and each generation's full CRL.

        Runs are serialised by a lock file in the data directory: the daemon's daily run and
        an operator's `jpki crl generate` never interleave their numbers (a run that reserved
        a lower number would otherwise be refused at publication).
        """
        with self.locked():
            return self._run(kind, partition, progress, scopes)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The run lock (also taken by delta runs, crl/delta.py, which share the numbers)."""
        lock_path = self.publisher.data_dir / "crl" / ".generate.lock"
        make_private_dirs(lock_path.parent)
        create_private_file(lock_path)
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _run(self, kind: CertKind | None, partition: str | None,
             progress: Progress | None,
             scopes: dict[int, frozenset[str]] | None) -> list[Published]:
        now = self.clock().replace(microsecond=0)
        generations = self.live_generations(now, kind)
        if scopes is not None:
            generations = [ca for ca in generations if ca.id in scopes]
            if not generations:
                return []  # revocations under generations no longer live: nothing to publish
        elif not generations:
            raise NotFound("no live CA generation to generate CRLs for; run `jpki init`")
        plan: list[tuple[CAGeneration, list[str], frozenset[str] | None]] = []
        for ca in generations:
            known = entries.partitions(self.store, ca.id)
            if partition is not None and partition not in known:
                raise InvalidInput(f"{partition} is not a partition of {ca.label}",
                                   field="partition")
            only = (scopes[ca.id] if scopes is not None
                    else frozenset([partition]) if partition is not None else None)
            plan.append((ca, known, only))
        total = sum(len(parts) + 1 for _ca, parts, _only in plan)
        counter = [0]

        def step(label: str) -> None:
            counter[0] += 1
            if progress:
                progress(counter[0], total, label)

        if progress:
            progress(0, total, "")
        results: list[Published] = []
        for ca, known, only in plan:
            results += self._generation(ca, known, only, now, step)
        return results

    def _generation(self, ca: CAGeneration, known: list[str], only: frozenset[str] | None,
                    now: datetime, step: Callable[[str], None]) -> list[Published]:
        started = time.perf_counter()
        next_update = builder.next_update(now, self.policy.grace_hours, ca.not_after)
        # Read before any entry is: every revocation after it is in the deltas (RFC 5280
        # §5.2.4), some maybe in this base as well, which a delta may repeat.
        watermark = certificates.last_change(self.store)
        jobs = []
        for code in known:
            publish = only is None or code in only
            municipality = self.municipality(ca, code) if publish else None
            jobs.append(PartitionJob(code, self.cutoff(now), now, next_update,
                                     1 if publish and municipality else 0, municipality,
                                     self.policy.base_url, self._freshest_url(ca, code)))
        numbers = self.publisher.reserve_many(ca, [job.partition for job in jobs if job.number])
        jobs = [replace(job, number=numbers.get(job.partition, 0)) for job in jobs]
        results: list[Published] = []
        published: dict[str, tuple[Written, int]] = {}
        for result in self._sign_partitions(ca, jobs):
            if result.written is not None:
                published[result.partition] = (result.written, result.entries)
                staged = self.publisher.adopt(ca, result.written, result.entries)
                results.append(self.publisher.commit(staged, result.duration_ms,
                                                     watermark=watermark))
            step(f"{ca.label}/{result.partition}")
        number = self.publisher.reserve(ca, FULL)
        frame = assembly.CRLFrame.make(ca, number=number, this_update=now,
                                       next_update=next_update,
                                       freshest_url=self._freshest_url(ca, FULL))
        written, count = partitions.stream_full(
            self.store, self.publisher.data_dir, ca, ca.private_key(self.keys),
            order=[job.partition for job in jobs], published=published,
            cutoff=self.cutoff(now), frame=frame, number=number, this_update=now,
            next_update=next_update)
        staged = self.publisher.adopt(ca, written, count)
        results.append(self.publisher.commit(
            staged, int((time.perf_counter() - started) * 1000), watermark=watermark))
        step(f"{ca.label}/{FULL}")
        log.info("generated CRLs of %s: %d partition(s) published, full CRL %d entries,"
                 " %.1f s", ca.label, len(results) - 1, count, time.perf_counter() - started)
        return results

    def _freshest_url(self, ca: CAGeneration, scope: str) -> str | None:
        """The delta CRL's URL for a complete CRL (RFC 5280 §5.2.6), when deltas are on."""
        if not self.policy.delta_interval_minutes:
            return None
        return self.policy.base_url + crl_delta_path(ca.kind, ca.generation, scope)

    def municipality(self, ca: CAGeneration, code: str) -> municipalities.Municipality | None:
        if not self._known_municipality(code):
            # Certificates name a partition the table no longer has: the DirectoryName of their
            # cRLDistributionPoints cannot be rebuilt; the full CRL still lists them.
            log.warning("partition %s of %s is not in the municipality table; its entries"
                        " are published in the full CRL only", code, ca.label)
            return None
        return municipalities.get(self.store, shards.municipality_of(code))

    def _sign_partitions(self, ca: CAGeneration, jobs: list[PartitionJob]
                         ) -> Iterator[PartitionResult]:
        workers = self.policy.workers or os.cpu_count() or 1
        # Worth the workers' start-up only when there is much to encode (a first run, a mass
        # revocation); a daily run reads cached encodings and is fastest in-process.
        uncached = entries.uncached_count(self.store, ca.id)
        if workers <= 1 or uncached < self.policy.parallel_threshold or len(jobs) < 2:
            signer = PartitionSigner(self.store, self.publisher.data_dir, ca,
                                     ca.private_key(self.keys))
            for job in jobs:
                yield signer.sign(job)
            return
        # A forked child must not use its parent's PKCS#11 session (PKCS#11 v2.40 §6.7.7: it
        # has to initialise the library itself), so token-backed keys always spawn workers.
        method = "spawn" if self.keys.spec.kind == "pkcs11" else self.policy.start_method
        context = multiprocessing.get_context(method)
        # Forked workers inherit the key loaded here (the full CRL needs it anyway); initargs
        # are not pickled under fork. Spawned workers load it themselves.
        inherited = ca.private_key(self.keys) if method == "fork" else None
        with ProcessPoolExecutor(
            max_workers=min(workers, len(jobs)), mp_context=context,
            initializer=partitions.init_worker,
            initargs=(self.publisher.data_dir, self.store.url, ca.id, self.keys.spec,
                      inherited),
        ) as pool:
            yield from pool.map(partitions.sign_in_worker, jobs, chunksize=1)

