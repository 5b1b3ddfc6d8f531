"""The key algorithms of CA, responder and resident keys, and the signature scheme each implies.

Today's cards: RSA (2,048 bits) with sha256WithRSAEncryption. The next-generation card
(issue 18, part 2, announced for FY2028): ECDSA on P-384 with SHA-384. A key's algorithm
fixes its signature scheme everywhere it signs (certificates, CRLs, OCSP answers), so the
choice is made once, here, from the key itself:

| key | signatureAlgorithm | rule |
|---|---|---|
| RSA (any size) | sha256WithRSAEncryption, parameters NULL | RFC 4055 §5 |
| ECDSA P-256 | ecdsa-with-SHA256, parameters absent | RFC 5758 §3.2 |
| ECDSA P-384 | ecdsa-with-SHA384, parameters absent | RFC 5758 §3.2, RFC 5480 §4 (a) |

RFC 5480 §4: the hash should match the curve's strength (P-384: 192 bits, SHA-384).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

ECDSA_P384 = "ecdsa-p384"
_CURVES: dict[str, ec.EllipticCurve] = {"secp256r1": ec.SECP256R1(), "secp384r1": ec.SECP384R1()}
_EC_NAMES = {"secp256r1": "ecdsa-p256", "secp384r1": ECDSA_P384}


class UnsupportedKey(ValueError):
    """A key of an algorithm or curve this CA never uses (say which, so it can be replaced)."""


@dataclass(frozen=True)
class KeyAlgorithm:
    """An algorithm and size: `rsa` with `bits`, or `ec` with a curve name (secp384r1)."""

    family: Literal["rsa", "ec"]
    bits: int = 2048  # RSA modulus size; for EC the curve's size
    curve: str = ""  # EC only: the pyca curve name

    @classmethod
    def rsa(cls, bits: int) -> KeyAlgorithm:
        return cls("rsa", bits)

    @classmethod
    def ecdsa_p384(cls) -> KeyAlgorithm:
        return cls("ec", 384, "secp384r1")

    @classmethod
    def parse(cls, name: str, *, rsa_bits: int) -> KeyAlgorithm:
        """`rsa` (with the configured size, `ca.key_size`) or `ecdsa-p384`."""
        if name == "rsa":
            return cls.rsa(rsa_bits)
        if name == ECDSA_P384:
            return cls.ecdsa_p384()
        raise UnsupportedKey(f"unknown key algorithm {name!r}: use rsa or {ECDSA_P384}")

    @classmethod
    def of(cls, key: PrivateKey | PublicKey | object) -> KeyAlgorithm:
        """The algorithm of a key (private or public; a token key is an RSA/EC subclass)."""
        if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
            return cls.rsa(key.key_size)
        if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
            if key.curve.name not in _CURVES:
                raise UnsupportedKey(f"ECDSA curve {key.curve.name} is not used here"
                                     " (P-256 and P-384 are)")
            return cls("ec", key.curve.key_size, key.curve.name)
        raise UnsupportedKey(f"{type(key).__name__} is neither an RSA nor an ECDSA key")

    @property
    def name(self) -> str:
        """What the CLI and the audit log say: rsa-2048, ecdsa-p384."""
        return f"rsa-{self.bits}" if self.family == "rsa" else _EC_NAMES[self.curve]

    @property
    def cli_name(self) -> str:
        """The `--algorithm` value that makes this algorithm again (`rsa` takes ca.key_size)."""
        return "rsa" if self.family == "rsa" else self.name

    @property
    def hash(self) -> hashes.SHA256 | hashes.SHA384:
        """The signature hash for this key (the module docstring's table)."""
        if self.family == "ec" and self.curve == "secp384r1":
            return hashes.SHA384()
        return hashes.SHA256()

    @property
    def asn1_signature_algorithm(self) -> str:
        """asn1crypto's name of the signatureAlgorithm (`algos.SignedDigestAlgorithm`)."""
        return f"{self.hash.name}_{'rsa' if self.family == 'rsa' else 'ecdsa'}"

    def generate(self) -> PrivateKey:
        if self.family == "rsa":
            return rsa.generate_private_key(public_exponent=65537, key_size=self.bits)
        return ec.generate_private_key(_CURVES[self.curve])

    def sign(self, key: PrivateKey, data: bytes) -> bytes:
        """A raw signature over `data`: PKCS#1 v1.5 (RSA) or DER ECDSA-Sig-Value (RFC 5480)."""
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), self.hash)
        return key.sign(data, ec.ECDSA(self.hash))


def signature_hash(key: PrivateKey | PublicKey) -> hashes.SHA256 | hashes.SHA384:
    """The hash `key` signs with: SHA-256 for RSA and P-256, SHA-384 for P-384."""
    return KeyAlgorithm.of(key).hash
