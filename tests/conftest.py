"""Fixtures: one initialised data directory per session, copied per test (CA keygen is slow)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from jpki.context import Context
from jpki.settings import load_settings
from tests.helpers import CONFIG, Daemon, jpki

os.environ.pop("JPKI_CA_PASSPHRASE", None)


@pytest.fixture(scope="session")
def template_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("template") / "data"
    result = jpki(data_dir, "init")
    assert result.code == 0, result.err
    return data_dir


@pytest.fixture
def data_dir(template_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(template_dir, target)
    return target


@pytest.fixture
def context(data_dir: Path) -> Iterator[Context]:
    ctx = Context(load_settings(CONFIG, data_dir))
    yield ctx
    if "store" in ctx.__dict__:
        ctx.store.close()


@pytest.fixture
def daemon(data_dir: Path) -> Iterator[Daemon]:
    server = Daemon(data_dir).start()
    yield server
    server.stop()
