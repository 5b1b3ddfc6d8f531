"""The append-only, hash-chained audit log, anchored by signed checkpoints.

Each row carries the SHA-256 of the previous row's hash and its own fields, so an edit, a
deletion or an insertion made behind the code's back breaks the chain at that row. Rows hold
serials, actors and actions, never the 4 facts: the audit log is read by people who must not
learn a resident's name or address from it.

A chain alone proves nothing to someone who can write the database: they can delete the last
rows, or edit a row and recompute every hash after it. So commands that hold the CA key sign
checkpoints (last row id, head hash, time) with a dedicated audit key whose private half lives
in the CA key backend (ca/auditkey.py) and whose public half is stored here, and `verify`
checks every signature, that the chain still hashes to each signed head, and that the log is
not shorter than the last checkpoint. Rows written after the last checkpoint are protected only
by the chain until the next one. `verify` also checks that the registry's certificate statuses
are the ones the log explains, since an UPDATE of `certificates` bypasses the log entirely.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)

from registry.clock import Clock, epoch, iso
from registry.errors import Conflict
from registry.reasons import Reason
from registry.store import Connection, Store

GENESIS = "0" * 64


def _row_hash(prev_hash: str, row_id: int, at: int, actor: str, action: str,
              serial: str | None, detail: str) -> str:
    payload = json.dumps([prev_hash, row_id, at, actor, action, serial, detail],
                         ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def append(store: Store, clock: Clock, *, actor: str, action: str,
           serial: str | None = None, detail: dict[str, Any] | None = None) -> int:
    """Append one row; call inside the transaction whose change it records."""
    with store.transaction() as conn:
        last = conn.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
        prev_hash = last[1] if last else GENESIS
        row_id = (last[0] if last else 0) + 1
        at = epoch(clock())
        text = json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        digest = _row_hash(prev_hash, row_id, at, actor, action, serial, text)
        conn.execute(
            "INSERT INTO audit_log (id, at, actor, action, serial, detail, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row_id, at, actor, action, serial, text, prev_hash, digest),
        )
        return row_id


@dataclass(frozen=True)
class SigningKey:
    """The audit key as the signer holds it: its row in `audit_keys` and the private key."""

    key_id: int
    private_key: rsa.RSAPrivateKey


@dataclass(frozen=True)
class Checkpoint:
    id: int
    key_id: int
    row_id: int
    head_hash: str
    at: int


def _signed_bytes(key_id: int, row_id: int, head_hash: str, at: int) -> bytes:
    """What a checkpoint signature covers; the label keeps it from meaning anything else."""
    return json.dumps(["jpki-audit-checkpoint-v1", key_id, row_id, head_hash, at],
                      separators=(",", ":")).encode("ascii")


def register_key(store: Store, clock: Clock, *, key_ref: str, public_key: rsa.RSAPublicKey,
                 fingerprint: str) -> int:
    """Record a new audit key's public half (the private half stays in its key backend)."""
    der = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    with store.transaction() as conn:
        cursor = conn.execute(
            "INSERT INTO audit_keys (key_ref, public_der, fingerprint, created_at)"
            " VALUES (?, ?, ?, ?) RETURNING id", (key_ref, der, fingerprint, epoch(clock())))
        return int(cursor.fetchone()[0])


def current_key(store: Store) -> dict[str, Any] | None:
    """The newest audit key's row (id, key_ref, fingerprint), or None before `jpki init`."""
    return store.one("SELECT id, key_ref, fingerprint FROM audit_keys ORDER BY id DESC LIMIT 1")


def unsealed_rows(store: Store) -> int:
    """Rows appended since the last checkpoint (all rows if there is none)."""
    row = store.one("SELECT (SELECT COALESCE(MAX(id), 0) FROM audit_log)"
                    " - (SELECT COALESCE(MAX(row_id), 0) FROM audit_checkpoints) AS n")
    return int(row["n"]) if row else 0


