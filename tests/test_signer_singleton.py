"""One `jpki signer` per registry: a second one refuses to start, on either engine (SQLite:
a lock file in the data directory; PostgreSQL: an advisory lock, so across hosts too)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CONFIG, REPO, Signer, registry_env

pytestmark = pytest.mark.engines


def test_a_second_signer_refuses_to_start(data_dir: Path) -> None:
    first = Signer(data_dir).start()
    try:
        second = subprocess.run(
            [sys.executable, "-m", "jpki.cli", "signer", "--config", str(CONFIG),
             "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60,
            cwd=REPO, env={**os.environ, **registry_env(data_dir)})
        assert second.returncode != 0
        assert "another jpki signer is already running against this registry" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.process is not None and first.process.poll() is None  # untouched
    finally:
        first.stop()
    again = Signer(data_dir).start()  # the lock went with the first signer
    again.stop()
