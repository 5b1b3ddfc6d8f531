"""Handing the generated private keys to the caller, once, encrypted under the card PINs.

Each key is written as a PKCS#12 file protected by its PIN (signature PIN: 6-16 alphanumerics,
authentication PIN: 4 digits, as on the card), next to the PEM certificate. Files are created
with O_EXCL and mode 0600: a key is written once and never overwrites anything.

Outside a card nothing limits guesses, so each guess must cost: the bags are PBES2 with
PBKDF2-HMAC-SHA256 at `kdf_rounds` iterations and AES-256-CBC (RFC 8018 §6.2; pyca's
`encryption_builder()`), readable by `openssl pkcs12` and pyca. pyca fixes the integrity MAC's
iteration count at 2,048 (`openssl pkcs12 -info` shows "MAC: sha256, Iteration 2048"), and the
MAC checks a password as well as the bags do: a 4-digit PIN would still fall in 2 s through it.
So the MAC is recomputed here with 2 x kdf_rounds iterations of the RFC 7292 §B.2 KDF (one
SHA-256 compression per iteration, against two per PBKDF2 iteration), which makes it no cheaper
a test than the bags. PBMAC1 (RFC 9579) would be the modern MAC, but OpenSSL reads it only from
3.4 on. What this buys for a 4-digit PIN is measured in README.md ("PINs outside a card").
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import PrivateFormat, pkcs12

from ca.files import write_once
from ca.keybackend import PrivateKey
from ca.kinds import CertKind
from registry.errors import InvalidInput

SIGNATURE_PIN = re.compile(r"^[A-Za-z0-9]{6,16}$")
AUTHENTICATION_PIN = re.compile(r"^[0-9]{4}$")
# OWASP's figure for PBKDF2-HMAC-SHA256 (2023): about 0.08 s per bag here (README.md).
KDF_ROUNDS = 600_000
MAC_SALT_BYTES = 16


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


def bundle(*, key: PrivateKey, certificate: x509.Certificate, ca_certificate: x509.Certificate,
           pin: str, friendly_name: str, kdf_rounds: int = KDF_ROUNDS) -> bytes:
    """The PKCS#12 file: PBES2/AES-256-CBC bags, MAC as costly to test a PIN against.

    Slow by design (about 0.7 s at the default rounds): build it before taking the registry's
    write lock, not inside the transaction.
    """
    encryption = (PrivateFormat.PKCS12.encryption_builder().kdf_rounds(kdf_rounds)
                  .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                  .hmac_hash(hashes.SHA256()).build(pin.encode("ascii")))
    pfx = pkcs12.serialize_key_and_certificates(
        friendly_name.encode("ascii"), key, certificate, [ca_certificate], encryption)
    return _remac(pfx, pin, 2 * kdf_rounds)


def _pkcs12_mac_key(pin: str, salt: bytes, iterations: int) -> bytes:
    """RFC 7292 §B.2 with SHA-256 (u = 32, v = 64), ID 3 (MAC key), 32 bytes: one block A1."""
    v = 64

    def stretch(data: bytes) -> bytes:  # §B.2 steps 2-3: repeat to a multiple of v bytes
        length = v * -(-len(data) // v)
        return (data * (length // len(data) + 1))[:length] if data else b""

    password = pin.encode("utf-16-be") + b"\0\0"  # BMPString with its NUL terminator (§B.1)
    digest = hashlib.sha256(bytes([3]) * v + stretch(salt) + stretch(password)).digest()
    for _ in range(iterations - 1):
        digest = hashlib.sha256(digest).digest()
    return digest


def _remac(pfx_der: bytes, pin: str, iterations: int) -> bytes:
    """Replace the PFX's MacData (RFC 7292 §4) by one with a fresh salt and `iterations`."""
    pfx = asn1_pkcs12.Pfx.load(pfx_der)
    authenticated = pfx["auth_safe"]["content"].native  # the AuthenticatedSafe's octets
    salt = os.urandom(MAC_SALT_BYTES)
    mac = hmac.new(_pkcs12_mac_key(pin, salt, iterations), authenticated, "sha256").digest()
    pfx["mac_data"] = asn1_pkcs12.MacData({
        "mac": {"digest_algorithm": {"algorithm": "sha256"}, "digest": mac},
        "mac_salt": salt,
        "iterations": iterations,
    })
    der: bytes = pfx.dump()
    return der


def write(files: CredentialFiles, *, pkcs12_file: bytes, certificate: x509.Certificate) -> None:
    """Write the prepared PKCS#12 file (0600) and the PEM certificate, each exactly once."""
    write_once(files.key, pkcs12_file, 0o600)
    try:
        write_once(files.certificate, certificate.public_bytes(serialization.Encoding.PEM),
                    0o644)
    except BaseException:
        files.key.unlink(missing_ok=True)
        raise
