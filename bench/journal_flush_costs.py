"""What one durable journal write costs on this disk, by the way it is written (issue 15).

Why: a metered OCSP answer waits for its journal frame's flush, so the flush latency bounds the
metered path's p99 and, at a given concurrency, its rate. This measures, in the data
directory's filesystem (a scratch directory next to this checkout unless given one):

- append: `write` at the end of a growing file + `fdatasync` (the file's size changes, so
  every flush also commits the filesystem's journal: metadata plus data);
- in place: `pwrite` into a preallocated, zero-filled file + `fdatasync` (size and block map
  unchanged: only the data blocks go to the device);
- O_DSYNC: `pwrite` in place on a file opened with O_DSYNC (the flush inside the write call);
- O_DIRECT|O_DSYNC: the same, aligned 4 KiB, bypassing the page cache;
- lanes: 1, 2 and 4 threads flushing in place concurrently, each its own file: per-flush
  latency and flushes per second, to see whether concurrent flushes on one filesystem overlap
  or queue behind each other in its journal;
- the journal's two writers (fees/flush.py) as the daemon runs them, one write at a time on a
  real event loop pinned to CPU 0: `DirectWrite` (direct I/O, RWF_DSYNC, Linux AIO) and
  `ThreadFlush` (page cache, fdatasync on a thread). Printed: the busy time of CPU 0 (the
  serving core, whoever ran there: the process, kernel workers) and of the other CPUs per
  write, from /proc/stat over 20 times the flush count. That is what a metered answer's
  share of a flush costs the core that serves it.

Usage: .venv/bin/python bench/journal_flush_costs.py [directory] [flushes per case]
"""

from __future__ import annotations

import asyncio
import mmap
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ocsp_bench import cpu_busy_seconds  # noqa: E402  (bench/ is the script's directory)

from fees.flush import DirectWrite, Flusher, ThreadFlush  # noqa: E402

FRAME = 2048           # a group of ~20 rows, the size seen at wrk -c64
SEGMENT = 16 << 20     # the journal's segment size


def _zero_file(path: Path, size: int) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    block = bytes(1 << 20)
    for _ in range(size // len(block)):
        os.write(fd, block)
    os.fsync(fd)
    return fd


def _figures(label: str, samples: list[float], wall: float | None = None) -> None:
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    rate = f"{len(samples) / wall:>8.0f} flush/s" if wall else ""
    print(f"{label:<44} median {statistics.median(samples) * 1e3:6.2f} ms"
          f"   p99 {p99 * 1e3:6.2f} ms  {rate}")


def _timed(count: int, step: Callable[[int], None]) -> list[float]:
    out = []
    for i in range(count):
        began = time.perf_counter()
        step(i)
        out.append(time.perf_counter() - began)
    return out


def _writer_costs(work: Path, name: str,
                  make: Callable[[Callable[[int], None], Callable[[int, BaseException | None],
                                                                   None]], Flusher],
                  count: int) -> None:
    """`count` frames committed one after the other through `make()`'s writer on a loop."""
    os.close(_zero_file(work / "writer.log", SEGMENT))
    frame = os.urandom(FRAME)
    direct: list[bool] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def release(_seq: int, error: BaseException | None) -> None:
            assert error is None, error
            done.set()

        flusher = make(lambda _seq: None, release)
        direct.append(flusher.direct)
        fd = os.open(work / "writer.log", os.O_RDWR | (os.O_DIRECT if flusher.direct else 0))
        try:
            for i in range(count):
                flusher.commit(loop, i + 1, fd, (i * FRAME) % (SEGMENT - FRAME), frame, [])
                await done.wait()
                done.clear()
        finally:
            flusher.detach()
            flusher.close()
            os.close(fd)

    os.sched_setaffinity(0, {0})
    try:
        began, wall = cpu_busy_seconds(), time.perf_counter()
        asyncio.run(run())
        wall = time.perf_counter() - wall
        ended = cpu_busy_seconds()
    finally:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
        (work / "writer.log").unlink()
    core0 = (ended[0] - began[0]) / count * 1e6
    others = sum(e - b for e, b in zip(ended[1:], began[1:], strict=True)) / count * 1e6
    print(f"{name:<44} {wall / count * 1e6:7.1f} µs a write; busy per write: CPU 0"
          f" {core0:5.1f} µs, other CPUs {others:5.1f} µs")


def main() -> int:
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    work = Path(tempfile.mkdtemp(prefix="flush-costs-", dir=base))
    frame = os.urandom(FRAME)
    try:
        fd = os.open(work / "append.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _figures("append + fdatasync (growing file)",
                 _timed(count, lambda i: (os.write(fd, frame), os.fdatasync(fd))))
        os.close(fd)

        fd = _zero_file(work / "inplace.log", SEGMENT)
        _figures("pwrite in place + fdatasync (preallocated)",
                 _timed(count, lambda i: (os.pwrite(fd, frame, i * FRAME), os.fdatasync(fd))))
        os.close(fd)

        _zero_file(work / "dsync.log", SEGMENT)
        fd = os.open(work / "dsync.log", os.O_WRONLY | os.O_DSYNC)
        _figures("pwrite in place, O_DSYNC",
                 _timed(count, lambda i: os.pwrite(fd, frame, i * FRAME)))
        os.close(fd)

        _zero_file(work / "direct.log", SEGMENT)
        try:
            fd = os.open(work / "direct.log", os.O_WRONLY | os.O_DSYNC | os.O_DIRECT)
            aligned = mmap.mmap(-1, 4096)
            aligned.write(frame[:4096].ljust(4096, b"\0"))
            _figures("pwrite in place, O_DIRECT|O_DSYNC (4 KiB)",
                     _timed(count, lambda i: os.pwritev(fd, [aligned], i * 4096)))
            os.close(fd)
        except OSError as exc:
            print(f"O_DIRECT: not available here ({exc})")

        for lanes in (1, 2, 4):
            fds = [_zero_file(work / f"lane{lanes}-{n}.log", SEGMENT) for n in range(lanes)]
            results: list[list[float]] = [[] for _ in range(lanes)]

            def run(fd: int, out: list[float]) -> None:
                out.extend(_timed(count, lambda i: (os.pwrite(fd, frame, i * FRAME),
                                                    os.fdatasync(fd))))

            threads = [threading.Thread(target=run, args=(fds[n], results[n]))
                       for n in range(lanes)]
            began = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - began
            _figures(f"{lanes} lane(s) in place, concurrently",
                     [s for r in results for s in r], wall)
            for fd in fds:
                os.close(fd)

        try:
            _writer_costs(work, "DirectWrite (AIO, O_DIRECT, RWF_DSYNC)",
                          lambda publish, release: DirectWrite(publish, release, work),
                          count * 20)
        except OSError as exc:
            print(f"DirectWrite: not available here ({exc})")
        _writer_costs(work, "ThreadFlush (pwrite, fdatasync on a thread)", ThreadFlush,
                      count * 20)
    finally:
        for path in work.iterdir():
            path.unlink()
        work.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
