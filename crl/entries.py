"""Revoked entries and partitions, streamed from the registry.

Rows are read with a plain cursor in batches (`fetchmany`), so no query result is ever held
twice; the caller turns them into CRL entries as they arrive. RFC 5280 §3.3: an entry may only
leave the CRL after the certificate has expired, so the cut-off is notAfter plus a look-back.
"""

from __future__ import annotations

from collections.abc import Iterator

from registry.store import Store

BATCH = 50_000
# (serial as an int, revocation time in epoch seconds, reason code or None)
Entry = tuple[int, int, int | None]


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


def revoked_count(store: Store, ca_id: int) -> int:
    row = store.conn.execute(
        "SELECT COUNT(*) FROM certificates WHERE ca_id = ? AND status = 'revoked'", (ca_id,)
    ).fetchone()
    return int(row[0])


def stream(store: Store, ca_id: int, partition: str | None, cutoff: int,
           batch: int = BATCH) -> Iterator[Entry]:
    """Revoked certificates of one CA (one partition, or all when `partition` is None) whose
    notAfter is at or after `cutoff`.

    The literal `status = 'revoked'` lets SQLite use the partial covering index
    `certificates_crl_entries` (registry/migrations.py): an index-only range scan.
    """
    sql = ("SELECT serial, revoked_at, reason FROM certificates"
           " WHERE ca_id = ? AND status = 'revoked' AND not_after >= ?")
    params: tuple[object, ...] = (ca_id, cutoff)
    if partition is not None:
        sql = ("SELECT serial, revoked_at, reason FROM certificates"
               " WHERE ca_id = ? AND partition = ? AND status = 'revoked' AND not_after >= ?")
        params = (ca_id, partition, cutoff)
    cursor = store.conn.execute(sql, params)
    try:
        while True:
            rows = cursor.fetchmany(batch)
            if not rows:
                return
            for serial, revoked_at, reason in rows:
                yield int(serial, 16), revoked_at, reason
    finally:
        cursor.close()
