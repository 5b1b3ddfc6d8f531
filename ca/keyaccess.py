"""Opening a key backend: the one place that decides which process may open which keys.

The process that faces the network (`jpki serve`) parses untrusted input all day; a remote code
execution there must not reach the key that signs every resident's certificate. So a backend
spec for CA keys opened by the `serve` holder is refused here, before any passphrase is read or
any token is logged into. This is a property of the code path, not of a configuration default
(as Boulder's CA alone holds issuing keys and its other services ask it to sign).
"""

from __future__ import annotations

from ca.keybackend import BackendSpec, KeyBackend
from registry.errors import ConfigError


class KeyAccessDenied(ConfigError):
    """A process role asked for keys its security context must never hold."""


def open_backend(spec: BackendSpec) -> KeyBackend:
    if spec.role == "ca" and spec.holder == "serve":
        raise KeyAccessDenied(
            "the serve role cannot open CA private keys: CRLs and responder certificates are"
            " signed by `jpki signer` (or an operator's command), never by the process that"
            " faces the network")
    if spec.kind == "pkcs11":
        from ca.pkcs11store import PKCS11KeyStore  # python-pkcs11 only where it is configured

        return PKCS11KeyStore(spec)
    from ca.keystore import FileKeyStore

    return FileKeyStore(spec)
