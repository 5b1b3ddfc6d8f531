"""Revoked entries and partitions, streamed from the registry.

Rows are read with a plain cursor in batches (`fetchmany`), so no query result is ever held
twice. RFC 5280 §3.3: an entry may only leave the CRL after the certificate has expired, so
the cut-off is notAfter plus a look-back.

Each entry's DER is cached in `crl_entries` the first time it is encoded: a revocation is final
(certificateHold included), so serial, revocation time and reason never change, and a daily
run only has to encode the revocations made since the previous one.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class PartitionEntries:
    """A partition's entries in scope: the cached encodings, and the entries to encode."""

    cached: bytes  # concatenated DER of the cached entries
    cached_count: int
    missing: list[RevokedEntry]


def read(store: Store, ca_id: int, partition: str, cutoff: int) -> PartitionEntries:
    """Entries of the revoked certificates of one partition whose notAfter is at or after
    `cutoff`, in one read transaction (a consistent snapshot).

    Both queries are range scans: the clustered `crl_entries` for the cached encodings, and
    the partial covering index `certificates_crl_entries` (the literal `status = 'revoked'`
    selects it) for the certificates without one. No Python runs per cached entry.
    """
    conn = store.conn
    conn.execute("BEGIN")
    try:
        cursor = conn.execute(
            "SELECT der FROM crl_entries WHERE ca_id = ? AND partition = ? AND not_after >= ?",
            (ca_id, partition, cutoff))
        chunks: list[bytes] = []
        count = 0
        while rows := cursor.fetchmany(BATCH):
            chunks.append(b"".join(row[0] for row in rows))
            count += len(rows)
        sql = ("SELECT c.serial, c.not_after, c.revoked_at, c.reason FROM certificates c"
               " WHERE c.ca_id = ? AND c.partition = ? AND c.status = 'revoked'"
               " AND c.not_after >= ?")
        if count:  # nothing cached yet (a first run): no need to probe the cache per row
            sql += (" AND NOT EXISTS (SELECT 1 FROM crl_entries e WHERE e.ca_id = c.ca_id"
                    " AND e.partition = c.partition AND e.not_after = c.not_after"
                    " AND e.serial = c.serial)")
        missing = [RevokedEntry(*row) for row in conn.execute(sql, (ca_id, partition, cutoff))]
    finally:
        conn.execute("COMMIT")
    return PartitionEntries(b"".join(chunks), count, missing)


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
