"""Encrypted PKCS#8 for CA, responder and audit keys: PBES2 with scrypt and AES-256-CBC.

Why not pyca's `BestAvailableEncryption`: for PKCS#8 it writes PBES2 with PBKDF2-HMAC-SHA256
at a fixed 2,048 iterations and AES-256-CBC (seen with `openssl asn1parse`), and pyca offers no
`encryption_builder()` for PKCS#8 (only OpenSSH and PKCS#12), so the count cannot be raised.
2,048 iterations cost about 0.5 ms per guess: an operator-chosen passphrase from
`JPKI_CA_PASSPHRASE` would fall to a dictionary in minutes once a key file is copied.

So the envelope is written here, to the letter of the standards, and read back by pyca's own
loader and by `openssl pkey` (tests/test_key_file_kdf.py): RFC 8018 §6.2 PBES2 whose KDF is
scrypt (RFC 7914 §7, id-scrypt) and whose cipher is AES-256-CBC (RFC 8018 §B.2.5 / RFC 3565).
scrypt is memory-hard, so a GPU or ASIC gains far less over our CPU than against PBKDF2.
Parameters: N = 2^14, r = 8 (16 MiB per guess: under OpenSSL's default scrypt memory cap of
32 MiB, so `openssl pkey` reads it with no option) and p = 5 by default, which is OWASP's
scrypt equivalent of N = 2^17, r = 8, p = 1 (about 0.2 s per derivation here, measured in the
README). `p` is a setting (`keys.scrypt_p`) only so that the test suite can use 1.
"""

from __future__ import annotations

import base64
import os
import textwrap

from asn1crypto import core
from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ca.keybackend import PrivateKey

SCRYPT_N = 2**14  # RFC 7914 costParameter
SCRYPT_R = 8  # blockSize
SCRYPT_P = 5  # parallelizationParameter: OWASP's N=2^14, r=8 equivalent of N=2^17 (p=5)
SALT_BYTES = 16
PBES2 = "1.2.840.113549.1.5.13"  # RFC 8018 §A.4
ID_SCRYPT = "1.3.6.1.4.1.11591.4.11"  # RFC 7914 §7
AES256_CBC = "2.16.840.1.101.3.4.1.42"  # RFC 3565 §4.1


class _ScryptParams(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    _fields = [("salt", core.OctetString), ("cost_parameter", core.Integer),
               ("block_size", core.Integer), ("parallelization_parameter", core.Integer),
               ("key_length", core.Integer, {"optional": True})]


class _AlgorithmIdentifier(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    _fields = [("algorithm", core.ObjectIdentifier), ("parameters", core.Any)]


class _PBES2Params(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    _fields = [("key_derivation_func", _AlgorithmIdentifier),
               ("encryption_scheme", _AlgorithmIdentifier)]


class _EncryptedPrivateKeyInfo(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    _fields = [("encryption_algorithm", _AlgorithmIdentifier),
               ("encrypted_data", core.OctetString)]


def encrypt(key: PrivateKey, passphrase: bytes, *, scrypt_p: int = SCRYPT_P) -> bytes:
    """The key as PEM "ENCRYPTED PRIVATE KEY": PBES2(scrypt, AES-256-CBC) over its PKCS#8."""
    plain = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    salt, iv = os.urandom(SALT_BYTES), os.urandom(16)
    secret = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=scrypt_p).derive(passphrase)
    padder = padding.PKCS7(128).padder()  # RFC 8018 §6.1.1 step 4: PKCS#5 padding
    encryptor = Cipher(algorithms.AES256(secret), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    kdf = _AlgorithmIdentifier({
        "algorithm": ID_SCRYPT,
        "parameters": _ScryptParams({"salt": salt, "cost_parameter": SCRYPT_N,
                                     "block_size": SCRYPT_R,
                                     "parallelization_parameter": scrypt_p, "key_length": 32}),
    })
    cipher = _AlgorithmIdentifier({"algorithm": AES256_CBC,
                                   "parameters": core.OctetString(iv)})
    info = _EncryptedPrivateKeyInfo({
        "encryption_algorithm": _AlgorithmIdentifier({
            "algorithm": PBES2,
            "parameters": _PBES2Params({"key_derivation_func": kdf,
                                        "encryption_scheme": cipher}),
        }),
        "encrypted_data": ciphertext,
    })
    body = "\n".join(textwrap.wrap(base64.b64encode(info.dump()).decode("ascii"), 64))
    return (f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{body}\n"
            "-----END ENCRYPTED PRIVATE KEY-----\n").encode("ascii")
