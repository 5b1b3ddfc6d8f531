"""Identify: which verifier is asking (auth.VerifierDirectory decides, cheapest first).

A bearer token names the verifier; without one, a signed request is checked against the
registered request signers (looked up before any key work, verified off the loop); else the
request is anonymous, refused unless `ocsp.allow_anonymous`.
"""

from __future__ import annotations

from ocsp.auth import VerifierDirectory
from ocsp.source import Query, Reply, Source


class IdentifySource:
    def __init__(self, next_source: Source, directory: VerifierDirectory) -> None:
        self.next = next_source
        self.directory = directory

    async def answer(self, query: Query) -> Reply:
        parsed = query.parsed
        assert parsed is not None  # decode comes first
        if parsed.signature is not None and not query.authorization:
            query.verifier = await self.directory.identify_signed(parsed.signature, query.now)
        else:
            query.verifier = self.directory.identify(query.authorization)
        return await self.next.answer(query)
