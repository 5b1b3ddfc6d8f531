"""`[registry] url`: the default and an explicit SQLite URL open the data directory's registry;
a PostgreSQL URL opens that database ($JPKI_REGISTRY_URL overrides the file), and one that
cannot be reached is a configuration error naming the cause (never the password), never a
silent fallback to SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from jpki.cli import main
from jpki.settings import load_settings
from registry.errors import ConfigError
from tests.helpers import CONFIG, free_port, jpki


def _config(tmp_path: Path, url: str) -> Path:
    text = CONFIG.read_text().replace('url = ""', f'url = "{url}"', 1)
    assert text != CONFIG.read_text()
    config = tmp_path / "registry-url.toml"
    config.write_text(text)
    (tmp_path / "municipalities.csv").write_bytes(
        (CONFIG.parent / "municipalities.csv").read_bytes())
    return config


def test_the_default_is_the_data_directory_file(tmp_path: Path) -> None:
    settings = load_settings(CONFIG, tmp_path / "data")
    assert settings.registry.url == ""
    result = jpki(tmp_path / "data", "init")
    assert result.code == 0, result.err
    assert (tmp_path / "data" / "registry.db").is_file()


def test_an_explicit_sqlite_url_naming_that_file_is_accepted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = _config(tmp_path, f"sqlite:///{data / 'registry.db'}")
    assert load_settings(config, data).registry.url.startswith("sqlite:///")


def test_an_unreachable_postgresql_is_a_configuration_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    config = _config(tmp_path, f"postgresql://jpki:s3cret-pw@127.0.0.1:{port}/registry")
    assert load_settings(config, tmp_path / "data").registry.url.startswith("postgresql://")
    assert main(["init", "--config", str(config), "--data-dir", str(tmp_path / "data")]) == 78
    err = capsys.readouterr().err
    assert "cannot connect to PostgreSQL" in err and "s3cret-pw" not in err
    assert not (tmp_path / "data" / "registry.db").exists()  # no silent SQLite fallback


def test_the_environment_overrides_the_file(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JPKI_REGISTRY_URL", "postgresql://jpki@db.example/registry")
    settings = load_settings(CONFIG, tmp_path / "data")
    assert settings.registry.url == "postgresql://jpki@db.example/registry"


@pytest.mark.parametrize("url, message", [
    ("mysql://db/registry", "'mysql' is not a registry engine"),
    ("sqlite:///elsewhere/registry.db", "is not the data directory's registry"),
])
def test_other_urls_name_the_problem(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(_config(tmp_path, url), tmp_path / "data")


def test_the_cli_exits_with_ex_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    config = _config(tmp_path, "mysql://jpki@db.example/registry")
    assert main(["init", "--config", str(config), "--data-dir", str(tmp_path / "data")]) == 78
    err = capsys.readouterr().err
    assert "registry.url: 'mysql' is not a registry engine" in err
    assert "Traceback" not in err
