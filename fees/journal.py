"""The fee journal: durable group commit of priced checks, written by the event loop through
the kernel, folded into the ledger by a process of its own.

Why: a metered answer leaves only after its check is durable (DOMAIN.md, "Fees": zero loss),
and metering must cost the answer almost nothing. The design is the one of a database's
write-ahead log with group commit:

- the event loop gathers the rows of every answer made while the previous write is under
  way into one group and, when that write returns, hands the group as one frame
  (`fees.frames`, marshal) to the writer (`fees.flush`), which puts it in place into a
  preallocated segment: by default one asynchronous direct write with `RWF_DSYNC` (Linux
  AIO), completed on the loop through an eventfd, with no thread hand-off; where the system
  lacks it, a `pwrite` into the page cache and an `fdatasync` on a thread. Either way a
  data-only flush: the segment's size and block map never change, see `_make_segment`. The
  durable sequence number is then published (`fees.progress`). One write in flight: under
  load a write covers tens of answers, and an answer waits at most two writes. (A flush
  process answering on a pipe cost the daemon more: fees/README.md, "Third round");
- under load, writes start at most every `commit_delay` seconds (PostgreSQL's
  `commit_delay`, applied like its `commit_siblings`: only after a write that carried at
  least `commit_siblings` answers). A direct write returns in ~0.1 ms, faster than the loop
  answers a cohort of connections; without the delay a write went out every ~19 answers, and
  each write costs the serving core tens of µs (fees/README.md, "Fourth round"). Under light
  load no answer waits for it;
- the fold process (`fees.folder`, nice 19 and the idle scheduling class by default) folds
  durable frames into the ledger in order, exactly once, off the serving process: the Python
  and SQL work per check never holds the interpreter lock the event loop needs.

The metrics (checks and yen per verifier and check type) are counted on the loop when a
group's answers are released.

Layout (data directory, 0700 / 0600 like the registry, registry/datadir.py):

    fees-journal/lock                   flock held by the one writing process
    fees-journal/id                     the journal's identity (its mark, `fees.fold`)
    fees-journal/progress               durable and folded sequence numbers (`fees.progress`)
    fees-journal/<run>-00-<part>.log    a segment: zeros, overwritten in place by frames
    fees-journal-<k>/...                the same, of serving worker k >= 1 (server.workers)

At start-up, with the lock taken, every complete frame of the earlier run is folded (a frame
written but never flushed had its answers never sent; folding it can only bill an answer that
a crash kept from leaving, never lose one), then the earlier files are removed.

A failed write fails its group's answers (tryLater) and the journal goes on in a new segment.
A failed flush fails every answer waiting and stops metering until a restart: after an
`fdatasync` error the kernel may have dropped the pages, and retrying it would report success
for data that is gone.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from prometheus_client import Gauge

from fees import frames, progress
from fees.flush import BLOCK, Flusher, open_flusher, runs_on
from fees.fold import (
    DIR_NAME,
    Names,
    Residents,
    catch_up,
    fold,
    folded_mark,
    journal_dir,
    journal_dirs,
    journal_key,
)
from fees.frames import Row, segment_name, segment_part
from fees.metrics import BATCH, count_rows
from registry import datadir
from registry.store import URL_ENV, Store

__all__ = ["DIR_NAME", "Journal", "JournalBusy", "Row", "catch_up", "fold", "folded_mark",
           "journal_dir", "journal_dirs", "journal_key"]

log = logging.getLogger("jpki.fees")

SEGMENT_BYTES = 4 << 20  # ~3 s of frames at 20,000 checks/s; the next one is made early
UNFOLDED = Gauge("jpki_fee_journal_unfolded_frames", "Durable journal frames (group commits) "
                 "not yet folded into the ledger: grows under a peak while the fold process "
                 "yields the CPU to answers, and falls back once it is idle",
                 ["journal"], multiprocess_mode="livesum")


class JournalBusy(RuntimeError):
    """Another process is writing this fee journal (same data directory, same worker)."""


class JournalFailed(OSError):
    """A flush of the fee journal failed: metered answers are refused until a restart."""


class _Group:
    """Rows waiting for the next frame, and the future their requests wait on."""

    __slots__ = ("rows", "future")

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.future: asyncio.Future[None] | None = None


def _make_segment(path: Path, size: int, direct: bool = False) -> int:
    """A new segment of `size` zero bytes, durable with its name before any frame counts on
    it (the data, the size and the directory entry); returns a descriptor open for writing,
    with `O_DIRECT` if `direct` (its size then rounded up to whole blocks, `fees.flush`).

    Zero-filled rather than fallocated: writing into unwritten extents converts them, a
    metadata change that every `fdatasync` would then commit (bench/journal_flush_costs.py)."""
    if direct:
        size = -(-size // BLOCK) * BLOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, datadir.PRIVATE_FILE)
    try:
        block = bytes(1 << 20)
        written = 0
        while written < size:
            written += os.pwrite(fd, block[:min(len(block), size - written)], written)
        os.fsync(fd)
        datadir.fsync_dir(path.parent)
        if direct:  # the zeros are durable; frames go past the page cache from here
            written_fd, fd = fd, os.open(path, os.O_RDWR | os.O_DIRECT)
            os.close(written_fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return fd


class _Segments:
    """The segment being written (by the loop) and the next one, made ahead by a thread."""

    def __init__(self, directory: Path, run: int, segment_bytes: int,
                 shared: progress.Progress, direct: bool = False) -> None:
        self.directory = directory
        self.direct = direct
        self.shared = shared
        self.run = run
        self.segment_bytes = segment_bytes
        self.part = 0
        self.fd = -1
        self.size = 0
        self.capacity = 0
        self._lock = threading.Lock()
        self._spare: tuple[Path, int] | None = None
        self._wanted = threading.Event()
        self._closed = False
        self._maker = threading.Thread(target=self._make_spares, name="fee-segments",
                                       daemon=True)

    def start(self) -> None:
        self.open_next(0)
        self._maker.start()

    def _next_name(self) -> Path:
        with self._lock:
            self.part += 1
            return self.directory / segment_name(self.run, self.part)

    def _make_spares(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._closed:
                return
            path = self._next_name()
            try:
                fd = _make_segment(path, self.segment_bytes, self.direct)
            except OSError:  # the loop makes it itself when it needs it
                log.exception("fee journal: cannot prepare the next segment")
                continue
            with self._lock:
                if self._spare is None and not self._closed:
                    self._spare = (path, fd)
                    continue
            os.close(fd)
            path.unlink(missing_ok=True)

    def room_for(self, frame_bytes: int) -> int | None:
        """The descriptor of the segment that takes the next frame (a new one if it would
        overflow this one), and the old descriptor if it was retired (else None)."""
        if self.size + frame_bytes <= self.capacity:
            if self.size > self.capacity // 2 and self._spare is None:
                self._wanted.set()
            return None
        return self.open_next(frame_bytes)

    def open_next(self, frame_bytes: int) -> int | None:
        retired = self.fd if self.fd >= 0 else None
        with self._lock:
            spare = self._spare if frame_bytes <= self.segment_bytes else None
            self._spare = None if spare is not None else self._spare
        if spare is None:  # a burst outran the maker, or a group larger than a segment
            size = max(self.segment_bytes, frame_bytes)
            path = self._next_name()
            spare = (path, _make_segment(path, size, self.direct))
            self.capacity = size
        else:
            self.capacity = self.segment_bytes
        self.fd = spare[1]
        self.size = 0
        # before its first frame: the fold process reads this after the frames it folds
        self.shared.set(progress.WRITING, segment_part(spare[0]))
        return retired

    def close(self) -> None:
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, None
        self._wanted.set()
        if spare is not None:
            os.close(spare[1])
            spare[0].unlink(missing_ok=True)  # zeros only: no frame counts on it
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Journal:
    """The daemon's fee journal: `await record(rows)` returns once the rows are durable."""

    def __init__(self, data_dir: Path, fold_interval: float = 0.2,
                 segment_bytes: int = SEGMENT_BYTES, worker: int = 0,
                 registry_url: str = "", fold_nice: int = 19, flush: str = "aio",
                 commit_delay: float = 0.0015, commit_siblings: int = 16) -> None:
        self.data_dir = data_dir
        self.worker = worker  # the serving worker whose journal this is (server.workers)
        self.registry_url = registry_url
        self.directory = journal_dir(data_dir, worker)
        self.fold_interval = fold_interval
        self.fold_nice = fold_nice
        self.segment_bytes = segment_bytes
        self.flush_mode = flush  # fees.journal_flush: "aio" (a thread where unavailable)
        self.commit_delay = commit_delay  # fees.commit_delay_ms
        self.commit_siblings = commit_siblings  # fees.commit_siblings
        self.repeat_rule_id = ""
        self.started = False
        self._closing = False
        self._failed: JournalFailed | None = None
        self._open = _Group()
        self._flushing = False  # a frame is being written, or about to be (commit delay)
        self._last_start = 0.0  # when the last write started (time.perf_counter)
        self._last_rows = 0  # and how many rows it carried
        self._deadline = 0.0  # when a delayed write may start (0: none is waiting)
        self._timer: asyncio.TimerHandle | None = None  # the delayed write, in a lull
        self._next_seq = 1
        self._waiting: deque[tuple[int, _Group]] = deque()  # written, not yet durable
        self._retired: list[int] = []  # segments left since the last write: closed at the next
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flusher: Flusher | None = None
        self._segments: _Segments | None = None
        self._progress: progress.Progress | None = None
        self._folder: subprocess.Popen[bytes] | None = None
        self._names = Names()
        self._store: Store | None = None
        self._lock_fd = -1

    # start-up and recovery
    def start(self, repeat_rule_id: str) -> None:
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
                    raise JournalBusy(f"{self.directory}: another process writes this fee"
                                      " journal; one `jpki serve` per data directory") from None
                time.sleep(0.05)
        self._store = Store.open(self.data_dir, self.registry_url)
        leftovers = frames.segments(self.directory)
        found = frames.read_frames(self.directory)
        mark = fold(self._store, [found[seq] for seq in sorted(found)], Residents(),
                    self.worker)
        if found:
            log.info("fee journal: folded %d frames left by the previous run", len(found))
        for path in leftovers:  # every frame is at or below the mark now
            path.unlink()
        if leftovers:
            datadir.fsync_dir(self.directory)
        self._next_seq = mark + 1
        self._progress = progress.Progress(self.directory, create=True)
        self._progress.set(progress.DURABLE, mark)
        self._progress.set(progress.FOLDED, mark)
        self._flusher = open_flusher(self.flush_mode, self._publish, self._released,
                                     self.directory)
        log.info("fee journal %s: %s", self.directory.name,
                 "durable direct writes by Linux AIO, completed on the event loop"
                 if self._flusher.direct else "page-cache writes, fdatasync on a thread")
        self._segments = _Segments(self.directory, self._next_seq, self.segment_bytes,
                                   self._progress, self._flusher.direct)
        self._segments.start()
        self._folder = self._spawn_folder()
        key = journal_key(self.data_dir, self.worker)
        shared = self._progress
        UNFOLDED.labels(key).set_function(
            lambda: max(0, shared.get(progress.DURABLE) - shared.get(progress.FOLDED)))
        self.started = True

    def _spawn_folder(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        if self.registry_url:
            env[URL_ENV] = env.get(URL_ENV) or self.registry_url
        return subprocess.Popen(
            [sys.executable, "-m", "fees.folder", str(self.data_dir), str(self.worker),
             str(self.fold_interval), str(self.fold_nice)],
            stdin=subprocess.PIPE, env=env, close_fds=True)

    # the request side (event loop)
    async def record(self, rows: list[Row]) -> None:
        """Queue `rows` for the next frame and wait until they are durable."""
        await self.submit(rows)

    def submit(self, rows: list[Row]) -> asyncio.Future[None]:
        """Queue `rows` for the next frame (on the running loop); the future is done once they
        are durable, shared by every answer of the frame."""
        if self._failed is not None:
            raise self._failed
        if self._closing:
            raise RuntimeError("the fee journal is closed")
        group = self._open
        future = group.future
        if future is None:
            loop = self._loop = asyncio.get_running_loop()
            future = group.future = loop.create_future()
            if not self._flushing:  # else the group is written when that flush returns
                loop.call_soon(self._write_next)  # after every answer of this loop turn
        group.rows.extend(rows)
        if self._deadline and time.perf_counter() >= self._deadline:  # the commit delay is over
            self._write_due()
        return future

    def _write_open(self) -> None:
        """The open group as the next frame, handed to the writer (`fees.flush`), which makes
        it durable in place. One frame per write: the rows of every answer made while a write
        is under way wait for it to return (`_released`), then go as one frame."""
        group, self._open = self._open, _Group()
        self._flushing = False  # until this frame is with the writer
        if not group.rows:
            return
        segments = self._segments
        assert segments is not None and group.future is not None
        seq = self._next_seq
        frame = frames.encode(seq, self.repeat_rule_id, group.rows)
        try:
            retired = segments.room_for(len(frame))
            if retired is not None:
                self._retired.append(retired)
            assert self._flusher is not None and self._loop is not None
            retired_fds, self._retired = self._retired, []
            self._flusher.commit(self._loop, seq, segments.fd, segments.size, frame,
                                 retired_fds)
        except OSError as exc:  # this group's answers fail; the next frame starts a segment
            log.exception("fee journal: writing %d checks failed", len(group.rows))
            group.future.set_exception(exc)
            try:
                retired = segments.open_next(0)
                if retired is not None:
                    self._retired.append(retired)
            except OSError:
                log.exception("fee journal: cannot start a new segment")
            return
        segments.size += len(frame)
        self._next_seq = seq + 1
        self._waiting.append((seq, group))
        self._flushing = True
        self._last_start, self._last_rows = time.perf_counter(), len(group.rows)

    def _write_next(self) -> None:
        """The open group, now or once `commit_delay` has passed since the last write started
        if that write carried `commit_siblings` answers or more (the load is high enough that
        waiting gathers more answers into the next write)."""
        loop = self._loop
        assert loop is not None
        deadline = self._last_start + self.commit_delay
        wait = deadline - time.perf_counter()
        if wait > 0 and self._last_rows >= self.commit_siblings:
            self._flushing = True
            self._deadline = deadline
            # uvloop counts timers in whole milliseconds (1.5 ms fires after 1 or 2): under
            # load the first answer past the deadline starts the write (`submit`); this timer,
            # a millisecond late at most, only covers a lull
            self._timer = loop.call_later(wait + 0.001, self._write_due)
        else:
            self._write_open()

    def _write_due(self) -> None:
        """The commit delay is over: the open group goes at the end of this loop turn."""
        if not self._deadline:  # already on its way
            return
        assert self._loop is not None
        wait = self._deadline - time.perf_counter()
        if wait > 0:  # the timer, early: uvloop sets it from a clock cached per loop turn
            self._timer = self._loop.call_later(wait + 0.001, self._write_due)
            return
        self._deadline = 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop.call_soon(self._write_open)

    def _publish(self, durable: int) -> None:
        """After a flush, where it completed: the fold process may fold up to `durable`."""
        if self._progress is not None:
            self._progress.set(progress.DURABLE, durable)

    def _released(self, durable: int, error: BaseException | None) -> None:
        """On the loop: the answers of every group up to `durable` may leave."""
        if error is not None and self._failed is None:
            self._failed = JournalFailed(f"{self.directory}: flushing the fee journal failed"
                                         f" ({error}); restart the daemon")
        released: list[Row] = []
        while self._waiting and self._waiting[0][0] <= durable:
            _seq, group = self._waiting.popleft()
            future = group.future
            if future is not None and not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(self._failed or error)
            if error is None:
                released.extend(group.rows)
        self._flushing = False
        if released:
            BATCH.observe(len(released))
            assert self._store is not None
            count_rows(released, self._names, self._store)
        if self._open.rows:
            if error is None:
                self._write_next()
            else:  # no flush will come: its answers fail now (tryLater)
                group, self._open = self._open, _Group()
                if group.future is not None:
                    group.future.set_exception(self._failed or error)

    def close(self) -> None:
        """Flush what is written, fold it (the fold process's last run), stop."""
        if not self.started or self._closing:
            self._closing = True
            return
        loop = self._loop
        if loop is not None and loop.is_running() and not runs_on(loop):
            try:  # the loop writes what is left and sees its last flush return
                asyncio.run_coroutine_threadsafe(self._drain(), loop).result(timeout=30)
            except Exception:
                log.exception("fee journal: the last flush did not return; the next start"
                              " folds what was written")
        self._closing = True
        assert self._flusher is not None and self._segments is not None
        self._flusher.close()
        for fd in self._retired:
            os.close(fd)
        self._segments.close()
        folder = self._folder
        if folder is not None and folder.stdin is not None:
            try:
                folder.stdin.write(b"F")
                folder.stdin.close()
            except OSError:
                pass
            try:
                folder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log.error("fee journal: the fold process did not finish; the next start folds"
                          " what is left")
                folder.kill()
        if self._progress is not None:
            self._progress.close()
        if self._store is not None:
            self._store.close()
        os.close(self._lock_fd)

    async def _drain(self) -> None:
        """On the loop, at close: no new rows; write the group opened in the last loop turns
        (its requests are being cancelled), wait for the flushes, stop watching."""
        self._closing = True
        if self._open.rows and not self._flushing and self._failed is None:
            self._write_open()
        deadline = time.monotonic() + 30  # bounded: a flush takes milliseconds
        while (self._waiting or self._flushing) and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        assert self._flusher is not None
        self._flusher.detach()

