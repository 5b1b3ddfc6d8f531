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


class EventsSettings(_Section):
    # POST /registry/events reads its body with this limit (not server.max_body_bytes, which
    # protects the OCSP responder); a larger body is refused with 413 before it is parsed.
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)


class FeesSettings(_Section):
    tariff_file: Path = REPO_CONFIGS / "tariff.toml"


class LinkageSettings(_Section):
    # Linkage and age answers require a validity check of the same certificate by the same
    # verifier within this window (DOMAIN.md: free, "but only after a validity check").
    check_window_minutes: int = Field(10, ge=1, le=24 * 60)


class RegistrySettings(_Section):
    municipalities_csv: Path = REPO_CONFIGS / "municipalities.csv"


class Settings(_Section):
    data_dir: Path = Path("var/dev")
    server: ServerSettings = ServerSettings()
    ca: CASettings = CASettings()
    issuance: IssuanceSettings = IssuanceSettings()
    registry: RegistrySettings = RegistrySettings()
    revocation: RevocationSettings = RevocationSettings()
    events: EventsSettings = EventsSettings()
    fees: FeesSettings = FeesSettings()
    linkage: LinkageSettings = LinkageSettings()
    source: str = Field("<defaults>", exclude=True)

    def with_data_dir(self, data_dir: Path | None) -> Settings:
        """`--data-dir` overrides the configured directory."""
        if data_dir is None:
            return self
        return self.model_copy(update={"data_dir": data_dir})


RELATIVE_PATHS = (("registry", "municipalities_csv"), ("fees", "tariff_file"))


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
    return settings.with_data_dir(data_dir)
