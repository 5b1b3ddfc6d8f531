"""Where CA and responder private keys live: one small interface, two backends.

Everything that signs (certificates, CRLs, OCSP answers) holds an `rsa.RSAPrivateKey` or, for a
P-384 generation (ca/keyalgorithm.py), an `ec.EllipticCurvePrivateKey`. For the file backend
that is pyca's own key; for PKCS#11 it is a handle whose `sign()` runs inside the token and
whose private_bytes() refuses, so a key never leaves its backend. pyca's builders
accept such a subclass and call its `sign()`, which keeps one signing path for both.

A `BackendSpec` is plain data (picklable), so CRL worker processes can open their own backend.
It names the key role (CA keys or responder keys) *and* the process that opens it: the process
that faces the network (`serve`) can never open the CA keys (ca/keyaccess.py decides).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ca.keyalgorithm import KeyAlgorithm, PrivateKey, PublicKey

__all__ = ["BackendSpec", "Holder", "KeyAlgorithm", "KeyBackend", "PrivateKey", "PublicKey",
           "Role", "spki_fingerprint"]
Role = Literal["ca", "ocsp"]
# The security context of the process that opens a backend (README, "Two roles"):
# `signer` (the long-running CA process) and `operator` (a short-lived CLI command) may open CA
# keys; `serve` (the process that faces the network) may open responder keys only.
Holder = Literal["signer", "serve", "operator"]


@dataclass(frozen=True)
class BackendSpec:
    """How to open the key backend of one role (CA keys, or OCSP responder keys)."""

    kind: Literal["file", "pkcs11"]
    data_dir: Path
    role: Role
    holder: Holder = "operator"
    passphrase_env: str = "JPKI_CA_PASSPHRASE"
    passphrase_file: str = "ca-passphrase"
    pkcs11_module: str = "/usr/lib/softhsm/libsofthsm2.so"
    pkcs11_token: str = "jpki"
    pkcs11_pin_env: str = "JPKI_PKCS11_PIN"
    scrypt_p: int = 5  # file backend: the key files' scrypt parallelisation (ca/pkcs8.py)


class KeyBackend(Protocol):
    spec: BackendSpec

    def ensure_passphrase(self) -> str | None:
        """Create what a development set-up needs to unlock keys; say what was created."""
        ...

    def generate(self, name: str, algorithm: KeyAlgorithm) -> tuple[str, PrivateKey]:
        """A new key under `name`, never replacing one: (reference for the registry, key).

        A backend that cannot make `algorithm` raises ConfigError saying so, before it
        writes anything."""
        ...

    def load(self, ref: str) -> PrivateKey:
        ...

    def archive(self, ref: str) -> str:
        """Take a key out of service (it can no longer be loaded); return its new reference."""
        ...


def spki_fingerprint(public_key: PublicKeyTypes) -> str:
    """SHA-256 of the SubjectPublicKeyInfo DER, as `openssl pkey -pubout | sha256sum` shows."""
    der = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return "SHA256:" + hashlib.sha256(der).hexdigest()
