"""The source stack behind the handler: filter -> pre-signed cache -> database -> live signer.

Each layer is its own object (issuers.IssuerIndex, cache.PresignedCache, status.StatusSource,
signing.LiveSigner); this module only orders them. Every request first proves the cache is
current (watch.RegistryWatch), so status never comes from the cache alone when another process
may have changed it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from asn1crypto import x509 as asn1_x509

from httpapi.arrivals import Arrivals
from ocsp import metrics
from ocsp.auth import VerifierDirectory
from ocsp.cache import Entry, PresignedCache
from ocsp.errors import TryLater, Unauthorized
from ocsp.issuers import Issuer, IssuerIndex, Signer
from ocsp.meter import Meter
from ocsp.request import CertID, ParsedRequest, parse, parse_fast
from ocsp.response import Answer, Status, sign_response, sign_single
from ocsp.signing import LiveSigner
from ocsp.status import StatusSource
from ocsp.template import Templates
from ocsp.watch import RegistryWatch
from registry.clock import Clock, epoch, epoch_reader, from_epoch
from registry.notify import hub
from registry.store import Store
from registry.verifiers import Verifier

log = logging.getLogger("jpki.ocsp")


@dataclass(slots=True)  # not frozen: one is made per request, and frozen __init__ costs more
class Reply:
    """A signed answer: cacheable (`entry` set, RFC 5019 headers) or live (nonce, multi)."""

    der: bytes
    entry: Entry | None
    outcome: str
    kind: str
    now: int


@dataclass(frozen=True)
class ResponderPolicy:
    response_validity: timedelta
    refresh_fraction: float
    algorithms: frozenset[str]


class Responder:
    def __init__(self, *, store: Store, issuers: IssuerIndex, cache: PresignedCache,
                 signer: LiveSigner, directory: VerifierDirectory, meter: Meter, clock: Clock,
                 policy: ResponderPolicy, arrivals: Arrivals | None = None) -> None:
        self.store = store
        self.issuers = issuers
        self.cache = cache
        self.signer = signer
        self.directory = directory
        self.meter = meter
        self.clock = clock
        self.policy = policy
        self.status = StatusSource(store.path)
        self.watch = RegistryWatch(store.conn, arrivals)
        self._inflight: dict[bytes, tuple[int, asyncio.Future[Entry]]] = {}
        self._last_moment = (0, from_epoch(0))
        self._background: set[asyncio.Task[None]] = set()
        self._epoch_now = epoch_reader(clock)
        self.templates = Templates()
        # Revocations commit on worker threads too (POST /registry/events); the cache and the
        # background tasks belong to the serving loop, so the hub hands changes over to it
        # (call_soon_threadsafe). web.py builds the responder in on_startup, on that loop;
        # only a responder built outside any loop (a synchronous test) is called in place.
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self._unsubscribe = hub.subscribe(self._on_change, loop)
        issuers.reload_if_changed()

    # -- freshness -------------------------------------------------------------------------
    def _on_change(self, serial: str, status: str) -> None:
        """In-process revocations (registry.notify.hub), on this responder's loop: drop at
        once, re-sign in background. The hub schedules it before the committing request's
        answer, so whoever was told "revoked" finds the cached answer gone."""
        self._invalidate((serial,))

    def _invalidate(self, serials: tuple[str, ...]) -> None:
        dropped = self.cache.drop_serials(serials)
        if dropped:
            metrics.INVALIDATIONS.inc(len(dropped))
            log.info("OCSP cache: dropped %d answers for serials %s", len(dropped),
                     ",".join(serials))
        for entry in dropped:
            self.spawn(self._resign(entry.cert_id, entry.issuer))

    def refresh(self) -> None:
        """Once per request: one PRAGMA when nothing changed elsewhere."""
        changes = self.watch.poll()
        if changes is None:
            return
        self.cache.drop_unknown()
        if changes.serials:
            self._invalidate(changes.serials)
        self.directory.reload()
        if self.issuers.reload_if_changed():
            log.info("OCSP issuers or signers changed")
            self.spawn(self.resign_for_new_signers())

    def reload(self) -> None:
        """SIGHUP: re-read issuers, signers and verifiers even if the registry looks unchanged
        (e.g. a key replaced on the token behind the registry's back)."""
        self.issuers.forget()
        self.directory.reload()
        self.issuers.reload_if_changed()
        self.spawn(self.resign_for_new_signers())

    # -- the stack -------------------------------------------------------------------------
    async def answer(self, body: bytes, authorization: str | None, *,
                     status_confirmation: bool = False) -> Reply:
        self.refresh()
        now = self._epoch_now()
        key = self.cache.bodies.get(body)
        if key is not None:  # fast path: a repeated plain request
            entry = self.cache.entries.get(key)
            if entry is not None and now < entry.refresh_at:
                verifier = self.directory.identify(authorization)
                metrics.CACHE.inc("hit")
                return await self._served(entry, verifier, now, status_confirmation)
        parsed = parse_fast(body, self.policy.algorithms) or parse(body, self.policy.algorithms)
        if parsed.signature is not None and not authorization:
            # registered signer and key policy first; verified off the loop (ocsp/auth.py)
            verifier = await self.directory.identify_signed(parsed.signature, now)
        else:
            verifier = self.directory.identify(authorization)
        issuer = self._issuer_of(parsed)
        if parsed.cacheable:
            cert_id = parsed.cert_ids[0]
            if parsed.signature is None:
                self.cache.remember_body(body, cert_id.der)
            entry = await self._cached(cert_id, issuer, now)
            return await self._served(entry, verifier, now, status_confirmation)
        return await self._live(parsed, issuer, verifier, now, status_confirmation)

    def _issuer_of(self, parsed: ParsedRequest) -> Issuer:
        """Filter: every CertID must name one of our CA generations, and the same one.

        A response has a single signer and a delegated responder speaks only for its own
        generation (RFC 6960 §4.2.2.2), so a request spanning generations is refused.
        """
        found: Issuer | None = None
        for cert_id in parsed.cert_ids:
            issuer = self.issuers.find(cert_id.hash_algorithm, cert_id.name_hash,
                                       cert_id.key_hash)
            if issuer is None:
                raise Unauthorized("CertID names an issuer that is not ours")
            if found is not None and issuer is not found:
                raise Unauthorized("CertIDs of several CA generations in one request")
            found = issuer
        assert found is not None  # parse() refuses an empty requestList
        return found

    async def _served(self, entry: Entry, verifier: Verifier | None, now: int,
                      status_confirmation: bool) -> Reply:
        await self.meter.record(verifier, entry.metered, self._moment(now),
                                status_confirmation=status_confirmation)
        return Reply(entry.der, entry, entry.state, entry.issuer_kind, now)

    def _moment(self, now: int) -> datetime:
        """The metering time as a datetime, built once per second (hot path)."""
        if self._last_moment[0] != now:
            self._last_moment = (now, from_epoch(now))
        return self._last_moment[1]

    def oldest_age(self) -> int:
        """Age of the oldest cached answer (the response-age gauge, updated periodically)."""
        now = epoch(self.clock())
        return max((now - e.this_update for e in list(self.cache.entries.values())), default=0)

    async def _cached(self, cert_id: CertID, issuer: Issuer, now: int) -> Entry:
        entry = self.cache.entries.get(cert_id.der)
        if entry is not None:
            if now < entry.refresh_at:
                metrics.CACHE.inc("hit")
                return entry
            metrics.CACHE.inc("stale")
            if now < entry.next_update:  # still valid: serve it, re-sign behind it
                self.spawn(self._resign(cert_id, issuer))
                return entry
        else:
            metrics.CACHE.inc("miss")
        return await self._sign_entry(cert_id, issuer)

    async def _sign_entry(self, cert_id: CertID, issuer: Issuer) -> Entry:
        """Sign one nonce-less answer and cache it; concurrent misses share one signature."""
        # Join a signature already under way only if no invalidation happened since it began:
        # its status may predate a revocation, and the next query must see the revocation.
        version = self.cache.version
        pending = self._inflight.get(cert_id.der)
        if pending is not None and pending[0] == version:
            return await asyncio.shield(pending[1])
        future: asyncio.Future[Entry] = asyncio.get_running_loop().create_future()
        self._inflight[cert_id.der] = (version, future)
        try:
            this_update, next_update = self._window(issuer)
            status, der = await self._signed(issuer, [cert_id], this_update, next_update)
            entry = Entry.make(der, cert_id, issuer, status[0].state, status[0].kind,
                               this_update, next_update, self.policy.refresh_fraction)
            self.cache.put(entry, version)
            future.set_result(entry)
            return entry
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody else must log it
            raise
        finally:
            if self._inflight.get(cert_id.der, (0, None))[1] is future:
                del self._inflight[cert_id.der]

    def _window(self, issuer: Issuer) -> tuple[int, int]:
        """thisUpdate = now; nextUpdate never passes the signer's notAfter."""
        signer = issuer.signer
        now = self._epoch_now()
        if signer is None:
            raise TryLater(f"no responder certificate for {issuer.ca.label}")
        next_update = min(now + int(self.policy.response_validity.total_seconds()),
                          epoch(signer.not_after))
        if next_update <= now:
            raise TryLater(f"responder certificate for {issuer.ca.label} has expired")
        return now, next_update

    async def _signed(self, issuer: Issuer, cert_ids: list[CertID], this_update: int,
                      next_update: int, nonce: bytes | None = None,
                      nonce_value: bytes | None = None) -> tuple[list[Status], bytes]:
        """One job on the pool reads what the status memo lacks, encodes and signs.

        Everything but HTTP and parsing stays off the event loop: the loop carries every
        connection, so on the live path it is the critical path, while the signing threads
        wait for the GIL between signatures anyway (bench-ocsp: encoding on the loop measured
        0.81 of the raw sign rate, on the signing threads 0.90).
        """
        signer = issuer.signer
        assert signer is not None  # _window() refused a missing signer
        ca_id = issuer.ca.id
        version = self.cache.version
        memo = [self.cache.status(c.serial_hex, ca_id) for c in cert_ids]
        statuses, der = await self.signer.run(partial(
            self._sign_job, signer, ca_id, cert_ids, memo, this_update, next_update, nonce,
            nonce_value))
        for cert_id, status in zip(cert_ids, statuses, strict=True):
            self.cache.remember_status(cert_id.serial_hex, ca_id, status, version)
        return statuses, der

    def _sign_job(self, signer: Signer, ca_id: int, cert_ids: list[CertID],
                  memo: list[Status | None], this_update: int, next_update: int,
                  nonce: bytes | None, nonce_value: bytes | None) -> tuple[list[Status], bytes]:
        """On the pool: statuses (memo, else the registry), then for one canonical CertID
        (nearly every request) a template of pyca's encoding (ocsp/template.py), pyca's
        builder the first time; asn1crypto for several CertIDs."""
        statuses = [known if known is not None else self.status.status(c.serial_hex, ca_id)
                    for c, known in zip(cert_ids, memo, strict=True)]
        if len(cert_ids) == 1 and cert_ids[0].canonical:
            cert_id, status = cert_ids[0], statuses[0]
            return statuses, self.templates.sign(
                (signer.key_hash, signer.serial, status.state, status.revoked_at,
                 status.reason, len(cert_id.der),
                 len(nonce_value) if nonce_value is not None else 0),
                signer.key, cert_id.der, this_update, next_update, nonce_value,
                partial(sign_single, cert_id=cert_id, status=status,
                        certs_field=signer.certs_field, certificate=signer.pyca_certificate,
                        key=signer.key, this_update=from_epoch(this_update),
                        next_update=from_epoch(next_update), nonce=nonce_value))
        this, nxt = from_epoch(this_update), from_epoch(next_update)
        return statuses, sign_response(
            answers=[Answer(c.der, s) for c, s in zip(cert_ids, statuses, strict=True)],
            responder_key_hash=signer.key_hash, key=signer.key,
            # a private copy: asn1crypto parses lazily and the pool has threads
            certificate=asn1_x509.Certificate.load(signer.certificate.dump()),
            this_update=this, next_update=nxt, nonce_extn_value=nonce)

    async def _live(self, parsed: ParsedRequest, issuer: Issuer, verifier: Verifier | None,
                    now: int, status_confirmation: bool) -> Reply:
        """Nonce (RFC 9654) or several CertIDs: read every status now and sign now."""
        this_update, next_update = self._window(issuer)
        statuses, der = await self._signed(issuer, list(parsed.cert_ids), this_update,
                                           next_update, parsed.nonce, parsed.nonce_value)
        await self.meter.record(
            verifier, [(status.kind, cert_id.serial_hex)
                       for cert_id, status in zip(parsed.cert_ids, statuses, strict=True)],
            from_epoch(now), status_confirmation=status_confirmation)
        outcome = statuses[0].state if len(statuses) == 1 else "multi"
        return Reply(der, None, outcome, issuer.kind, now)

    # -- background work -------------------------------------------------------------------
    def spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("OCSP background signing failed: %s", task.exception())

    async def _resign(self, cert_id: CertID, issuer: Issuer) -> None:
        current = self.issuers.find(cert_id.hash_algorithm, cert_id.name_hash, cert_id.key_hash)
        if current is not None:
            await self._sign_entry(cert_id, current)

    async def presign(self, limit: int, algorithms: tuple[str, ...]) -> int:
        """Sign ahead of time the answers verifiers will ask for (newest certificates first)."""
        from ocsp.presign import cert_ids_for

        count = 0
        for issuer in list(self.issuers.issuers):
            if issuer.signer is None:
                continue
            for cert_id in cert_ids_for(self.store, issuer, algorithms, limit):
                if cert_id.der in self.cache.entries:
                    continue
                try:
                    await self._sign_entry(cert_id, issuer)
                except TryLater:
                    await asyncio.sleep(0.05)
                count += 1
        return count

    async def resign_for_new_signers(self) -> int:
        """After a responder key rotation: replace answers signed by a superseded key.

        The old answers stay valid (and served) until their replacement is cached, so no
        query fails during a rotation; answers of a generation that left the index (retired)
        are dropped.
        """
        outdated = []
        for entry in list(self.cache.entries.values()):
            current = self.issuers.find(entry.cert_id.hash_algorithm, entry.cert_id.name_hash,
                                        entry.cert_id.key_hash)
            if current is None:
                self.cache.drop_serials([entry.cert_id.serial_hex])
            elif current.signer is not None and (entry.issuer.signer is None
                                                 or entry.issuer.signer.serial
                                                 != current.signer.serial):
                outdated.append(entry)
        for entry in outdated:
            await self._resign(entry.cert_id, entry.issuer)
        if outdated:
            log.info("OCSP cache: re-signed %d answers with the new responder keys",
                     len(outdated))
        return len(outdated)

    async def refresh_stale(self) -> int:
        """Re-sign entries past their refresh point (RFC 5019 §2.2.4: fresh before nextUpdate)."""
        now = epoch(self.clock())
        stale = [e for e in list(self.cache.entries.values()) if now >= e.refresh_at]
        for entry in stale:
            await self._resign(entry.cert_id, entry.issuer)
        return len(stale)

    async def close(self) -> None:
        self._unsubscribe()
        for task in list(self._background):
            task.cancel()
        self.signer.close()
        self.directory.close()
