"""Signing partition CRLs, in this process or in a pool of worker processes.

A partition's entries stream from the registry with their cached encodings; only entries
never encoded before (new revocations, or everything on the first run) go through pyca, which
builds each entry in Python (about 7 µs with a reason code). The CRL itself is assembled from
the encodings (crl.assembly), streamed from the registry's cache to the staging file: new
encodings are cached first, then the whole list is read back in batches, so no CRL is ever held
in memory (`stream_crl`). The worker writes the staging file; the parent checks and renames it
(crl.publisher). The partitions are independent, so a large run spreads them over
processes (spawned by the daemon, which has threads; forked by the CLI). Each worker opens its
own registry connection, caches the encodings it made, and loads the CA key once
(KeyBackend.load: passphrase from the environment or the 0600 file).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import BinaryIO

from cryptography import x509

from ca import authority
from ca.authority import CAGeneration
from ca.keyaccess import open_backend
from ca.keybackend import BackendSpec, PrivateKey
from crl import assembly, builder, entries
from crl.publisher import FULL as FULL_SCOPE
from crl.publisher import Written, relative_path, staging_file, write_private
from registry.clock import epoch
from registry.municipalities import Municipality
from registry.store import Store

# Entries encoded per scratch CRL: bounds pyca's objects on a first run of a large partition.
ENCODE_BATCH = 20_000


@dataclass(frozen=True)
class PartitionJob:
    partition: str
    cutoff: int
    this_update: datetime
    next_update: datetime
    number: int  # 0: not published (a partition missing from the municipality table)
    municipality: Municipality | None
    base_url: str
    freshest_url: str | None = None  # the delta CRL's URL (RFC 5280 §5.2.6), when deltas run


@dataclass(frozen=True)
class PartitionResult:
    partition: str
    number: int
    written: Written | None  # None: encoded and cached only, not published
    entries: int
    duration_ms: int


def stream_crl(store: Store, data_dir: Path, ca: CAGeneration, key: PrivateKey, *,
               scope: str, partition: str | None, cutoff: int, frame: assembly.CRLFrame,
               number: int, this_update: datetime, next_update: datetime,
               idp: x509.IssuingDistributionPoint | None) -> tuple[Written, int]:
    """Write the CRL of `scope` (a partition, or the full CRL with `partition` None) to its
    staging file from the cached encodings; return it and its number of entries."""
    target = data_dir / relative_path(ca, scope)
    temporary = staging_file(target, number)
    made: list[tuple[assembly.Streamed, int]] = []

    def write(handle: BinaryIO) -> None:
        with entries.cached(store, ca.id, partition, cutoff) as span:
            made.append((assembly.write_streamed(handle, frame, key, span.length, span.chunks),
                         span.count))

    write_private(temporary, write)
    streamed, count = made[0]
    return Written(scope, number, idp.public_bytes().hex() if idp is not None else "",
                   temporary, target, epoch(this_update), epoch(next_update), streamed.size,
                   streamed.sha256, streamed.entries_offset, streamed.entries_length), count


def stream_full(store: Store, data_dir: Path, ca: CAGeneration, key: PrivateKey, *,
                order: list[str], published: dict[str, tuple[Written, int]], cutoff: int,
                frame: assembly.CRLFrame, number: int, this_update: datetime,
                next_update: datetime) -> tuple[Written, int]:
    """Write the full CRL: every partition's list, in `order`, taken from the partition CRL
    this run just published (its entries lie contiguous in the file) or, for a partition not
    published in this run, from the cache.

    Runs hold the run lock and only runs write the cache, so a partition's cached list is the
    one its CRL of this run was streamed from: the full CRL lists exactly the union of the
    partitions' lists. `write_streamed` checks the announced length against what it wrote.
    """
    target = data_dir / relative_path(ca, FULL_SCOPE)
    temporary = staging_file(target, number)
    spans = {code: entries.cached_size(store, ca.id, code, cutoff)
             for code in order if code not in published}
    length = sum(item.entries_length for item, _count in published.values()) + \
        sum(size for _count, size in spans.values())
    count = sum(listed for _item, listed in published.values()) + \
        sum(listed for listed, _size in spans.values())

    def chunks() -> Iterator[bytes]:
        for code in order:
            if code in published:
                yield from _file_chunks(published[code][0])
            elif spans[code][0]:
                with entries.cached(store, ca.id, code, cutoff) as span:
                    yield from span.chunks
    made: list[assembly.Streamed] = []
    write_private(temporary, lambda handle: made.append(
        assembly.write_streamed(handle, frame, key, length, chunks())))
    streamed = made[0]
    return Written(FULL_SCOPE, number, "", temporary, target, epoch(this_update),
                   epoch(next_update), streamed.size, streamed.sha256, streamed.entries_offset,
                   streamed.entries_length), count


FILE_CHUNK = 1 << 20


def _file_chunks(written: Written) -> Iterator[bytes]:
    """The entries of a published partition CRL, read back from its file in 1 MiB chunks."""
    with written.target.open("rb") as handle:
        offset, end = written.entries_offset, written.entries_offset + written.entries_length
        while offset < end:
            chunk = os.pread(handle.fileno(), min(FILE_CHUNK, end - offset), offset)
            if not chunk:
                raise RuntimeError(f"{written.target} is shorter than when it was written")
            yield chunk
            offset += len(chunk)


_SERIAL, _NOT_AFTER = itemgetter(0), itemgetter(1)  # of a RevokedEntry, without a frame
_CACHE_ORDER = itemgetter(1, 0)  # RevokedEntry (serial, not_after, ...) -> (not_after, serial)


class PartitionSigner:
    def __init__(self, store: Store, data_dir: Path, ca: CAGeneration, key: PrivateKey) -> None:
        self.store = store
        self.data_dir = data_dir
        self.ca = ca
        self.key = key
        self.encoder = builder.EntryEncoder()

    def encode_missing(self, partition: str, cutoff: int) -> None:
        """Encode and cache the entries never encoded before (in batches), and drop cached
        entries past the look-back."""
        todo = entries.missing(self.store, self.ca.id, partition, cutoff)
        # In the cache's key order (notAfter, serial): each batch is inserted as one ascending
        # run of the clustered index instead of at random places in it.
        todo.sort(key=_CACHE_ORDER)
        if not todo:
            entries.remember(self.store, self.ca.id, partition, cutoff, [])
        for start in range(0, len(todo), ENCODE_BATCH):
            batch = todo[start:start + ENCODE_BATCH]
            fresh = self.encoder.encode(batch)
            # Cached here, by the worker: sending encodings back to the parent would cost
            # more than writing them (SQLite serialises the workers' short transactions).
            entries.remember(self.store, self.ca.id, partition, cutoff,
                             list(zip(map(_SERIAL, batch), map(_NOT_AFTER, batch), fresh,
                                      strict=True)))

    def sign(self, job: PartitionJob) -> PartitionResult:
        started = time.perf_counter()
        self.encode_missing(job.partition, job.cutoff)
        if not job.number:
            return PartitionResult(job.partition, 0, None, 0,
                                   int((time.perf_counter() - started) * 1000))
        idp = None
        if job.municipality is not None:
            idp = builder.partition_idp(self.ca.kind, self.ca.generation, job.municipality,
                                        job.base_url, job.partition)
        frame = assembly.CRLFrame.make(self.ca, number=job.number, this_update=job.this_update,
                                       next_update=job.next_update, idp=idp,
                                       freshest_url=job.freshest_url)
        written, count = stream_crl(self.store, self.data_dir, self.ca, self.key,
                                    scope=job.partition, partition=job.partition,
                                    cutoff=job.cutoff, frame=frame, number=job.number,
                                    this_update=job.this_update, next_update=job.next_update,
                                    idp=idp)
        return PartitionResult(job.partition, job.number, written, count,
                               int((time.perf_counter() - started) * 1000))


_worker: PartitionSigner | None = None


def init_worker(data_dir: Path, registry_url: str, ca_id: int, spec: BackendSpec,
                inherited: PrivateKey | None = None) -> None:
    """Pool initializer: one registry connection and one CA key (or token session) per worker.

    A forked worker is handed the key its parent already loaded (`inherited`: the fork copied
    it, nothing is pickled or sent), sparing each worker the key file's KDF; a spawned one
    loads it through the key backend itself.
    """
    global _worker
    store = Store.open(data_dir, registry_url)
    ca = authority.by_id(store, ca_id)
    key = inherited if inherited is not None else ca.private_key(open_backend(spec))
    _worker = PartitionSigner(store, data_dir, ca, key)


def sign_in_worker(job: PartitionJob) -> PartitionResult:
    if _worker is None:
        raise RuntimeError("worker not initialised")
    return _worker.sign(job)
