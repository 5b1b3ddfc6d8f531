"""Making the fee journal durable without blocking the event loop: an `fdatasync` of the
segments written since the last flush, completed on the loop.

Why two ways: the loop must not wait on the device (a flush takes 0.1-3 ms), and a flush
thread costs about 90 µs of system and 35 µs of Python time per flush in wake-ups and
interpreter-lock hand-offs: on one core, most of what a metered answer cost more than an
anonymous one (fees/README.md, "Fourth round"). Linux AIO runs the `fdatasync` in the
kernel's workqueue (IOCB_CMD_FDSYNC, Linux 4.18 and later) and signals an eventfd that the
loop watches, so no Python thread wakes and no lock changes hands. Where AIO is missing
(another system or architecture, a seccomp filter, an old kernel) or refused at run time, a
flush thread does the same work (`fees.journal_flush = "thread"` chooses it outright).

The kernel's AIO calls are reached through `ctypes` and `syscall(2)`: the standard library
has no asynchronous `fdatasync`, and none of the project's dependencies offers one.

Contract with the journal (fees/journal.py): one flush in flight; `flush()` is called on the
loop with the sequence number of the last frame written, the descriptor written and any
descriptors retired since the last flush (synced, then closed). Once every descriptor is
durable, `publish(seq)` runs (the durable sequence number, for the fold process) and then
`release(seq, error)` on the loop. A failed `fdatasync` is reported as `error`, never retried:
after a flush error the kernel may have dropped the pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import platform
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from fees.metrics import FLUSH

log = logging.getLogger("jpki.fees")

Publish = Callable[[int], None]
Release = Callable[[int, "BaseException | None"], None]
MODES = ("aio", "thread")


class Flusher(Protocol):
    name: str

    def flush(self, loop: asyncio.AbstractEventLoop, seq: int, fd: int,
              retired: Sequence[int]) -> None: ...

    def detach(self) -> None: ...

    def close(self) -> None: ...


def _deliver(loop: asyncio.AbstractEventLoop | None, release: Release, seq: int,
             error: BaseException | None) -> None:
    """`release` on `loop`, from whichever thread; nobody waits on a closed loop."""
    if loop is None or loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        release(seq, error)
        return
    with contextlib.suppress(RuntimeError):  # closed meanwhile (shutdown)
        loop.call_soon_threadsafe(release, seq, error)


class ThreadFlush:
    """One thread runs `fdatasync` and hands the result back to the loop."""

    name = "thread"

    def __init__(self, publish: Publish, release: Release) -> None:
        self._publish = publish
        self._release = release
        self._work: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, int, tuple[int, ...],
                                            Sequence[int]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="fee-flush", daemon=True)
        self._thread.start()

    def flush(self, loop: asyncio.AbstractEventLoop, seq: int, fd: int,
              retired: Sequence[int]) -> None:
        self._work.put((loop, seq, (*retired, fd), retired))

    def _run(self) -> None:
        failed = False
        while (item := self._work.get()) is not None:
            loop, seq, fds, retired = item
            error: BaseException | None = None
            if failed:
                error = OSError("an earlier flush of the fee journal failed")
            else:
                began = time.perf_counter()
                try:
                    for fd in dict.fromkeys(fds):
                        os.fdatasync(fd)
                except OSError as exc:
                    log.critical("fee journal: fdatasync failed: %s", exc)
                    error, failed = exc, True
                FLUSH.observe(time.perf_counter() - began)
                if error is None:
                    self._publish(seq)
            for fd in retired:
                os.close(fd)
            _deliver(loop, self._release, seq, error)

    def detach(self) -> None:
        """Nothing to undo on the loop."""

    def close(self) -> None:
        self._work.put(None)
        self._thread.join(timeout=30)


# Linux AIO (include/uapi/linux/aio_abi.h)
_IOCB_CMD_FDSYNC = 3
_IOCB_FLAG_RESFD = 1
# io_setup, io_destroy, io_getevents, io_submit
_SYSCALLS = {"x86_64": (206, 207, 208, 209), "aarch64": (0, 1, 4, 2)}
_MAX_EVENTS = 8


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
        # built once: a flush is two system calls, not a round of ctypes allocations
        self._iocbs = (_IOCB * _MAX_EVENTS)()
        self._pointers = (ctypes.POINTER(_IOCB) * _MAX_EVENTS)()
        for i in range(_MAX_EVENTS):
            iocb = self._iocbs[i]
            iocb.aio_data, iocb.aio_lio_opcode = i, _IOCB_CMD_FDSYNC
            iocb.aio_flags, iocb.aio_resfd = _IOCB_FLAG_RESFD, self.eventfd
            self._pointers[i] = ctypes.pointer(iocb)
        self._events = (_Event * _MAX_EVENTS)()
        self._submit = ctypes.c_long(submit)
        self._getevents = ctypes.c_long(getevents)
        self._counts = [ctypes.c_long(n) for n in range(_MAX_EVENTS + 1)]
        self._now = ctypes.byref(_Timespec(0, 0))

    def _call(self, number: int, *args: object) -> int:
        return self._checked(int(self._libc.syscall(ctypes.c_long(number), *args)))

    @staticmethod
    def _checked(result: int) -> int:
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"Linux AIO: {os.strerror(err)}")
        return result

    def submit_fdsync(self, fds: Sequence[int]) -> int:
        """Queue an `fdatasync` of each descriptor; the number queued (from the first)."""
        for i, fd in enumerate(fds):
            self._iocbs[i].aio_fildes = fd
        return self._checked(self._libc.syscall(self._submit, self._ctx,
                                                self._counts[len(fds)], self._pointers))

    def reap(self, wait_for: int = 0, timeout: float = 0.0) -> list[int]:
        """The results (0 or -errno) of completed requests; waits for `wait_for` of them."""
        limit = ctypes.byref(_Timespec(int(timeout), int(timeout % 1 * 1e9))) if wait_for \
            else self._now
        done = self._checked(self._libc.syscall(self._getevents, self._ctx,
                                                self._counts[wait_for],
                                                self._counts[_MAX_EVENTS], self._events, limit))
        events = self._events
        return [events[i].res for i in range(done)]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._call(self._destroy, self._ctx)
        os.close(self.eventfd)


class AioFlush:
    """`fdatasync` by the kernel (Linux AIO), completed on the loop through an eventfd."""

    name = "aio"

    def __init__(self, publish: Publish, release: Release) -> None:
        self._aio = _Aio()  # OSError: not available here
        self._publish = publish
        self._release = release
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fallback: ThreadFlush | None = None
        self._failed = False
        # the flush in flight: sequence number, requests pending, retired fds, start, error
        self._seq = 0
        self._pending = 0
        self._retired: Sequence[int] = ()
        self._began = 0.0
        self._error: BaseException | None = None

    def flush(self, loop: asyncio.AbstractEventLoop, seq: int, fd: int,
              retired: Sequence[int]) -> None:
        if self._fallback is not None:
            self._fallback.flush(loop, seq, fd, retired)
            return
        if self._failed:
            for old in retired:
                os.close(old)
            loop.call_soon(self._release, seq, OSError("an earlier flush of the fee journal "
                                                       "failed"))
            return
        self._watch(loop)
        fds = list(dict.fromkeys((*retired, fd))) if retired else [fd]
        self._began = time.perf_counter()
        try:
            queued = self._aio.submit_fdsync(fds)
            if queued < 1:
                raise OSError("Linux AIO queued no request")
        except OSError as exc:  # refused (an old kernel, a seccomp filter): the thread does it
            log.warning("fee journal: Linux AIO refused an fdatasync (%s); flushing with a "
                        "thread from now on", exc)
            self._fallback = ThreadFlush(self._publish, self._release)
            self._fallback.flush(loop, seq, fd, retired)
            return
        self._seq, self._retired, self._error = seq, retired, None
        self._pending = queued
        for left in fds[queued:]:  # a partial submission (out of AIO slots): rare, synchronous
            try:
                os.fdatasync(left)
            except OSError as exc:
                self._error = exc

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is self._loop:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._aio.eventfd)
        loop.add_reader(self._aio.eventfd, self._completed)
        self._loop = loop

    def _completed(self) -> None:
        """On the loop, when the eventfd is readable: reap and, once all are in, release."""
        try:
            os.eventfd_read(self._aio.eventfd)
        except BlockingIOError:
            return
        self._account(self._aio.reap(), on_loop=True)

    def _account(self, results: list[int], on_loop: bool = False) -> None:
        for result in results:
            self._pending -= 1
            if result < 0 and self._error is None:
                self._error = OSError(-result, os.strerror(-result))
        if self._pending > 0 or not results:
            return
        FLUSH.observe(time.perf_counter() - self._began)
        error = self._error
        if error is not None:
            log.critical("fee journal: fdatasync failed: %s", error)
            self._failed = True
        else:
            self._publish(self._seq)
        for old in self._retired:
            os.close(old)
        self._retired = ()
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
        """Waits for a flush still in flight (its loop may be gone), then frees the context.
        The loop must not be watching any more: `detach()` on it, or the loop is over."""
        if self._fallback is not None:
            self._fallback.close()
        deadline = time.monotonic() + 30
        while self._pending > 0 and time.monotonic() < deadline:
            self._account(self._aio.reap(wait_for=1, timeout=1.0))
        self._aio.close()


def open_flusher(mode: str, publish: Publish, release: Release) -> Flusher:
    """The flusher for `fees.journal_flush`: Linux AIO where the system offers it."""
    if mode == "aio":
        try:
            return AioFlush(publish, release)
        except OSError as exc:
            log.info("fee journal: Linux AIO unavailable (%s); flushing with a thread", exc)
    return ThreadFlush(publish, release)
