"""The CertIDs to sign ahead of time: the newest certificates of one CA generation.

They are encoded as `openssl ocsp` and most libraries send them (AlgorithmIdentifier with NULL
parameters), so that the first real query already hits the cache.
"""

from __future__ import annotations

from collections.abc import Iterator

from ocsp.issuers import ServedGeneration, cert_id_hashes
from ocsp.request import CertID, cert_id_for
from registry import certificates
from registry.store import Store


def make_cert_id(issuer: ServedGeneration, algorithm: str, serial: int) -> CertID:
    name_hash, key_hash = cert_id_hashes(issuer.ca, algorithm)
    return cert_id_for(algorithm, name_hash, key_hash, serial)


def cert_ids_for(store: Store, issuer: ServedGeneration, algorithms: tuple[str, ...],
                 limit: int) -> Iterator[CertID]:
    for serial in certificates.newest_serials(store, issuer.ca.id, limit):
        for algorithm in algorithms:
            yield make_cert_id(issuer, algorithm, int(serial, 16))
