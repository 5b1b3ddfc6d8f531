"""Synthetic residents and revocations, written straight into the registry, for scale tests.

No RSA key is generated and no certificate is signed: certificate rows are written directly
(the DER column stays NULL) with executemany in large transactions, so a million rows take
seconds. The residents' facts are a fixed placeholder, never realistic personal data.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ca import authority
from ca.kinds import CertKind
from registry import shards
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
             progress: Callable[[int, int], None] | None = None,
             shard_capacity: int = shards.DEFAULT_CAPACITY) -> PopulateReport:
    """Add `residents` synthetic residents, one certificate per kind each, under the current
    generation of each CA; a `revoked_fraction` of those certificates is revoked. Each
    certificate gets its CRL shard as issuance would give it (registry/shards.py)."""
    if residents < 0:
        raise InvalidInput("must not be negative", field="residents")
    if not 0.0 <= revoked_fraction <= 1.0:
        raise InvalidInput("must be between 0 and 1", field="revoked_fraction")
    codes = [row[0] for row in store.conn.execute("SELECT code FROM municipalities")]
    if not codes:
        raise NotInitialised("the municipality table is empty: run `jpki init`")
    cas = {kind: authority.current(store, kind) for kind in kinds}
    now = epoch(clock())
    taken = store.conn.execute(
        "SELECT COUNT(*) FROM residents WHERE resident_id LIKE ?", (prefix + "-%",)
    ).fetchone()[0]
    rng = random.Random(f"{seed}-{taken}")  # a second run continues, with fresh serials
    revoked_total = 0
    certificates_total = 0
    weights = {kind: ([r for r, _w in REASON_WEIGHTS[kind]], [w for _r, w in REASON_WEIGHTS[kind]])
               for kind in kinds}
    for start in range(0, residents, BATCH):
        count = min(BATCH, residents - start)
        resident_rows = []
        cert_rows: list[list[object]] = []
        # (CA id, municipality) -> indexes into cert_rows, to number their shard places
        places: dict[tuple[int, str], list[int]] = {}
        for index in range(taken + start, taken + start + count):
            resident_id = f"{prefix}-{index:09d}"
            code = codes[rng.randrange(len(codes))]
            resident_rows.append((resident_id, "デモ\u3000住民", "1980-01-01", "unknown",
                                  "synthetic", code, now, now))
            for kind in kinds:
                ca = cas[kind]
                not_before = now - rng.randrange(FIVE_YEARS // 2)
                not_after = min(not_before + FIVE_YEARS, epoch(ca.not_after))
                revoked = rng.random() < revoked_fraction
                if revoked:
                    reasons, reason_weights = weights[kind]
                    reason = rng.choices(reasons, reason_weights)[0]
                    revoked_at = rng.randrange(not_before, now + 1)
                    revoked_total += 1
                serial = format(rng.getrandbits(63) | (1 << 63), "x")
                places.setdefault((ca.id, code), []).append(len(cert_rows))
                cert_rows.append([serial, kind.value, ca.id, resident_id,
                                  f"{code}{rng.randrange(10**15):015d}", code, not_before,
                                  not_after, not_before, "revoked" if revoked else "good",
                                  revoked_at if revoked else None,
                                  int(reason) if revoked else None])
        with store.transaction() as conn:
            for (ca_id, code), indexes in places.items():
                assigned = shards.assign_many(conn, ca_id, code, len(indexes), shard_capacity)
                for index, partition in zip(indexes, assigned, strict=True):
                    cert_rows[index][5] = partition
            conn.executemany(
                "INSERT INTO residents (resident_id, name, dob, sex, address, municipality_code,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", resident_rows)
            conn.executemany(
                "INSERT INTO certificates (serial, kind, ca_id, resident_id, subject_cn,"
                " partition, not_before, not_after, issued_at, status, revoked_at, reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", cert_rows)
        certificates_total += len(cert_rows)
        if progress:
            progress(start + count, residents)
    return PopulateReport(residents, certificates_total, revoked_total)
