"""The audit key: signs the audit log's checkpoints (registry/audit.py), held like a CA key.

It is a key of the CA key backend (file: encrypted under the CA passphrase in `<data>/ca/`;
PKCS#11: on the token), so only the role that can sign certificates can anchor the log, and
someone who can only write the database cannot re-sign a rewritten chain. Its public half is in
the registry, so `jpki audit verify` needs no secret. It is RSA because the key backends
generate RSA keys on every backend (P-384 is for CA generations and their responders); a
checkpoint costs one RSA signature.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import rsa

from ca.keybackend import KeyAlgorithm, KeyBackend, spki_fingerprint
from registry import audit
from registry.clock import Clock
from registry.errors import JPKIError, NotInitialised
from registry.store import Store

KEY_NAME = "audit-1"


def ensure(store: Store, keys: KeyBackend, clock: Clock, *, key_size: int) -> str | None:
    """Create the audit key if there is none (`jpki init`); say what was created."""
    if audit.current_key(store) is not None:
        return None
    ref, key = keys.generate(KEY_NAME, KeyAlgorithm.rsa(key_size))
    assert isinstance(key, rsa.RSAPrivateKey)  # asked for RSA just above
    key_fingerprint = spki_fingerprint(key.public_key())
    audit.register_key(store, clock, key_ref=ref, public_key=key.public_key(),
                       fingerprint=key_fingerprint)
    return f"audit checkpoint key ({key_fingerprint})"


def signing_key(store: Store, keys: KeyBackend) -> audit.SigningKey:
    """Open the newest audit key from the CA key backend (needs the CA passphrase or PIN)."""
    row = audit.current_key(store)
    if row is None:
        raise NotInitialised("no audit key in this registry: run `jpki init` (it adds one)")
    key = keys.load(str(row["key_ref"]))
    if not isinstance(key, rsa.RSAPrivateKey):
        raise JPKIError(f"audit key {row['key_ref']} is not an RSA key")
    return audit.SigningKey(int(row["id"]), key)


def seal(store: Store, keys: KeyBackend, clock: Clock) -> audit.Checkpoint | None:
    """Checkpoint the log if rows were appended since the last checkpoint."""
    if audit.unsealed_rows(store) <= 0:  # nothing new (or fewer rows: verify will say)
        return None
    return audit.checkpoint(store, clock, signing_key(store, keys))
