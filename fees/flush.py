"""Writing the fee journal's frames durably without blocking the event loop.

Why: the loop must not wait on the device (a durable write takes 0.1-3 ms), and a flush
thread costs about 90 µs of system and 35 µs of Python time per flush in wake-ups and
interpreter-lock hand-offs, on the serving core (fees/README.md, "Fourth round"). Two ways:

- `DirectWrite` (`fees.journal_flush = "aio"`, the default): the loop hands each frame to the
  kernel as one asynchronous write with direct I/O and `RWF_DSYNC` (Linux AIO,
  `IOCB_CMD_PWRITE` on an `O_DIRECT` descriptor): the kernel writes the block, flushes the
  device's cache, then signals an eventfd that the loop watches. No Python thread wakes, no
  lock changes hands, and the completion work runs where the disk's interrupts are taken:
  65 µs of the serving core per write against 115 µs for the flush thread
  (`bench/journal_flush_costs.py`; a page-cache write with an AIO `fdatasync`, tried first,
  sat between them: the kernel's worker ran the flush on the serving core). Direct I/O
  writes whole 4 KiB blocks from an aligned buffer: the frame goes with the bytes of its
  first block written before it (kept in memory, rewritten unchanged) and zeros up to the
  next block boundary (the segment is zeros there already).
- `ThreadFlush` (`"thread"`, or wherever the probe at start-up fails: another system or
  architecture, a seccomp filter, a filesystem without direct I/O): `pwrite` into the page
  cache on the loop, `fdatasync` on a thread.

The kernel's AIO calls are reached through `ctypes` and `syscall(2)`: the standard library
has no asynchronous write, and none of the project's dependencies offers one.

Contract with the journal (fees/journal.py): one write in flight; `commit()` is called on the
loop, never while a write is in flight, with the frame's sequence number, the segment's
descriptor (opened with `O_DIRECT` when `direct` is true), its offset and bytes, and the
descriptors of segments left since the last commit (closed: each of their frames was made
durable by the commit that wrote it). Once durable, `publish(seq)` runs (the durable
sequence number, for the fold process) and then `release(seq, error)` on the loop. A failed
write or flush is reported as `error`, never retried: after a flush error the kernel may have
dropped the pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import mmap
import os
import platform
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from fees.metrics import FLUSH

log = logging.getLogger("jpki.fees")

Publish = Callable[[int], None]
Release = Callable[[int, "BaseException | None"], None]


class Flusher(Protocol):
    name: str
    direct: bool  # segments are opened with O_DIRECT and sized in whole blocks

    def commit(self, loop: asyncio.AbstractEventLoop, seq: int, fd: int, offset: int,
               frame: bytes, retired: Sequence[int]) -> None: ...

    def detach(self) -> None: ...

    def close(self) -> None: ...


def runs_on(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the caller runs on `loop` (its thread, inside it)."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _deliver(loop: asyncio.AbstractEventLoop | None, release: Release, seq: int,
             error: BaseException | None) -> None:
    """`release` on `loop`, from whichever thread; nobody waits on a closed loop."""
    if loop is None or loop.is_closed():
        return
    if runs_on(loop):
        release(seq, error)
        return
    with contextlib.suppress(RuntimeError):  # closed meanwhile (shutdown)
        loop.call_soon_threadsafe(release, seq, error)


class ThreadFlush:
    """One thread runs `fdatasync` and hands the result back to the loop."""

    name = "thread"
    direct = False

    def __init__(self, publish: Publish, release: Release) -> None:
        self._publish = publish
        self._release = release
        self._work: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, int, int] | None] = \
            queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="fee-flush", daemon=True)
        self._thread.start()

    def commit(self, loop: asyncio.AbstractEventLoop, seq: int, fd: int, offset: int,
               frame: bytes, retired: Sequence[int]) -> None:
        """The frame into the page cache now (OSError: nothing queued), durable later."""
        for old in retired:  # each of its frames was flushed by the commit that wrote it
            os.close(old)
        if os.pwrite(fd, frame, offset) != len(frame):
            raise OSError(f"short write to the fee journal (fd {fd})")
        self._work.put((loop, seq, fd))

    def _run(self) -> None:
        failed = False
        while (item := self._work.get()) is not None:
            loop, seq, fd = item
            error: BaseException | None = None
            if failed:
                error = OSError("an earlier flush of the fee journal failed")
            else:
                began = time.perf_counter()
                try:
                    os.fdatasync(fd)
                except OSError as exc:
                    log.critical("fee journal: fdatasync failed: %s", exc)
                    error, failed = exc, True
                FLUSH.observe(time.perf_counter() - began)
                if error is None:
                    self._publish(seq)
            _deliver(loop, self._release, seq, error)

    def detach(self) -> None:
        """Nothing to undo on the loop."""

    def close(self) -> None:
        self._work.put(None)
        self._thread.join(timeout=30)


# Linux AIO (include/uapi/linux/aio_abi.h)
_IOCB_CMD_PWRITE = 1
_IOCB_FLAG_RESFD = 1
BLOCK = 4096  # direct I/O offsets, lengths and buffers: a multiple of any logical block size
# io_setup, io_destroy, io_getevents, io_submit
_SYSCALLS = {"x86_64": (206, 207, 208, 209), "aarch64": (0, 1, 4, 2)}
_MAX_EVENTS = 8  # the context's capacity: the journal has one write in flight


class _IOCB(ctypes.Structure):
    _fields_ = [("aio_data", ctypes.c_uint64), ("aio_key", ctypes.c_uint32),
                ("aio_rw_flags", ctypes.c_int32), ("aio_lio_opcode", ctypes.c_uint16),
                ("aio_reqprio", ctypes.c_int16), ("aio_fildes", ctypes.c_uint32),
                ("aio_buf", ctypes.c_uint64), ("aio_nbytes", ctypes.c_uint64),
                ("aio_offset", ctypes.c_int64), ("aio_reserved2", ctypes.c_uint64),
                ("aio_flags", ctypes.c_uint32), ("aio_resfd", ctypes.c_uint32)]


class _Event(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64), ("obj", ctypes.c_uint64),
                ("res", ctypes.c_int64), ("res2", ctypes.c_int64)]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Aio:
    """An AIO context whose completions signal a non-blocking eventfd."""

    def __init__(self) -> None:
        numbers = _SYSCALLS.get(platform.machine())
        if numbers is None or not hasattr(os, "eventfd"):
            raise OSError(f"Linux AIO is not wired for {platform.system()} "
                          f"{platform.machine()}")
        setup, self._destroy, getevents, submit = numbers
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        context = ctypes.c_ulong(0)
        self._call(setup, ctypes.c_uint(_MAX_EVENTS), ctypes.byref(context))
        self._ctx = ctypes.c_ulong(context.value)
        self.eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # built once: a write is two system calls, not a round of ctypes allocations
        self._iocb = _IOCB(aio_lio_opcode=_IOCB_CMD_PWRITE, aio_rw_flags=os.RWF_DSYNC,
                           aio_flags=_IOCB_FLAG_RESFD, aio_resfd=self.eventfd)
        self._request = (ctypes.POINTER(_IOCB) * 1)(ctypes.pointer(self._iocb))
        self._events = (_Event * _MAX_EVENTS)()
        self._submit = ctypes.c_long(submit)
        self._getevents = ctypes.c_long(getevents)
        self._one = ctypes.c_long(1)
        self._capacity = ctypes.c_long(_MAX_EVENTS)
        self._now = ctypes.byref(_Timespec(0, 0))

    def _call(self, number: int, *args: object) -> int:
        return self._checked(int(self._libc.syscall(ctypes.c_long(number), *args)))

    @staticmethod
    def _checked(result: int) -> int:
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"Linux AIO: {os.strerror(err)}")
        return result

    def submit_write(self, fd: int, address: int, length: int, offset: int) -> None:
        """Queue one durable write (`RWF_DSYNC`) of `length` bytes at `address`."""
        iocb = self._iocb
        iocb.aio_fildes, iocb.aio_buf, iocb.aio_nbytes, iocb.aio_offset = (fd, address, length,
                                                                           offset)
        if self._checked(self._libc.syscall(self._submit, self._ctx, self._one,
                                            self._request)) != 1:
            raise OSError("Linux AIO queued no request")

    def reap(self, wait_for: int = 0, timeout: float = 0.0) -> list[int]:
        """The results (bytes written, or -errno) of completed writes; waits for `wait_for`
        of them."""
        limit = ctypes.byref(_Timespec(int(timeout), int(timeout % 1 * 1e9))) if wait_for \
            else self._now
        done = self._checked(self._libc.syscall(self._getevents, self._ctx,
                                                ctypes.c_long(wait_for), self._capacity,
                                                self._events, limit))
        events = self._events
        return [events[i].res for i in range(done)]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._call(self._destroy, self._ctx)
        os.close(self.eventfd)


class _Staging:
    """A page-aligned buffer for direct I/O (an anonymous mapping), grown on demand."""

    def __init__(self, size: int) -> None:
        self.map = mmap.mmap(-1, size)
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self.map))

    def fit(self, size: int) -> _Staging:
        return self if size <= len(self.map) else _Staging(-(-size // BLOCK) * BLOCK)


class DirectWrite:
    """Each frame written with direct I/O and `RWF_DSYNC` by the kernel (Linux AIO),
    completed on the loop through an eventfd."""

    name = "aio"
    direct = True

    def __init__(self, publish: Publish, release: Release, directory: Path) -> None:
        self._aio = _Aio()  # OSError: not available here
        self._publish = publish
        self._release = release
        self._loop: asyncio.AbstractEventLoop | None = None
        self._staging = _Staging(16 * BLOCK)
        self._zeros = bytes(BLOCK)
        self._failed = False
        # the first block of the next write: (descriptor, bytes already in it)
        self._tail: tuple[int, bytes] = (-1, b"")
        # the write in flight: sequence number, start, whether one is pending
        self._seq = 0
        self._length = 0
        self._began = 0.0
        self._pending = False
        try:
            self._probe(directory)
        except BaseException:
            self._aio.close()
            raise

    def _probe(self, directory: Path) -> None:
        """One durable direct write into a scratch file, waited for: a filesystem or kernel
        that refuses either is found here, at start-up, not on the first answer."""
        path = directory / ".direct-io-probe"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, BLOCK)
            direct = os.open(path, os.O_RDWR | os.O_DIRECT)
            try:
                self._aio.submit_write(direct, self._staging.address, BLOCK, 0)
                results = self._aio.reap(wait_for=1, timeout=10.0)
                if not results or results[0] != BLOCK:
                    raise OSError(f"direct write probe returned {results}")
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self._aio.eventfd)
            finally:
                os.close(direct)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)

    def commit(self, loop: asyncio.AbstractEventLoop, seq: int, fd: int, offset: int,
               frame: bytes, retired: Sequence[int]) -> None:
        for old in retired:  # each of its frames was made durable by the write that wrote it
            os.close(old)
        if self._failed:
            raise OSError("an earlier write of the fee journal failed; restart the daemon")
        self._watch(loop)
        block = offset - offset % BLOCK
        tail_fd, tail = self._tail
        head = tail[:offset - block] if tail_fd == fd else b""
        if len(head) != offset - block:
            raise OSError(f"fee journal: no copy of the block before offset {offset}")
        end = len(head) + len(frame)
        length = -(-end // BLOCK) * BLOCK
        staging = self._staging = self._staging.fit(length)
        buffer = staging.map
        buffer[:len(head)] = head
        buffer[len(head):end] = frame
        buffer[end:length] = self._zeros[:length - end]
        self._aio.submit_write(fd, staging.address, length, block)  # OSError: nothing queued
        self._tail = (fd, bytes(buffer[end - end % BLOCK:end]))
        self._seq, self._length = seq, length
        self._began, self._pending = time.perf_counter(), True

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is self._loop:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._aio.eventfd)
        loop.add_reader(self._aio.eventfd, self._completed)
        self._loop = loop

    def _completed(self) -> None:
        """On the loop, when the eventfd is readable: reap the write and release it."""
        try:
            os.eventfd_read(self._aio.eventfd)
        except BlockingIOError:
            return
        self._account(self._aio.reap(), on_loop=True)

    def _account(self, results: list[int], on_loop: bool = False) -> None:
        if not results or not self._pending:
            return
        self._pending = False
        FLUSH.observe(time.perf_counter() - self._began)
        error: BaseException | None = None
        if results[0] < 0:
            error = OSError(-results[0], os.strerror(-results[0]))
        elif results[0] != self._length:
            error = OSError(f"fee journal: short write ({results[0]} of {self._length} bytes)")
        if error is not None:
            log.critical("fee journal: durable write failed: %s", error)
            self._failed = True
            self._tail = (-1, b"")
        else:
            self._publish(self._seq)
        if on_loop:
            self._release(self._seq, error)
        else:
            _deliver(self._loop, self._release, self._seq, error)

    def detach(self) -> None:
        """On the loop, before `close()` from another thread: stop watching the eventfd."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._aio.eventfd)
        self._loop = None

    def close(self) -> None:
        """Waits for a write still in flight (its loop may be gone), then frees the context.
        The loop must not be watching any more: `detach()` on it, or the loop is over."""
        deadline = time.monotonic() + 30
        while self._pending and time.monotonic() < deadline:
            self._account(self._aio.reap(wait_for=1, timeout=1.0))
        self._aio.close()


def open_flusher(mode: str, publish: Publish, release: Release, directory: Path) -> Flusher:
    """The writer for `fees.journal_flush`: direct I/O through Linux AIO where the system
    and the journal's filesystem offer it, else the flush thread."""
    if mode == "aio":
        try:
            return DirectWrite(publish, release, directory)
        except OSError as exc:
            log.warning("fee journal: durable direct writes unavailable here (%s); flushing"
                        " with a thread", exc)
    return ThreadFlush(publish, release)
