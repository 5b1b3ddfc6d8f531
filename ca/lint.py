"""Lint before you sign: every certificate is rehearsed with a stand-in key and linted first.

A certificate signed by a CA key cannot be taken back: once it exists it can be presented,
even if the registry row is rolled back. So each certificate the CA issues (leaves, the CA's
self-signed certificates, link certificates, OCSP responder certificates) is first signed
with a throwaway key of the same algorithm and size or curve as the real signing key (RSA of
the same modulus size, ECDSA on the same curve: ca/keyalgorithm.py), and that rehearsal (the
same TBSCertificate, byte for byte, only the signature differs) goes through pkilint's
RFC 5280 certificate validators. A FATAL or ERROR finding (a violated "MUST") refuses the
issuance with the finding named; the real key never signs and nothing is written.

Policy, mirrored from the test suite's `lint_pkix_cert lint -s ERROR` on issued certificates:
the same validator set (RFC 5280 issuer, validity, subject, extensions, SPKI, with no
profile-specific additions), the same threshold (ERROR and FATAL refuse; WARNING, NOTICE and
INFO are accepted), and no finding ignored. `IGNORED` is the place to name one, with the
reason, should a profile choice ever have to override the linter.

The validator is built once per process (about 0.2 s) and each stand-in key once per
algorithm; linting one certificate then costs about 1 ms, the stand-in signature about 1 ms.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.keyalgorithm import KeyAlgorithm, PrivateKey, PublicKey
from registry.errors import JPKIError

# Findings accepted despite their severity, by code, each with its reason. Empty: the tests
# lint issued certificates at ERROR with nothing ignored, and the gate mirrors them exactly.
IGNORED: dict[str, str] = {}


class LintRefused(JPKIError):
    """The linter found an RFC 5280 violation in a certificate about to be signed.

    Nothing was signed with the real key and nothing was written. The cause is the profile or
    its inputs (the settings' URLs, the municipality table), not the operator's request alone,
    hence EX_SOFTWARE rather than "invalid input".
    """

    exit_code = 70  # EX_SOFTWARE
    http_status = 500


@dataclass(frozen=True)
class Finding:
    severity: str
    code: str
    message: str | None
    path: str

    def __str__(self) -> str:
        detail = f": {self.message}" if self.message else ""
        return f"{self.severity} {self.code} at {self.path}{detail}"


_LOCK = threading.Lock()  # pkilint's validators are not documented as thread-safe


@functools.cache
def _validator() -> Any:
    """pkilint's RFC 5280 certificate validator, as `lint_pkix_cert` builds it; built once."""
    from pkilint.pkix import certificate, extension, name

    return certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(name.ATTRIBUTE_TYPE_MAPPINGS,
                                               extension.EXTENSION_MAPPINGS),
        [
            certificate.create_issuer_validator_container([]),
            certificate.create_validity_validator_container(),
            certificate.create_subject_validator_container([]),
            certificate.create_extensions_validator_container([]),
            certificate.create_spki_validator_container([]),
        ],
    )


@functools.cache
def stand_in_key(algorithm: KeyAlgorithm) -> PrivateKey:
    """A throwaway key per algorithm (RSA size, EC curve), kept for the process: it signs
    rehearsals only.

    Same algorithm and size or curve as the real key, so the rehearsal's signatureAlgorithm
    (sha256WithRSAEncryption, ecdsa-with-SHA384) and SPKI are those of the real certificate.
    """
    return algorithm.generate()


def findings(der: bytes) -> list[Finding]:
    """Every refusing finding (FATAL or ERROR, not in IGNORED) pkilint reports for `der`."""
    from pkilint import loader
    from pkilint.validation import ValidationFindingSeverity

    validator = _validator()
    with _LOCK:
        document = loader.RFC5280CertificateDocumentLoader().load_der_document(der, "rehearsal")
        results = validator.validate(document.root)
    return [
        Finding(str(description.finding.severity), description.finding.code,
                description.message, str(result.node.path))
        for result in results
        for description in result.finding_descriptions
        if description.finding.severity <= ValidationFindingSeverity.ERROR
        and description.finding.code not in IGNORED
    ]


def rehearse(builder: x509.CertificateBuilder, algorithm: KeyAlgorithm, what: str) -> None:
    """Sign `builder` with the stand-in key and lint it; raise LintRefused on any finding.

    Used alone where the real key does not exist yet: a key backend writes a key as it makes
    it, so a certificate for a key still to be made is rehearsed with a stand-in subject key
    first, and a refusal leaves no key file or token object behind.
    """
    _refuse_on_findings(builder.sign(stand_in_key(algorithm), algorithm.hash), what)


def _refuse_on_findings(rehearsal: x509.Certificate, what: str) -> None:
    found = findings(rehearsal.public_bytes(Encoding.DER))
    if found:
        raise LintRefused(f"refused to sign the {what}: RFC 5280 lint found "
                          + "; ".join(str(finding) for finding in found))


def sign(builder: x509.CertificateBuilder, key: PrivateKey, what: str) -> x509.Certificate:
    """The certificate signed by `key`, only once its rehearsal lints clean."""
    algorithm = KeyAlgorithm.of(key)
    rehearse(builder, algorithm, what)
    return builder.sign(key, algorithm.hash)


def rehearse_self_signed(builder_for: Callable[[PublicKey], x509.CertificateBuilder],
                         algorithm: KeyAlgorithm, what: str) -> None:
    """Rehearse a self-signed certificate as the stand-in key's own self-signed certificate.

    A self-signed certificate signed by another key would not be self-signed, and RFC 5280
    §4.2.1.1 lets only self-signed certificates omit authorityKeyIdentifier (pkilint checks
    the signature to tell); so the subject key is stood in for too. Only the key-derived
    fields (SPKI, subjectKeyIdentifier, signature) differ from the real certificate.
    """
    stand_in = stand_in_key(algorithm)
    rehearsal = builder_for(stand_in.public_key()).sign(stand_in, algorithm.hash)
    _refuse_on_findings(rehearsal, what)


def sign_self_signed(builder_for: Callable[[PublicKey], x509.CertificateBuilder],
                     key: PrivateKey, what: str) -> x509.Certificate:
    """The self-signed certificate of `key`, only once its rehearsal lints clean."""
    algorithm = KeyAlgorithm.of(key)
    rehearse_self_signed(builder_for, algorithm, what)
    return builder_for(key.public_key()).sign(key, algorithm.hash)
