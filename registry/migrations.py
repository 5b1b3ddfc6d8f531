"""Versioned schema. Each migration runs once, in order; the applied version is recorded.

Tables are created with sqlite-utils so that column types are declared in one place. Times are
stored as integer seconds since the epoch (UTC): the CRL generator streams millions of them.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils


def _v1_foundation(db: sqlite_utils.Database) -> None:
    db.table("municipalities").create(
        {"code": str, "prefecture": str, "name": str, "prefecture_roman": str, "name_roman": str},
        pk="code",
        if_not_exists=True,
    )
    db.table("residents").create(
        {
            "resident_id": str,
            "name": str,
            "name_alt": str,
            "dob": str,
            "sex": str,
            "address": str,
            "address_alt": str,
            "municipality_code": str,
            "created_at": int,
            "updated_at": int,
        },
        pk="resident_id",
        not_null={"name", "dob", "sex", "address", "municipality_code"},
        foreign_keys=[("municipality_code", "municipalities", "code")],
        if_not_exists=True,
    )
    db.table("ca_generations").create(
        {
            "id": int,
            "kind": str,
            "generation": int,
            "serial": str,
            "not_before": int,
            "not_after": int,
            "key_id": str,
            "key_file": str,
            "cert_der": bytes,
            "created_at": int,
        },
        pk="id",
        not_null={"kind", "generation", "serial", "key_id", "cert_der"},
        if_not_exists=True,
    )
    db.table("ca_generations").create_index(["kind", "generation"], unique=True, if_not_exists=True)
    db.table("ca_generations").create_index(["key_id"], unique=True, if_not_exists=True)
    db.table("certificates").create(
        {
            "serial": str,
            "kind": str,
            "ca_id": int,
            "resident_id": str,
            "subject_cn": str,
            "partition": str,
            "not_before": int,
            "not_after": int,
            "issued_at": int,
            "status": str,
            "revoked_at": int,
            "reason": int,
            "der": bytes,
        },
        pk="serial",
        not_null={"kind", "ca_id", "resident_id", "partition", "not_before", "not_after",
                  "status"},
        foreign_keys=[("ca_id", "ca_generations", "id"), ("resident_id", "residents",
                                                           "resident_id")],
        if_not_exists=True,
    )
    db.table("certificates").create_index(["resident_id"], if_not_exists=True)
    db.table("certificates").create_index(["ca_id", "partition", "status"], if_not_exists=True)
    db.table("pairs").create(
        {"id": int, "resident_id": str, "signature_serial": str, "authentication_serial": str,
         "created_at": int},
        pk="id",
        not_null={"resident_id", "authentication_serial"},
        if_not_exists=True,
    )
    db.table("pairs").create_index(["signature_serial"], unique=True, if_not_exists=True)
    db.table("pairs").create_index(["authentication_serial"], unique=True, if_not_exists=True)
    db.table("successors").create(
        {"old_serial": str, "new_serial": str, "kind": str, "linked_at": int},
        pk="old_serial",
        not_null={"new_serial", "kind"},
        if_not_exists=True,
    )
    db.table("successors").create_index(["new_serial"], unique=True, if_not_exists=True)
    db.table("state_changes").create(
        {"seq": int, "serial": str, "status": str, "at": int},
        pk="seq",
        if_not_exists=True,
    )
    db.table("audit_log").create(
        {
            "id": int,
            "at": int,
            "actor": str,
            "action": str,
            "serial": str,
            "detail": str,
            "prev_hash": str,
            "hash": str,
        },
        pk="id",
        not_null={"at", "actor", "action", "detail", "prev_hash", "hash"},
        if_not_exists=True,
    )


def _v2_events(db: sqlite_utils.Database) -> None:
    """Resident-register events (applied exactly once) and operator tokens."""
    db.table("events").create(
        {"event_id": str, "body_sha256": str, "resident_id": str, "type": str,
         "outcome": str, "applied_at": int},
        pk="event_id",
        not_null={"body_sha256", "outcome", "applied_at"},
        if_not_exists=True,
    )
    db.table("operators").create(
        {"name": str, "token_sha256": str, "created_at": int},
        pk="name",
        not_null={"token_sha256", "created_at"},
        if_not_exists=True,
    )
    db.table("operators").create_index(["token_sha256"], unique=True, if_not_exists=True)


def _v3_verifiers(db: sqlite_utils.Database) -> None:
    """Verifiers (tokens stored as SHA-256) and the certificates that sign their requests."""
    db.table("verifiers").create(
        {"id": int, "name": str, "token_hash": str, "created_at": int},
        pk="id",
        not_null={"name", "token_hash"},
        if_not_exists=True,
    )
    db.table("verifiers").create_index(["name"], unique=True, if_not_exists=True)
    db.table("verifiers").create_index(["token_hash"], unique=True, if_not_exists=True)
    db.table("verifier_signers").create(
        {"fingerprint": str, "verifier_id": int, "cert_der": bytes, "added_at": int},
        pk="fingerprint",
        not_null={"verifier_id", "cert_der"},
        foreign_keys=[("verifier_id", "verifiers", "id")],
        if_not_exists=True,
    )


def _v4_fees_and_consent(db: sqlite_utils.Database) -> None:
    """The fee ledger (one row per metered check) and residents' consents per verifier."""
    db.table("ledger").create(
        {
            "id": int,
            "at": int,
            "month": str,
            "year": int,
            "verifier_id": int,
            "check_type": str,
            "channel": str,
            "serial": str,
            "resident_id": str,
            "status_confirmation": int,
            "rule_id": str,
            "amount_yen": int,
        },
        pk="id",
        not_null={"at", "month", "year", "verifier_id", "check_type", "channel", "rule_id",
                  "amount_yen"},
        foreign_keys=[("verifier_id", "verifiers", "id")],
        if_not_exists=True,
    )
    db.table("ledger").create_index(["verifier_id", "serial", "at"], if_not_exists=True)
    db.table("ledger").create_index(["month", "verifier_id"], if_not_exists=True)
    db.table("ledger").create_index(["verifier_id", "resident_id", "year", "status_confirmation"],
                              if_not_exists=True)
    db.table("consents").create(
        {
            "id": int,
            "resident_id": str,
            "verifier_id": int,
            "service": str,
            "items": str,
            "granted_at": int,
            "expires_at": int,
            "withdrawn_at": int,
        },
        pk="id",
        not_null={"resident_id", "verifier_id", "service", "granted_at", "expires_at"},
        foreign_keys=[("verifier_id", "verifiers", "id"),
                      ("resident_id", "residents", "resident_id")],
        if_not_exists=True,
    )
    db.table("consents").create_index(["resident_id", "verifier_id", "service"], if_not_exists=True)


