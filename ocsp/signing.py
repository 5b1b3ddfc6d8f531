"""The live signer: builds and signs responses on a bounded thread pool.

RSA signing in cryptography releases the GIL, so the event loop keeps accepting while workers
sign. The bound (ocsp.sign_queue_limit) turns overload into `tryLater` (RFC 6960 §2.3) instead
of an unbounded queue and growing latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ocsp import metrics
from ocsp.errors import TryLater

T = TypeVar("T")


class LiveSigner:
    def __init__(self, workers: int, queue_limit: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ocsp-sign")
        self.queue_limit = queue_limit
        self.pending = 0

    async def run(self, job: Callable[[], T]) -> T:
        if self.pending >= self.queue_limit:
            raise TryLater(f"{self.pending} signatures outstanding")
        self.pending += 1
        metrics.QUEUE.set(self.pending)
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, _timed, job)
        finally:
            self.pending -= 1
            metrics.QUEUE.set(self.pending)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _timed(job: Callable[[], T]) -> T:
    started = time.perf_counter()
    try:
        return job()
    finally:
        metrics.SIGNING.observe(time.perf_counter() - started)
