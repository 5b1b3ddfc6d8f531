"""What every layer of the responder speaks: a `Query` in, a `Reply` out (Boulder's sources).

A request meets the layers in this order, each one module with one job (ocsp/README.md):

    decode.DecodeSource        bytes -> ParsedRequest (malformedRequest here and nowhere else)
    identify.IdentifySource    who is asking: bearer token or registered request signer
    metering.MeteringSource    every answered CertID to the fees hook, before the answer leaves
    filter.IssuerFilter        is the issuer ours, the same generation for every CertID
    presigned.PresignedSource  nonce-less single-CertID answers signed ahead of time
    live.LiveSource            everything else, signed now on the signing pool

Each layer fills in its part of the `Query` and hands it to the next; the answer travels back
up as a `Reply`. Errors are `ocsp.errors.OCSPError` raised by whichever layer decides, mapped to
OCSP error statuses only by web.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ocsp.cache import CachedAnswer
    from ocsp.issuers import ServedGeneration
    from ocsp.request import ParsedRequest
    from registry.verifiers import Verifier


@dataclass(slots=True)  # not frozen: one per request, filled in layer by layer
class Query:
    """A request on its way down the stack."""

    body: bytes
    authorization: str | None
    status_confirmation: bool
    now: int  # epoch seconds, read once per request from the responder's clock
    parsed: ParsedRequest | None = None  # decode
    verifier: Verifier | None = None  # identify (None: anonymous, when allowed)
    generation: ServedGeneration | None = None  # filter


@dataclass(slots=True)
class Reply:
    """A signed answer: cacheable (`cached` set, RFC 5019 headers) or live (nonce, several)."""

    der: bytes
    cached: CachedAnswer | None
    outcome: str  # good | revoked | unknown | multi
    kind: str  # the issuer's kind: signature | authentication
    now: int
    # what the metering hook is handed: (kind, serial) per answered CertID
    metered: Sequence[tuple[str, str]] = field(default=())


class Source(Protocol):
    """One layer: answer the query, usually by adding its part and asking the next layer."""

    async def answer(self, query: Query) -> Reply: ...
