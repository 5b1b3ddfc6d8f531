"""The signing pool: live answers are built and signed on a bounded pool of threads.

RSA signing in cryptography releases the GIL, so with two cores the event loop parses the next
requests while workers sign. The bound (ocsp.sign_queue_limit) turns overload into `tryLater`
(RFC 6960 §2.3) instead of an unbounded queue and growing latency.

Why not `loop.run_in_executor`: each call there costs a concurrent.futures.Future, its lock, a
work item and a chained asyncio future, all under the GIL that the signing threads need back
after every RSA signature. Here a job is one tuple on a SimpleQueue and its result one
`call_soon_threadsafe`: less GIL time per answer on the live path (bench/ocsp_bench.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

from ocsp import metrics
from ocsp.errors import TryLater

T = TypeVar("T")
log = logging.getLogger("jpki.ocsp")
_Job = tuple[Callable[[], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


class SigningPool:
    def __init__(self, workers: int, queue_limit: int) -> None:
        self.queue_limit = queue_limit
        self.pending = 0  # touched on the event loop only
        metrics.QUEUE.set_function(lambda: self.pending)
        self._closed = False
        self._jobs: SimpleQueue[_Job | None] = SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"ocsp-sign_{index}",
                                          daemon=True) for index in range(workers)]
        for thread in self._threads:
            thread.start()

    async def run(self, job: Callable[[], T]) -> T:
        """Run `job` on a signing thread; `TryLater` when queue_limit jobs are outstanding."""
        if self.pending >= self.queue_limit:
            raise TryLater(f"{self.pending} signatures outstanding")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.pending += 1  # read by the jpki_ocsp_sign_queue gauge at scrape time
        self._jobs.put((job, future, loop))
        try:
            return await future
        finally:
            self.pending -= 1

    def _work(self) -> None:
        """One signing thread: jobs in arrival order until close() sends None."""
        while (item := self._jobs.get()) is not None:
            job, future, loop = item
            if self._closed or future.cancelled():  # nobody will read it: save the signature
                continue
            started = time.perf_counter()
            try:
                result, error = job(), None
            except BaseException as exc:  # handed to the awaiting request, raised there
                result, error = None, exc
            metrics.SIGNING.observe(time.perf_counter() - started)
            try:
                loop.call_soon_threadsafe(_deliver, future, result, error)
            except RuntimeError:  # the loop closed under us (shutdown): nobody is waiting
                log.debug("OCSP signer: result dropped, event loop closed")

    def close(self) -> None:
        """Stop the threads; queued jobs are skipped (daemon threads: never blocks)."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)


def _deliver(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    """On the event loop: complete the request's future unless it was cancelled meanwhile."""
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