def _v5_ocsp_signers(db: sqlite_utils.Database) -> None:
    """OCSP: the delegated responder certificates, one or more per CA generation."""
    db.table("ocsp_signers").create(
        {
            "id": int,
            "ca_id": int,
            "serial": str,
            "not_before": int,
            "not_after": int,
            "key_file": str,
            "cert_der": bytes,
            "created_at": int,
        },
        pk="id",
        not_null={"ca_id", "serial", "not_before", "not_after", "key_file", "cert_der"},
        foreign_keys=[("ca_id", "ca_generations", "id")],
        if_not_exists=True,
    )
    db.table("ocsp_signers").create_index(["ca_id", "not_after"], if_not_exists=True)


def _v6_crl_state(db: sqlite_utils.Database) -> None:
    """CRL numbering and publication state per (CA generation, partition).

    RFC 5280 §5.2.3: the CRL number strictly increases per scope; `number` is the last number
    reserved, `published_number` the last one published, `idp` the hex DER of the scope's
    IssuingDistributionPoint ('' for the full CRL), which must never change for a URL.
    """
    db.table("crl_state").create(
        {
            "ca_id": int,
            "partition": str,
            "number": int,
            "published_number": int,
            "idp": str,
            "this_update": int,
            "next_update": int,
            "entries": int,
            "size": int,
            "sha256": str,
            "duration_ms": int,
            "published_at": int,
        },
        pk=("ca_id", "partition"),
        not_null={"number"},
        foreign_keys=[("ca_id", "ca_generations", "id")],
        if_not_exists=True,
    )
    # A partial covering index over revoked certificates only: CRL generation streams its
    # entries with an index-only range scan (about 4x faster than via the table), and it grows
    # with the revoked certificates, not with all of them.
    db.execute(
        "CREATE INDEX IF NOT EXISTS certificates_crl_entries ON certificates"
        " (ca_id, partition, not_after, serial, revoked_at, reason) WHERE status = 'revoked'"
    )
    # Each revoked certificate's encoded CRL entry (RFC 5280 §5.1.2.6), encoded once: an entry
    # never changes (revocation is final), so a daily run only encodes new revocations and
    # concatenates the rest. Clustered by the CRL query's key (WITHOUT ROWID); rows past the
    # look-back are deleted by the generator.
    db.execute(
        "CREATE TABLE IF NOT EXISTS crl_entries (ca_id INTEGER NOT NULL, partition TEXT NOT NULL,"
        " not_after INTEGER NOT NULL, serial TEXT NOT NULL, der BLOB NOT NULL,"
        " PRIMARY KEY (ca_id, partition, not_after, serial)) WITHOUT ROWID"
    )


