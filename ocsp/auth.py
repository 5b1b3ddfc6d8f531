"""Who is asking: a bearer token, or the registered certificate that signed the request.

DOMAIN.md: only registered verifiers receive revocation information; anonymous queries are a
setting (ocsp.allow_anonymous), off by default.

A signed request names its own key, so verifying it first would let anyone choose the cost of
our work (issue 14: a 16,384-bit RSA key with a 64-bit exponent, 5.7 ms per request on the
event loop, cut a verifier from 977 to 33 answers/s). In order, and cheapest first:

1. the certificate's SHA-256 must be a registered signer's: anyone else is refused before
   their key is even loaded;
2. the registered certificate must be within its validity period and its key within
   `SignerKeyPolicy` (loaded once per certificate, then remembered until the next reload);
3. only then is the signature verified, on a small pool of its own, never on the event loop.

With a bearer token the token identifies the verifier and a request signature is not checked.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ocsp import metrics
from ocsp.errors import TryLater, Unauthorized
from ocsp.request import HASHES, RequestSignature
from registry import tokens, verifiers
from registry.clock import Clock, epoch
from registry.errors import InvalidInput
from registry.store import Store
from registry.verifiers import Credentials, Verifier

log = logging.getLogger("jpki.ocsp")

SignerPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class SignerKeyPolicy:
    """The request-signing keys worth verifying; anything else is refused unverified.

    RSA: 2,048 to 4,096 bits (NIST SP 800-57 pt. 1 §5.6.1: 2,048 is the floor; above 4,096 the
    verification cost grows with the square of the size while no verifier needs it) and an
    odd public exponent from 3 to 65,537 (2^16+1, what every toolkit generates; a
    verification costs one squaring per exponent bit, so 17 at most, where OpenSSL would
    accept 64-bit exponents on large moduli). ECDSA: the NIST curves P-256, P-384, P-521.
    A registered certificate outside the policy identifies nobody until it is replaced.
    """

    min_rsa_bits: int = 2048
    max_rsa_bits: int = 4096
    max_rsa_exponent: int = 65537
    curves: frozenset[str] = frozenset({"secp256r1", "secp384r1", "secp521r1"})

    def refusal(self, key: object) -> str | None:
        """Why `key` is refused, or None when it may be used to verify."""
        if isinstance(key, rsa.RSAPublicKey):
            bits, exponent = key.key_size, key.public_numbers().e
            if not self.min_rsa_bits <= bits <= self.max_rsa_bits:
                return (f"RSA key of {bits} bits (policy: {self.min_rsa_bits}"
                        f"-{self.max_rsa_bits})")
            if exponent % 2 == 0 or not 3 <= exponent <= self.max_rsa_exponent:
                return f"RSA exponent {exponent} (policy: odd, 3-{self.max_rsa_exponent})"
            return None
        if isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in self.curves:
                return f"curve {key.curve.name} (policy: {', '.join(sorted(self.curves))})"
            return None
        return f"{type(key).__name__} keys are not accepted for request signatures"



def register_signer(store: Store, clock: Clock, name: str, certificate: x509.Certificate, *,
                    actor: str, policy: SignerKeyPolicy | None = None) -> str:
    """Register a verifier's request-signing certificate, refusing at registration a key the
    responder would refuse (unverified) on every request: an operator learns of it now, not
    from a warning in the responder's log."""
    try:
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidInput("its public key cannot be read", field="signer_cert") from None
    refusal = (policy or SignerKeyPolicy()).refusal(key)
    if refusal is not None:
        raise InvalidInput(f"request-signing key refused: {refusal}", field="signer_cert")
    return verifiers.add_signer(store, clock, name, certificate, actor=actor)


@dataclass(frozen=True)
class SignerKey:
    """A registered signer's certificate, read once: its key (if usable) and validity."""

    public_key: SignerPublicKey | None
    refusal: str | None
    not_before: int
    not_after: int

    @classmethod
    def load(cls, der: bytes, policy: SignerKeyPolicy) -> SignerKey:
        certificate = x509.load_der_x509_certificate(der)
        window = (epoch(certificate.not_valid_before_utc),
                  epoch(certificate.not_valid_after_utc))
        try:
            key = certificate.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:  # a key type pyca cannot load
            return cls(None, f"unreadable public key: {exc}", *window)
        refusal = policy.refusal(key)
        if refusal is None and isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            return cls(key, None, *window)
        return cls(None, refusal or "unsupported key type", *window)


