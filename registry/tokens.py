"""Bearer tokens for operators (and verifiers): shown once, stored as SHA-256 only.

Tokens carry 256 bits of entropy, so an unsalted SHA-256 is enough to make the stored value
useless to a thief while keeping the per-request lookup a single indexed equality.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from registry.errors import InvalidInput

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# What a revoked credential's hash column holds. A digest is 64 hex digits, so no token can
# ever match it; the random tail keeps the column's unique index satisfied. Revocation thus
# needs no schema change, and every lookup by digest refuses the old token with no extra check.
REVOKED_PREFIX = "revoked-"


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def revoked_marker() -> str:
    """A value for the hash column that no token digests to (see REVOKED_PREFIX)."""
    return REVOKED_PREFIX + secrets.token_hex(16)


def is_revoked(stored_hash: str) -> bool:
    return stored_hash.startswith(REVOKED_PREFIX)


def check_name(name: str, *, field: str = "name") -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput("must be 1-64 letters, digits, '.', '_' or '-'", field=field)
    return name


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