def checkpoint(store: Store, clock: Clock, key: SigningKey) -> Checkpoint:
    """Sign the chain's current head with the audit key and record it.

    The one entry point for every signer: commands that hold the CA key call it when they
    finish, `jpki audit checkpoint` on demand, a long-running signer periodically. Signing
    happens inside the write transaction so that no row slips in between head and signature.
    A signer never anchors a rewritten chain: the rows since the last checkpoint must link to
    its signed head, else it refuses (and `jpki audit verify` says what happened).
    """
    with store.transaction() as conn:
        _check_since_last_checkpoint(conn)
        last = conn.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
        row_id, head_hash = (int(last[0]), str(last[1])) if last else (0, GENESIS)
        at = epoch(clock())
        signature = key.private_key.sign(_signed_bytes(key.key_id, row_id, head_hash, at),
                                         padding.PKCS1v15(), hashes.SHA256())
        cursor = conn.execute(
            "INSERT INTO audit_checkpoints (key_id, row_id, head_hash, at, signature)"
            " VALUES (?, ?, ?, ?, ?) RETURNING id", (key.key_id, row_id, head_hash, at, signature))
        return Checkpoint(int(cursor.fetchone()[0]), key.key_id, row_id, head_hash, at)


def _check_since_last_checkpoint(conn: Connection) -> None:
    signed = conn.execute("SELECT row_id, head_hash FROM audit_checkpoints"
                          " ORDER BY row_id DESC LIMIT 1").fetchone()
    start, prev_hash = (int(signed[0]), str(signed[1])) if signed else (0, GENESIS)
    refuse = Conflict("refusing to sign an audit checkpoint: the log no longer extends the last"
                      " signed checkpoint; run `jpki audit verify`")
    if start:
        row = conn.execute("SELECT hash FROM audit_log WHERE id = ?", (start,)).fetchone()
        if row is None or row[0] != prev_hash:
            raise refuse
    expected = start + 1
    for row_id, at, actor, action, serial, detail, row_prev, row_hash in conn.execute(
            "SELECT id, at, actor, action, serial, detail, prev_hash, hash FROM audit_log"
            " WHERE id > ? ORDER BY id", (start,)):
        if (row_id != expected or row_prev != prev_hash or row_hash
                != _row_hash(row_prev, row_id, at, actor, action, serial, detail)):
            raise refuse
        prev_hash, expected = row_hash, expected + 1


@dataclass(frozen=True)
class ChainReport:
    rows: int
    first_broken: int | None
    problem: str | None
    checkpoints: int = 0
    last_checkpoint: Checkpoint | None = None
    audit_key: str | None = None  # fingerprint of the newest audit key, to compare out of band
    mismatches: tuple[str, ...] = field(default=())  # registry states the log does not explain

    @property
    def ok(self) -> bool:
        return self.first_broken is None and self.problem is None and not self.mismatches


def _walk(store: Store, wanted: set[int], heads: dict[int, str]) -> tuple[int, int, int | None,
                                                                          str | None]:
    """Walk the chain in id order: (rows, last id, first broken row, problem); fill `heads`."""
    prev_hash = GENESIS
    expected_id = 1
    count = 0
    cursor = store.conn.execute(
        "SELECT id, at, actor, action, serial, detail, prev_hash, hash FROM audit_log ORDER BY id"
    )
    for row_id, at, actor, action, serial, detail, row_prev, row_hash in cursor:
        count += 1
        if row_id != expected_id:
            return count, row_id, expected_id, f"row {expected_id} is missing"
        if row_prev != prev_hash:
            return count, row_id, row_id, f"row {row_id} does not link to row {row_id - 1}"
        if _row_hash(row_prev, row_id, at, actor, action, serial, detail) != row_hash:
            return count, row_id, row_id, f"row {row_id} was altered (hash mismatch)"
        if row_id in wanted:
            heads[row_id] = row_hash
        prev_hash = row_hash
        expected_id += 1
    return count, expected_id - 1, None, None


