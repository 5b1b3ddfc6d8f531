"""`jpki signer`: the CA's own long-running process, the only one that holds CA keys.

It listens on no network port. It learns of revocations from the registry (the `state_changes`
rows, noticed through `PRAGMA data_version` on its own connection) and:
- re-issues the CRLs that list a new revocation (its partition and the full CRL) within
  `crl.urgent_delay_seconds` (crl/urgent.py);
- runs the daily CRL schedule (`crl.daily_time`, JST) (crl/schedule.py);
- publishes delta CRLs (RFC 5280 §5.2.4) for every complete CRL every
  `crl.delta_interval_minutes`, and right after a complete CRL was re-issued (crl/delta.py);
- renews OCSP responder certificates `ocsp.renew_before_days` ahead (ca/responders.py); the
  serving daemon picks the new ones up from the registry without a restart;
- signs audit checkpoints (ca/auditkey.py) over rows the serving daemon appended, every
  `signer.checkpoint_seconds`, since only a holder of the CA key backend may.
Each duty's failure is logged and retried on the next pass; none stops the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ca import auditkey, authority, responders
from ca.authority import CAGeneration
from crl import freshness
from crl.delta import DeltaIssuer
from crl.generator import Generator
from crl.schedule import DailyRunner, DailySchedule
from crl.urgent import UrgentRuns
from jpki.context import Context
from jpki.wiring import crl_generator, responder_policy
from registry import certificates, changes, singleton
from registry.errors import JPKIError
from registry.store import Store

log = logging.getLogger("jpki.signer")
# The daily schedule is looked at once a minute (its decision reads every live generation).
DAILY_CHECK_SECONDS = 60.0
# Whether a delta CRL is due is looked at this often (and after every complete CRL run).
DELTA_CHECK_SECONDS = 60.0


class SignerProcess:
    def __init__(self, context: Context, monotonic: Callable[[], float] = time.monotonic
                 ) -> None:
        self.context = context.as_holder("signer")
        self.settings = self.context.settings
        self.monotonic = monotonic
        self.store: Store | None = None
        self.urgent = UrgentRuns(self.settings.crl.urgent_delay_seconds, monotonic)
        self._seq = 0
        self._version: object = -1
        self._next_daily = 0.0
        self._next_renewal = 0.0
        self._next_checkpoint = 0.0
        self._next_delta = 0.0
        self.deltas: DeltaIssuer | None = None

    def open(self) -> None:
        """Open the registry and check that the CA keys open, before anything is scheduled."""
        self.store = self.context.store
        keys = self.context.keys
        for ca in self._live_generations():
            ca.private_key(keys)  # a wrong passphrase or PIN fails here, at start-up
        self.generator: Generator = crl_generator(self.store, keys, self.context.clock,
                                                  self.settings)
        self.daily = DailyRunner(DailySchedule(self.settings.crl.daily_time),
                                 self.context.clock, self.generator.run,
                                 self.generator.last_complete_run)
        if self.settings.crl.delta_interval_minutes:
            self.deltas = DeltaIssuer(self.generator, self.settings.crl.delta_interval_minutes)
        self._catch_up()

    def _live_generations(self) -> list[CAGeneration]:
        assert self.store is not None
        now = self.context.clock()
        return [ca for ca in authority.generations(self.store, include_retired=False)
                if ca.not_after > now]

    def _catch_up(self) -> None:
        """Revocations committed while no signer ran and after the oldest full CRL was signed."""
        assert self.store is not None
        oldest = freshness.oldest_full_crl(self.store)
        self._seq, scopes = certificates.changed_scopes(
            self.store, 0, committed_since=oldest or 0)
        self._version = self._data_version()
        if scopes:
            log.info("catching up: %d CRL scope(s) changed since the last CRLs", len(scopes))
            self.urgent.add(scopes)

    def _data_version(self) -> object:
        assert self.store is not None
        return changes.data_version(self.store.conn)

    def step(self) -> None:
        """One pass over the duties; the caller sleeps `signer.poll_seconds` between passes."""
        assert self.store is not None
        version = self._data_version()
        if version != self._version:
            self._version = version
            self._seq, scopes = certificates.changed_scopes(self.store, self._seq)
            self.urgent.add(scopes)
        if self.urgent.due():
            self._urgent_run()
        now = self.monotonic()
        if self.settings.crl.schedule_enabled and now >= self._next_daily:
            self._next_daily = now + DAILY_CHECK_SECONDS
            self._guard("daily CRL run", self._daily)
        if self.deltas is not None and now >= self._next_delta:
            self._next_delta = now + DELTA_CHECK_SECONDS
            deltas = self.deltas
            self._guard("delta CRLs", lambda: deltas.tick(self._revocations_waiting))
        if self.settings.ocsp.auto_renew and now >= self._next_renewal:
            self._next_renewal = now + self.settings.ocsp.renew_check_minutes * 60
            self._guard("responder renewal", self._renew)
        if now >= self._next_checkpoint:
            self._next_checkpoint = now + self.settings.signer.checkpoint_seconds
            self._guard("audit checkpoint", self._checkpoint)

    def _revocations_waiting(self) -> bool:
        """A revocation committed since this pass began, or one already waiting: deltas
        give way to the urgent run (the newest state change: one index read; the change token
        would also move for this process's own commits on PostgreSQL)."""
        assert self.store is not None
        return self.urgent.pending or changes.newest_seq(self.store.conn) > self._seq

    def _daily(self) -> None:
        if self.daily.tick():
            self._next_delta = 0.0  # deltas for the new complete CRLs, in this pass

    def _checkpoint(self) -> None:
        assert self.store is not None
        sealed = auditkey.seal(self.store, self.context.keys, self.context.clock)
        if sealed is not None:
            log.info("audit checkpoint %d over rows up to %d", sealed.id, sealed.row_id)

    def _urgent_run(self) -> None:
        scopes = self.urgent.take()
        started = time.perf_counter()
        try:
            results = self.generator.run(scopes=scopes)
        except Exception as exc:  # retried in the next window; the keys stay open
            log.error("urgent CRL run failed (%s: %s); retrying", type(exc).__name__, exc)
            self.urgent.retry(scopes)
            return
        log.info("urgent CRL run: %d CRL(s) re-issued for %d changed partition(s) in %.2f s",
                 len(results), sum(len(parts) for parts in scopes.values()),
                 time.perf_counter() - started)
        self._next_delta = 0.0  # the re-issued complete CRLs need deltas that name them

    def _renew(self) -> None:
        assert self.store is not None  # set in run(), before the schedule starts
        issued = responders.ensure(self.store, self.context.keys, self.context.responder_keys,
                                   self.context.clock, responder_policy(self.settings),
                                   actor="signer")
        if issued:
            log.info("OCSP responder certificates renewed: %s",
                     ", ".join(format(r.certificate.serial_number, "x") for r in issued))

    def _guard(self, what: str, duty: Callable[[], object]) -> None:
        try:
            duty()
        except JPKIError as exc:
            log.error("%s failed: %s", what, exc)
        except Exception:  # keep the other duties alive; the next pass retries
            log.exception("%s failed", what)

    def run(self, stop: threading.Event) -> None:
        release = singleton.claim(self.context.store, "signer")
        try:
            self._run(stop)
        finally:
            release()

    def _run(self, stop: threading.Event) -> None:
        self.open()
        log.info("signer running (data dir %s): urgent CRLs within %.0f s, daily at %s JST,"
                 " responder renewal %d days ahead", self.context.data_dir,
                 self.settings.crl.urgent_delay_seconds, self.settings.crl.daily_time,
                 self.settings.ocsp.renew_before_days)
        assert self.store is not None
        signal = changes.ChangeSignal(self.store, stop)
        try:
            while not stop.is_set():
                self.step()
                signal.wait(self.settings.signer.poll_seconds)
        finally:
            signal.close()
            if self.store is not None:
                self._guard("audit checkpoint", self._checkpoint)
                self.store.close()
        log.info("signer stopped")

