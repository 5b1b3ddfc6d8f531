"""Filter: every CertID must name one of our CA generations, and the same one.

Generations share a DN, so the index is keyed by (hash algorithm, issuerNameHash,
issuerKeyHash) (ocsp/issuers.py). A response has a single signer and a delegated responder
speaks only for its own generation (RFC 6960 §4.2.2.2), so a request spanning generations is
`unauthorized`, as is one about an issuer that is not ours (RFC 6960 §2.3).
"""

from __future__ import annotations

from ocsp.errors import Unauthorized
from ocsp.issuers import IssuerIndex, ServedGeneration
from ocsp.source import Query, Reply, Source


class IssuerFilter:
    def __init__(self, next_source: Source, issuers: IssuerIndex) -> None:
        self.next = next_source
        self.issuers = issuers

    async def answer(self, query: Query) -> Reply:
        parsed = query.parsed
        assert parsed is not None  # decode comes first
        found: ServedGeneration | None = None
        for cert_id in parsed.cert_ids:
            generation = self.issuers.find(cert_id.hash_algorithm, cert_id.name_hash,
                                           cert_id.key_hash)
            if generation is None:
                raise Unauthorized("CertID names an issuer that is not ours")
            if found is not None and generation is not found:
                raise Unauthorized("CertIDs of several CA generations in one request")
            found = generation
        assert found is not None  # the parser refuses an empty requestList
        query.generation = found
        return await self.next.answer(query)
