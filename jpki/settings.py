"""One typed settings model, validated at start-up.

Every field has a safe default so that an empty file (or no file) yields a working development
setup on 127.0.0.1; unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from registry.errors import ConfigError

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_base_url: str = "http://127.0.0.1:8080"
    max_body_bytes: int = Field(16384, ge=1024, le=16 * 1024 * 1024)

    @field_validator("public_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class CASettings(_Section):
    key_size: int = Field(2048, ge=2048, le=8192)
    validity_years: int = Field(10, ge=1, le=30)
    passphrase_env: str = "JPKI_CA_PASSPHRASE"
    passphrase_file: str = "ca-passphrase"
    cps_uri: str = "http://127.0.0.1:8080/cps"


class IssuanceSettings(_Section):
    birthdays: int = Field(5, ge=1, le=10)
    minimum_signature_age: int = Field(15, ge=0, le=30)


class RevocationSettings(_Section):
    # `jpki revoke --at` may back-date a revocation by at most this much (RFC 5280 §5.3.2
    # invalidityDate is not used; the revocation time itself is back-dated, so keep it short).
    backdate_window_hours: int = Field(72, ge=0, le=24 * 30)


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
    # Whether the daemon runs the daily schedule (the CLI can always generate on demand).
    schedule_enabled: bool = True

    @field_validator("daily_time")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        hours, _, minutes = value.partition(":")
        if not (hours.isdigit() and minutes.isdigit() and int(hours) < 24
                and int(minutes) < 60 and len(minutes) == 2):
            raise ValueError("must be HH:MM (JST), e.g. 03:00")
        return f"{int(hours):02d}:{minutes}"


class RegistrySettings(_Section):
    municipalities_csv: Path = REPO_CONFIGS / "municipalities.csv"


class Settings(_Section):
    data_dir: Path = Path("var/dev")
    server: ServerSettings = ServerSettings()
    ca: CASettings = CASettings()
    issuance: IssuanceSettings = IssuanceSettings()
    registry: RegistrySettings = RegistrySettings()
    revocation: RevocationSettings = RevocationSettings()
    crl: CRLSettings = CRLSettings()
    source: str = Field("<defaults>", exclude=True)

    def with_data_dir(self, data_dir: Path | None) -> Settings:
        """`--data-dir` overrides the configured directory."""
        if data_dir is None:
            return self
        return self.model_copy(update={"data_dir": data_dir})


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    registry = raw.get("registry")
    if isinstance(registry, dict) and isinstance(registry.get("municipalities_csv"), str):
        path = Path(registry["municipalities_csv"])
        registry["municipalities_csv"] = path if path.is_absolute() else base / path


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
    return settings.with_data_dir(data_dir)
