"""Issue 14, defect 2: the data directory (registry, keys, CRLs) is 0700/0600 under any umask.

The attack: with the default umask 022, `registry.db` and its -wal/-shm were 0644 in a 0755
directory, so every local user could read every resident's four facts. Reproduced here with a
real `jpki init`, `jpki issue`, a CRL run and a real daemon, all under umask 022.
"""

from __future__ import annotations

import gc
import os
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import CONFIG, REPO, free_port, issue_args, jpki


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def loose_paths(data_dir: Path) -> list[str]:
    """Every path under (and including) the data directory that is not exactly 0700 / 0600."""
    found = []
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        wanted = 0o700 if path.is_dir() else 0o600
        if mode != wanted:
            found.append(f"{path.relative_to(data_dir.parent)} {mode:o}")
    return found


def serve_once(data_dir: Path, log: Path) -> None:
    """Start the real daemon (it inherits umask 022), fetch a CRL through it, stop it."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "jpki.cli", "serve", "--config", str(CONFIG), "--data-dir",
             str(data_dir), "--host", "127.0.0.1", "--port", str(port),
             "--metrics-listen", ""],
            stdout=out, stderr=out, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        # the daemon serves the 0600 CRL files itself
        with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/crl/sign/g1/full.crl", timeout=10) as response:
            assert response.status == 200 and response.read()[:1] == b"\x30"
    finally:
        process.terminate()
        process.wait(20)


def test_everything_under_the_data_dir_is_private_under_umask_022(tmp_path: Path) -> None:
    data_dir = tmp_path / "var" / "data"
    with umask(0o022):
        assert jpki(data_dir, "init").code == 0
        issued = jpki(data_dir, *issue_args("r1", tmp_path / "out"))
        assert issued.code == 0, issued.err
        assert jpki(data_dir, "crl", "generate").code == 0
        serve_once(data_dir, tmp_path / "daemon.log")
    names = {p.name for p in data_dir.rglob("*")}
    assert {"registry.db", "registry.db-wal", "registry.db-shm", "ca-passphrase"} <= names
    assert any(name.endswith(".crl") for name in names)
    assert any(name.endswith(".key.pem") for name in names)
    assert loose_paths(data_dir) == []


@pytest.mark.parametrize("target", ["registry.db", "registry.db-wal", "."])
def test_a_registry_others_can_read_is_refused(data_dir: Path, target: str) -> None:
    path = data_dir / target
    assert jpki(data_dir, "audit", "verify").code == 0
    gc.collect()  # close that run's connection, which removes its -wal
    if not path.exists():
        path.write_bytes(b"")  # a -wal left by a crashed writer, created under umask 022
    os.chmod(path, 0o755 if path.is_dir() else 0o644)
    for args in (["audit", "verify"], ["show", "1"]):
        result = jpki(data_dir, *args)
        assert result.code == 78, result.err
        assert str(path if target != "." else data_dir) in result.err, result.err
        assert "readable by group or others" in result.err and "chmod" in result.err
    port = free_port()
    served = subprocess.run(
        [sys.executable, "-m", "jpki.cli", "serve", "--config", str(CONFIG), "--data-dir",
         str(data_dir), "--host", "127.0.0.1", "--port", str(port), "--metrics-listen", ""],
        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert served.returncode == 78, served.stderr
    assert "readable by group or others" in served.stderr and "chmod" in served.stderr
