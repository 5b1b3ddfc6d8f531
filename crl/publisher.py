"""Publishing a signed CRL: numbering, scope check, atomic write, last N versions kept.

The order of operations makes a crash at any point harmless:
1. `reserve()` commits the next CRL number first (RFC 5280 §5.2.3: numbers strictly increase;
   a crash later only leaves a gap, never a reused number);
2. `stage()` refuses a number that does not go up or an IssuingDistributionPoint that differs
   from the one already published at that URL, then writes a temporary file and fsyncs it;
3. `commit()` keeps a hard-linked copy in history/, renames the temporary file over the served
   one (atomic on POSIX), fsyncs the directory and records the state.
A crash before the rename leaves the previous CRL served; the next run removes the leftover.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography import x509

from ca.authority import CAGeneration
from ca.urls import DELTA_SUFFIX, crl_full_path, crl_partition_path
from registry import crl_state
from registry.clock import Clock, epoch
from registry.datadir import PRIVATE_FILE, fsync_dir, make_private_dirs
from registry.errors import Conflict
from registry.store import Store

log = logging.getLogger("jpki.crl.publisher")
FULL = "full"
HISTORY = "history"


def relative_path(ca: CAGeneration, partition: str) -> str:
    """The path under the data directory: the URL path written into the certificates."""
    url = crl_full_path(ca.kind, ca.generation) if partition == FULL else \
        crl_partition_path(ca.kind, ca.generation, partition)
    return url.lstrip("/")


@dataclass(frozen=True)
class Staged:
    """A CRL written to a temporary file, fsynced, not yet served."""

    ca: CAGeneration
    partition: str
    number: int
    idp: str
    size: int
    sha256: str
    temporary: Path
    target: Path
    this_update: int
    next_update: int
    entries: int


@dataclass(frozen=True)
class Published:
    kind: str
    generation: int
    partition: str
    number: int
    entries: int
    size: int
    path: Path
    this_update: int
    next_update: int

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "generation": self.generation, "partition": self.partition,
                "number": self.number, "entries": self.entries, "size": self.size,
                "path": str(self.path)}


@dataclass(frozen=True)
class Written:
    """A CRL streamed to its staging file (possibly by a worker process), not yet checked
    against what is published: what `Publisher.adopt` needs to check and serve it."""

    partition: str
    number: int
    idp: str  # hex DER of the IssuingDistributionPoint, '' for none
    temporary: Path
    target: Path
    this_update: int
    next_update: int
    size: int
    sha256: str
    entries_offset: int = 0  # where the concatenated entries lie in the file
    entries_length: int = 0


def staging_file(target: Path, number: int) -> Path:
    """The temporary file a CRL is written to before its rename, leftovers removed."""
    make_private_dirs(target.parent)  # the data directory is private (registry/datadir)
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):
        leftover.unlink(missing_ok=True)  # from a run that crashed before its rename
    return target.parent / f".{target.name}.{number}.tmp"


def write_private(temporary: Path, write: Callable[[BinaryIO], object]) -> None:
    """Create the file 0600 (the data directory is private; the daemon itself serves CRLs),
    let `write` fill it, and fsync it before anything may rename it into place."""
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "w+b") as handle:
        os.fchmod(handle.fileno(), PRIVATE_FILE)
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def _idp_hex(crl: x509.CertificateRevocationList) -> str:
    try:
        ext = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    except x509.ExtensionNotFound:
        return ""
    return ext.value.public_bytes().hex()


class Publisher:
    def __init__(self, store: Store, data_dir: Path, clock: Clock, versions_kept: int) -> None:
        self.store = store
        self.data_dir = data_dir
        self.clock = clock
        self.versions_kept = versions_kept

    def path(self, ca: CAGeneration, partition: str) -> Path:
        return self.data_dir / relative_path(ca, partition)

    def state(self, ca_id: int, partition: str) -> dict[str, object] | None:
        return crl_state.row(self.store, ca_id, partition)

    def reserve(self, ca: CAGeneration, partition: str) -> int:
        """Commit and return the next CRL number of this scope."""
        return self.reserve_many(ca, [partition])[partition]

    def reserve_many(self, ca: CAGeneration, partitions: list[str]) -> dict[str, int]:
        """Commit and return the next CRL number of each scope, in one transaction."""
        return crl_state.reserve_numbers(self.store, ca.id, partitions)

    def published_this_updates(self, ca_id: int) -> dict[str, int]:
        """thisUpdate of every CRL published for a CA generation, by partition."""
        return crl_state.published_this_updates(self.store, ca_id)

    def check(self, ca: CAGeneration, partition: str, number: int, idp: str) -> None:
        """Refuse a number that does not go up, or a scope that differs from the one already
        published at this URL."""
        label = f"{ca.label}/{partition}"
        state = self.state(ca.id, partition)
        if state is not None and state["published_number"] is not None:
            published = int(state["published_number"])  # type: ignore[call-overload]  # an INTEGER column
            if number <= published:
                raise Conflict(
                    f"refusing to publish CRL {label} number {number}: number {published} is"
                    " already published and CRL numbers must increase (RFC 5280 §5.2.3)",
                    field="crl_number",
                )
            if state["idp"] != idp:
                raise Conflict(
                    f"refusing to publish CRL {label}: its IssuingDistributionPoint differs"
                    " from the published one, so certificates that name the old URL would find"
                    " a CRL of another scope; restore server.public_base_url or publish under a"
                    " new CA generation",
                    field="idp",
                )

    def stage(self, ca: CAGeneration, partition: str, der: bytes, entries: int) -> Staged:
        """Check a CRL held in memory against what was published for this URL, then write it
        aside. The checks read the DER that is about to be written, not what the caller says
        it is."""
        crl = x509.load_der_x509_crl(der)
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        idp = _idp_hex(crl)
        self.check(ca, partition, number, idp)
        target = self.path(ca, partition)
        temporary = staging_file(target, number)
        write_private(temporary, lambda handle: handle.write(der))
        return Staged(ca, partition, number, idp, len(der), hashlib.sha256(der).hexdigest(),
                      temporary, target, epoch(crl.last_update_utc),
                      epoch(crl.next_update_utc or crl.last_update_utc), entries)

    def adopt(self, ca: CAGeneration, written: Written, entries: int) -> Staged:
        """Check a streamed CRL (written by `write_private`, maybe in a worker) like `stage`
        does; a refused file is removed, never served."""
        try:
            self.check(ca, written.partition, written.number, written.idp)
        except Conflict:
            written.temporary.unlink(missing_ok=True)
            raise
        return Staged(ca, written.partition, written.number, written.idp, written.size,
                      written.sha256, written.temporary, written.target, written.this_update,
                      written.next_update, entries)

    def reserve_delta(self, ca: CAGeneration, scope: str) -> int:
        """Commit and return the next number of a complete CRL's sequence for its delta CRL
        (RFC 5280 §5.2.3: a delta and its base share one sequence per scope), and make the
        delta's own state row (published at its own URL, `<scope>.delta`)."""
        with self.store.transaction():
            number = self.reserve(ca, scope)
            crl_state.set_number(self.store, ca.id, scope + DELTA_SUFFIX, number)
        return number

    def commit(self, staged: Staged, duration_ms: int = 0, *, watermark: int | None = None,
               base_number: int | None = None) -> Published:
        """Serve the staged CRL (atomic rename), keep it in history, record the state.

        `watermark`: for a complete CRL, the last registry state change before its entries
        were read (its delta lists the revocations after it); `base_number`: for a delta CRL,
        the number of the complete CRL it updates."""
        history = staged.target.parent / HISTORY
        make_private_dirs(history)
        kept = history / f"{staged.target.name}.{staged.number}"
        kept.unlink(missing_ok=True)
        os.link(staged.temporary, kept)
        os.replace(staged.temporary, staged.target)
        fsync_dir(staged.target.parent)
        size = staged.size
        crl_state.record_published(
            self.store, staged.ca.id, staged.partition, number=staged.number, idp=staged.idp,
            this_update=staged.this_update, next_update=staged.next_update,
            entries=staged.entries, size=size, sha256=staged.sha256, duration_ms=duration_ms,
            published_at=epoch(self.clock()), watermark=watermark, base_number=base_number)
        self._prune(history, staged.target.name)
        log.debug("published CRL %s/%s number=%d entries=%d size=%d", staged.ca.label,
                 staged.partition, staged.number, staged.entries, size)
        return Published(staged.ca.kind.value, staged.ca.generation, staged.partition,
                         staged.number, staged.entries, size, staged.target,
                         staged.this_update, staged.next_update)

    def publish(self, ca: CAGeneration, partition: str, der: bytes, entries: int,
                duration_ms: int = 0) -> Published:
        return self.commit(self.stage(ca, partition, der, entries), duration_ms)

    def _prune(self, history: Path, name: str) -> None:
        versions = sorted(
            (int(path.name.rsplit(".", 1)[1]), path)
            for path in history.glob(f"{name}.*") if path.name.rsplit(".", 1)[1].isdigit()
        )
        for _number, path in versions[:-self.versions_kept]:
            path.unlink(missing_ok=True)
