"""Synthetic residents and revocations, written straight into the registry, for scale tests.

No RSA key is generated and no certificate is signed: certificate rows are written directly
(the DER column stays NULL) through the registry's bulk functions in large transactions, so a
million rows take seconds. The residents' facts are a fixed placeholder, never realistic
personal data.
"""

from __future__ import annotations

import random
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass

from ca import authority
from ca.kinds import CertKind
from registry import certificates, municipalities, shards
from registry import residents as registry_residents
from registry.clock import Clock, epoch
from registry.errors import InvalidInput, NotInitialised
from registry.reasons import Reason
from registry.store import Store

BATCH = 100_000
FIVE_YEARS = 5 * 365 * 86400
# Relative frequency of revocation reasons (DOMAIN.md: every move revokes a signature
# certificate with affiliationChanged; renewals supersede; losses are held).
REASON_WEIGHTS = {
    CertKind.SIGNATURE: [(Reason.affiliationChanged, 70), (Reason.superseded, 15),
                         (Reason.cessationOfOperation, 8), (Reason.certificateHold, 4),
                         (Reason.keyCompromise, 2), (Reason.unspecified, 1)],
    CertKind.AUTHENTICATION: [(Reason.superseded, 60), (Reason.cessationOfOperation, 25),
                              (Reason.certificateHold, 10), (Reason.keyCompromise, 4),
                              (Reason.unspecified, 1)],
}


@dataclass(frozen=True)
class PopulateReport:
    residents: int
    certificates: int
    revoked: int

    def to_json(self) -> dict[str, int]:
        return {"residents": self.residents, "certificates": self.certificates,
                "revoked": self.revoked}


def populate(store: Store, clock: Clock, *, residents: int, revoked_fraction: float,
             kinds: list[CertKind], seed: int = 1, prefix: str = "demo",
             progress: Callable[[int, int, float], None] | None = None,
             shard_capacity: int = shards.DEFAULT_CAPACITY) -> PopulateReport:
    """Add `residents` synthetic residents, one certificate per kind each, under the current
    generation of each CA; a `revoked_fraction` of those certificates is revoked. Each
    certificate gets its CRL shard as issuance would give it (registry/shards.py).
    `progress(done, total, residents per second)` is called after each batch."""
    if residents < 0:
        raise InvalidInput("must not be negative", field="residents")
    if not 0.0 <= revoked_fraction <= 1.0:
        raise InvalidInput("must be between 0 and 1", field="revoked_fraction")
    codes = municipalities.codes(store)
    if not codes:
        raise NotInitialised("the municipality table is empty: run `jpki init`")
    cas = {kind: authority.current(store, kind) for kind in kinds}
    now = epoch(clock())
    taken = registry_residents.count_with_prefix(store, prefix + "-")
    rng = random.Random(f"{seed}-{taken}")  # a second run continues, with fresh serials
    # Serials: 64-bit, top bit set, a random tag of the run, then the resident's number and
    # the kind: unique, and increasing within a run, so the registry's serial index is
    # appended to instead of written at random places (what keeps 25 million rows quick).
    tag = rng.getrandbits(22) << 40
    width = len(kinds)
    revoked_total = 0
    certificates_total = 0
    reason_tables = {}
    for kind in kinds:
        total_weight = sum(w for _r, w in REASON_WEIGHTS[kind])
        cumulative, running = [], 0
        for _reason, weight in REASON_WEIGHTS[kind]:
            running += weight
            cumulative.append(running / total_weight)
        reason_tables[kind] = ([int(r) for r, _w in REASON_WEIGHTS[kind]], cumulative)
    plan = [(kind, kind.value, cas[kind].id, epoch(cas[kind].not_after), position)
            for position, kind in enumerate(kinds)]
    half = FIVE_YEARS // 2
    random_ = rng.random
    choose = rng.randrange
    n_codes = len(codes)
    started = time.perf_counter()
    with store.bulk_load():
        for start in range(0, residents, BATCH):
            count = min(BATCH, residents - start)
            resident_rows = []
            cert_rows: list[list[object]] = []
            # (CA id, municipality) -> indexes into cert_rows, to number their shard places
            places: dict[tuple[int, str], list[int]] = {}
            for index in range(taken + start, taken + start + count):
                resident_id = f"{prefix}-{index:09d}"
                code = codes[choose(n_codes)]
                resident_rows.append((resident_id, "デモ\u3000住民", "1980-01-01", "unknown",
                                      "synthetic", code, now, now))
                for kind, kind_value, ca_id, ca_not_after, position in plan:
                    not_before = now - int(random_() * half)
                    not_after = min(not_before + FIVE_YEARS, ca_not_after)
                    if random_() < revoked_fraction:
                        reasons, cumulative = reason_tables[kind]
                        reason: int | None = reasons[bisect_left(cumulative, random_())]
                        revoked_at: int | None = not_before + int(random_() * (now - not_before))
                        status = "revoked"
                        revoked_total += 1
                    else:
                        reason = revoked_at = None
                        status = "good"
                    serial = format((1 << 63) | tag | (index * width + position), "x")
                    places.setdefault((ca_id, code), []).append(len(cert_rows))
                    cert_rows.append([serial, kind_value, ca_id, resident_id,
                                      f"{code}{choose(10**15):015d}", code, not_before,
                                      not_after, not_before, status, revoked_at, reason])
            with store.transaction() as conn:
                for (ca_id, code), indexes in places.items():
                    assigned = shards.assign_many(conn, ca_id, code, len(indexes),
                                                  shard_capacity)
                    for row_index, partition in zip(indexes, assigned, strict=True):
                        cert_rows[row_index][5] = partition
                registry_residents.insert_many(store, resident_rows)
                certificates.insert_many(store, cert_rows)
            certificates_total += len(cert_rows)
            if progress:
                done = start + count
                progress(done, residents, done / max(time.perf_counter() - started, 1e-9))
    return PopulateReport(residents, certificates_total, revoked_total)
