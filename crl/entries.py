"""Revoked entries and partitions, streamed from the registry.

Rows are read with a plain cursor in batches (`fetchmany`), so no query result is ever held
twice. RFC 5280 §3.3: an entry may only leave the CRL after the certificate has expired, so
the cut-off is notAfter plus a look-back.

Each entry's DER is cached in `crl_entries` the first time it is encoded: a revocation is final
(certificateHold included), so serial, revocation time and reason never change, and a daily
run only has to encode the revocations made since the previous one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

from registry.store import Store

BATCH = 50_000


class RevokedEntry(NamedTuple):
    """A revoked certificate in a CRL's scope whose entry is not encoded yet."""

    serial: str
    not_after: int
    revoked_at: int
    reason: int | None


def partitions(store: Store, ca_id: int) -> list[str]:
    """Every municipality code, plus any partition that certificates of this CA carry.

    Empty partitions are published too: a certificate issued tomorrow names its partition's URL
    in cRLDistributionPoints, and that URL must already resolve.
    """
    codes = {row[0] for row in store.conn.execute("SELECT code FROM municipalities")}
    codes.update(
        row[0] for row in store.conn.execute(
            "SELECT DISTINCT partition FROM certificates WHERE ca_id = ?", (ca_id,))
    )
    return sorted(codes)


def has_certificates_since(store: Store, ca_id: int, cutoff: int) -> bool:
    """Whether the CA has a certificate whose notAfter is at or after `cutoff`."""
    row = store.conn.execute(
        "SELECT 1 FROM certificates WHERE ca_id = ? AND not_after >= ? LIMIT 1", (ca_id, cutoff)
    ).fetchone()
    return row is not None


def uncached_count(store: Store, ca_id: int) -> int:
    """About how many entries of the CA still have to be encoded (revoked minus cached)."""
    revoked = store.conn.execute(
        "SELECT COUNT(*) FROM certificates WHERE ca_id = ? AND status = 'revoked'", (ca_id,)
    ).fetchone()[0]
    cached = store.conn.execute(
        "SELECT COUNT(*) FROM crl_entries WHERE ca_id = ?", (ca_id,)).fetchone()[0]
    return max(0, int(revoked) - int(cached))


def remember(store: Store, ca_id: int, partition: str, cutoff: int,
             encoded: list[tuple[str, int, bytes]]) -> None:
    """Cache newly encoded entries (serial, notAfter, DER) and drop the partition's cached
    entries that have left every CRL (notAfter before the cut-off), in one transaction."""
    expired = store.conn.execute(
        "SELECT 1 FROM crl_entries WHERE ca_id = ? AND partition = ? AND not_after < ? LIMIT 1",
        (ca_id, partition, cutoff),
    ).fetchone()
    if not encoded and expired is None:
        return
    with store.transaction() as conn:
        conn.execute("DELETE FROM crl_entries WHERE ca_id = ? AND partition = ? AND not_after < ?",
                     (ca_id, partition, cutoff))
        conn.executemany(
            "INSERT OR IGNORE INTO crl_entries (ca_id, partition, not_after, serial, der)"
            " VALUES (?, ?, ?, ?, ?)",
            [(ca_id, partition, not_after, serial, der) for serial, not_after, der in encoded],
        )


def missing(store: Store, ca_id: int, partition: str, cutoff: int) -> list[RevokedEntry]:
    """The partition's revoked certificates in scope that have no cached encoding yet.

    Bounded by the partition's size, which shards keep under `crl.max_partition_bytes`.
    The cache only ever holds entries of revoked certificates (a revocation is final), so
    when both counts agree nothing is missing: two index-only range counts instead of a
    probe of the cache per revoked certificate (the daily run's common case).
    """
    conn = store.conn
    cached = conn.execute(
        "SELECT COUNT(*) FROM crl_entries WHERE ca_id = ? AND partition = ? AND not_after >= ?",
        (ca_id, partition, cutoff)).fetchone()[0]
    sql = ("SELECT c.serial, c.not_after, c.revoked_at, c.reason FROM certificates c"
           " WHERE c.ca_id = ? AND c.partition = ? AND c.status = 'revoked'"
           " AND c.not_after >= ?")
    if cached:
        revoked = conn.execute(
            "SELECT COUNT(*) FROM certificates WHERE ca_id = ? AND partition = ?"
            " AND status = 'revoked' AND not_after >= ?",
            (ca_id, partition, cutoff)).fetchone()[0]
        if revoked == cached:
            return []
        sql += (" AND NOT EXISTS (SELECT 1 FROM crl_entries e WHERE e.ca_id = c.ca_id"
                " AND e.partition = c.partition AND e.not_after = c.not_after"
                " AND e.serial = c.serial)")
    return [RevokedEntry(*row) for row in conn.execute(sql, (ca_id, partition, cutoff))]


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

    Both queries are range scans of the clustered `crl_entries`; SQLite's length() of a blob
    reads no blob. The full CRL's entries come in partition order, as the concatenation of
    the partitions' lists.
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
