"""Consent signed by the resident: a CMS SignedData (RFC 5652) over a consent statement.

DOMAIN.md: consent to the linkage services is "given electronically, signed with the
resident's signature certificate, per verifier and per item". A verifier posts the resident's
CMS to POST /linkage/v1/consents; this module verifies it and records the consent with the CMS
as evidence, or refuses with nothing recorded. Parsing is asn1crypto's, every signature check
is pyca/cryptography's: no cryptography of our own. The statement format is in the README
("Consent signed by the resident").

Checks, in order: the DER is a SignedData with one SignerInfo and the statement as
encapsulated content (RFC 5652 §5.1, §5.2); the statement parses; the signer certificate is in
the CMS and is the one the statement names, a signature certificate of this authority
(registry record, same DER) issued by our signature CA (its signature verifies with the CA
generation's key); the CMS signature verifies (§5.4: messageDigest attribute, then the
signature over the DER SET OF signed attributes); the certificate was within its validity at
the statement's time and is not revoked; the statement is not older than the configured
maximum age nor in the future; the verifier named is the caller; the statement was never
submitted before (replay).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from ca import authority
from ca.kinds import CertKind
from registry import audit, certificates, consents, signed_consents, verifiers
from registry.clock import Clock, epoch, iso
from registry.errors import Conflict, InvalidInput, JPKIError, NotFound
from registry.store import Store
from registry.verifiers import Verifier

STATEMENT_TYPE = "jpki-consent/v1"
ACTIONS = ("grant", "withdraw")
NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
FIELDS = {"type", "action", "signature_serial", "verifier", "service", "items", "signed_at",
          "nonce"}
MAX_CMS_BYTES = 64 * 1024
CLOCK_SKEW = timedelta(minutes=5)
DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


class ConsentRefused(JPKIError):
    """A signed consent that does not hold: 400 unless a subclass says otherwise."""

    http_status = 400
    exit_code = 2


class NotTheCaller(ConsentRefused):
    """403: the statement names another verifier than the one whose token posted it."""

    http_status = 403


@dataclass(frozen=True)
class Statement:
    action: str
    signature_serial: str
    verifier: str
    service: str
    items: tuple[str, ...]
    signed_at: datetime
    nonce: str

    @classmethod
    def parse(cls, content: bytes) -> Statement:
        try:
            raw = json.loads(content.decode("utf-8"))
        except (ValueError, UnicodeError, RecursionError):
            raise InvalidInput("the signed content is not a UTF-8 JSON object",
                               field="statement") from None
        if not isinstance(raw, dict):
            raise InvalidInput("the signed content is not a JSON object", field="statement")
        unknown = sorted(set(raw) - FIELDS)
        if unknown:
            raise InvalidInput("unknown field in the statement", field="statement")
        if raw.get("type") != STATEMENT_TYPE:
            raise InvalidInput(f"must be {STATEMENT_TYPE}", field="type")
        if raw.get("action") not in ACTIONS:
            raise InvalidInput("must be grant or withdraw", field="action")
        for key in ("signature_serial", "verifier", "service", "signed_at", "nonce"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise InvalidInput("is required (a string)", field=key)
        serial = certificates.normalise_serial(raw["signature_serial"])
        service = consents.check_service(raw["service"])
        items_raw = raw.get("items", [])
        if not isinstance(items_raw, list) or not all(isinstance(i, str) for i in items_raw):
            raise InvalidInput("must be a list of strings", field="items")
        items: tuple[str, ...] = ()
        if raw["action"] == "grant":
            items = consents.parse_items(",".join(items_raw) or None, service)
        elif items_raw:
            raise InvalidInput("a withdrawal names no items", field="items")
        try:
            signed_at = datetime.fromisoformat(raw["signed_at"])
        except ValueError:
            raise InvalidInput("must be ISO 8601 with a UTC offset", field="signed_at") from None
        if signed_at.tzinfo is None:
            raise InvalidInput("must carry a UTC offset", field="signed_at")
        if not NONCE.fullmatch(raw["nonce"]):
            raise InvalidInput("must be 16-64 of A-Z a-z 0-9 - _", field="nonce")
        return cls(raw["action"], serial, raw["verifier"], service, items, signed_at,
                   raw["nonce"])


@dataclass(frozen=True)
class SignedConsent:
    """A verified statement, the certificate record that signed it and its evidence."""

    statement: Statement
    signer: certificates.CertificateRecord
    statement_sha256: str
    cms_der: bytes


def _signed_data(der: bytes) -> cms.SignedData:
    if not der or len(der) > MAX_CMS_BYTES:
        raise InvalidInput(f"must be a DER CMS of at most {MAX_CMS_BYTES} bytes", field="cms")
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise InvalidInput("is not a CMS SignedData (RFC 5652 §5)", field="cms")
        signed = info["content"]
        signed.native  # noqa: B018 - parse every field now: a lazy error later would be a 500
    except JPKIError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError):
        raise InvalidInput("is not a DER CMS SignedData (RFC 5652)", field="cms") from None
    if not isinstance(signed, cms.SignedData):
        raise InvalidInput("is not a CMS SignedData (RFC 5652 §5)", field="cms")
    return signed


def _signer_certificate(signed: cms.SignedData, signer: cms.SignerInfo) -> x509.Certificate:
    """The certificate the SignerIdentifier names (RFC 5652 §5.3), from the CMS's set."""
    sid = signer["sid"]
    for choice in signed["certificates"] or []:
        if choice.name != "certificate":
            continue
        der = choice.chosen.dump()
        candidate = x509.load_der_x509_certificate(der)
        if sid.name == "issuer_and_serial_number":
            if (sid.chosen["serial_number"].native == candidate.serial_number
                    and sid.chosen["issuer"].dump() == choice.chosen.issuer.dump()):
                return candidate
        elif sid.name == "subject_key_identifier":
            try:
                ski = candidate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except x509.ExtensionNotFound:
                continue
            if ski.value.digest == sid.chosen.native:
                return candidate
    raise InvalidInput("the CMS does not carry the signer's certificate (openssl cms -sign"
                       " includes it unless -nocerts)", field="cms")


