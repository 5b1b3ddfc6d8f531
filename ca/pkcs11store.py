"""The PKCS#11 key backend (python-pkcs11): keys are generated on the token and never leave it.

RSA keys (today's generations) and EC P-384 keys (`jpki ca rotate --algorithm ecdsa-p384`,
ca/keyalgorithm.py) alike; the audit key is RSA.

A key's registry reference is `pkcs11:<role>/<name>`, the CKA_LABEL of its key pair on the
configured token. Private keys are created CKA_SENSITIVE and not CKA_EXTRACTABLE, with the
sign capability only. The user PIN comes from the environment (`keys.pkcs11_pin_env`), never
from a file of ours, and is never logged. Tested against SoftHSM2.

Both key types also sign a digest (pyca's Prehashed), as file keys do: a national-scale CRL is
hashed while it is streamed to disk (crl/assembly.py) and only its digest comes here.
"""

from __future__ import annotations

import os
import threading
from typing import Any, NoReturn

import pkcs11
from asn1crypto import algos, core
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    NoDigestInfo,
    Prehashed,
    encode_dss_signature,
)
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import MultipleObjectsReturned, NoSuchKey, PKCS11Error
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from ca.keybackend import BackendSpec, KeyAlgorithm, PrivateKey
from registry.errors import ConfigError, JPKIError

PREFIX = "pkcs11:"
ARCHIVED = "archived/"
MECHANISMS = {"sha256": Mechanism.SHA256_RSA_PKCS, "sha384": Mechanism.SHA384_RSA_PKCS,
              "sha512": Mechanism.SHA512_RSA_PKCS}
SHA2 = frozenset(MECHANISMS)  # the hashes both key types sign with (names as pyca and asn1crypto)
# PKCS#11 logs in per application, not per session: both key stores of a process (CA keys,
# responder keys) share one logged-in session per token, and its lock.
_libraries: dict[str, Any] = {}
_sessions: dict[tuple[str, str], Any] = {}
_lock = threading.RLock()


def _session(spec: BackendSpec) -> Any:
    with _lock:
        key = (spec.pkcs11_module, spec.pkcs11_token)
        if key in _sessions:
            return _sessions[key]
        pin = os.environ.get(spec.pkcs11_pin_env)
        if not pin:
            raise ConfigError(f"no PKCS#11 user PIN: set {spec.pkcs11_pin_env}")
        if spec.pkcs11_module not in _libraries:  # C_Initialize once per process
            if not os.path.exists(spec.pkcs11_module):
                raise ConfigError(f"keys.pkcs11_module: {spec.pkcs11_module} does not exist")
            _libraries[spec.pkcs11_module] = pkcs11.lib(spec.pkcs11_module)
        try:
            token = _libraries[spec.pkcs11_module].get_token(token_label=spec.pkcs11_token)
            _sessions[key] = token.open(rw=True, user_pin=pin)
        except NoSuchKey:
            raise ConfigError(f"keys.pkcs11_token: no token labelled"
                              f" {spec.pkcs11_token!r}") from None
        except PKCS11Error as exc:
            raise ConfigError(f"cannot log in to PKCS#11 token {spec.pkcs11_token!r}:"
                              f" {type(exc).__name__}") from None
        return _sessions[key]


def _hash_of(algorithm: Prehashed | hashes.HashAlgorithm) -> hashes.HashAlgorithm:
    """The hash a signature is made with, whether the data or its digest is given."""
    if isinstance(algorithm, Prehashed):
        return algorithm._algorithm  # pyca exposes no public accessor for it
    return algorithm


def _checked_digest(algorithm: Prehashed, digest: bytes | bytearray | memoryview) -> bytes:
    """A digest of the announced hash's length, as pyca checks for its own keys."""
    value = bytes(digest)
    if len(value) != algorithm.digest_size:
        raise ValueError(f"a {_hash_of(algorithm).name} digest is {algorithm.digest_size}"
                         f" octets, not {len(value)}")
    return value


def _digest_info(algorithm: Prehashed, digest: bytes) -> bytes:
    """DigestInfo (RFC 8017 §9.2 step 2): the SHA-2 algorithm with NULL parameters, as §9.2
    note 1 lists its encodings, and the digest."""
    return bytes(algos.DigestInfo({
        "digest_algorithm": {"algorithm": _hash_of(algorithm).name,
                             "parameters": core.Null()},
        "digest": _checked_digest(algorithm, digest),
    }).dump())


