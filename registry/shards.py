"""CRL partitions of a municipality, fixed at issuance: the shard of a certificate.

A large municipality's revocations would make one partition CRL pass `crl.max_partition_bytes`
(10 MB by default, the ceiling Microsoft's root programme recommends for any CRL file), so its
certificates are spread over shards, each with its own URL and IssuingDistributionPoint (RFC
5280 §5.2.5), as Boulder fixes each certificate's CRL shard when it issues it.

The rule: shard = (the certificate's place in its CA generation's issuance counter for the
municipality) // capacity, where capacity is how many entries of the largest possible size fit
under the cap. A shard therefore never holds more certificates than fit in its CRL even if
every one of them is revoked: the cap holds by construction, without assuming a revocation rate.
The counter is per (CA generation, municipality) and kept in `crl_shard_counters`; the chosen
partition is stored with the certificate and written into its cRLDistributionPoints, so it
never changes: not on a later run, not when the table is re-counted, not on a CA rotation (the
new generation has its own URLs and counters, the old generation keeps publishing its shards).

Shard 0 is named by the bare municipality code, so certificates issued before sharding keep
their URL; shard k > 0 is "<code>-<k>".
"""

from __future__ import annotations

from registry.store import Connection, Store

# The largest CRL entry (RFC 5280 §5.1.2.6) we make: SEQUENCE { INTEGER serial of 20 octets
# (§4.1.2.2 maximum), UTCTime, extensions { reasonCode } } = 2 + 22 + 15 + 14 octets.
MAX_ENTRY_BYTES = 53
# Everything of a partition CRL but its entries, with room to spare: headers, issuer DN,
# authorityKeyIdentifier, cRLNumber, IssuingDistributionPoint (DirectoryName + URI),
# freshestCRL, and a 4096-bit signature (about 1.5 KiB in all).
FRAME_BYTES = 4096
DEFAULT_MAX_PARTITION_BYTES = 10_000_000


def capacity(max_partition_bytes: int) -> int:
    """How many certificates a shard may hold so that its CRL stays under the cap."""
    return max(1, (max_partition_bytes - FRAME_BYTES) // MAX_ENTRY_BYTES)


DEFAULT_CAPACITY = capacity(DEFAULT_MAX_PARTITION_BYTES)


def name(municipality_code: str, shard: int) -> str:
    """The partition name (and URL file name) of a shard."""
    return municipality_code if shard == 0 else f"{municipality_code}-{shard}"


def municipality_of(partition: str) -> str:
    """The municipality code a partition belongs to."""
    return partition.split("-", 1)[0]


def _advance(conn: Connection, ca_id: int, municipality_code: str, count: int) -> int:
    """Reserve `count` places in the counter; return the first one."""
    row = conn.execute(
        "INSERT INTO crl_shard_counters (ca_id, municipality, issued) VALUES (?, ?, ?)"
        " ON CONFLICT(ca_id, municipality)"
        " DO UPDATE SET issued = crl_shard_counters.issued + excluded.issued"
        " RETURNING issued", (ca_id, municipality_code, count)).fetchone()
    return int(row[0]) - count


def assign(store: Store, ca_id: int, municipality_code: str, shard_capacity: int) -> str:
    """The partition of a certificate about to be issued (committed at once: a crash before
    the certificate is recorded leaves an unused place, never a shard over capacity)."""
    with store.transaction() as conn:
        place = _advance(conn, ca_id, municipality_code, 1)
    return name(municipality_code, place // shard_capacity)


def assign_many(conn: Connection, ca_id: int, municipality_code: str, count: int,
                shard_capacity: int) -> list[str]:
    """Partitions for `count` certificates recorded in the caller's transaction (bulk loads)."""
    first = _advance(conn, ca_id, municipality_code, count)
    return [name(municipality_code, place // shard_capacity)
            for place in range(first, first + count)]
