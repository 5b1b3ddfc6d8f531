"""One typed settings model, validated at start-up.

Every field has a safe default so that an empty file (or no file) yields a working development
setup on 127.0.0.1; unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from registry import shards
from registry.errors import ConfigError
from registry.store import URL_ENV, effective_url, registry_file

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_base_url: str = "http://127.0.0.1:8080"
    max_body_bytes: int = Field(16384, ge=1024, le=16 * 1024 * 1024)
    # Prometheus /metrics on its own listener, "host:port" ("" disables it). Never on the
    # public port: the metrics name verifiers and count the yen billed to them.
    metrics_listen: str = "127.0.0.1:9108"
    # TLS on the public port (PEM files; the key unencrypted, mode 0600): bearer tokens must
    # not travel in clear unless a proxy in front terminates TLS. Both or neither.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # `jpki serve` worker processes sharing the public port (SO_REUSEPORT), each with its own
    # caches and signing pool: the event loop and the GIL bound one process to one core.
    # 0: one per usable core (the process's CPU affinity). 1: the single process of old, no
    # supervising parent.
    workers: int = Field(0, ge=0, le=256)

    @field_validator("public_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("metrics_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or int(port) > 65535:
                raise ValueError('must be "host:port" (e.g. "127.0.0.1:9108") or "" (off)')
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        return self

    def worker_count(self, override: int | None = None) -> int:
        """server.workers (or `override`: `jpki serve --workers`), 0 resolved to the number
        of cores this process may run on (its affinity: `taskset`, a cgroup cpuset), not the
        host's: two workers pinned to one core only take turns."""
        requested = self.workers if override is None else override
        return requested or len(os.sched_getaffinity(0)) or 1

    def metrics_address(self) -> tuple[str, int] | None:
        """(host, port) of the metrics listener, None when it is off; "[::1]:9108" works."""
        if not self.metrics_listen:
            return None
        host, _, port = self.metrics_listen.rpartition(":")
        return host.strip("[]"), int(port)


class CASettings(_Section):
    key_size: int = Field(2048, ge=2048, le=8192)
    validity_years: int = Field(10, ge=1, le=30)
    passphrase_env: str = "JPKI_CA_PASSPHRASE"
    passphrase_file: str = "ca-passphrase"
    cps_uri: str = "http://127.0.0.1:8080/cps"


class KeysSettings(_Section):
    """Where CA and OCSP responder private keys live (ca/keybackend.py)."""

    # "file": PKCS#8 encrypted under ca.passphrase_* / ocsp.passphrase_* (the default);
    # "pkcs11": generated on a token through python-pkcs11, never leaving it.
    backend: Literal["file", "pkcs11"] = "file"
    pkcs11_module: str = "/usr/lib/softhsm/libsofthsm2.so"
    pkcs11_token: str = "jpki"
    # The token's user PIN is read from this environment variable, never from a file.
    pkcs11_pin_env: str = "JPKI_PKCS11_PIN"
    # OCSP responder keys: the process that faces the network opens them, so they never share
    # a PKCS#11 token (or its PIN) with the CA keys. "file": PKCS#8 under ocsp.passphrase_*
    # (the default, whatever `backend` is); "pkcs11": their own token below.
    responder_backend: Literal["file", "pkcs11"] = "file"
    responder_pkcs11_token: str = "jpki-ocsp"
    responder_pkcs11_pin_env: str = "JPKI_OCSP_PKCS11_PIN"
    # File backend: key files are PBES2 with scrypt N=2^14, r=8 and this p (ca/pkcs8.py); 5 is
    # OWASP's equivalent of N=2^17, about 0.2 s per key load. Lower only in tests.
    scrypt_p: int = Field(5, ge=1, le=16)


