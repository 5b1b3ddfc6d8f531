"""The file key backend: PKCS#8 PEM encrypted with a passphrase, files mode 0600.

Keys are encrypted with PBES2(scrypt, AES-256-CBC) (ca/pkcs8.py says why not pyca's
BestAvailableEncryption); each store decrypts a key once and keeps it, since a derivation
costs about 0.2 s by design.

CA keys live in `<data>/ca/` under the CA passphrase, responder keys in `<data>/ocsp/` under
their own one, so the internet-facing responder never needs the CA passphrase. The passphrase
comes from the environment (production) or from a 0600 file that `jpki init` creates in the
data directory (development). Neither the passphrase nor a key is ever logged or put into an
error message; a key file that group or others could read is refused, not used.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca import pkcs8
from ca.files import write_once
from ca.keyalgorithm import KeyAlgorithm, UnsupportedKey
from ca.keybackend import BackendSpec, PrivateKey
from registry.datadir import make_private_dirs, refuse_shared
from registry.errors import ConfigError, JPKIError

ARCHIVE = "archive"


def _private(path: Path, what: str) -> None:
    path.stat()  # a missing file raises FileNotFoundError, which callers turn into advice
    refuse_shared(path, what)


class FileKeyStore:
    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.directory = spec.data_dir / spec.role
        self.passphrase_env = spec.passphrase_env
        self.passphrase_path = spec.data_dir / spec.passphrase_file
        self._loaded: dict[str, PrivateKey] = {}

    def ensure_passphrase(self) -> str | None:
        """Create the development passphrase file if no passphrase is configured; say where."""
        if os.environ.get(self.passphrase_env) or self.passphrase_path.exists():
            return None
        make_private_dirs(self.passphrase_path.parent)
        write_once(self.passphrase_path, (secrets.token_urlsafe(32) + "\n").encode(), 0o600)
        return str(self.passphrase_path)

    def passphrase(self) -> bytes:
        from_env = os.environ.get(self.passphrase_env)
        if from_env:
            return from_env.encode("utf-8")
        try:
            _private(self.passphrase_path, "the passphrase file")
            return self.passphrase_path.read_text(encoding="utf-8").strip().encode("utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"no {self.spec.role.upper()} key passphrase: set {self.passphrase_env}"
                " or run `jpki init`"
            ) from None

    def generate(self, name: str, algorithm: KeyAlgorithm) -> tuple[str, PrivateKey]:
        key = algorithm.generate()  # RSA or EC P-384: PKCS#8 holds either (RFC 5208, 5915)
        return self.save(name, key), key

    def save(self, name: str, key: PrivateKey) -> str:
        """Write a new key once (never overwrite); return its file name relative to the store."""
        make_private_dirs(self.directory)
        pem = pkcs8.encrypt(key, self.passphrase(), scrypt_p=self.spec.scrypt_p)
        path = self.directory / f"{name}.key.pem"
        write_once(path, pem, 0o600)
        return path.name

    def _path(self, ref: str) -> Path:
        if ref.startswith("pkcs11:") or "/" in ref or ref.startswith("."):
            raise ConfigError(f"key {ref!r} is not a file of this key store (keys.backend?)")
        return self.directory / ref

    def load(self, ref: str) -> PrivateKey:
        path = self._path(ref)
        if ref in self._loaded and path.exists():
            return self._loaded[ref]
        try:
            _private(path, "the key file")
            data = path.read_bytes()
        except FileNotFoundError:
            archived = self.directory / ARCHIVE / ref
            if archived.exists():
                raise JPKIError(f"key {ref} is archived (its CA generation is retired)") from None
            raise JPKIError(f"key file {path} is missing") from None
        try:
            key = serialization.load_pem_private_key(data, password=self.passphrase())
        except (ValueError, TypeError):
            raise JPKIError(f"cannot decrypt {path}: wrong passphrase?") from None
        if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise JPKIError(f"{path} holds neither an RSA nor an ECDSA key")
        try:
            KeyAlgorithm.of(key)
        except UnsupportedKey as exc:
            raise JPKIError(f"{path}: {exc}") from None
        self._loaded[ref] = key
        return key

    def archive(self, ref: str) -> str:
        """Move the (still encrypted) key into `archive/`, out of reach of `load()`."""
        path = self._path(ref)
        self._loaded.pop(ref, None)
        target_dir = self.directory / ARCHIVE
        make_private_dirs(target_dir)
        target = target_dir / ref
        if path.exists():
            os.link(path, target)  # fails if an archived copy exists: never replace one
            os.unlink(path)
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif not target.exists():
            raise JPKIError(f"key file {path} is missing")
        return f"{ARCHIVE}/{ref}"
