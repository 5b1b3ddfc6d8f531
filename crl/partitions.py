"""Signing partition CRLs, in this process or in a pool of worker processes.

A partition's entries stream from the registry with their cached encodings; only entries
never encoded before (new revocations, or everything on the first run) go through pyca, which
builds each entry in Python (about 7 µs with a reason code). The CRL itself is assembled from
the encodings (crl.assembly). The partitions are independent, so a large run spreads them over
processes (spawned by the daemon, which has threads; forked by the CLI). Each worker opens its
own registry connection, caches the encodings it made, and loads the CA key once
(KeyBackend.load: passphrase from the environment or the 0600 file).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ca import authority
from ca.authority import CAGeneration
from ca.keyaccess import open_backend
from ca.keybackend import BackendSpec, PrivateKey
from crl import assembly, builder, entries
from registry.municipalities import Municipality
from registry.store import Store


@dataclass(frozen=True)
class PartitionJob:
    partition: str
    cutoff: int
    this_update: datetime
    next_update: datetime
    number: int  # 0: not published (a partition missing from the municipality table)
    municipality: Municipality | None
    base_url: str


@dataclass(frozen=True)
class PartitionResult:
    partition: str
    number: int
    der: bytes
    entries: int
    duration_ms: int


class PartitionSigner:
    def __init__(self, store: Store, ca: CAGeneration, key: PrivateKey) -> None:
        self.store = store
        self.ca = ca
        self.key = key
        self.encoder = builder.EntryEncoder()

    def sign(self, job: PartitionJob) -> PartitionResult:
        started = time.perf_counter()
        scope = entries.read(self.store, self.ca.id, job.partition, job.cutoff)
        missing = scope.missing
        fresh = self.encoder.encode(missing)
        idp = None
        if job.municipality is not None:
            idp = builder.partition_idp(self.ca.kind, self.ca.generation, job.municipality,
                                        job.base_url)
        der = assembly.signed_crl(self.ca, self.key, number=max(job.number, 1),
                                  this_update=job.this_update, next_update=job.next_update,
                                  contents=[scope.cached, b"".join(fresh)], idp=idp)
        # Cached here, by the worker: sending a million encodings back to the parent would
        # cost more than writing them (SQLite serialises the workers' short transactions).
        entries.remember(self.store, self.ca.id, job.partition, job.cutoff,
                         [(entry.serial, entry.not_after, item)
                          for entry, item in zip(missing, fresh, strict=True)])
        return PartitionResult(job.partition, job.number, der, scope.cached_count + len(missing),
                               int((time.perf_counter() - started) * 1000))


_worker: PartitionSigner | None = None


def init_worker(data_dir: Path, ca_id: int, spec: BackendSpec) -> None:
    """Pool initializer: one registry connection and one CA key (or token session) per worker."""
    global _worker
    store = Store(data_dir / "registry.db")
    ca = authority.by_id(store, ca_id)
    _worker = PartitionSigner(store, ca, ca.private_key(open_backend(spec)))


def sign_in_worker(job: PartitionJob) -> PartitionResult:
    if _worker is None:
        raise RuntimeError("worker not initialised")
    return _worker.sign(job)