def _v7_key_rotation(db: sqlite_utils.Database) -> None:
    """CA key rotation: link certificates (RFC 4210 §4.4) and retired generations.

    A retired generation (every certificate it issued has expired, its key archived) no longer
    signs CRLs or responder certificates; `retired_at` says since when.
    """
    db.table("ca_generations").add_column("retired_at", int)
    db.table("ca_links").create(
        {
            "id": int,
            "kind": str,
            "direction": str,  # new_with_old | old_with_new
            "old_ca_id": int,
            "new_ca_id": int,
            "serial": str,
            "not_before": int,
            "not_after": int,
            "cert_der": bytes,
            "created_at": int,
        },
        pk="id",
        not_null={"kind", "direction", "old_ca_id", "new_ca_id", "serial", "cert_der"},
        foreign_keys=[("old_ca_id", "ca_generations", "id"),
                      ("new_ca_id", "ca_generations", "id")],
        if_not_exists=True,
    )
    db.table("ca_links").create_index(["old_ca_id", "new_ca_id", "direction"], unique=True,
                                if_not_exists=True)


def _v8_audit_checkpoints(db: sqlite_utils.Database) -> None:
    """Signed checkpoints of the audit chain (registry/audit.py) and the keys that sign them.

    Only the public key is stored here: verifying needs no secret; signing needs the CA key
    backend, where the private audit key lives under the CA passphrase.
    """
    db.table("audit_keys").create(
        {"id": int, "key_ref": str, "public_der": bytes, "fingerprint": str, "created_at": int},
        pk="id",
        not_null={"key_ref", "public_der", "fingerprint", "created_at"},
        if_not_exists=True,
    )
    db.table("audit_checkpoints").create(
        {"id": int, "key_id": int, "row_id": int, "head_hash": str, "at": int,
         "signature": bytes},
        pk="id",
        not_null={"key_id", "row_id", "head_hash", "at", "signature"},
        foreign_keys=[("key_id", "audit_keys", "id")],
        if_not_exists=True,
    )


def _v9_phone_certificates(db: sqlite_utils.Database) -> None:
    """Smartphone certificates (registry/phones.py): which certificate row is a phone's, of
    which device kind, issued on the strength of which card signature certificate.

    The certificates themselves stay in `certificates` (same CAs, same CRL partitions, same
    OCSP lookups); this table only marks them and keeps the link to the card, which a card
    renewal supersedes (`card_successor`, `card_superseded_at`) without revoking the phone.
    """
    db.table("phone_certificates").create(
        {"serial": str, "resident_id": str, "device": str, "card_serial": str,
         "issued_at": int, "card_successor": str, "card_superseded_at": int},
        pk="serial",
        not_null={"resident_id", "device", "card_serial", "issued_at"},
        foreign_keys=[("serial", "certificates", "serial"),
                      ("resident_id", "residents", "resident_id")],
        if_not_exists=True,
    )
    db.table("phone_certificates").create_index(["resident_id", "device"], if_not_exists=True)
    db.table("phone_certificates").create_index(["card_serial"], if_not_exists=True)