def verify_request_signature(key: SignerPublicKey, signature: RequestSignature) -> None:
    """On the verification pool: Unauthorized unless `signature` verifies under `key`."""
    digest = HASHES[signature.hash_algorithm]()
    try:
        if isinstance(key, rsa.RSAPublicKey) and signature.algorithm == "rsassa_pkcs1v15":
            key.verify(signature.value, signature.signed_data, padding.PKCS1v15(), digest)
        elif (isinstance(key, ec.EllipticCurvePublicKey)
              and signature.algorithm == "ecdsa"):
            key.verify(signature.value, signature.signed_data, ec.ECDSA(digest))
        else:
            raise Unauthorized("request signature algorithm does not match the signer's key")
    except InvalidSignature:
        raise Unauthorized("request signature does not verify") from None


class VerifierDirectory:
    # Verifications in flight or queued before further signed requests get tryLater
    # (RFC 6960 §2.3); each costs at most a 4,096-bit RSA verification (about 0.1 ms).
    MAX_PENDING_VERIFICATIONS = 64

    def __init__(self, store: Store, allow_anonymous: bool,
                 key_policy: SignerKeyPolicy | None = None, verify_workers: int = 1) -> None:
        self.store = store
        self.allow_anonymous = allow_anonymous
        self.key_policy = key_policy or SignerKeyPolicy()
        self.credentials = Credentials({}, {})
        # fingerprint -> key, registered signers only; a fingerprint names one certificate,
        # so an entry stays true across reloads and only leaves with its registration
        self._keys: dict[str, SignerKey] = {}
        self._pool = ThreadPoolExecutor(verify_workers, thread_name_prefix="ocsp-verify")
        self._pending = 0  # touched on the event loop only
        self.reload()

    def reload(self) -> None:
        self.credentials = verifiers.snapshot(self.store)
        self._seen: dict[str, Verifier] = {}  # header -> verifier, so a hit hashes nothing
        registered = self.credentials.by_signer
        self._keys = {digest: key for digest, key in self._keys.items() if digest in registered}

    def identify(self, authorization: str | None) -> Verifier | None:
        """The bearer token's verifier, or None if anonymous queries are allowed; else
        Unauthorized."""
        if authorization:
            seen = self._seen.get(authorization)
            if seen is not None:
                return seen
            token = tokens.bearer(authorization)  # the one bearer parser
            if token is not None:
                found = self.credentials.by_token_hash.get(verifiers.token_hash(token))
                if found is not None:
                    if len(self._seen) < 10000:
                        self._seen[authorization] = found
                    return found
            raise Unauthorized("unknown bearer token")
        if self.allow_anonymous:
            return None
        raise Unauthorized("anonymous request")

    async def identify_signed(self, signature: RequestSignature, now: int) -> Verifier:
        """The verifier whose registered certificate signed the request; else Unauthorized
        (or TryLater when the verification pool is full). See the module docstring."""
        digest = verifiers.certificate_fingerprint(signature.certificate)
        verifier = self.credentials.by_signer.get(digest)
        if verifier is None:
            metrics.SIGNED_REQUESTS.inc("unregistered")
            raise Unauthorized("request signer is not registered to any verifier")
        key = self._signer_key(digest, signature.certificate, verifier)
        if not key.not_before <= now <= key.not_after:
            metrics.SIGNED_REQUESTS.inc("expired")
            raise Unauthorized("request signer certificate is outside its validity period")
        if key.public_key is None:
            metrics.SIGNED_REQUESTS.inc("key_refused")
            raise Unauthorized(f"request signer key refused: {key.refusal}")
        if self._pending >= self.MAX_PENDING_VERIFICATIONS:
            metrics.SIGNED_REQUESTS.inc("try_later")
            raise TryLater(f"{self._pending} request signatures awaiting verification")
        self._pending += 1
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._pool, verify_request_signature, key.public_key, signature)
        except Unauthorized:
            metrics.SIGNED_REQUESTS.inc("bad_signature")
            raise
        finally:
            self._pending -= 1
        metrics.SIGNED_REQUESTS.inc("verified")
        return verifier

    def _signer_key(self, digest: str, der: bytes, verifier: Verifier) -> SignerKey:
        """A registered certificate's key, read once (the request's DER has the registered
        DER's SHA-256, so it is that certificate)."""
        key = self._keys.get(digest)
        if key is None:
            key = SignerKey.load(der, self.key_policy)
            if key.refusal is not None:  # the operator registered it: tell them once
                log.warning("verifier %s: request-signing certificate %s refused: %s",
                            verifier.name, digest[:16], key.refusal)
            self._keys[digest] = key
        return key

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
