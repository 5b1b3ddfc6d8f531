"""Revoked entries of a CRL scope, and the `crl_entries` cache of their encodings.

Rows are read with a plain cursor in batches (`fetchmany`), so no query result is ever held
twice. RFC 5280 §3.3: an entry may only leave the CRL after the certificate has expired, so
every read takes a cut-off (notAfter plus a look-back, computed by crl/).

`crl_entries` is clustered on (ca_id, partition, not_after, serial): every read here is a
range scan of it, and SQLite's length() of a blob reads no blob.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple

from registry.store import Store

BATCH = 50_000


class RevokedEntry(NamedTuple):
    """A revoked certificate in a CRL's scope whose entry is not encoded yet."""

    serial: str
    not_after: int
    revoked_at: int
    reason: int | None


_REVOKED = ("SELECT c.serial, c.not_after, c.revoked_at, c.reason FROM certificates c"
            " WHERE c.ca_id = ? AND c.partition = ? AND c.status = 'revoked'"
            " AND c.not_after >= ?")
_NOT_CACHED = (" AND NOT EXISTS (SELECT 1 FROM crl_entries e WHERE e.ca_id = c.ca_id"
               " AND e.partition = c.partition AND e.not_after = c.not_after"
               " AND e.serial = c.serial)")


def cached_total(store: Store, ca_id: int) -> int:
    """How many encodings of CA generation `ca_id` are cached, over every partition."""
    return int(store.conn.execute(
        "SELECT COUNT(*) FROM crl_entries WHERE ca_id = ?", (ca_id,)).fetchone()[0])


def cached_count(store: Store, ca_id: int, partition: str, cutoff: int) -> int:
    """How many cached encodings of a partition are in scope (notAfter at or after cutoff)."""
    return int(store.conn.execute(
        "SELECT COUNT(*) FROM crl_entries WHERE ca_id = ? AND partition = ? AND not_after >= ?",
        (ca_id, partition, cutoff)).fetchone()[0])


def revoked_count(store: Store, ca_id: int, partition: str, cutoff: int) -> int:
    """How many revoked certificates of a partition are in scope."""
    return int(store.conn.execute(
        "SELECT COUNT(*) FROM certificates WHERE ca_id = ? AND partition = ?"
        " AND status = 'revoked' AND not_after >= ?",
        (ca_id, partition, cutoff)).fetchone()[0])


def revoked_entries(store: Store, ca_id: int, partition: str, cutoff: int, *,
                    uncached_only: bool) -> list[RevokedEntry]:
    """The partition's revoked certificates in scope (with `uncached_only`, those whose
    encoding is not cached yet). Bounded by the partition's size, which shards keep small."""
    sql = _REVOKED + (_NOT_CACHED if uncached_only else "")
    return list(map(RevokedEntry._make, store.conn.execute(sql, (ca_id, partition, cutoff))))


def revoked_since(store: Store, ca_id: int, partition: str | None, after_seq: int,
                  cutoff: int) -> list[RevokedEntry]:
    """Revoked certificates of a scope (a partition, or the whole CA) whose revocation was
    committed after state change `after_seq`: the entries of a delta CRL (RFC 5280 §5.2.4)."""
    sql = ("SELECT c.serial, c.not_after, c.revoked_at, c.reason FROM certificates c"
           " WHERE c.serial IN (SELECT serial FROM state_changes WHERE seq > ?)"
           " AND c.ca_id = ? AND c.status = 'revoked' AND c.not_after >= ?")
    params: tuple[object, ...] = (after_seq, ca_id, cutoff)
    if partition is not None:
        sql += " AND c.partition = ?"
        params += (partition,)
    return [RevokedEntry(*row) for row in store.conn.execute(sql + " ORDER BY c.serial", params)]


def has_expired(store: Store, ca_id: int, partition: str, cutoff: int) -> bool:
    """Whether the partition's cache holds an encoding that has left every CRL."""
    return store.conn.execute(
        "SELECT 1 FROM crl_entries WHERE ca_id = ? AND partition = ? AND not_after < ? LIMIT 1",
        (ca_id, partition, cutoff),
    ).fetchone() is not None


def remember(store: Store, ca_id: int, partition: str, cutoff: int,
             encoded: list[tuple[str, int, bytes]]) -> None:
    """Cache encodings (serial, notAfter, DER) and drop the partition's cached entries that
    have left every CRL (notAfter before the cut-off), in one transaction."""
    # Rows made by zip, not a Python loop: a first run caches millions of them.
    serials, not_afters, ders = zip(*encoded, strict=True) if encoded else ((), (), ())
    rows = list(zip(repeat(ca_id), repeat(partition), not_afters, serials, ders))
    with store.transaction() as conn:  # the rows are made before: a shorter write lock
        conn.execute("DELETE FROM crl_entries WHERE ca_id = ? AND partition = ? AND not_after < ?",
                     (ca_id, partition, cutoff))
        conn.executemany(
            "INSERT INTO crl_entries (ca_id, partition, not_after, serial, der)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", rows)


@dataclass(frozen=True)
class CachedSpan:
    """The cached entries of a scope in one read snapshot: how many, how many bytes, and
    their encodings in batches (never all at once)."""

    count: int
    length: int
    chunks: Iterator[bytes]


def cached_size(store: Store, ca_id: int, partition: str, cutoff: int) -> tuple[int, int]:
    """(entries, bytes) of a partition's cached encodings in scope."""
    count, length = store.conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(length(der)), 0) FROM crl_entries WHERE ca_id = ?"
        " AND partition = ? AND not_after >= ?", (ca_id, partition, cutoff)).fetchone()
    return int(count), int(length)


@contextmanager
def cached(store: Store, ca_id: int, partition: str | None, cutoff: int
           ) -> Iterator[CachedSpan]:
    """The cached encodings of one partition (or of every partition: the full CRL), read in
    one transaction so the announced length is the length streamed.

    The full CRL's entries come in partition order, as the concatenation of the partitions'
    lists.
    """
    where = "ca_id = ? AND not_after >= ?"
    params: tuple[object, ...] = (ca_id, cutoff)
    if partition is not None:
        where = "ca_id = ? AND partition = ? AND not_after >= ?"
        params = (ca_id, partition, cutoff)
    conn = store.conn
    conn.execute("BEGIN")
    try:
        count, length = conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM(length(der)), 0) FROM crl_entries WHERE {where}",
            params).fetchone()
        cursor = conn.execute(f"SELECT der FROM crl_entries WHERE {where}", params)

        def chunks() -> Iterator[bytes]:
            while rows := cursor.fetchmany(BATCH):
                yield b"".join(row[0] for row in rows)

        yield CachedSpan(int(count), int(length), chunks())
    finally:
        conn.execute("COMMIT")
