"""Certificate records, pair and successor links, and the one revocation primitive.

Serials are stored as lower-case hexadecimal without leading zeros, the form every interface
prints. Status is `good` or `revoked` in the table; `expired` is derived from notAfter at read
time so that nothing has to sweep the table when certificates age out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ca.kinds import CertKind
from registry import audit
from registry.clock import Clock, epoch, iso
from registry.errors import Conflict, InvalidInput, NotFound
from registry.notify import hub
from registry.reasons import Reason
from registry.store import Connection, Store

SERIAL = re.compile(r"^(0x)?[0-9a-fA-F]{1,64}$")


def normalise_serial(text: str) -> str:
    """Accept `0x`-prefixed, upper-case or zero-padded hex; return the canonical form."""
    if not isinstance(text, str) or not SERIAL.match(text.strip()):
        raise InvalidInput("must be a hexadecimal serial number", field="serial")
    return format(int(text.strip().removeprefix("0x").removeprefix("0X"), 16), "x")


def serial_hex(serial: int) -> str:
    return format(serial, "x")


@dataclass(frozen=True)
class CertificateRecord:
    serial: str
    kind: CertKind
    ca_id: int
    resident_id: str
    partition: str
    not_before: int
    not_after: int
    status: str
    revoked_at: int | None
    reason: Reason | None
    der: bytes

    def status_at(self, now: int) -> str:
        if self.status == "revoked":
            return "revoked"
        return "expired" if now > self.not_after else "good"

    def to_json(self, now: int) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "kind": self.kind.value,
            "status": self.status_at(now),
            "reason": self.reason.name if self.reason is not None else None,
            "revoked_at": iso(self.revoked_at),
            "not_before": iso(self.not_before),
            "not_after": iso(self.not_after),
            "partition": self.partition,
            "ca_id": self.ca_id,
        }


def _record(row: dict[str, Any]) -> CertificateRecord:
    return CertificateRecord(
        serial=row["serial"],
        kind=CertKind(row["kind"]),
        ca_id=row["ca_id"],
        resident_id=row["resident_id"],
        partition=row["partition"],
        not_before=row["not_before"],
        not_after=row["not_after"],
        status=row["status"],
        revoked_at=row["revoked_at"],
        reason=Reason(row["reason"]) if row["reason"] is not None else None,
        der=row["der"],
    )


def get(store: Store, serial: str) -> CertificateRecord | None:
    row = store.one("SELECT * FROM certificates WHERE serial = ?", (serial,))
    return _record(row) if row else None


def require(store: Store, serial: str) -> CertificateRecord:
    record = get(store, serial)
    if record is None:
        raise NotFound(f"no certificate with serial {serial}", field="serial")
    return record


def insert(store: Store, *, serial: str, kind: CertKind, ca_id: int, resident_id: str,
           subject_cn: str, partition: str, not_before: int, not_after: int, issued_at: int,
           der: bytes) -> None:
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO certificates (serial, kind, ca_id, resident_id, subject_cn, partition,"
            " not_before, not_after, issued_at, status, der)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'good', ?)",
            (serial, kind.value, ca_id, resident_id, subject_cn, partition, not_before,
             not_after, issued_at, der),
        )


def insert_many(store: Store, rows: Sequence[Sequence[object]]) -> None:
    """Bulk insert rows without DER (serial, kind, ca_id, resident_id, subject_cn, partition,
    not_before, not_after, issued_at, status, revoked_at, reason): synthetic demo data only.
    No audit row and no state change: nothing was issued or revoked.

    On PostgreSQL the rows go in through COPY: executemany sends one INSERT per row (pipelined,
    still a parse/bind/execute each), COPY streams them (measured by `make bench-scale`)."""
    with store.transaction() as conn:
        if store.dialect == "postgresql":
            from registry.pg import PgStore, copy_rows  # psycopg: imported only when used

            assert isinstance(store, PgStore)
            copy_rows(store, "certificates", _BULK_COLUMNS, rows)
            return
        conn.executemany(
            "INSERT INTO certificates (serial, kind, ca_id, resident_id, subject_cn,"
            " partition, not_before, not_after, issued_at, status, revoked_at, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def sample_serials(store: Store, ca_id: int, count: int) -> list[str]:
    """Up to `count` serials issued under CA generation `ca_id`, in random order: requests for
    serials that no cache has seen yet (`make bench-scale`). A full scan: benchmarks only."""
    rows = store.query("SELECT serial FROM certificates WHERE ca_id = ? ORDER BY random()"
                       " LIMIT ?", (ca_id, count))
    return [str(row["serial"]) for row in rows]


_BULK_COLUMNS = ("serial", "kind", "ca_id", "resident_id", "subject_cn", "partition",
                 "not_before", "not_after", "issued_at", "status", "revoked_at", "reason")


def link_pair(store: Store, clock: Clock, resident_id: str, signature: str | None,
              authentication: str) -> None:
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO pairs (resident_id, signature_serial, authentication_serial, created_at)"
            " VALUES (?, ?, ?, ?)",
            (resident_id, signature, authentication, epoch(clock())),
        )


def link_successor(store: Store, clock: Clock, old: str, new: str, kind: CertKind) -> None:
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO successors (old_serial, new_serial, kind, linked_at) VALUES (?, ?, ?, ?)",
            (old, new, kind.value, epoch(clock())),
        )


def live_for_resident(store: Store, resident_id: str, now: int) -> list[CertificateRecord]:
    """Certificates of a resident that are neither revoked nor expired."""
    rows = store.query(
        "SELECT * FROM certificates WHERE resident_id = ? AND status = 'good' AND not_after >= ?"
        " ORDER BY issued_at",
        (resident_id, now),
    )
    return [_record(row) for row in rows]


def newest_per_kind(store: Store, resident_id: str) -> list[CertificateRecord]:
    """The resident's newest card certificate of each kind that has no successor yet.

    Smartphone certificates (registry/phones.py) are not the card's: a card renewal never
    takes one as its predecessor.
    """
    rows = store.query(
        "SELECT c.* FROM certificates c WHERE c.resident_id = ? AND NOT EXISTS"
        " (SELECT 1 FROM successors s WHERE s.old_serial = c.serial)"
        " AND NOT EXISTS (SELECT 1 FROM phone_certificates p WHERE p.serial = c.serial)"
        " ORDER BY c.issued_at DESC, c.rowid DESC",
        (resident_id,),
    )
    newest: dict[str, CertificateRecord] = {}
    for row in rows:
        newest.setdefault(row["kind"], _record(row))
    return list(newest.values())


def counterpart(store: Store, serial: str) -> str | None:
    row = store.one(
        "SELECT signature_serial, authentication_serial FROM pairs"
        " WHERE signature_serial = ? OR authentication_serial = ?",
        (serial, serial),
    )
    if row is None:
        return None
    other: str = row["authentication_serial" if row["signature_serial"] == serial
                     else "signature_serial"]
    return other


def revoke(store: Store, clock: Clock, serial: str, reason: Reason, *, actor: str,
           revoked_at: int | None = None, cause: str | None = None) -> CertificateRecord:
    """Revoke one certificate, durably, with its audit row; the only way a status changes.

    Revocation is final: a revoked certificate (certificateHold included, which is never
    released) cannot be revoked again, and the refusal states its current state.
    """
    at = revoked_at if revoked_at is not None else epoch(clock())
    with store.transaction() as conn:
        record = require(store, serial)
        if record.status == "revoked":
            reason_name = record.reason.name if record.reason is not None else "unspecified"
            raise Conflict(
                f"certificate {serial} is already revoked"
                f" ({reason_name}, {iso(record.revoked_at)})",
                field="serial",
            )
        conn.execute(
            "UPDATE certificates SET status = 'revoked', revoked_at = ?, reason = ?"
            " WHERE serial = ?",
            (at, int(reason), serial),
        )
        conn.execute(
            "INSERT INTO state_changes (serial, status, at) VALUES (?, 'revoked', ?)",
            (serial, epoch(clock())),
        )
        detail: dict[str, Any] = {"reason": reason.name, "revoked_at": iso(at),
                                  "kind": record.kind.value}
        if cause:
            detail["cause"] = cause
        audit.append(store, clock, actor=actor, action="certificate.revoke", serial=serial,
                     detail=detail)
        store.after_commit(lambda: hub.publish(serial, "revoked"))
        return require(store, serial)


# The serial's unique index finds the row; the CA generation is checked on that row.
_STATUS = ("SELECT kind, status, revoked_at, reason FROM certificates"
           " WHERE serial = ? AND ca_id = ?")


def status_under(conn: Connection, ca_id: int, serial: str
                 ) -> tuple[str, str, int | None, int | None] | None:
    """(kind, status, revoked_at, reason) of `serial` if CA generation `ca_id` issued it.

    The OCSP hot path: one parameterised single-row statement (sqlite3 keeps it prepared in
    the connection's statement cache), on the caller's own read-only connection. A serial
    that another generation issued is None: RFC 6960 §2.2 `unknown` for this issuer.
    """
    row: tuple[str, str, int | None, int | None] | None = conn.execute(
        _STATUS, (serial, ca_id)).fetchone()
    return row


def newest_serials(conn: Connection, ca_id: int, limit: int) -> list[str]:
    """The serials most recently issued under CA generation `ca_id`, newest first (on a
    reader's connection: at national scale this read takes seconds, never on a loop)."""
    rows = conn.execute(
        "SELECT serial FROM certificates WHERE ca_id = ? ORDER BY issued_at DESC LIMIT ?",
        (ca_id, limit),
    ).fetchall()
    return [str(row[0]) for row in rows]


def good_serials_under(store: Store, ca_id: int) -> list[str]:
    """Every serial of CA generation `ca_id` still `good` (what a key compromise revokes)."""
    return [str(row[0]) for row in store.conn.execute(
        "SELECT serial FROM certificates WHERE ca_id = ? AND status = 'good'", (ca_id,))]


def coverage_under(store: Store, ca_id: int, now: int) -> tuple[int, int, int | None]:
    """(unexpired, unexpired and not revoked, last notAfter) of CA generation `ca_id`:
    what it still answers for, so whether it may be retired."""
    row = store.one(
        "SELECT COUNT(*) AS unexpired,"
        " COALESCE(SUM(CASE WHEN status != 'revoked' THEN 1 ELSE 0 END), 0) AS live,"
        " MAX(not_after) AS last FROM certificates WHERE ca_id = ? AND not_after > ?",
        (ca_id, now),
    )
    assert row is not None
    return int(row["unexpired"]), int(row["live"]), row["last"]


def partitions_under(store: Store, ca_id: int) -> list[str]:
    """Every CRL partition that certificates of CA generation `ca_id` carry."""
    return [str(row[0]) for row in store.conn.execute(
        "SELECT DISTINCT partition FROM certificates WHERE ca_id = ?", (ca_id,))]


def any_expiring_from(store: Store, ca_id: int, cutoff: int) -> bool:
    """Whether CA generation `ca_id` has a certificate whose notAfter is at or after `cutoff`."""
    return store.conn.execute(
        "SELECT 1 FROM certificates WHERE ca_id = ? AND not_after >= ? LIMIT 1", (ca_id, cutoff)
    ).fetchone() is not None


def revoked_total(store: Store, ca_id: int) -> int:
    """How many certificates of CA generation `ca_id` are revoked."""
    return int(store.conn.execute(
        "SELECT COUNT(*) FROM certificates WHERE ca_id = ? AND status = 'revoked'", (ca_id,)
    ).fetchone()[0])


def resident_of(store: Store, serial: str) -> str | None:
    """The resident a certificate was issued to, or None: no such serial."""
    row = store.conn.execute("SELECT resident_id FROM certificates WHERE serial = ?",
                             (serial,)).fetchone()
    return str(row[0]) if row else None


def residents_of(store: Store, serials: set[str]) -> dict[str, str]:
    """serial -> resident for every known serial of `serials`, in chunks of 500 parameters."""
    found: dict[str, str] = {}
    items = sorted(serials)
    for start in range(0, len(items), 500):
        chunk = items[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for serial, resident in store.conn.execute(
                f"SELECT serial, resident_id FROM certificates WHERE serial IN ({marks})", chunk):
            found[serial] = resident
    return found


def last_change(store: Store) -> int:
    """The sequence number of the newest committed state change (0: none yet)."""
    row = store.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM state_changes").fetchone()
    return int(row[0])


def changed_scopes(store: Store, after_seq: int = 0, committed_since: int | None = None
                   ) -> tuple[int, set[tuple[int, str]]]:
    """The (CA generation id, CRL partition) of every state change after `after_seq`.

    `committed_since` (epoch seconds) narrows the changes to those committed at or after it:
    what a CRL signer that was down must catch up on. Returns the newest sequence seen too.
    """
    sql = ("SELECT s.seq, c.ca_id, c.partition FROM state_changes s"
           " JOIN certificates c ON c.serial = s.serial WHERE s.seq > ?")
    params: tuple[int, ...] = (after_seq,)
    if committed_since is not None:
        sql += " AND s.at >= ?"
        params += (committed_since,)
    last = after_seq
    scopes: set[tuple[int, str]] = set()
    for seq, ca_id, partition in store.conn.execute(sql + " ORDER BY s.seq", params):
        last = max(last, int(seq))
        scopes.add((int(ca_id), str(partition)))
    return last, scopes
