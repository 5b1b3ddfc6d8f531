"""How the fee journal's frames are made durable (fees/flush.py): direct writes with
RWF_DSYNC by Linux AIO, completed on the event loop, or page-cache writes flushed by a thread,
on real files and the real kernel.

Either way a write releases its answers only once durable, publishes the durable sequence
number for the fold process first, and a write or flush the kernel refuses fails its answers
instead of releasing them.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from fees import progress
from fees.flush import (
    BLOCK,
    DirectWrite,
    Flusher,
    Publish,
    Release,
    ThreadFlush,
    open_flusher,
)
from fees.frames import Row
from fees.journal import Journal, JournalFailed
from jpki.context import Context
from tests.helpers import jpki


def _ledger_count(context: Context, verifier_id: int) -> int:
    return int(context.store.conn.execute(
        "SELECT count(*) FROM ledger WHERE verifier_id = ?", (verifier_id,)).fetchone()[0])


@pytest.mark.parametrize("mode", ["aio", "thread"])
def test_each_flusher_releases_answers_once_durable_and_folds_each_once(
        context: Context, mode: str) -> None:
    data_dir = context.data_dir
    jpki(data_dir, "verifier", "add", f"bank-{mode}")
    verifier_id = context.store.conn.execute(
        "SELECT id FROM verifiers WHERE name = ?", (f"bank-{mode}",)).fetchone()[0]
    journal = Journal(data_dir, fold_interval=3600, segment_bytes=2048, flush=mode)
    journal.start("status-confirmation-repeat")
    try:
        assert journal._flusher is not None  # noqa: SLF001 - the flusher under test
        assert journal._flusher.name == mode  # noqa: SLF001 - Linux AIO works on this host
        durable_seen: list[int] = []
        shared = progress.Progress(journal.directory)

        async def one(i: int) -> None:
            await journal.record([(1790000000 + i, "2026-09", 2026, verifier_id,
                                   "signature_check", "ocsp", format(i, "x"), None, 0,
                                   "signature-check", 20)])
            # released only once published as durable (the fold process may fold it)
            durable_seen.append(shared.get(progress.DURABLE))

        async def load() -> None:
            for start in range(0, 600, 30):  # many flushes, across several 2 KiB segments
                await asyncio.gather(*(one(i) for i in range(start, start + 30)))

        asyncio.run(load())
        assert len(durable_seen) == 600 and min(durable_seen) >= 1
        assert shared.get(progress.WRITING) > 2, "the frames should have rotated segments"
        shared.close()
    finally:
        journal.close()
    assert _ledger_count(context, verifier_id) == 600


def _run_commits(flusher_of: Callable[[Publish, Release], Flusher],
                 commits: list[tuple[int, int, int, bytes, list[int]]],
                 ) -> tuple[list[int], list[tuple[int, BaseException | None]]]:
    """Each (seq, fd, offset, frame, retired) committed in turn on a real loop, waiting for
    its release; (published, released)."""
    published: list[int] = []
    released: list[tuple[int, BaseException | None]] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def release(seq: int, error: BaseException | None) -> None:
            released.append((seq, error))
            done.set()

        flusher = flusher_of(published.append, release)
        try:
            for seq, fd, offset, frame, retired in commits:
                flusher.commit(loop, seq, fd, offset, frame, retired)
                await asyncio.wait_for(done.wait(), 10)
                done.clear()
        finally:
            flusher.detach()
            flusher.close()

    asyncio.run(run())
    return published, released


def test_direct_writes_put_each_frame_in_place_across_block_boundaries(
        tmp_path: Path) -> None:
    """Direct I/O writes whole 4 KiB blocks: each frame goes with the bytes written before it
    in its first block, rewritten unchanged, and zeros after it. Read back through the page
    cache (as the fold process reads), the segment is the frames end to end, then zeros."""
    path = tmp_path / "segment.log"
    path.write_bytes(bytes(3 * BLOCK))
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    frames = [bytes([65 + i]) * size for i, size in enumerate((100, 3000, 1500, 4096, 7, 1))]
    offsets = [sum(len(f) for f in frames[:i]) for i in range(len(frames))]
    try:
        published, released = _run_commits(
            lambda publish, release: DirectWrite(publish, release, tmp_path),
            [(i + 1, fd, offset, frame, []) for i, (offset, frame)
             in enumerate(zip(offsets, frames, strict=True))])
    finally:
        os.close(fd)
    assert published == [1, 2, 3, 4, 5, 6]
    assert released == [(seq, None) for seq in published]
    written = b"".join(frames)
    assert path.read_bytes() == written + bytes(3 * BLOCK - len(written))


def test_a_write_the_kernel_refuses_is_an_error_and_publishes_nothing(tmp_path: Path) -> None:
    """A descriptor the kernel will not write fails at submission, whatever the mode (a
    read-only one for direct I/O, a pipe for a positioned write): the journal then fails
    that group's answers (tryLater) and nothing is published. The thread's flushes of a good
    file go on."""
    path = tmp_path / "segment.log"
    path.write_bytes(bytes(BLOCK))
    read_only = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        with pytest.raises(OSError) as refused:
            _run_commits(lambda publish, release: DirectWrite(publish, release, tmp_path),
                         [(1, read_only, 0, b"frame", [])])
    finally:
        os.close(read_only)
    assert refused.value.errno == errno.EBADF

    read_end, write_end = os.pipe()
    good = os.open(tmp_path / "good.log", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError):  # a pipe takes no positioned write: nothing queued
            _run_commits(ThreadFlush, [(1, write_end, 0, b"frame", [])])
        published, released = _run_commits(
            ThreadFlush, [(1, good, 0, b"one", []), (2, good, 3, b"two", [])])
    finally:
        for fd in (read_end, write_end, good):
            os.close(fd)
    assert published == [1, 2] and [error for _seq, error in released] == [None, None]


def test_without_direct_io_the_journal_flushes_with_a_thread(tmp_path: Path) -> None:
    """The start-up probe (one durable direct write in the journal's directory) fails where
    the directory cannot take it; the journal then writes through the page cache and flushes
    with a thread, and says so."""
    flusher = open_flusher("aio", lambda _seq: None, lambda _seq, _error: None,
                           tmp_path / "missing")
    try:
        assert isinstance(flusher, ThreadFlush) and not flusher.direct
    finally:
        flusher.close()
    flusher = open_flusher("aio", lambda _seq: None, lambda _seq, _error: None, tmp_path)
    try:
        assert isinstance(flusher, DirectWrite) and flusher.direct
        assert list(tmp_path.iterdir()) == []  # the probe's scratch file is gone
    finally:
        flusher.close()


def test_a_failed_flush_stops_metering_with_a_clear_error(context: Context) -> None:
    """The journal turns a flusher's error report (as the test above gets from the kernel)
    into JournalFailed, an OSError that OCSP answers as tryLater, for every later record
    until a restart. The report is handed to the journal's release path directly: this host's
    disk does not fail on demand."""
    jpki(context.data_dir, "verifier", "add", "bank-failed")
    verifier_id = context.store.conn.execute(
        "SELECT id FROM verifiers WHERE name = 'bank-failed'").fetchone()[0]
    journal = Journal(context.data_dir, fold_interval=3600)
    journal.start("status-confirmation-repeat")
    row = (1790000000, "2026-09", 2026, verifier_id, "signature_check", "ocsp", "ab", None, 0,
           "signature-check", 20)
    try:
        async def record_after_failure() -> BaseException | None:
            await journal.record([row])  # a good flush first
            journal._released(1 << 40, OSError(errno.EIO, "Input/output error"))  # noqa: SLF001
            try:
                await journal.record([row])
            except OSError as exc:
                return exc
            return None

        refused = asyncio.run(record_after_failure())
    finally:
        journal.close()
    assert isinstance(refused, JournalFailed) and "restart the daemon" in str(refused)


def test_retired_segments_are_closed_at_the_next_commit(tmp_path: Path) -> None:
    """A segment left behind (its frames durable: each commit made its own frame durable) is
    closed by the next commit, in both modes."""
    for flusher_of, flags in (
            (lambda publish, release: DirectWrite(publish, release, tmp_path), os.O_DIRECT),
            (ThreadFlush, 0)):
        path = tmp_path / "new.log"
        path.write_bytes(bytes(BLOCK))
        new = os.open(path, os.O_RDWR | flags)
        retired = os.open(tmp_path / "new.log", os.O_RDONLY)
        try:
            _run_commits(flusher_of, [(1, new, 0, b"frame", [retired])])
            with pytest.raises(OSError):
                os.fstat(retired)  # closed by the commit
        finally:
            os.close(new)


@pytest.mark.parametrize(("siblings", "frames_expected"), [(5, "two"), (50, "several")])
def test_under_load_the_next_write_waits_for_the_commit_delay(
        context: Context, siblings: int, frames_expected: str) -> None:
    """Answers made while a write is under way go as the next write. If that write carried at
    least `commit_siblings` answers, the next starts no sooner than `commit_delay` after it,
    so the answers of every burst made meanwhile go as one frame (two frames for six bursts).
    After a smaller write nothing waits: the bursts go as several frames."""
    jpki(context.data_dir, "verifier", "add", f"bank-delay-{siblings}")
    verifier_id = context.store.conn.execute(
        "SELECT id FROM verifiers WHERE name = ?", (f"bank-delay-{siblings}",)).fetchone()[0]
    journal = Journal(context.data_dir, fold_interval=3600, commit_delay=1.0,
                      commit_siblings=siblings)
    journal.start("status-confirmation-repeat")
    first_seq = journal._next_seq  # noqa: SLF001 - frames are counted by sequence number

    def rows(burst: int) -> list[Row]:
        return [(1790000000 + burst * 10 + i, "2026-09", 2026, verifier_id, "signature_check",
                 "ocsp",
                 format(burst * 10 + i, "x"), None, 0, "signature-check", 20)
                for i in range(10)]

    async def bursts() -> None:
        waiting = [journal.submit(rows(0))]  # the first write, at the end of this loop turn
        await asyncio.sleep(0)  # that turn ran: the first write is under way
        waiting.append(journal.submit(rows(1)))
        for burst in range(2, 6):
            await asyncio.sleep(0.05)
            waiting.append(journal.submit(rows(burst)))
        await asyncio.gather(*waiting)

    try:
        asyncio.run(bursts())
        frames = journal._next_seq - first_seq  # noqa: SLF001
    finally:
        journal.close()
    if frames_expected == "two":
        assert frames == 2
    else:
        assert frames >= 3
    assert int(context.store.conn.execute(  # every answer folded once, at close
        "SELECT count(*) FROM ledger WHERE verifier_id = ?", (verifier_id,)).fetchone()[0]) == 60


def test_the_commit_delay_holds_to_the_sub_millisecond_on_the_daemons_loop(
        context: Context) -> None:
    """uvloop (the daemon's loop) counts timers in whole milliseconds: a 1.4 ms delay set as a
    timer fired after about 1 ms. Under a steady stream of answers, no write may start sooner
    than `commit_delay` after the last one began, and the delay gathers each stream of
    answers into a few writes, not one per loop turn."""
    import uvloop

    jpki(context.data_dir, "verifier", "add", "bank-steady")
    verifier_id = context.store.conn.execute(
        "SELECT id FROM verifiers WHERE name = 'bank-steady'").fetchone()[0]
    delay = 0.0014
    journal = Journal(context.data_dir, fold_interval=3600, commit_delay=delay,
                      commit_siblings=1)
    journal.start("status-confirmation-repeat")
    starts: list[float] = []
    answers = 0

    async def steady() -> None:
        nonlocal answers
        waiting: list[asyncio.Future[None]] = []
        loop = asyncio.get_running_loop()
        until = loop.time() + 0.1
        while loop.time() < until:  # bounded: 0.1 s of answers, one every loop turn
            waiting.append(journal.submit([(1790000000 + answers, "2026-09", 2026, verifier_id,
                                            "signature_check", "ocsp", format(answers, "x"),
                                            None, 0, "signature-check", 20)]))
            answers += 1
            started = journal._last_start  # noqa: SLF001 - when the latest write began
            if started and (not starts or started != starts[-1]):
                starts.append(started)
            await asyncio.sleep(0)
        await asyncio.gather(*waiting)

    try:
        uvloop.run(steady())
    finally:
        journal.close()
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert len(gaps) >= 5, starts
    assert min(gaps) >= delay, [f"{gap * 1e3:.2f} ms" for gap in gaps]
    assert len(starts) < answers / 5  # the delay gathered answers: not one write per turn
    assert int(context.store.conn.execute(  # every answer folded once, at close
        "SELECT count(*) FROM ledger WHERE verifier_id = ?", (verifier_id,)).fetchone()[0]) \
        == answers