class IssuanceSettings(_Section):
    # The card profile of new pairs (ca/cardprofile.py): "current" (RSA, SHA-256, 5 years) or
    # "next" (ECDSA P-384, SHA-384, 10 years, under a P-384 CA generation); `--profile` overrides.
    profile: Literal["current", "next"] = "current"
    birthdays: int = Field(5, ge=1, le=10)
    minimum_signature_age: int = Field(15, ge=0, le=30)
    # PBKDF2-HMAC-SHA256 iterations of the residents' PKCS#12 files (the MAC gets twice as
    # many, ca/credentials.py); 600,000 is OWASP's figure. Outside a card nothing else slows
    # a PIN guess (README.md, "PINs outside a card"). Lower only in tests.
    pkcs12_kdf_rounds: int = Field(600_000, ge=1_000, le=10_000_000)


class RevocationSettings(_Section):
    # `jpki revoke --at` may back-date a revocation by at most this much (RFC 5280 §5.3.2
    # invalidityDate is not used; the revocation time itself is back-dated, so keep it short).
    backdate_window_hours: int = Field(72, ge=0, le=24 * 30)


class EventsSettings(_Section):
    # POST /registry/events reads its body with this limit (not server.max_body_bytes, which
    # protects the OCSP responder); a larger body is refused with 413 before it is parsed.
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)


class FeesSettings(_Section):
    tariff_file: Path = REPO_CONFIGS / "tariff.toml"
    # CPU niceness of the fold process (fees/folder.py), which folds the durable fee journal
    # into the ledger in the background: 19 yields the CPU to answers under a peak (the
    # backlog waits durably in the journal; invoices and usage fold first, so they stay
    # exact); 19 also puts it in the idle scheduling class (SCHED_IDLE). Lower it only if
    # the ledger table itself must keep up at saturation.
    fold_nice: int = Field(19, ge=0, le=19)
    # How the fee journal's frames are made durable (fees/flush.py): "aio" has the kernel
    # write each one with direct I/O and RWF_DSYNC (Linux AIO), completed on the event loop,
    # and falls back to "thread" where a start-up probe finds it refused; "thread" writes
    # through the page cache and runs fdatasync on a thread (more CPU per write).
    journal_flush: Literal["aio", "thread"] = "aio"
    # Group commit under load (fees/journal.py, like PostgreSQL's commit_delay and
    # commit_siblings): after a journal write that carried at least commit_siblings metered
    # answers, the next write starts no sooner than commit_delay_ms after it did, so it
    # carries more answers and the serving core pays for fewer writes. Lighter load is never
    # delayed. 0 turns it off.
    commit_delay_ms: float = Field(1.5, ge=0, le=20)
    commit_siblings: int = Field(16, ge=1, le=100000)


