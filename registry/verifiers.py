"""Verifiers: who may receive revocation information (DOMAIN.md, "Verifiers and security").

A verifier is identified by a bearer token or by the certificate that signs its OCSP requests.
Tokens are 256-bit random values shown once; only their SHA-256 is stored, which is enough
for a high-entropy secret (no salt or slow hash needed: there is nothing to brute-force).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from registry import audit, tokens
from registry.clock import Clock, epoch
from registry.errors import Conflict, InvalidInput, NotFound
from registry.store import Store


@dataclass(frozen=True)
class Verifier:
    id: int
    name: str


def token_hash(token: str) -> str:
    return tokens.digest(token)


def certificate_fingerprint(cert_der: bytes) -> str:
    """SHA-256 of the DER certificate: how a request signer is matched to a verifier."""
    return hashlib.sha256(cert_der).hexdigest()


def check_name(name: str) -> str:
    return tokens.check_name(name)


def add(store: Store, clock: Clock, name: str, *, actor: str = "operator") -> tuple[Verifier, str]:
    """Register a verifier; return it and its token, which is never shown again."""
    check_name(name)
    token = tokens.new_token("vf")
    with store.transaction() as conn:
        if conn.execute("SELECT 1 FROM verifiers WHERE name = ?", (name,)).fetchone():
            raise Conflict(f"verifier {name} already exists", field="name")
        cursor = conn.execute(
            "INSERT INTO verifiers (name, token_hash, created_at) VALUES (?, ?, ?)"
            " RETURNING id",
            (name, token_hash(token), epoch(clock())),
        )
        verifier_id = int(cursor.fetchone()[0])
        audit.append(store, clock, actor=actor, action="verifier.add",
                     detail={"verifier": name})
    return Verifier(verifier_id, name), token


def _credential(store: Store, name: str) -> tuple[Verifier, str]:
    row = store.one("SELECT id, name, token_hash FROM verifiers WHERE name = ?",
                    (check_name(name),))
    if row is None:
        raise NotFound(f"no verifier named {name}", field="name")
    return Verifier(row["id"], row["name"]), row["token_hash"]


def rotate_token(store: Store, clock: Clock, name: str, *, actor: str,
                 reason: str | None = None) -> str:
    """Replace a verifier's token; return the new one (shown once). The old one stops working
    at the daemon's next request: linkage and CRL look tokens up on every request, the OCSP
    responder reloads its directory whenever the registry changed (ocsp/watch.py)."""
    with store.transaction() as conn:
        verifier, stored = _credential(store, name)
        if tokens.is_revoked(stored):
            raise Conflict(f"verifier {name} is revoked; register a new verifier instead",
                           field="name")
        token = tokens.new_token("vf")
        conn.execute("UPDATE verifiers SET token_hash = ? WHERE id = ?",
                     (token_hash(token), verifier.id))
        audit.append(store, clock, actor=actor, action="verifier.token.rotate",
                     detail={"verifier": name, "reason": reason})
    return token


def revoke(store: Store, clock: Clock, name: str, *, actor: str,
           reason: str | None = None) -> Verifier:
    """Withdraw a verifier: its token and its request-signing certificates stop identifying it.

    The row stays (its ledger rows and consents refer to it); the name cannot be reused.
    """
    with store.transaction() as conn:
        verifier, stored = _credential(store, name)
        if tokens.is_revoked(stored):
            raise Conflict(f"verifier {name} is already revoked", field="name")
        conn.execute("UPDATE verifiers SET token_hash = ? WHERE id = ?",
                     (tokens.revoked_marker(), verifier.id))
        audit.append(store, clock, actor=actor, action="verifier.revoke",
                     detail={"verifier": name, "reason": reason})
    return verifier


def require(store: Store, name: str) -> Verifier:
    row = store.one("SELECT id, name FROM verifiers WHERE name = ?", (check_name(name),))
    if row is None:
        raise NotFound(f"no verifier named {name}", field="name")
    return Verifier(row["id"], row["name"])


def names_by_id(store: Store) -> dict[int, str]:
    """Every verifier's name by id (the fee ledger records ids; invoices print names)."""
    return {int(row[0]): str(row[1])
            for row in store.conn.execute("SELECT id, name FROM verifiers")}


def id_of(store: Store, name: str) -> int | None:
    """The id of the verifier named `name`, or None: no such verifier."""
    row = store.conn.execute("SELECT id FROM verifiers WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else None


def load_certificate(data: bytes) -> x509.Certificate:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError
        raise InvalidInput("is not a PEM or DER certificate", field="signer_cert") from None


def add_signer(store: Store, clock: Clock, name: str, certificate: x509.Certificate, *,
               actor: str = "operator") -> str:
    """Register a certificate whose signed OCSP requests identify this verifier."""
    verifier = require(store, name)
    der = certificate.public_bytes(Encoding.DER)
    digest = certificate_fingerprint(der)
    with store.transaction() as conn:
        if conn.execute("SELECT 1 FROM verifier_signers WHERE fingerprint = ?",
                        (digest,)).fetchone():
            raise Conflict("this signer certificate is already registered", field="signer_cert")
        conn.execute(
            "INSERT INTO verifier_signers (fingerprint, verifier_id, cert_der, added_at)"
            " VALUES (?, ?, ?, ?)",
            (digest, verifier.id, der, epoch(clock())),
        )
        audit.append(store, clock, actor=actor, action="verifier.signer.add",
                     detail={"verifier": name, "fingerprint": digest})
    return digest


def list_all(store: Store) -> list[dict[str, object]]:
    rows = store.query(
        "SELECT v.id, v.name, COUNT(s.fingerprint) AS signers,"
        " v.token_hash LIKE ? AS revoked FROM verifiers v"
        " LEFT JOIN verifier_signers s ON s.verifier_id = v.id GROUP BY v.id ORDER BY v.name",
        (tokens.REVOKED_PREFIX + "%",))
    return [{**row, "revoked": bool(row["revoked"])} for row in rows]


@dataclass(frozen=True)
class Credentials:
    """A snapshot of every credential: token hash -> verifier, signer fingerprint -> verifier."""

    by_token_hash: dict[str, Verifier]
    by_signer: dict[str, Verifier]


def snapshot(store: Store) -> Credentials:
    verifiers = {row["id"]: Verifier(row["id"], row["name"])
                 for row in store.query("SELECT id, name FROM verifiers")}
    by_token = {row["token_hash"]: verifiers[row["id"]]
              for row in store.query("SELECT id, token_hash FROM verifiers")}
    signers = {row["fingerprint"]: verifiers[row["verifier_id"]]
               for row in store.query(
                   "SELECT s.fingerprint, s.verifier_id FROM verifier_signers s"
                   " JOIN verifiers v ON v.id = s.verifier_id WHERE v.token_hash NOT LIKE ?",
                   (tokens.REVOKED_PREFIX + "%",))}
    return Credentials(by_token, signers)


def authenticate(store: Store, token: str | None) -> Verifier | None:
    """The verifier holding a bearer token, read from the registry on every call (a verifier
    added while the daemon runs is recognised at once)."""
    if not token:
        return None
    row = store.one("SELECT id, name FROM verifiers WHERE token_hash = ?", (token_hash(token),))
    return Verifier(row["id"], row["name"]) if row else None
