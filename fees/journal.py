"""The fee journal: durable group commit of priced checks, folded into the ledger in the
background.

Why: a metered answer leaves only after its check is durable (DOMAIN.md, "Fees": zero loss).
Committing each group of rows straight into the registry's SQLite ledger cost a flush of the
registry's WAL (~3 ms on our disks) per group, serialized with the registry's own writers, plus
Python work per row on the path of every answer. Here the answer waits only for one frame
written in place in a preallocated private file and its `fdatasync` (a data-only flush);
several lanes (`fees.journal_lanes`) flush in parallel, so a new group starts its flush while
earlier ones are still in the device, and the answer's wait is one flush, not one flush plus
the queue behind it.

Layout (data directory, 0700 / 0600 like the registry, registry/datadir.py):

    fees-journal/lock                      flock held by the one writing process
    fees-journal/<run>-<lane>-<part>.log   a segment: zeros, overwritten in place by frames,
                                           one per group commit
    fees-journal-<k>/...                   the same, of serving worker k >= 1 (server.workers)

Each `jpki serve` worker process writes its own journal (worker 0: `fees-journal`, as before
workers existed) and folds it under its own mark (`fee_journal_marks`, one row per journal,
keyed by the journal's identity in its `id` file: host, worker, random part); sequence
numbers are per journal. Folds of different workers are serialised by the registry's
write lock, so the status-confirmation rule still charges exactly one check per verifier,
resident and year; which of two concurrent checks on different workers is the charged one
follows fold order.

A frame is `magic, payload length, sequence number, crc32` then the payload: the rows of one
group (JSON). Sequence numbers are global across lanes and runs. Folding inserts the rows of
frames into `ledger` and moves the mark (`fee_journal_marks.seq`) in the same transaction, so a
crash between journal and ledger neither loses a row (the frame is still in the file, above the
mark) nor counts one twice (a frame at or below the mark is skipped). Frames are folded in
sequence order, which decides the status-confirmation once-per-year rule exactly as a single
writer would.

While the writer runs, only the contiguous prefix of durable frames is folded (a frame still
in flight on another lane leaves a gap that will be filled). At start-up, with the lock taken,
every complete frame of the earlier run is folded, gaps included: a frame that never became
durable had its answers never sent. Then the earlier files are removed.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import queue
import socket
import struct
import threading
import time
import uuid
import zlib
from collections import Counter as Tally
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from fees.ledger import LedgerRow

from registry import certificates, datadir, verifiers
from registry.store import Store

log = logging.getLogger("jpki.fees")

DIR_NAME = "fees-journal"
MAGIC = b"JFB2"  # rows in the ledger INSERT's order (Row)
MAGIC_V1 = b"JFB1"  # rows led by the verifier's name, no resident: read at start-up only
HEADER = struct.Struct("<4sIQI")  # magic, payload length, sequence number, crc32(payload)
SEGMENT_BYTES = 4 << 20  # ~3 s of frames at 20,000 checks/s; the next one is made early

# A journal row is the ledger INSERT's parameters, in its column order, priced when the check
# happened (the rule in force on its JST day): folding a row without a status confirmation is
# no Python work at all. The resident (None here) and the status-confirmation once-per-year
# rule are applied when folding, in sequence order; metrics name the verifier by its id.
# (at, month, year, verifier_id, check_type, channel, serial, resident_id (None),
#  status_confirmation, rule_id, amount_yen)
Row = tuple[int, str, int, int, str, str, str | None, None, int, str, int]

CHECKS = Counter("jpki_fee_checks_total", "Metered checks by verifier and check type "
                 "(every billable answer; the ledger is the record)", ["verifier", "check_type"])
YEN = Counter("jpki_fee_yen_total", "Yen charged by verifier and check type, before monthly "
              "discounts", ["verifier", "check_type"])
BATCH = Histogram("jpki_fee_commit_batch_size", "Checks per journal commit (group commit: "
                  "larger under load)", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
FLUSH = Histogram("jpki_fee_journal_flush_seconds", "Append plus fdatasync of one journal "
                  "frame: what a metered answer waits for (the device's flush latency; above "
                  "~5 ms, metered answers lose throughput at a given concurrency)",
                  buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128))
FOLDED = Counter("jpki_fee_journal_folded_total", "Journal rows folded into the ledger (lags "
                 "the answers by at most the fold interval; a growing gap means the ledger "
                 "cannot keep up)")

# One mark per journal (`fee_journal_marks`, registry migration 12), keyed by the journal's
# identity (`journal_key`), not by the worker index: responder hosts sharing one PostgreSQL
# registry each have a worker 0. fee_journal_folds is the single mark of the journal before
# workers existed: worker 0 starts from it until its own row is written.
ID_FILE = "id"
_INSERT = ("INSERT INTO ledger (at, month, year, verifier_id, check_type, channel, serial,"
           " resident_id, status_confirmation, rule_id, amount_yen) VALUES ")
_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# Rows per INSERT statement when folding: one multi-row statement of 200 rows costs 2.3-2.8 µs
# a row against 3.7-4.2 µs through executemany (bench/fee_path_costs.py, the ledger's three
# indexes); 2,200 parameters stay far below SQLite's limit of 32,766.
_CHUNK = 200
_INSERT_CHUNK = _INSERT + ", ".join([_VALUES] * _CHUNK)


def _insert(conn: Any, rows: list[Any]) -> None:
    """The rows into the ledger, in order, _CHUNK rows per statement."""
    full = len(rows) - len(rows) % _CHUNK
    for start in range(0, full, _CHUNK):
        conn.execute(_INSERT_CHUNK, [v for row in rows[start:start + _CHUNK] for v in row])
    if full < len(rows):
        tail = rows[full:]
        conn.execute(_INSERT + ", ".join([_VALUES] * len(tail)), [v for row in tail for v in row])


class JournalBusy(RuntimeError):
    """Another process is writing this fee journal (same data directory, same worker)."""


def count(entries: Sequence[LedgerRow]) -> None:
    """The metrics of checks written straight to the ledger (direct metering)."""
    for entry in entries:
        CHECKS.labels(entry.check.verifier_name, entry.check.check_type).inc()
        if entry.price.yen:
            YEN.labels(entry.check.verifier_name, entry.check.check_type).inc(entry.price.yen)


def journal_dir(data_dir: Path, worker: int = 0) -> Path:
    """The journal of serving worker `worker` (0: also the only one of a single process)."""
    return data_dir / (DIR_NAME if worker == 0 else f"{DIR_NAME}-{worker}")


def journal_dirs(data_dir: Path) -> list[tuple[int, Path]]:
    """(worker, directory) of every journal present, also of workers no longer configured
    (server.workers lowered): their frames are still to be folded."""
    found = [(0, journal_dir(data_dir))] if journal_dir(data_dir).is_dir() else []
    for path in data_dir.glob(f"{DIR_NAME}-*"):
        suffix = path.name[len(DIR_NAME) + 1:]
        if suffix.isdigit() and int(suffix) > 0 and path.is_dir():
            found.append((int(suffix), path))
    return sorted(found)


# -- folding (any process) -------------------------------------------------------------------

def journal_key(data_dir: Path, worker: int = 0) -> str:
    """The identity of a journal: host name, worker and a random part, made once and kept in
    its directory. Provision a new responder host without the `fees-journal*` directories of
    another (a copied `id` would make two journals share one mark)."""
    cached = _KEYS.get((data_dir, worker))
    if cached is not None:
        return cached
    directory = datadir.make_private_dirs(journal_dir(data_dir, worker))
    path = directory / ID_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    key = f"{socket.gethostname()}/{worker}/{uuid.uuid4().hex[:16]}"
    staging = directory / f".{ID_FILE}.{os.getpid()}"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, datadir.PRIVATE_FILE)
    try:
        os.write(fd, key.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(staging, path)  # the first process to name the journal wins
    except FileExistsError:
        pass
    finally:
        os.unlink(staging)
    key = path.read_text(encoding="ascii").strip()
    _KEYS[(data_dir, worker)] = key
    return key


_KEYS: dict[tuple[Path, int], str] = {}


def _mark(conn: Any, data_dir: Path, worker: int) -> int:
    row = conn.execute("SELECT seq FROM fee_journal_marks WHERE journal = ?",
                       (journal_key(data_dir, worker),)).fetchone()
    if row is None and worker == 0:
        row = conn.execute("SELECT seq FROM fee_journal_folds WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def folded_mark(store: Store, worker: int = 0) -> int:
    with store.transaction() as conn:
        return _mark(conn, store.data_dir, worker)


class Residents:
    """serial -> resident id, memoized (a certificate's resident never changes)."""

    def __init__(self) -> None:
        self._known: dict[str, str | None] = {}

    def of(self, store: Store, serial: str) -> str | None:
        if serial not in self._known:
            self._known[serial] = certificates.resident_of(store, serial)
        return self._known[serial]


class Names:
    """verifier id -> name for the metrics, read from the registry on a miss (a verifier's
    name never changes; a new verifier is one more read)."""

    def __init__(self) -> None:
        self._known: dict[int, str] = {}

    def of(self, store: Store, verifier_id: int) -> str:
        name = self._known.get(verifier_id)
        if name is None:
            self._known = verifiers.names_by_id(store)
            name = self._known.setdefault(verifier_id, str(verifier_id))
        return name


def fold(store: Store, frames: Sequence[tuple[int, str, list[Row]]],
         residents: Residents | None = None, names: Names | None = None,
         worker: int = 0) -> int:
    """Insert the rows of `frames` (sequence number, repeat rule id, rows) of `worker`'s
    journal, sorted by sequence number, skipping frames at or below its mark; return the new
    mark. One transaction."""
    residents = residents or Residents()
    names = names or Names()
    with store.transaction() as conn:
        mark = _mark(conn, store.data_dir, worker)
        todo = sorted((f for f in frames if f[0] > mark), key=lambda f: f[0])
        if not todo:
            return mark
        charged: set[tuple[int, str, int]] = set()
        out: list[Any] = []
        for _seq, repeat_rule_id, rows in todo:
            for row in rows:
                if not (row[8] and row[6]):  # no status confirmation: the row as journaled
                    out.append(row)
                    continue
                # the once-per-year rule (configs/tariff.toml [status_confirmation])
                at, month, year, verifier_id, check_type, channel, serial, _r, sc, rule_id, \
                    amount = row
                resident = residents.of(store, serial) if serial else None
                if resident is not None:
                    key = (verifier_id, resident, year)
                    seen = key in charged or conn.execute(
                        "SELECT 1 FROM ledger WHERE verifier_id = ? AND resident_id = ?"
                        " AND year = ? AND status_confirmation = 1 AND rule_id != ?"
                        " LIMIT 1", (verifier_id, resident, year, repeat_rule_id),
                    ).fetchone()
                    if seen:
                        rule_id, amount = repeat_rule_id, 0
                    else:
                        charged.add(key)
                out.append((at, month, year, verifier_id, check_type, channel, serial,
                            resident, sc, rule_id, amount))
        _insert(conn, out)
        new_mark = todo[-1][0]
        conn.execute("INSERT INTO fee_journal_marks (journal, seq) VALUES (?, ?)"
                     " ON CONFLICT (journal) DO UPDATE SET seq = excluded.seq",
                     (journal_key(store.data_dir, worker), new_mark))
    # counters per fold (per batch), after the commit, with the final prices
    tally: Tally[tuple[int, str]] = Tally(row[3:5] for row in out)
    yen: Tally[tuple[int, str]] = Tally()
    for row in out:
        if row[10]:
            yen[row[3:5]] += row[10]
    for (verifier_id, check_type), count in tally.items():
        CHECKS.labels(names.of(store, verifier_id), check_type).inc(count)
    for (verifier_id, check_type), amount in yen.items():
        YEN.labels(names.of(store, verifier_id), check_type).inc(amount)
    FOLDED.inc(len(out))
    return new_mark


def read_frames(directory: Path) -> dict[int, tuple[str, list[Row]]]:
    """Every complete frame in the journal files; a torn tail (a crash mid-append: never
    acknowledged) ends its file's frames."""
    frames: dict[int, tuple[str, list[Row]]] = {}
    for path in sorted(directory.glob("*.log")):
        data = path.read_bytes()
        offset = 0
        while offset + HEADER.size <= len(data):
            magic, length, seq, crc = HEADER.unpack_from(data, offset)
            payload = data[offset + HEADER.size:offset + HEADER.size + length]
            if magic not in (MAGIC, MAGIC_V1) or len(payload) != length \
                    or zlib.crc32(payload) != crc:
                break  # a torn frame, or the zero-filled rest of a preallocated segment
            body = json.loads(payload)
            if magic == MAGIC:
                frames[seq] = (body["r"], [tuple(row) for row in body["rows"]])
            else:  # (name, at, month, year, verifier_id, check_type, channel, serial, sc, ...)
                frames[seq] = (body["r"], [(*row[1:8], None, *row[8:]) for row in body["rows"]])
            offset += HEADER.size + length
    return frames


def _contiguous(frames: dict[int, Any], mark: int) -> list[int]:
    seqs = []
    seq = mark + 1
    while seq in frames:
        seqs.append(seq)
        seq += 1
    return seqs


_ACTIVE: dict[Path, Journal] = {}
_ACTIVE_LOCK = threading.Lock()


def catch_up(store: Store) -> None:
    """Fold what the journals hold before the ledger is read (invoices, usage, the linkage
    preconditions, the status-confirmation rule of direct metering): they stay exact.

    In the writing process, its journal's durable frames; the journals of other processes
    (the other serving workers, a crashed daemon) from their files: all of their frames when
    no process holds that journal, else the contiguous prefix above its mark."""
    data_dir = store.data_dir
    with _ACTIVE_LOCK:
        journal = _ACTIVE.get(data_dir.resolve())
    if journal is not None:
        journal.catch_up(store)
    for worker, directory in journal_dirs(data_dir):
        if journal is None or worker != journal.worker:
            _fold_files(store, worker, directory)


def _fold_files(store: Store, worker: int, directory: Path) -> None:
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, datadir.PRIVATE_FILE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            writer_alive = False
        except BlockingIOError:
            writer_alive = True
        frames = read_frames(directory)
        if not frames:
            return
        seqs = (_contiguous(frames, folded_mark(store, worker)) if writer_alive
                else sorted(frames))
        fold(store, [(seq, *frames[seq]) for seq in seqs], worker=worker)
    finally:
        os.close(fd)  # releases the flock


# -- writing (the daemon) --------------------------------------------------------------------

class _Group:
    """Rows waiting for the next commit, and one future per event loop waiting on them."""

    __slots__ = ("rows", "futures")

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.futures: dict[asyncio.AbstractEventLoop, asyncio.Future[None]] = {}


def _release(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


class _Lane:
    """One journal segment being written in place by one thread.

    Segments are preallocated and zero-filled (`_make_segment`), so a frame's `fdatasync`
    flushes its data blocks only: the file's size and block map never change while it is
    written, and the filesystem's own journal has nothing to commit (appending to a growing
    file commits the inode's size with every flush; bench/journal_flush_costs.py). The end of
    the written frames is the first header that is not a frame (zeros, or a torn write).
    """

    def __init__(self, directory: Path, run: int, number: int, segment_bytes: int) -> None:
        self.directory = directory
        self.run = run
        self.number = number
        self.segment_bytes = segment_bytes
        self.capacity = segment_bytes  # of the open segment
        self.part = 0
        self.fd = -1
        self.size = 0
        self.max_seq = 0
        self.path = directory
        self.spare: tuple[Path, int] | None = None  # the next segment, made in advance
        self.lock = threading.Lock()  # the spare, made by the fold thread
        self.making = False
        self.closed = False

    def next_name(self) -> Path:
        self.part += 1
        return self.directory / f"{self.run:012d}-{self.number:02d}-{self.part:06d}.log"

    def prepare_spare(self) -> None:
        """Make the next segment now (the fold thread calls this between folds), so that a
        full segment is replaced without zero-filling it on an answer's path."""
        with self.lock:
            if self.spare is not None or self.closed or self.making:
                return
            self.making = True
            path = self.next_name()
        try:
            fd = _make_segment(path, self.segment_bytes)
        finally:
            with self.lock:
                self.making = False
        with self.lock:
            if not self.closed and self.spare is None:
                self.spare = (path, fd)
                return
        os.close(fd)
        path.unlink(missing_ok=True)

    def open_next(self, frame_bytes: int = 0) -> tuple[Path, int] | None:
        """Start the lane's next segment (the writer only), large enough for a frame of
        `frame_bytes` (a burst's group can outgrow a segment: it gets one of its own); returns
        the finished one (path, highest sequence)."""
        done = (self.path, self.max_seq) if self.fd >= 0 else None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        size = self.segment_bytes
        with self.lock:
            spare = self.spare if frame_bytes <= size else None
            if spare is not None:
                self.spare = None
            path = self.next_name() if spare is None else spare[0]
        if spare is None:
            size = max(size, frame_bytes)
            spare = (path, _make_segment(path, size))
        self.path, self.fd = spare
        self.capacity = size
        self.size = 0
        self.max_seq = 0
        return done

    def close(self) -> None:
        with self.lock:
            self.closed = True
            spare, self.spare = self.spare, None
        if spare is not None:
            os.close(spare[1])
            spare[0].unlink(missing_ok=True)  # zeros only: no frame counts on it
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _make_segment(path: Path, size: int) -> int:
    """A new segment of `size` zero bytes, durable with its name before any frame counts on
    it (the data, the size and the directory entry); returns a descriptor open for writing."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, datadir.PRIVATE_FILE)
    try:
        block = bytes(1 << 20)
        written = 0
        while written < size:
            written += os.pwrite(fd, block[:min(len(block), size - written)], written)
        os.fsync(fd)
        datadir.fsync_dir(path.parent)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return fd


class Journal:
    """The daemon's fee journal: `await record(rows)` returns once the rows are durable."""

    def __init__(self, data_dir: Path, lanes: int = 4, fold_interval: float = 0.2,
                 segment_bytes: int = SEGMENT_BYTES, worker: int = 0,
                 registry_url: str = "") -> None:
        self.data_dir = data_dir
        self.worker = worker  # the serving worker whose journal this is (server.workers)
        self.registry_url = registry_url
        self.directory = journal_dir(data_dir, worker)
        self.lane_count = lanes
        self.fold_interval = fold_interval
        self.segment_bytes = segment_bytes
        self.repeat_rule_id = ""
        self._lock = threading.Lock()
        # One token per group: put (on the loop's next turn, so that every request answered
        # in the same turn joins the group) when a group opens, taken by the lane that will
        # commit it. SimpleQueue wakes a lane in C; Condition.notify cost ~8 % of the loop.
        self._tokens: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._open = _Group()
        self._next_seq = 0
        self._closing = False
        self.started = False
        self._threads: list[threading.Thread] = []
        self._durable: dict[int, list[Row]] = {}  # sequence -> rows, durable, not yet folded
        self._durable_lock = threading.Lock()
        self._finished: list[tuple[Path, int]] = []  # lane files no longer appended
        self._fold_lock = threading.Lock()
        self._fold_wake = threading.Event()
        self._folded = 0
        self._residents = Residents()
        self._names = Names()
        self._lanes: list[_Lane] = []
        self._lock_fd = -1
        self._store: Store | None = None

    # start-up and recovery
    def start(self, repeat_rule_id: str) -> None:
        with self._lock:
            if self.started:
                return
            self.repeat_rule_id = repeat_rule_id
            datadir.make_private_dirs(self.directory)
            self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT,
                                    datadir.PRIVATE_FILE)
            deadline = time.monotonic() + 10  # a CLI fold holds the lock briefly
            while True:
                try:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        os.close(self._lock_fd)
                        raise JournalBusy(f"{self.directory}: another process writes this"
                                          " fee journal; one `jpki serve` per data"
                                          " directory") from None
                    time.sleep(0.05)
            self._store = Store.open(self.data_dir, self.registry_url)
            leftovers = sorted(self.directory.glob("*.log"))
            frames = read_frames(self.directory)
            mark = fold(self._store, [(seq, *frames[seq]) for seq in sorted(frames)],
                        self._residents, self._names, self.worker)
            if frames:
                log.info("fee journal: folded %d frames left by the previous run", len(frames))
            for path in leftovers:  # every frame is at or below the mark now
                path.unlink()
            if leftovers:
                datadir.fsync_dir(self.directory)
            self._folded = mark
            self._next_seq = mark + 1
            for number in range(self.lane_count):
                lane = _Lane(self.directory, self._next_seq, number, self.segment_bytes)
                lane.open_next()
                self._lanes.append(lane)
                self._threads.append(threading.Thread(
                    target=self._append, args=(lane,), name=f"fee-journal-{number}",
                    daemon=True))
            self._threads.append(threading.Thread(target=self._fold_loop, name="fee-fold",
                                                  daemon=True))
            for thread in self._threads:
                thread.start()
            self.started = True
        with _ACTIVE_LOCK:
            _ACTIVE[self.data_dir.resolve()] = self

    # the request side (event loop)
    async def record(self, rows: list[Row]) -> None:
        """Queue `rows` for the next commit and wait until they are durable."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closing:
                raise RuntimeError("the fee journal is closed")
            group = self._open
            if not group.rows:
                loop.call_soon(self._tokens.put, True)
            group.rows.extend(rows)
            future = group.futures.get(loop)
            if future is None:
                future = group.futures[loop] = loop.create_future()
        await future

    def _commit(self, lane: _Lane, group: _Group, seq: int) -> BaseException | None:
        """Write `group` as frame `seq` in `lane` and flush it; the error, if it failed."""
        error: BaseException | None = None
        try:
            payload = json.dumps({"r": self.repeat_rule_id, "rows": group.rows},
                                 separators=(",", ":")).encode()
            frame = HEADER.pack(MAGIC, len(payload), seq, zlib.crc32(payload)) + payload
            if lane.size + len(frame) > lane.capacity:
                self._finish(lane.open_next(len(frame)))
            began = time.perf_counter()
            # in place, over zeros: no size change to commit (see _Lane)
            if os.pwrite(lane.fd, frame, lane.size) != len(frame):
                raise OSError(f"{lane.path}: short write to the fee journal")
            os.fdatasync(lane.fd)  # durable before any of its answers leaves
            FLUSH.observe(time.perf_counter() - began)
            lane.size += len(frame)
            lane.max_seq = seq
        except Exception as exc:  # the group's requests fail; the lane starts a new file
            log.exception("fee journal commit failed for %d checks", len(group.rows))
            error = exc
            try:
                self._finish(lane.open_next())
            except OSError:
                log.exception("fee journal: cannot start a new file")
        with self._durable_lock:
            # a failed frame leaves no gap: its answers were never sent
            self._durable[seq] = group.rows if error is None else []
            pending = len(self._durable)
        BATCH.observe(len(group.rows))
        if pending > 64:
            self._fold_wake.set()
        return error

    # the lanes
    def _append(self, lane: _Lane) -> None:
        while self._tokens.get():
            with self._lock:
                if not self._open.rows:
                    continue
                group, self._open = self._open, _Group()
                seq = self._next_seq
                self._next_seq += 1
            error = self._commit(lane, group, seq)
            for loop, future in group.futures.items():
                loop.call_soon_threadsafe(_release, [future], error)
        lane.close()

    def _finish(self, done: tuple[Path, int] | None) -> None:
        if done is not None:
            with self._durable_lock:
                self._finished.append(done)

    # folding
    def catch_up(self, store: Store | None = None) -> None:
        """Fold the contiguous durable frames now (on the caller's connection if given)."""
        with self._fold_lock:
            with self._durable_lock:
                seqs = _contiguous(self._durable, self._folded)
                frames = [(seq, self.repeat_rule_id, self._durable[seq]) for seq in seqs]
            if not frames:
                return
            target = store or self._store
            assert target is not None
            mark = fold(target, frames, self._residents, self._names, self.worker)
            with self._durable_lock:
                for seq in seqs:
                    del self._durable[seq]
                self._folded = max(self._folded, seqs[-1], mark)
                removable = [f for f in self._finished if f[1] <= self._folded]
                self._finished = [f for f in self._finished if f[1] > self._folded]
            for path, _seq in removable:
                path.unlink(missing_ok=True)

    def _fold_loop(self) -> None:
        while True:
            self._fold_wake.wait(self.fold_interval)
            self._fold_wake.clear()
            try:
                self.catch_up()
            except Exception:  # the frames stay durable in the journal; retried next time
                log.exception("fee journal: fold into the ledger failed")
            for lane in self._lanes:  # the next segment, before a lane needs it
                if lane.size > lane.capacity // 2 and not self._closing:
                    try:
                        lane.prepare_spare()
                    except OSError:  # the lane makes it itself, or fails its group
                        log.exception("fee journal: cannot prepare the next segment")
            if self._closing and not any(t.is_alive() for t in self._threads[:-1]):
                self.catch_up()
                return

    def close(self) -> None:
        with self._lock:
            if not self.started or self._closing:
                self._closing = True
                return
            self._closing = True
            leftover = bool(self._open.rows)
        if leftover:
            self._tokens.put(True)
        for _thread in self._threads[:-1]:
            self._tokens.put(False)  # after every group's token: queued groups commit first
        for thread in self._threads[:-1]:
            thread.join(timeout=30)
        self._fold_wake.set()
        self._threads[-1].join(timeout=30)
        with _ACTIVE_LOCK:
            if _ACTIVE.get(self.data_dir.resolve()) is self:
                del _ACTIVE[self.data_dir.resolve()]
        if self._store is not None:
            self._store.close()
        os.close(self._lock_fd)
