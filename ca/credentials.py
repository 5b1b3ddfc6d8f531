"""Handing the generated private keys to the caller, once, encrypted under the card PINs.

Each key is written as a PKCS#12 file protected by its PIN (signature PIN: 6-16 alphanumerics,
authentication PIN: 4 digits, as on the card), next to the PEM certificate. Files are created
with O_EXCL and mode 0600: a key is written once and never overwrites anything.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ca.files import write_once
from ca.keybackend import PrivateKey
from ca.kinds import CertKind
from registry.errors import InvalidInput

SIGNATURE_PIN = re.compile(r"^[A-Za-z0-9]{6,16}$")
AUTHENTICATION_PIN = re.compile(r"^[0-9]{4}$")


def check_pin(kind: CertKind, pin: str | None) -> str:
    if kind is CertKind.SIGNATURE:
        if pin is None or not SIGNATURE_PIN.match(pin):
            raise InvalidInput("must be 6-16 letters and digits", field="sign_pin")
    elif pin is None or not AUTHENTICATION_PIN.match(pin):
        raise InvalidInput("must be exactly 4 digits", field="auth_pin")
    return pin


@dataclass(frozen=True)
class CredentialFiles:
    certificate: Path
    key: Path


def paths_for(out_dir: Path, kind: CertKind, serial: str) -> CredentialFiles:
    return CredentialFiles(out_dir / f"{kind.value}-{serial}.pem",
                           out_dir / f"{kind.value}-{serial}.p12")


def check_out_dir(out_dir: Path) -> Path:
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"{out_dir} exists and is not a directory", field="out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot create {out_dir}: {exc.strerror}", field="out") from None
    if not os.access(out_dir, os.W_OK):
        raise InvalidInput(f"{out_dir} is not writable", field="out")
    return out_dir


def write(files: CredentialFiles, *, key: PrivateKey, certificate: x509.Certificate,
          ca_certificate: x509.Certificate, pin: str, friendly_name: str) -> None:
    bundle = pkcs12.serialize_key_and_certificates(
        friendly_name.encode("ascii"), key, certificate, [ca_certificate],
        serialization.BestAvailableEncryption(pin.encode("ascii")),
    )
    write_once(files.key, bundle, 0o600)
    try:
        write_once(files.certificate, certificate.public_bytes(serialization.Encoding.PEM),
                    0o644)
    except BaseException:
        files.key.unlink(missing_ok=True)
        raise