def _check_checkpoints(store: Store, heads: dict[int, str], last_id: int,
                       checkpoints: list[dict[str, Any]]) -> tuple[int | None, str | None]:
    keys = {row["id"]: load_der_public_key(row["public_der"])
            for row in store.query("SELECT id, public_der FROM audit_keys")}
    if not keys:
        return 1, "no audit key: the chain is not anchored (run `jpki init` with the CA key)"
    if not checkpoints:
        return 1, "no signed checkpoint: the chain is not anchored (run `jpki audit checkpoint`)"
    for cp in checkpoints:
        public_key = keys.get(cp["key_id"])
        try:
            if not isinstance(public_key, rsa.RSAPublicKey):
                raise InvalidSignature
            public_key.verify(cp["signature"], _signed_bytes(cp["key_id"], cp["row_id"],
                                                             cp["head_hash"], cp["at"]),
                              padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return cp["row_id"], (f"checkpoint {cp['id']} (row {cp['row_id']}): its signature"
                                  f" does not verify with audit key {cp['key_id']}")
    newest = max(checkpoints, key=lambda cp: cp["row_id"])
    if newest["row_id"] > last_id:
        return last_id + 1, (f"the log was truncated: checkpoint {newest['id']} signed row"
                             f" {newest['row_id']} but the log ends at row {last_id}")
    for cp in checkpoints:
        head = heads.get(cp["row_id"], GENESIS if cp["row_id"] == 0 else None)
        if head != cp["head_hash"]:
            return cp["row_id"], (f"checkpoint {cp['id']} signed head {cp['head_hash'][:16]}..."
                                  f" at row {cp['row_id']}, but the chain now hashes to"
                                  f" {(head or '?')[:16]}... there: rows up to {cp['row_id']}"
                                  " were rewritten and the chain recomputed")
    return None, None


def _revocations(store: Store) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    found: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for row_id, serial, detail in store.conn.execute(
            "SELECT id, serial, detail FROM audit_log WHERE action = 'certificate.revoke'"):
        found.setdefault(serial, []).append((row_id, json.loads(detail)))
    return found


def _registry_mismatches(store: Store) -> Iterator[str]:
    """Every certificate's status and revocation must be the one its audit rows record.

    `certificates.revoke` is the only way a status changes and it writes the audit row in the
    same transaction, so any difference is an edit behind the code's back.
    """
    revocations = _revocations(store)
    cursor = store.conn.execute("SELECT serial, status, reason, revoked_at FROM certificates")
    for serial, status, reason, revoked_at in cursor:
        rows = revocations.pop(serial, [])
        if status == "good":
            if rows:
                yield (f"certificate {serial} is good in the registry, but audit row"
                       f" {rows[0][0]} revoked it ({rows[0][1].get('reason')})")
        elif status == "revoked":
            try:
                name = Reason(reason).name if reason is not None else None
            except ValueError:
                name = f"unknown reason {reason}"
            if len(rows) != 1:
                yield (f"certificate {serial} is revoked ({name}) in the registry, but"
                       f" {len(rows)} audit rows revoke it")
                continue
            row_id, detail = rows[0]
            if (detail.get("reason"), detail.get("revoked_at")) != (name, iso(revoked_at)):
                yield (f"certificate {serial}: the registry says revoked {name} at"
                       f" {iso(revoked_at)}, audit row {row_id} says {detail.get('reason')} at"
                       f" {detail.get('revoked_at')}")
        else:
            yield f"certificate {serial} has status {status!r}, which no audit row explains"
    for serial, rows in revocations.items():
        yield f"audit row {rows[0][0]} revokes certificate {serial}, which the registry lacks"


def verify(store: Store) -> ChainReport:
    """Check the chain, its signed checkpoints, and the registry against the log.

    Reports the first broken row of the chain (or the checkpoint that disagrees), and every
    certificate whose status the log does not explain.
    """
    checkpoints = store.query(
        "SELECT id, key_id, row_id, head_hash, at, signature FROM audit_checkpoints ORDER BY id")
    heads: dict[int, str] = {}
    rows, last_id, broken, problem = _walk(store, {cp["row_id"] for cp in checkpoints}, heads)
    if broken is None:
        broken, problem = _check_checkpoints(store, heads, last_id, checkpoints)
    key = current_key(store)
    last = max(checkpoints, key=lambda cp: cp["row_id"]) if checkpoints else None
    return ChainReport(
        rows, broken, problem, checkpoints=len(checkpoints),
        last_checkpoint=Checkpoint(last["id"], last["key_id"], last["row_id"],
                                   last["head_hash"], last["at"]) if last else None,
        audit_key=key["fingerprint"] if key else None,
        mismatches=tuple(_registry_mismatches(store)),
    )
