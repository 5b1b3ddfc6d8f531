"""Signing partition CRLs, in this process or in a pool of worker processes.

A national-scale run signs millions of entries, and pyca builds each entry in Python (about
4-6 µs): the partitions are independent, so they are spread over processes (spawned, never
forked: the daemon has threads). Each worker opens its own registry connection and loads the
CA key once (KeyStore.load: passphrase from the environment or the 0600 file), and returns
the DER plus its encoded entry list for the full CRL. Small runs stay in-process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from ca import authority
from ca.authority import CAGeneration
from ca.keystore import KeyStore, PrivateKey
from crl import builder, entries
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

    def sign(self, job: PartitionJob) -> PartitionResult:
        started = time.perf_counter()
        revoked = builder.revoked_certificates(
            entries.stream(self.store, self.ca.id, job.partition, job.cutoff))
        idp = None
        if job.municipality is not None:
            idp = builder.partition_idp(self.ca.kind, self.ca.generation, job.municipality,
                                        job.base_url)
        crl = builder.build(self.ca, self.key, number=max(job.number, 1),
                            this_update=job.this_update, next_update=job.next_update,
                            revoked=revoked, idp=idp)
        der = crl.public_bytes(Encoding.DER)
        return PartitionResult(job.partition, job.number, der, len(revoked),
                               int((time.perf_counter() - started) * 1000))


_worker: PartitionSigner | None = None


def init_worker(data_dir: Path, ca_id: int, passphrase_env: str, passphrase_file: str) -> None:
    """Pool initializer: one registry connection and one decrypted CA key per worker."""
    global _worker
    store = Store(data_dir / "registry.db")
    ca = authority.by_id(store, ca_id)
    keys = KeyStore(data_dir, passphrase_env=passphrase_env, passphrase_file=passphrase_file)
    _worker = PartitionSigner(store, ca, ca.private_key(keys))


def sign_in_worker(job: PartitionJob) -> PartitionResult:
    if _worker is None:
        raise RuntimeError("worker not initialised")
    return _worker.sign(job)