class TokenRSAKey(rsa.RSAPrivateKey):
    """An RSA private key that lives on the token: it signs, and refuses to be exported."""

    def __init__(self, store: PKCS11KeyStore, label: str, private: Any,
                 public: rsa.RSAPublicKey) -> None:
        self._store = store
        self._label = label
        self._private = private
        self._public = public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def sign(self, data: bytes, padding_: padding.AsymmetricPadding,
             algorithm: Prehashed | hashes.HashAlgorithm | NoDigestInfo) -> bytes:
        """PKCS #1 v1.5 with SHA-2: over the data (the token hashes, CKM_SHA256_RSA_PKCS...)
        or over a digest (Prehashed: a streamed CRL hashed as it was written, crl/assembly.py).

        A digest is wrapped in its DigestInfo (RFC 8017 §9.2 step 2, encoded by asn1crypto)
        and signed with raw CKM_RSA_PKCS (PKCS#11 v2.40 §2.1.6), which pads it as §9.2 steps
        3-5 do: the same signature as the token's hash-and-sign mechanism over the data.
        """
        if not isinstance(padding_, padding.PKCS1v15) or isinstance(algorithm, NoDigestInfo) \
                or _hash_of(algorithm).name not in SHA2:
            raise UnsupportedAlgorithm("the PKCS#11 backend signs PKCS#1 v1.5 with SHA-2 only")
        if isinstance(algorithm, Prehashed):
            message = _digest_info(algorithm, data)
            mechanism = Mechanism.RSA_PKCS
        else:
            message, mechanism = data, MECHANISMS[algorithm.name]
        with self._store.lock:
            try:
                return bytes(self._private.sign(message, mechanism=mechanism))
            except PKCS11Error as exc:
                raise JPKIError(f"token refused to sign with {self._label}:"
                                f" {type(exc).__name__}") from None

    def _refuse(self, *args: object) -> NoReturn:
        raise JPKIError(f"{self._label} is a PKCS#11 key: it never leaves the token")

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        self._refuse()

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        self._refuse()

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        self._refuse()

    def __copy__(self) -> TokenRSAKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> TokenRSAKey:
        return self


class TokenECKey(ec.EllipticCurvePrivateKey):
    """An EC private key (P-384) that lives on the token: it signs, and refuses to be exported.

    The token signs with CKM_ECDSA over a digest computed here (PKCS#11 v2.40 §2.3.6: the
    mechanism takes the hash, so any SHA-2 works on every token) and returns r || s, which is
    re-encoded as the DER ECDSA-Sig-Value X.509 and OCSP carry (RFC 5480 §2.2, RFC 3279
    §2.2.3).
    """

    def __init__(self, store: PKCS11KeyStore, label: str, private: Any,
                 public: ec.EllipticCurvePublicKey) -> None:
        self._store = store
        self._label = label
        self._private = private
        self._public = public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, data: bytes | bytearray | memoryview,
             signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        """ECDSA with SHA-2 over the data, or over its digest (Prehashed: a streamed CRL);
        CKM_ECDSA takes the digest either way."""
        algorithm = getattr(signature_algorithm, "algorithm", None)
        if not isinstance(signature_algorithm, ec.ECDSA) \
                or not isinstance(algorithm, (hashes.HashAlgorithm, Prehashed)) \
                or _hash_of(algorithm).name not in SHA2:
            raise UnsupportedAlgorithm("the PKCS#11 backend signs ECDSA with SHA-2 only")
        if isinstance(algorithm, Prehashed):
            digest = _checked_digest(algorithm, data)
        else:
            hashing = hashes.Hash(algorithm)
            hashing.update(bytes(data))
            digest = hashing.finalize()
        with self._store.lock:
            try:
                raw = bytes(self._private.sign(digest, mechanism=Mechanism.ECDSA))
            except PKCS11Error as exc:
                raise JPKIError(f"token refused to sign with {self._label}:"
                                f" {type(exc).__name__}") from None
        half = len(raw) // 2
        return encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                    int.from_bytes(raw[half:], "big"))

    def _refuse(self, *args: object) -> NoReturn:
        raise JPKIError(f"{self._label} is a PKCS#11 key: it never leaves the token")

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        self._refuse()

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        self._refuse()

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        self._refuse()

    def __copy__(self) -> TokenECKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> TokenECKey:
        return self


