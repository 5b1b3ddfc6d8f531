"""How the fee journal is made durable (fees/flush.py): Linux AIO completed on the event loop,
or a flush thread, on real files of the test's data directory.

Either way a flush releases its answers only after `fdatasync` returned, publishes the
durable sequence number for the fold process first, and a flush the kernel refuses fails its
answers and every later one (no retry after a flush error) instead of releasing them.
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from fees import progress
from fees.flush import AioFlush, ThreadFlush, open_flusher
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


def test_a_flush_the_kernel_refuses_fails_its_answers_and_all_later_ones(
        tmp_path: Path) -> None:
    """A pipe has no fsync: Linux AIO refuses it at submission, the flush falls back to the
    thread, whose fdatasync fails too; the answers get the error, nothing is published, and
    the next flush of a good file fails as well (the kernel may have dropped pages)."""
    published: list[int] = []
    released: list[tuple[int, BaseException | None]] = []
    read_end, write_end = os.pipe()
    good = os.open(tmp_path / "segment", os.O_RDWR | os.O_CREAT, 0o600)

    async def flushes() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def release(seq: int, error: BaseException | None) -> None:
            released.append((seq, error))
            done.set()

        flusher = open_flusher("aio", published.append, release)
        assert isinstance(flusher, AioFlush)
        try:
            flusher.flush(loop, 1, write_end, ())
            await asyncio.wait_for(done.wait(), 10)
            done.clear()
            os.pwrite(good, b"frame", 0)
            flusher.flush(loop, 2, good, ())
            await asyncio.wait_for(done.wait(), 10)
        finally:
            flusher.detach()
            flusher.close()

    try:
        asyncio.run(flushes())
    finally:
        for fd in (read_end, write_end, good):
            os.close(fd)
    assert published == []
    assert [seq for seq, _error in released] == [1, 2]
    first, second = released[0][1], released[1][1]
    assert isinstance(first, OSError) and first.errno == errno.EINVAL
    assert isinstance(second, OSError) and "earlier flush" in str(second)


def test_a_failed_flush_stops_metering_with_a_clear_error(context: Context) -> None:
    """The journal turns a flusher's error report (as the test above gets from the kernel)
    into JournalFailed, an OSError that OCSP answers as tryLater, for every later record
    until a restart. The report is handed to the journal's release path directly: this host's
    disk does not fail on demand."""
    journal = Journal(context.data_dir, fold_interval=3600)
    journal.start("status-confirmation-repeat")
    row = (1790000000, "2026-09", 2026, 1, "signature_check", "ocsp", "ab", None, 0,
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


def test_thread_flush_closes_retired_segments(tmp_path: Path) -> None:
    """A segment left behind is synced with the next flush, then closed by the flusher."""
    old = os.open(tmp_path / "old", os.O_RDWR | os.O_CREAT, 0o600)
    new = os.open(tmp_path / "new", os.O_RDWR | os.O_CREAT, 0o600)
    released: list[int] = []

    async def flush() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def release(seq: int, error: BaseException | None) -> None:
            assert error is None
            released.append(seq)
            done.set()

        for flusher in (ThreadFlush(lambda _seq: None, release),
                        open_flusher("aio", lambda _seq: None, release)):
            retired = os.dup(old)
            flusher.flush(loop, len(released) + 1, new, [retired])
            await asyncio.wait_for(done.wait(), 10)
            done.clear()
            flusher.detach()
            flusher.close()
            with pytest.raises(OSError):
                os.fstat(retired)  # closed by the flusher

    try:
        asyncio.run(flush())
    finally:
        os.close(old)
        os.close(new)
    assert released == [1, 2]
