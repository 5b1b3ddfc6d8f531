"""The meter: checks priced on the event loop, made durable by the fee journal
(`fees.journal`: group commit, one flush in flight), folded into the ledger in the background
by a process of its own (`fees.folder`).

Requests hand their checks to `record()` and await it; the answer leaves once its rows are
durable in the journal, so no response leaves unbilled, and a crash before the commit loses
only answers that were never sent. The hot path (`OCSPMeter.record`) does one memoized price
lookup per answered CertID and one list append per request; resident lookups, the
status-confirmation once-per-year rule, SQLite inserts and the metrics happen per fold.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from fees.fold import catch_up
from fees.frames import Row
from fees.journal import Journal
from fees.ledger import Check, LedgerRow, write_batch
from fees.metrics import count
from fees.tariff import Price, Tariff
from registry import tokens, verifiers
from registry.clock import JST, Clock, epoch
from registry.store import Store
from registry.verifiers import Verifier

log = logging.getLogger("jpki.fees")

# (rule id, yen, epoch seconds, JST month, JST year) of a (check type, channel, moment)
_Priced = tuple[str, int, int, str, int]
_MEMO_LIMIT = 4096


class LedgerMeter:
    """Durable metering for the daemon; `record()` returns once the checks are durable."""

    def __init__(self, data_dir: Path, tariff: Tariff, worker: int = 0,
                 registry_url: str = "", fold_nice: int = 19,
                 journal_flush: str = "aio", commit_delay: float = 0.0015,
                 commit_siblings: int = 16) -> None:
        self.data_dir = data_dir
        self.tariff = tariff
        # each serving worker process writes its own journal (fees/journal.py)
        self.journal = Journal(data_dir, worker=worker, registry_url=registry_url,
                               fold_nice=fold_nice, flush=journal_flush,
                               commit_delay=commit_delay, commit_siblings=commit_siblings)
        self._priced: dict[tuple[str, str, datetime], _Priced] = {}

    def priced(self, check_type: str, channel: str, at: datetime) -> _Priced:
        """The price of a check (the rule in force on its JST day), memoized per moment: the
        responders pass one datetime per second, so this is a dict lookup per check."""
        key = (check_type, channel, at)
        found = self._priced.get(key)
        if found is None:
            price = self.tariff.price(check_type, channel, at)  # UnpricedCheck: not answered
            local = at.astimezone(JST)
            if len(self._priced) >= _MEMO_LIMIT:
                self._priced.clear()
            found = self._priced[key] = (price.rule_id, price.yen, epoch(at),
                                         f"{local:%Y-%m}", local.year)
        return found

    def start(self) -> None:
        """Fold what a previous run left in the journal and start the lanes (idempotent)."""
        self.journal.start(self.tariff.repeat_rule_id)

    def submit_rows(self, rows: list[Row]) -> asyncio.Future[None]:
        """The rows into the journal's next frame; the future is done once they are durable."""
        if not self.journal.started:
            self.journal.start(self.tariff.repeat_rule_id)
        return self.journal.submit(rows)

    async def record_rows(self, rows: list[Row]) -> None:
        if rows:
            await self.submit_rows(rows)

    async def record(self, checks: Sequence[Check]) -> list[LedgerRow]:
        """Linkage answers and CRL downloads. The entries carry the price before the
        status-confirmation once-per-year rule, which is applied in sequence when folding."""
        rows: list[Row] = []
        entries: list[LedgerRow] = []
        for check in checks:
            rule_id, yen, at, month, year = self.priced(check.check_type, check.channel,
                                                        check.at)
            rows.append((at, month, year, check.verifier_id, check.check_type, check.channel,
                         check.serial, None, int(check.status_confirmation), rule_id, yen))
            entries.append(LedgerRow(check, None, Price(rule_id, yen)))
        await self.record_rows(rows)
        return entries

    def close(self) -> None:
        self.journal.close()


class DirectMeter:
    """Synchronous metering on a given connection (CLI tools and tests without a daemon)."""

    def __init__(self, store: Store, tariff: Tariff) -> None:
        self.store = store
        self.tariff = tariff

    def record_now(self, checks: Sequence[Check]) -> list[LedgerRow]:
        catch_up(self.store)  # the once-per-year rule sees every earlier check
        entries = write_batch(self.store, self.tariff, checks)
        count(entries)
        return entries


class OCSPMeter:
    """The OCSP responder's metering hook: one ledger row per answered CertID of an identified
    verifier, durable before the answer leaves. Anonymous answers (when allowed) bill nobody."""

    def __init__(self, ledger: LedgerMeter) -> None:
        self.ledger = ledger
        # (kind, moment) -> (check type, rule id, yen, epoch seconds, JST month, JST year):
        # one dict lookup per answered CertID on the hot path
        self._memo: dict[tuple[str, datetime], tuple[str, str, int, int, str, int]] = {}

    def _priced(self, kind: str, at: datetime) -> tuple[str, str, int, int, str, int]:
        check_type = f"{kind}_check"
        rule_id, yen, epoch_at, month, year = self.ledger.priced(check_type, "ocsp", at)
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        found = self._memo[(kind, at)] = (check_type, rule_id, yen, epoch_at, month, year)
        return found

    def record(self, verifier: Verifier | None, answered: Sequence[tuple[str, str]],
               at: datetime, *, status_confirmation: bool = False) -> asyncio.Future[None] | None:
        if verifier is None or not answered:
            return None
        flag = int(status_confirmation)
        memo = self._memo
        rows: list[Row] = []
        for kind, serial in answered:
            priced = memo.get((kind, at)) or self._priced(kind, at)
            check_type, rule_id, yen, epoch_at, month, year = priced
            rows.append((epoch_at, month, year, verifier.id, check_type, "ocsp", serial, None,
                         flag, rule_id, yen))
        return self.ledger.submit_rows(rows)


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