class PKCS11KeyStore:
    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.lock = _lock  # one session per token and process: one lock

    def _open(self) -> Any:
        return _session(self.spec)

    def ensure_passphrase(self) -> str | None:
        self._open()  # fail early, at `jpki init`, when the token or PIN is wrong
        return None

    def _label(self, ref: str) -> str:
        if not ref.startswith(PREFIX):
            raise ConfigError(f"key {ref!r} is not on a PKCS#11 token (keys.backend?)")
        return ref.removeprefix(PREFIX)

    def _find(self, session: Any, object_class: ObjectClass, label: str) -> Any:
        """The RSA or EC key object of this class and label, or None."""
        found = []
        for key_type in (KeyType.RSA, KeyType.EC):
            try:
                found.append(session.get_key(object_class=object_class, key_type=key_type,
                                             label=label))
            except NoSuchKey:
                continue
            except MultipleObjectsReturned:
                found += [None, None]
        if len(found) > 1:
            raise JPKIError(f"several PKCS#11 objects are labelled {label!r}")
        return found[0] if found else None

    def generate(self, name: str, algorithm: KeyAlgorithm) -> tuple[str, PrivateKey]:
        label = f"{self.spec.role}/{name}"
        private_template = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                            Attribute.PRIVATE: True}
        capabilities = MechanismFlag.SIGN | MechanismFlag.VERIFY
        with self.lock:
            session = self._open()
            if self._find(session, ObjectClass.PRIVATE_KEY, label) is not None:
                raise FileExistsError(0, "key exists", f"{PREFIX}{label}")
            if algorithm.family == "ec":
                # PKCS#11 v2.40 §2.3.3: CKA_EC_PARAMS is the curve's namedCurve OID (RFC 5480)
                parameters = session.create_domain_parameters(
                    KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(
                        algorithm.curve)}, local=True)
                public, private = parameters.generate_keypair(
                    label=label, store=True, capabilities=capabilities,
                    private_template=private_template)
                return PREFIX + label, TokenECKey(self, label, private, _ec_public(public))
            public, private = session.generate_keypair(
                KeyType.RSA, algorithm.bits, label=label, store=True,
                capabilities=capabilities,
                public_template={Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01"},
                private_template=private_template,
            )
            return PREFIX + label, TokenRSAKey(self, label, private, _public(public))

    def load(self, ref: str) -> PrivateKey:
        label = self._label(ref)
        with self.lock:
            session = self._open()
            private = self._find(session, ObjectClass.PRIVATE_KEY, label)
            public = self._find(session, ObjectClass.PUBLIC_KEY, label)
            if private is None or public is None:
                archived = self._find(session, ObjectClass.PRIVATE_KEY, ARCHIVED + label)
                if archived is not None:
                    raise JPKIError(f"key {ref} is archived (its CA generation is retired)")
                raise JPKIError(f"key {ref} is not on token {self.spec.pkcs11_token!r}")
            if public.key_type == KeyType.EC:
                return TokenECKey(self, label, private, _ec_public(public))
            return TokenRSAKey(self, label, private, _public(public))

    def archive(self, ref: str) -> str:
        """Relabel the pair `archived/...`: kept on the token, out of reach of `load()`."""
        label = self._label(ref)
        with self.lock:
            session = self._open()
            for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                item = self._find(session, object_class, label)
                if item is not None:
                    item[Attribute.LABEL] = ARCHIVED + label
        return PREFIX + ARCHIVED + label


def _ec_public(public: Any) -> ec.EllipticCurvePublicKey:
    """The token's public EC key as pyca's, through its SubjectPublicKeyInfo."""
    key = serialization.load_der_public_key(encode_ec_public_key(public))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def _public(public: Any) -> rsa.RSAPublicKey:
    modulus = int.from_bytes(public[Attribute.MODULUS], "big")
    exponent = int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big")
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()
