"""Who is asking: a bearer token, or the registered certificate that signed the request.

DOMAIN.md: only registered verifiers receive revocation information; anonymous queries are a
setting (ocsp.allow_anonymous), off by default.
"""

from __future__ import annotations

from ocsp.errors import Unauthorized
from registry import verifiers
from registry.store import Store
from registry.verifiers import Credentials, Verifier


class VerifierDirectory:
    def __init__(self, store: Store, allow_anonymous: bool) -> None:
        self.store = store
        self.allow_anonymous = allow_anonymous
        self.credentials = Credentials({}, {})
        self.reload()

    def reload(self) -> None:
        self.credentials = verifiers.snapshot(self.store)
        self._seen: dict[str, Verifier] = {}  # header -> verifier, so a hit hashes nothing

    def identify(self, authorization: str | None, signer_der: bytes | None) -> Verifier | None:
        """The verifier, or None if anonymous queries are allowed; else Unauthorized."""
        if authorization:
            seen = self._seen.get(authorization)
            if seen is not None:
                return seen
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                found = self.credentials.by_token_hash.get(verifiers.token_hash(token.strip()))
                if found is not None:
                    if len(self._seen) < 10000:
                        self._seen[authorization] = found
                    return found
            raise Unauthorized("unknown bearer token")
        if signer_der is not None:
            found = self.credentials.by_signer.get(verifiers.fingerprint(signer_der))
            if found is not None:
                return found
            raise Unauthorized("request signer is not registered to any verifier")
        if self.allow_anonymous:
            return None
        raise Unauthorized("anonymous request")
