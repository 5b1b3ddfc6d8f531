"""CRL profile pieces and entry encoding with pyca/cryptography.

The whole entry list is passed to `CertificateRevocationListBuilder(revoked_certificates=...)`:
`add_revoked_certificate()` copies the builder on every call, which makes large CRLs quadratic
(PEERS.md). Measured here: pyca about 7 µs per entry with a reason code, asn1crypto about
170 µs per entry, so pyca encodes the entries (once each: see crl.entries) and asn1crypto only
assembles the outer structure (crl.assembly), which signs every published CRL. `build` here
signs a whole CRL with pyca; only the tests use it, as an independent reference.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from asn1crypto import parser as asn1_parser
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import CRLEntryExtensionOID, NameOID

from ca.authority import CAGeneration
from ca.keyalgorithm import signature_hash
from ca.keybackend import PrivateKey
from ca.kinds import CertKind
from ca.profile import distribution_point_names
from crl import assembly
from crl.entries import RevokedEntry
from registry.municipalities import Municipality
from registry.reasons import Reason, pyca_reason_flag

# RFC 5280 §5.3.1: the reasonCode entry extension is omitted when the reason is unspecified
# ("CRL issuers ... SHOULD be absent instead of using the unspecified (0) reasonCode value").
_REASON_EXTENSIONS: dict[int | None, list[x509.Extension[x509.ExtensionType]]] = {
    None: [], int(Reason.unspecified): [],
}
for _reason in Reason:
    _flag = pyca_reason_flag(_reason)  # the one reason table (registry/reasons.py)
    if _flag is not None:
        _REASON_EXTENSIONS[int(_reason)] = [
            x509.Extension(CRLEntryExtensionOID.CRL_REASON, False, x509.CRLReason(_flag))
        ]


def revoked_certificates(entries: Iterable[RevokedEntry]) -> list[x509.RevokedCertificate]:
    """One RevokedCertificate per entry; the hot loop of a national-scale CRL."""
    builder = x509.RevokedCertificateBuilder
    from_ts = datetime.fromtimestamp
    reasons = _REASON_EXTENSIONS
    return [
        builder(int(serial, 16), from_ts(revoked_at, UTC), reasons[reason]).build()
        for serial, _not_after, revoked_at, reason in entries
    ]


ENTRY_WINDOW = 256


class EntryEncoder:
    """Encodes CRL entries (RFC 5280 §5.1.2.6) with pyca, for the `crl_entries` cache.

    pyca encodes entries only inside a whole CRL, so the entries go into a scratch CRL signed
    by a throwaway P-256 key (never published, never written), whose revokedCertificates are
    then split into single entries with asn1crypto's parser.
    """

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scratch")])

    def encode(self, entries: list[RevokedEntry]) -> list[bytes]:
        if not entries:
            return []
        moment = datetime(2000, 1, 1, tzinfo=UTC)
        scratch = x509.CertificateRevocationListBuilder(
            issuer_name=self._name, last_update=moment, next_update=moment,
            revoked_certificates=revoked_certificates(entries),
        ).sign(self._key, hashes.SHA256())
        contents = assembly.revoked_contents(scratch.public_bytes(Encoding.DER))
        encoded = []
        offset = 0
        while offset < len(contents):
            # peek() wants bytes: give it a window that holds any of our entries (serial <= 20
            # octets, RFC 5280 §4.1.2.2), so splitting stays linear in the size of the list.
            try:
                length = asn1_parser.peek(contents[offset:offset + ENTRY_WINDOW])
            except ValueError:  # an entry longer than the window: look at the rest
                length = asn1_parser.peek(contents[offset:])
            encoded.append(contents[offset:offset + length])
            offset += length
        # revokedCertificates is a SEQUENCE OF (RFC 5280 §5.1): DER keeps the order given
        # (X.690 §11.6 sorts SET OF only), so the i-th encoding is the i-th entry's. Checked
        # rather than assumed, at the ends and the middle: pyca parses its list in Rust, so
        # three look-ups cost nothing where reading every entry back as a Python object cost
        # a tenth of the encoding.
        probes = {0, len(entries) // 2, len(entries) - 1}
        if len(encoded) != len(entries) or len(scratch) != len(entries) or any(
                scratch[index].serial_number != int(entries[index].serial, 16)
                for index in probes):
            raise RuntimeError("pyca reordered CRL entries; cannot cache their encodings")
        return encoded


def partition_idp(kind: CertKind, generation: int, municipality: Municipality,
                  base_url: str, partition: str | None = None) -> x509.IssuingDistributionPoint:
    """RFC 5280 §5.2.5: the scope of a partition CRL.

    fullName repeats the names of the certificates' cRLDistributionPoints exactly (the
    DirectoryName of the real cards and our HTTP URI), so that a relying party's scope check
    (RFC 5280 §6.3.3 (b)(2)(i); openssl -crl_check) matches; onlyContainsUserCerts because CA
    certificates are covered by the full CRL of the generation.
    """
    return x509.IssuingDistributionPoint(
        full_name=distribution_point_names(kind, generation, municipality, base_url,
                                           partition),
        relative_name=None,
        only_contains_user_certs=True,
        only_contains_ca_certs=False,
        only_some_reasons=None,
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )


def next_update(this_update: datetime, grace_hours: int, ca_not_after: datetime) -> datetime:
    """thisUpdate + 24 h + grace, never past the CA's notAfter (a CRL may not promise status
    information beyond the life of the key that signs it)."""
    return min(this_update + timedelta(hours=24 + grace_hours), ca_not_after)


def build(ca: CAGeneration, key: PrivateKey, *, number: int, this_update: datetime,
          next_update: datetime, revoked: list[x509.RevokedCertificate],
          idp: x509.IssuingDistributionPoint | None) -> x509.CertificateRevocationList:
    """A v2 CRL (RFC 5280 §5.1) signed with the CA key's scheme (ca/keyalgorithm.py):
    sha256WithRSAEncryption, or ecdsa-with-SHA384 for a P-384 generation.

    Extensions: authorityKeyIdentifier by key id (§5.2.1, MUST; picks the generation by key,
    never by the shared DN), cRLNumber (§5.2.3, MUST), and for partitions the critical
    issuingDistributionPoint (§5.2.5, MUST be critical).
    """
    if next_update <= this_update:
        raise ValueError("nextUpdate must be after thisUpdate (RFC 5280 §5.1.2.5)")
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=ca.certificate.subject,
        last_update=this_update,
        next_update=next_update,
        revoked_certificates=revoked,
        extensions=[
            x509.Extension(
                x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False,
                x509.AuthorityKeyIdentifier(bytes.fromhex(ca.key_id), None, None),
            ),
            x509.Extension(x509.oid.ExtensionOID.CRL_NUMBER, False, x509.CRLNumber(number)),
        ],
    )
    if idp is not None:
        builder = builder.add_extension(idp, critical=True)
    return builder.sign(key, signature_hash(key))
