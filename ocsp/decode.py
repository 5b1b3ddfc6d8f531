"""Decode: the request's bytes become a ParsedRequest, or MalformedRequest.

A repeated plain request (unsigned, nonce-less, one CertID: what a verifier polling a
certificate sends) is decoded once: its parse is deterministic, so the bytes are a key to it.
The memo is bounded and cleared when full; losing it costs one parse per request, nothing else.
"""

from __future__ import annotations

from ocsp.request import ParsedRequest, parse_request
from ocsp.source import Query, Reply, Source


class DecodeSource:
    def __init__(self, next_source: Source, algorithms: frozenset[str],
                 memo_limit: int) -> None:
        self.next = next_source
        self.algorithms = algorithms
        self.memo_limit = memo_limit
        self._parsed: dict[bytes, ParsedRequest] = {}

    def decode(self, body: bytes) -> ParsedRequest:
        parsed = self._parsed.get(body)
        if parsed is None:
            parsed = parse_request(body, self.algorithms)
            if parsed.cacheable and parsed.signature is None:
                if len(self._parsed) >= self.memo_limit:
                    self._parsed.clear()
                self._parsed[body] = parsed
        return parsed

    async def answer(self, query: Query) -> Reply:
        query.parsed = self.decode(query.body)
        return await self.next.answer(query)
