"""CA private keys at rest: PKCS#8 PEM encrypted with the CA passphrase, files mode 0600.

The passphrase comes from the environment (production) or from a 0600 file that `jpki init`
creates in the data directory (development). Neither the passphrase nor a key is ever logged or
put into an error message.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ca.files import write_once
from registry.errors import ConfigError, JPKIError

PrivateKey = rsa.RSAPrivateKey


class KeyStore:
    def __init__(self, data_dir: Path, *, passphrase_env: str, passphrase_file: str) -> None:
        self.directory = data_dir / "ca"
        self.passphrase_env = passphrase_env
        self.passphrase_path = data_dir / passphrase_file

    def ensure_passphrase(self) -> str | None:
        """Create the development passphrase file if no passphrase is configured; say where."""
        if os.environ.get(self.passphrase_env) or self.passphrase_path.exists():
            return None
        self.passphrase_path.parent.mkdir(parents=True, exist_ok=True)
        write_once(self.passphrase_path, (secrets.token_urlsafe(32) + "\n").encode(), 0o600)
        return str(self.passphrase_path)

    def passphrase(self) -> bytes:
        from_env = os.environ.get(self.passphrase_env)
        if from_env:
            return from_env.encode("utf-8")
        try:
            mode = self.passphrase_path.stat().st_mode & 0o777
            if mode & 0o077:
                raise ConfigError(f"{self.passphrase_path}: mode {mode:o} is readable by others;"
                                  " chmod 600 it")
            return self.passphrase_path.read_text(encoding="utf-8").strip().encode("utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"no CA passphrase: set {self.passphrase_env} or run `jpki init`"
            ) from None

    def save(self, name: str, key: PrivateKey) -> str:
        """Write a new key once (never overwrite); return its file name relative to ca/."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self.passphrase()),
        )
        path = self.directory / f"{name}.key.pem"
        write_once(path, pem, 0o600)
        return path.name

    def load(self, file_name: str) -> PrivateKey:
        path = self.directory / file_name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise JPKIError(f"CA key file {path} is missing") from None
        try:
            key = serialization.load_pem_private_key(data, password=self.passphrase())
        except (ValueError, TypeError):
            raise JPKIError(f"cannot decrypt {path}: wrong CA passphrase?") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise JPKIError(f"{path} does not hold an RSA key")
        return key
