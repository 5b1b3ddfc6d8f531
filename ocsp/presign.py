"""The CertIDs to sign ahead of time: the newest certificates of each CA generation.

They are encoded as `openssl ocsp` and most libraries send them (AlgorithmIdentifier with NULL
parameters), so that the first real query already hits the cache.

Which serials those are is one read per generation that sorts the generation's certificates:
seconds at 10 M rows. It runs on a thread with a reader connection of its own
(`newest_serials`), so the loop answers meanwhile; the signing goes to the signing pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ocsp.issuers import ServedGeneration, cert_id_hashes
from ocsp.request import CertID, cert_id_for
from registry import certificates
from registry.store import Store


def make_cert_id(issuer: ServedGeneration, algorithm: str, serial: int) -> CertID:
    name_hash, key_hash = cert_id_hashes(issuer.ca, algorithm)
    return cert_id_for(algorithm, name_hash, key_hash, serial)


def newest_serials(store: Store, ca_ids: Iterable[int], limit: int) -> dict[int, list[str]]:
    """Blocking, for a thread: the newest `limit` serials of each generation, on a reader
    connection opened and closed on that thread (SQLite's belong to the thread that opened
    them; on PostgreSQL a session of its own, not the loop's)."""
    conn = store.reader()
    try:
        return {ca_id: certificates.newest_serials(conn, ca_id, limit) for ca_id in ca_ids}
    finally:
        conn.close()


def cert_ids_for(issuer: ServedGeneration, algorithms: tuple[str, ...],
                 serials: Iterable[str]) -> Iterator[CertID]:
    for serial in serials:
        for algorithm in algorithms:
            yield make_cert_id(issuer, algorithm, int(serial, 16))