def _verify_signature(signer: cms.SignerInfo, content: bytes,
                      certificate: x509.Certificate) -> None:
    """RFC 5652 §5.4: with signed attributes, the messageDigest must be the content's digest and
    the signature covers the DER of the attributes as a SET OF (tag 0x31, not [0])."""
    digest_name = signer["digest_algorithm"]["algorithm"].native
    if digest_name not in DIGESTS:
        raise ConsentRefused(f"digest {digest_name} is not accepted (SHA-256/384/512)",
                             field="cms")
    algorithm = DIGESTS[digest_name]()
    attrs = signer["signed_attrs"]
    if attrs:
        digests = [attr["values"][0].native for attr in attrs
                   if attr["type"].native == "message_digest"]
        content_type = [attr["values"][0].native for attr in attrs
                        if attr["type"].native == "content_type"]
        hasher = hashes.Hash(DIGESTS[digest_name]())
        hasher.update(content)
        if digests != [hasher.finalize()] or content_type != ["data"]:
            raise ConsentRefused("the signature does not verify (messageDigest or"
                                 " contentType attribute)", field="cms")
        signed_bytes = b"\x31" + attrs.dump()[1:]
    else:
        signed_bytes = content
    public_key = certificate.public_key()
    scheme = signer["signature_algorithm"].signature_algo
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey) and scheme == "ecdsa":
            # A next-generation card's P-384 key (ca/cardprofile.py): RFC 5753 §2.1.1
            public_key.verify(signer["signature"].native, signed_bytes, ec.ECDSA(algorithm))
            return
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise ConsentRefused(f"signature algorithm {scheme} does not match the signer's"
                                 " key (RSA or ECDSA)", field="cms")
        pad: padding.AsymmetricPadding
        if scheme == "rsassa_pkcs1v15":
            pad = padding.PKCS1v15()
        elif scheme == "rsassa_pss":
            pad = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO)
        else:
            raise ConsentRefused(f"signature algorithm {scheme} is not accepted", field="cms")
        public_key.verify(signer["signature"].native, signed_bytes, pad, algorithm)
    except InvalidSignature:
        raise ConsentRefused("the CMS signature does not verify with the signer's"
                             " certificate", field="cms") from None