class LinkageSettings(_Section):
    # Linkage and age answers require a validity check of the same certificate by the same
    # verifier within this window (DOMAIN.md: free, "but only after a validity check").
    check_window_minutes: int = Field(10, ge=1, le=24 * 60)
    # A consent statement the resident signed is refused when older than this at its arrival
    # (POST /linkage/v1/consents): the verifier submits it as the resident signs it.
    consent_max_age_minutes: int = Field(10, ge=1, le=24 * 60)
    # The only `at_least` values /linkage/v1/age answers (issue 14, defect 9): with any
    # threshold allowed, bisecting thresholds day by day reveals the exact date of birth.
    # Defaults: 15 (signature certificate), 18 (majority), 20 (alcohol, tobacco), 65 (pension).
    age_thresholds: tuple[int, ...] = (15, 18, 20, 65)

    @field_validator("age_thresholds")
    @classmethod
    def _few_ages(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or len(value) > 16 or len(set(value)) != len(value):
            raise ValueError("must list 1-16 distinct ages")
        if any(not 0 < age <= 150 for age in value):
            raise ValueError("every age must be between 1 and 150")
        return tuple(sorted(value))


class OCSPSettings(_Section):
    """The OCSP responder (ocsp/README.md). Every default is the safe one."""

    # Delegated responder certificates (RFC 6960 §4.2.2.2): short-lived because they carry
    # ocsp-nocheck (§4.2.2.2.1) and so cannot be revoked in practice.
    responder_validity_days: int = Field(30, ge=1, le=366)
    renew_before_days: int = Field(7, ge=0, le=365)
    # Responder keys are encrypted under their own passphrase, not the CA one.
    passphrase_env: str = "JPKI_OCSP_PASSPHRASE"
    passphrase_file: str = "ocsp-passphrase"
    # `jpki signer` renews responder certificates renew_before_days ahead of expiry, checking
    # every renew_check_minutes; the serving daemon picks the new ones up without a restart.
    auto_renew: bool = True
    renew_check_minutes: int = Field(60, ge=1, le=24 * 60)
    # nextUpdate - thisUpdate of every response (RFC 5019 §2.2.4).
    response_validity_hours: float = Field(24, gt=0, le=24 * 7)
    # Pre-signed answers are re-signed once they are older than this fraction of validity.
    refresh_fraction: float = Field(0.5, gt=0, lt=1)
    # How many pre-signed answers are signed ahead of time at start-up (per hash algorithm).
    presign_limit: int = Field(10000, ge=0)
    cache_limit: int = Field(200000, ge=100)
    # CertID hash algorithms accepted (RFC 5019 §2.1.1 requires SHA-1; SHA-256 is common).
    hash_algorithms: tuple[str, ...] = ("sha1", "sha256")
    # Unidentified requests get `unauthorized` unless this is true.
    allow_anonymous: bool = False
    # Live signing (nonce answers, cache misses) runs on this many threads; beyond
    # `sign_queue_limit` outstanding signatures a request gets `tryLater`. One per core: RSA
    # signing releases the GIL, so two threads sign in parallel on two cores, while 3 or 4
    # threads measured no better on 2 cores (more GIL hand-offs, ocsp/README.md).
    sign_workers: int = Field(2, ge=1, le=64)
    sign_queue_limit: int = Field(256, ge=1)
    # Slow or idle clients (slowloris), for every connection of `jpki serve`: a request line
    # and headers must arrive within request_timeout of the request's first byte (of the
    # connection, for its first request), else the connection is closed
    # (httpapi/deadline.py); the body must arrive within read_timeout (else 408); idle
    # keep-alive connections are closed after idle_timeout.
    request_timeout_seconds: float = Field(10, gt=0, le=300)
    read_timeout_seconds: float = Field(10, gt=0, le=300)
    idle_timeout_seconds: float = Field(15, gt=0, le=3600)

    @field_validator("hash_algorithms")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(value) - {"sha1", "sha256", "sha384", "sha512"}
        if unknown or not value:
            raise ValueError("must be a non-empty subset of sha1, sha256, sha384, sha512")
        return value

class CRLSettings(_Section):
    """Daily CRL generation (RFC 5280 §5: one CRL per partition and one full CRL per CA key)."""

    # Local time (JST) of the daily run, "HH:MM".
    daily_time: str = "03:00"
    # nextUpdate = thisUpdate + 24 h + grace (RFC 5280 §5.1.2.5), never past the CA's notAfter.
    grace_hours: int = Field(6, ge=0, le=24 * 7)
    # Entries of expired certificates stay listed this long after notAfter, then drop off.
    lookback_days: int = Field(30, ge=0, le=3650)
    # Published versions kept on disk per CRL (the served one included).
    versions_kept: int = Field(3, ge=1, le=100)
    # Worker processes that sign partition CRLs (0: one per CPU), used when a CA has at least
    # parallel_threshold entries not encoded yet (starting the workers costs about 0.5 s).
    workers: int = Field(0, ge=0, le=64)
    parallel_threshold: int = Field(50_000, ge=0)
    # Whether `jpki signer` runs the daily schedule (the CLI can always generate on demand).
    schedule_enabled: bool = True
    # After a revocation commits, `jpki signer` re-issues the CRLs that list it (its partition
    # and the full CRL) within this many seconds; revocations seen within the first quarter of
    # it share one run (the rest is the run's own time budget).
    urgent_delay_seconds: float = Field(60, ge=1, le=24 * 3600)
    # No partition CRL named by a certificate exceeds this: a large municipality's certificates
    # are spread over shards fixed at issuance (registry/shards.py). 10 MB is the ceiling
    # Microsoft's root programme recommends for any CRL file.
    max_partition_bytes: int = Field(shards.DEFAULT_MAX_PARTITION_BYTES,
                                     ge=shards.FRAME_BYTES + shards.MAX_ENTRY_BYTES,
                                     le=1_000_000_000)
    # Delta CRLs (RFC 5280 §5.2.4): `jpki signer` publishes one for the full CRL and each
    # partition this often, listing what was revoked since its base; 0 turns deltas off.
    delta_interval_minutes: int = Field(60, ge=0, le=24 * 60)
    # Where `jpki serve` reads published CRLs: "" is <data dir>/crl (the signer's output);
    # another host names a read-only mount of the signer's directory.
    serve_dir: str = Field("", max_length=4096)

    @field_validator("daily_time")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        hours, _, minutes = value.partition(":")
        if not (hours.isdigit() and minutes.isdigit() and int(hours) < 24
                and int(minutes) < 60 and len(minutes) == 2):
            raise ValueError("must be HH:MM (JST), e.g. 03:00")
        return f"{int(hours):02d}:{minutes}"


class SignerSettings(_Section):
    """`jpki signer`, the only long-running process that holds CA keys (no network port)."""

    # How often it looks for committed changes (one `PRAGMA data_version` when nothing changed;
    # on PostgreSQL a notification wakes it sooner).
    poll_seconds: float = Field(1.0, gt=0, le=60)
    # How often it signs an audit checkpoint over rows appended since the last one (the
    # serving daemon's events and renewals; it cannot sign them itself: no CA key backend).
    checkpoint_seconds: float = Field(60, ge=1, le=24 * 3600)


class RegistrySettings(_Section):
    municipalities_csv: Path = REPO_CONFIGS / "municipalities.csv"
    # "" is sqlite:/// + the data directory's registry.db; checked against the final data
    # directory (after --data-dir) by `load_settings` (registry/store.py `registry_file`).
    # postgresql://user@host/db selects PostgreSQL; $JPKI_REGISTRY_URL overrides this (keep a
    # password there, or in ~/.pgpass, rather than in the configuration file).
    url: str = Field("", max_length=4096)


class Settings(_Section):
    data_dir: Path = Path("var/dev")
    server: ServerSettings = ServerSettings()
    ca: CASettings = CASettings()
    keys: KeysSettings = KeysSettings()
    issuance: IssuanceSettings = IssuanceSettings()
    registry: RegistrySettings = RegistrySettings()
    revocation: RevocationSettings = RevocationSettings()
    events: EventsSettings = EventsSettings()
    fees: FeesSettings = FeesSettings()
    linkage: LinkageSettings = LinkageSettings()
    ocsp: OCSPSettings = OCSPSettings()
    crl: CRLSettings = CRLSettings()
    signer: SignerSettings = SignerSettings()
    source: str = Field("<defaults>", exclude=True)

    def with_data_dir(self, data_dir: Path | None) -> Settings:
        """`--data-dir` overrides the configured directory."""
        if data_dir is None:
            return self
        return self.model_copy(update={"data_dir": data_dir})


RELATIVE_PATHS = (("registry", "municipalities_csv"), ("fees", "tariff_file"),
                  ("server", "tls_cert_file"), ("server", "tls_key_file"))


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """File paths in the configuration are relative to the configuration file."""
    for section, key in RELATIVE_PATHS:
        table = raw.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str):
            path = Path(table[key])
            table[key] = path if path.is_absolute() else base / path


def load_settings(config: Path | None, data_dir: Path | None = None) -> Settings:
    """Read and validate the TOML file; name the file and the key of any bad value."""
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if config is not None:
        source = str(config)
        try:
            raw = tomllib.loads(config.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{config}: no such configuration file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{config}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config}: not valid TOML: {exc}") from None
        _resolve_paths(raw, config.resolve().parent)
    try:
        settings = Settings(**raw, source=source)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{source}: {key}: {first['msg']}") from None
    settings = settings.with_data_dir(data_dir)
    url = effective_url(settings.registry.url)
    if url != settings.registry.url:
        settings = settings.model_copy(update={
            "registry": settings.registry.model_copy(update={"url": url})})
        source = f"{source} (with ${URL_ENV})"
    try:
        registry_file(settings.registry.url, settings.data_dir)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return settings
