"""The meter: group commit of ledger rows, awaited by the responders before they answer.

Requests hand their checks to `record()` and await it. One writer thread takes everything that
queued up while the previous commit was running and writes it in one transaction (one fsync for
the whole batch), then releases the batch's waiters. Throughput grows with concurrency while
every answer still waits for its own row to be durable: no response leaves unbilled, and a
crash before the commit loses only answers that were never sent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from prometheus_client import Counter, Histogram

from fees.ledger import Check, LedgerRow, write_batch
from fees.tariff import Tariff
from registry import tokens, verifiers
from registry.clock import Clock
from registry.store import Store
from registry.verifiers import Verifier

log = logging.getLogger("jpki.fees")

CHECKS = Counter("jpki_fee_checks_total", "Metered checks by verifier and check type "
                 "(every billable answer; the ledger is the record)", ["verifier", "check_type"])
YEN = Counter("jpki_fee_yen_total", "Yen charged by verifier and check type, before monthly "
              "discounts", ["verifier", "check_type"])
BATCH = Histogram("jpki_fee_commit_batch_size", "Checks per ledger commit (group commit: "
                  "larger under load)", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))

_Waiter = tuple[list[Check], asyncio.Future[list[LedgerRow]], asyncio.AbstractEventLoop]


def _count(entries: Sequence[LedgerRow]) -> None:
    for entry in entries:
        CHECKS.labels(entry.check.verifier_name, entry.check.check_type).inc()
        if entry.price.yen:
            YEN.labels(entry.check.verifier_name, entry.check.check_type).inc(entry.price.yen)


def _resolve(future: asyncio.Future[list[LedgerRow]],
             value: list[LedgerRow] | BaseException) -> None:
    if future.done():
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)


def _resolve_all(items: list[tuple[asyncio.Future[list[LedgerRow]], list[LedgerRow]]]) -> None:
    for future, value in items:
        _resolve(future, value)


class LedgerMeter:
    """Durable metering for the daemon; `record()` returns once the rows are committed."""

    def __init__(self, data_dir: Path, tariff: Tariff) -> None:
        self.data_dir = data_dir
        self.tariff = tariff
        self._pending: list[_Waiter] = []
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
            self._thread.start()

    async def record(self, checks: Sequence[Check]) -> list[LedgerRow]:
        if not checks:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[LedgerRow]] = loop.create_future()
        with self._cond:
            if self._closing:
                raise RuntimeError("the meter is closed")
            self._start()
            self._pending.append((list(checks), future, loop))
            self._cond.notify()
        return await future

    def _run(self) -> None:
        store = Store.open(self.data_dir)
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closing:
                        self._cond.wait()
                    if not self._pending and self._closing:
                        return
                    batch, self._pending = self._pending, []
                flat = [check for checks, _future, _loop in batch for check in checks]
                try:
                    entries = write_batch(store, self.tariff, flat)
                except Exception as exc:  # the waiters answer with an error instead
                    log.exception("ledger commit failed for %d checks", len(flat))
                    for _checks, future, loop in batch:
                        loop.call_soon_threadsafe(_resolve, future, exc)
                    continue
                BATCH.observe(len(flat))
                _count(entries)
                # One wake-up per event loop for the whole batch, not one per request.
                results: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[list[LedgerRow]],
                                                                    list[LedgerRow]]]] = {}
                offset = 0
                for checks, future, loop in batch:
                    results.setdefault(loop, []).append(
                        (future, entries[offset:offset + len(checks)]))
                    offset += len(checks)
                for loop, items in results.items():
                    loop.call_soon_threadsafe(_resolve_all, items)
        finally:
            store.close()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)


class DirectMeter:
    """Synchronous metering on a given connection (CLI tools and tests without a daemon)."""

    def __init__(self, store: Store, tariff: Tariff) -> None:
        self.store = store
        self.tariff = tariff

    def record_now(self, checks: Sequence[Check]) -> list[LedgerRow]:
        entries = write_batch(self.store, self.tariff, checks)
        _count(entries)
        return entries


class OCSPMeter:
    """The OCSP responder's metering hook: one ledger row per answered CertID of an identified
    verifier, durable before the answer leaves. Anonymous answers (when allowed) bill nobody."""

    def __init__(self, ledger: LedgerMeter) -> None:
        self.ledger = ledger

    async def record(self, verifier: Verifier | None, answered: Sequence[tuple[str, str]],
                     at: datetime, *, status_confirmation: bool = False) -> None:
        if verifier is None:
            return
        await self.ledger.record([
            Check(verifier.id, verifier.name, f"{kind}_check", "ocsp", serial, at,
                  status_confirmation)
            for kind, serial in answered
        ])


class CRLDownloadMeter:
    """CRL downloads by verifiers that identify themselves: free, but in the ledger (DOMAIN.md:
    metering is per check, whether the verifier uses the CRL or OCSP)."""

    def __init__(self, ledger: LedgerMeter, store: Store, clock: Clock) -> None:
        self.ledger = ledger
        self.store = store
        self.clock = clock

    async def download(self, authorization: str, path: str) -> bool:
        verifier = verifiers.authenticate(self.store, tokens.bearer(authorization))
        if verifier is None:
            return False
        await self.ledger.record([Check(verifier.id, verifier.name, "crl_download", "crl",
                                        None, self.clock())])
        log.info("CRL download verifier=%s path=%s", verifier.name, path)
        return True
