"""Revoked entries and partitions of a CRL scope, read from the registry.

The reads themselves are registry/crl_entries.py (streamed in batches, `fetchmany`, so no
query result is ever held twice). RFC 5280 §3.3: an entry may only leave the CRL after the
certificate has expired, so the cut-off is notAfter plus a look-back.

Each entry's DER is cached in the registry the first time it is encoded: a revocation is final
(certificateHold included), so serial, revocation time and reason never change, and a daily
run only has to encode the revocations made since the previous one.
"""

from __future__ import annotations

from registry import certificates, crl_entries, municipalities
from registry.crl_entries import CachedSpan, RevokedEntry, cached, cached_size, revoked_since
from registry.store import Store

__all__ = ["CachedSpan", "RevokedEntry", "cached", "cached_size", "has_certificates_since",
           "missing", "partitions", "remember", "revoked_since", "uncached_count"]


def partitions(store: Store, ca_id: int) -> list[str]:
    """Every municipality code, plus any partition that certificates of this CA carry.

    Empty partitions are published too: a certificate issued tomorrow names its partition's URL
    in cRLDistributionPoints, and that URL must already resolve.
    """
    codes = set(municipalities.codes(store))
    codes.update(certificates.partitions_under(store, ca_id))
    return sorted(codes)


def has_certificates_since(store: Store, ca_id: int, cutoff: int) -> bool:
    """Whether the CA has a certificate whose notAfter is at or after `cutoff`."""
    return certificates.any_expiring_from(store, ca_id, cutoff)


def uncached_count(store: Store, ca_id: int) -> int:
    """About how many entries of the CA still have to be encoded (revoked minus cached)."""
    revoked = certificates.revoked_total(store, ca_id)
    return max(0, revoked - crl_entries.cached_total(store, ca_id))


def remember(store: Store, ca_id: int, partition: str, cutoff: int,
             encoded: list[tuple[str, int, bytes]]) -> None:
    """Cache newly encoded entries (serial, notAfter, DER) and drop the partition's cached
    entries that have left every CRL (notAfter before the cut-off), in one transaction."""
    if not encoded and not crl_entries.has_expired(store, ca_id, partition, cutoff):
        return
    crl_entries.remember(store, ca_id, partition, cutoff, encoded)


def missing(store: Store, ca_id: int, partition: str, cutoff: int) -> list[RevokedEntry]:
    """The partition's revoked certificates in scope that have no cached encoding yet.

    Bounded by the partition's size, which shards keep under `crl.max_partition_bytes`.
    The cache only ever holds entries of revoked certificates (a revocation is final), so
    when both counts agree nothing is missing: two index-only range counts instead of a
    probe of the cache per revoked certificate (the daily run's common case).
    """
    cached_now = crl_entries.cached_count(store, ca_id, partition, cutoff)
    if cached_now and crl_entries.revoked_count(store, ca_id, partition, cutoff) == cached_now:
        return []
    return crl_entries.revoked_entries(store, ca_id, partition, cutoff,
                                       uncached_only=bool(cached_now))