def _v10_signed_consents(db: sqlite_utils.Database) -> None:
    """The evidence of consents the resident signed (linkage/signed_consent.py): the CMS as
    received, the statement's SHA-256 (unique: a replay is refused), the signer and times."""
    db.table("signed_consents").create(
        {"id": int, "resident_id": str, "verifier_id": int, "consent_id": int, "action": str,
         "service": str, "statement_sha256": str, "signer_serial": str, "signed_at": int,
         "received_at": int, "cms": bytes},
        pk="id",
        not_null={"resident_id", "verifier_id", "action", "service", "statement_sha256",
                  "signer_serial", "signed_at", "received_at", "cms"},
        foreign_keys=[("verifier_id", "verifiers", "id"), ("consent_id", "consents", "id"),
                      ("resident_id", "residents", "resident_id")],
        if_not_exists=True,
    )
    db.table("signed_consents").create_index(["statement_sha256"], unique=True, if_not_exists=True)


def _v11_crl_shards(db: sqlite_utils.Database) -> None:
    """Shards of large municipalities' CRL partitions (registry/shards.py) and delta CRLs.

    `crl_shard_counters` counts the certificates issued per (CA generation, municipality);
    a certificate's shard is its place in that count divided by the shard capacity. Existing
    certificates are counted into shard 0 (their partition, and their URL, stay the code).
    `crl_state.watermark` is the last registry state change a complete CRL was read after
    (RFC 5280 §5.2.4: its delta lists what was revoked after it) and `base_number` the number
    of the complete CRL a delta CRL updates.
    """
    db.execute(
        "CREATE TABLE IF NOT EXISTS crl_shard_counters (ca_id INTEGER NOT NULL"
        " REFERENCES ca_generations(id), municipality TEXT NOT NULL, issued INTEGER NOT NULL,"
        " PRIMARY KEY (ca_id, municipality)) WITHOUT ROWID"
    )
    db.execute(
        "INSERT OR IGNORE INTO crl_shard_counters (ca_id, municipality, issued)"
        " SELECT ca_id, partition, COUNT(*) FROM certificates GROUP BY ca_id, partition"
    )
    db.table("crl_state").add_column("watermark", int)
    db.table("crl_state").add_column("base_number", int)


def _v12_fee_journal_marks(db: sqlite_utils.Database) -> None:
    """Where each fee journal's fold has reached (fees/journal.py), one row per journal: a
    serving worker's, on this host or another sharing the registry. `fee_journal_folds` is
    the single mark from before (made on the fly then); worker 0 carries it over."""
    db.execute("CREATE TABLE IF NOT EXISTS fee_journal_folds"
               " (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL)")
    db.execute("CREATE TABLE IF NOT EXISTS fee_journal_marks"
               " (journal TEXT PRIMARY KEY, seq INTEGER NOT NULL)")


def _v13_newest_certificates(db: sqlite_utils.Database) -> None:
    """The newest certificates of a CA generation, read by an index rather than a sort of all
    of them: `jpki serve` pre-signs the answers of the newest at start-up
    (registry.certificates.newest_serials); at 10 M rows the sort held its event loop for
    seconds (`make bench-scale`)."""
    db.execute("CREATE INDEX IF NOT EXISTS certificates_ca_issued ON certificates"
               " (ca_id, issued_at)")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1_foundation, _v2_events, _v3_verifiers, _v4_fees_and_consent, _v5_ocsp_signers,
    _v6_crl_state, _v7_key_rotation, _v8_audit_checkpoints, _v9_phone_certificates,
    _v10_signed_consents, _v11_crl_shards, _v12_fee_journal_marks,
    _v13_newest_certificates]


def schema_version(db: sqlite_utils.Database) -> int:
    if not db.table("schema_migrations").exists():
        return 0
    row = next(db.query("SELECT MAX(version) AS v FROM schema_migrations"))
    return int(row["v"] or 0)


def migrate(db: sqlite_utils.Database) -> int:
    """Apply every pending migration under the write lock; return the resulting version."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
            " applied_at INTEGER NOT NULL DEFAULT (strftime('%s','now')))"
        )
        current = schema_version(db)
        for version, step in enumerate(MIGRATIONS, start=1):
            if version > current:
                step(db)
                db.execute("INSERT INTO schema_migrations (version) VALUES (?)", [version])
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)