class SignedConsentDesk:
    """Verifies a resident's signed statement and records it, all or nothing."""

    def __init__(self, store: Store, clock: Clock, max_age: timedelta) -> None:
        self.store = store
        self.clock = clock
        self.max_age = max_age

    def on(self, store: Store) -> SignedConsentDesk:
        """The same desk recording through `store` (a registry thread's own, linkage/web.py)."""
        return SignedConsentDesk(store, self.clock, self.max_age)

    def verify(self, der: bytes, caller: Verifier) -> SignedConsent:
        signed = _signed_data(der)
        encap = signed["encap_content_info"]
        if encap["content_type"].native != "data" or encap["content"].native is None:
            raise InvalidInput("the statement must be the encapsulated content (openssl cms"
                               " -sign -nodetach)", field="cms")
        content = encap["content"].native
        if len(signed["signer_infos"]) != 1:
            raise InvalidInput("must carry exactly one SignerInfo", field="cms")
        signer = signed["signer_infos"][0]
        statement = Statement.parse(content)
        certificate = _signer_certificate(signed, signer)
        serial = certificates.serial_hex(certificate.serial_number)
        if serial != statement.signature_serial:
            raise ConsentRefused("the statement names another signature certificate than the"
                                 " one that signed it", field="signature_serial")
        record = certificates.get(self.store, serial)
        if record is None or record.kind is not CertKind.SIGNATURE \
                or record.der != certificate.public_bytes(Encoding.DER):
            raise ConsentRefused("the signer is not a signature certificate of this authority",
                                 field="cms")
        try:
            certificate.verify_directly_issued_by(
                authority.by_id(self.store, record.ca_id).certificate)
        except (ValueError, TypeError, InvalidSignature):
            raise ConsentRefused("the signer certificate does not chain to the signature CA",
                                 field="cms") from None
        _verify_signature(signer, content, certificate)
        signed_at = statement.signed_at
        if not record.not_before <= epoch(signed_at) <= record.not_after:
            raise ConsentRefused(f"certificate {serial} was not valid at the signing time"
                                 f" {signed_at.isoformat()}", field="signed_at")
        if record.status == "revoked":
            raise ConsentRefused(f"certificate {serial} is revoked"
                                 f" ({record.reason.name if record.reason else 'unspecified'},"
                                 f" {iso(record.revoked_at)})", field="cms")
        now = self.clock()
        if signed_at > now + CLOCK_SKEW:
            raise ConsentRefused("the statement is dated in the future", field="signed_at")
        if now - signed_at > self.max_age:
            minutes = int(self.max_age.total_seconds() // 60)
            raise ConsentRefused(f"the statement is older than {minutes} minutes: ask the"
                                 " resident to sign a new one", field="signed_at")
        if statement.verifier != caller.name:
            raise NotTheCaller("the statement names another verifier than the caller",
                               field="verifier")
        return SignedConsent(statement, record, hashlib.sha256(content).hexdigest(), der)

    def submit(self, der: bytes, caller: Verifier) -> dict[str, Any]:
        """Verify, then record consent and evidence in one transaction (nothing on refusal)."""
        signed = self.verify(der, caller)
        statement = signed.statement
        actor = f"resident:{signed.signer.serial}"
        with self.store.transaction():
            if signed_consents.seen(self.store, signed.statement_sha256):
                raise Conflict("this signed statement was already submitted (replay)",
                               field="nonce")
            verifier = verifiers.require(self.store, caller.name)
            consent_id: int | None = None
            if statement.action == "grant":
                grant = consents.grant(self.store, self.clock, signed.signer.resident_id,
                                       verifier, statement.service, statement.items,
                                       actor=actor, via="signed statement")
                expires_at: int | None = grant.expires_at
                consent_id = grant.id
            else:
                try:
                    consents.withdraw(self.store, self.clock, signed.signer.resident_id,
                                      verifier, statement.service, actor=actor,
                                      via="signed statement")
                except NotFound:
                    raise ConsentRefused(f"there is no current {statement.service} consent"
                                         " to withdraw", field="service") from None
                expires_at = None
            evidence_id = signed_consents.record(
                self.store, resident_id=signed.signer.resident_id, verifier_id=verifier.id,
                consent_id=consent_id, action=statement.action, service=statement.service,
                statement_sha256=signed.statement_sha256, signer_serial=signed.signer.serial,
                signed_at=epoch(statement.signed_at), received_at=epoch(self.clock()),
                cms=signed.cms_der)
            audit.append(self.store, self.clock, actor=actor, action="consent.evidence",
                         serial=signed.signer.serial,
                         detail={"evidence_id": evidence_id, "verifier": verifier.name,
                                 "action": statement.action, "service": statement.service,
                                 "statement_sha256": signed.statement_sha256})
        return {"action": statement.action, "verifier": caller.name,
                "service": statement.service, "items": list(statement.items),
                "signature_serial": signed.signer.serial, "evidence_id": evidence_id,
                "statement_sha256": signed.statement_sha256, "expires_at": iso(expires_at)}

