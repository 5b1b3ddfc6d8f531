"""Shared test helpers: real CLI runs, real openssl, a real daemon on 127.0.0.1."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jpki.cli import main

REPO = Path(__file__).resolve().parent.parent
# The development configuration with cheap key-file KDFs (configs/test.toml says why).
CONFIG = REPO / "configs" / "test.toml"


# The registry engine of each test data directory: a data directory listed here keeps its
# registry in that PostgreSQL database (tests/pg_cluster.py), every other one in its own
# registry.db. The CLI runs, daemons and signers started on it get the URL through
# $JPKI_REGISTRY_URL, as an operator's would.
REGISTRY_URLS: dict[Path, str] = {}


# Template data directories on PostgreSQL: how to make a copy of their database.
REGISTRY_CLONERS: dict[Path, Any] = {}


def copy_data_dir(template: Path, target: Path) -> Path:
    """A copy of an initialised data directory, with a copy of its registry on its engine."""
    shutil.copytree(template, target)
    cloner = REGISTRY_CLONERS.get(template.resolve())
    if cloner is not None:
        REGISTRY_URLS[target.resolve()] = cloner()
    return target


def registry_env(data_dir: Path) -> dict[str, str]:
    url = REGISTRY_URLS.get(data_dir.resolve())
    return {"JPKI_REGISTRY_URL": url} if url else {}


@contextlib.contextmanager
def registry_environment(data_dir: Path) -> Any:
    """$JPKI_REGISTRY_URL set to `data_dir`'s engine for the block (unset for SQLite)."""
    previous = os.environ.pop("JPKI_REGISTRY_URL", None)
    os.environ.update(registry_env(data_dir))
    try:
        yield
    finally:
        os.environ.pop("JPKI_REGISTRY_URL", None)
        if previous is not None:
            os.environ["JPKI_REGISTRY_URL"] = previous


@contextlib.contextmanager
def registry_connection(data_dir: Path) -> Any:
    """A connection of its own to `data_dir`'s registry (each statement commits at once), as
    an intruder with database access, or another process, would hold."""
    from registry.store import Store

    store = Store.open(data_dir, REGISTRY_URLS.get(data_dir.resolve(), ""))
    try:
        yield store.conn
    finally:
        store.close()


def registry_rows(data_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Rows of one statement on `data_dir`'s registry, through a connection of its own (what
    another process sees); a statement that writes commits at once."""
    from registry.store import Store

    store = Store.open(data_dir, REGISTRY_URLS.get(data_dir.resolve(), ""))
    try:
        cursor = store.conn.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description else []
    finally:
        store.close()


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        lines = [line for line in self.out.splitlines() if line.strip()]
        return json.loads(lines[-1])

    @property
    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


def jpki(data_dir: Path, *args: str) -> CliResult:
    """Run the real CLI in-process (same argv parsing, same error mapping)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            registry_environment(data_dir):
        try:
            code = main([*args, "--config", str(CONFIG), "--data-dir", str(data_dir)])
        except SystemExit as exc:  # argparse errors
            code = int(exc.code or 0)
    return CliResult(code, out.getvalue(), err.getvalue())


def openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60,
                          input=input.decode() if input else None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Daemon:
    """`jpki serve` as a real subprocess on 127.0.0.1, /metrics on a second free port.

    With `tls_ca` (the CA of the configured server.tls_cert_file) the public port speaks
    https and the start-up probe verifies the server certificate against that CA.
    """

    def __init__(self, data_dir: Path, port: int | None = None,
                 extra_env: dict[str, str] | None = None, config: Path = CONFIG,
                 tls_ca: Path | None = None) -> None:
        self.data_dir = data_dir
        self.config = config
        self.port = port or free_port()
        # a free port per daemon, not the default 9108: test runs share the machine
        self.metrics_listen = f"127.0.0.1:{free_port()}"
        self.env = {**os.environ, **registry_env(data_dir), **(extra_env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.ssl = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """The metrics listener (server.metrics_listen): /metrics is not on the public port."""
        return f"http://{self.metrics_listen}/metrics"

    def start(self, timeout: float = 20.0) -> Daemon:
        log = open(self.data_dir / f"daemon-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jpki.cli", "serve", "--config", str(self.config),
             "--data-dir", str(self.data_dir), "--host", "127.0.0.1", "--port", str(self.port),
             "--metrics-listen", self.metrics_listen],
            stdout=log, stderr=log, env=self.env, cwd=REPO,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}: "
                                   + (self.data_dir / f"daemon-{self.port}.log").read_text())
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1,
                                            context=self.ssl) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("daemon did not come up")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class Signer:
    """`jpki signer` as a real subprocess (it listens on no port: readiness is its log line)."""

    def __init__(self, data_dir: Path, config: Path = CONFIG,
                 extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.config = config
        self.env = {**os.environ, **registry_env(data_dir), **(extra_env or {})}
        self.log = data_dir.parent / "signer.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Signer:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jpki.cli", "signer", "--config", str(self.config),
                 "--data-dir", str(self.data_dir)],
                stdout=log, stderr=log, env=self.env, cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"signer exited with {self.process.returncode}: "
                                   + self.log.read_text())
            if "signer running" in self.log.read_text():
                return self
            time.sleep(0.05)
        raise RuntimeError("signer did not come up: " + self.log.read_text())

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def config_text(replacements: dict[str, str]) -> str:
    """The test configuration with its relative paths made absolute (so that a copy works
    from any directory) and each `old -> new` line replacement applied; a replacement that
    matches nothing is an error, so a renamed setting cannot silently fall back."""
    text = CONFIG.read_text(encoding="utf-8")
    absolute = {
        'municipalities_csv = "municipalities.csv"':
            f'municipalities_csv = "{REPO / "configs" / "municipalities.csv"}"',
        'tariff_file = "tariff.toml"': f'tariff_file = "{REPO / "configs" / "tariff.toml"}"',
    }
    for old, new in {**absolute, **replacements}.items():
        if old not in text:
            raise AssertionError(f"{CONFIG} has no {old!r} to replace")
        text = text.replace(old, new)
    return text


def key_backend_replacements(backend: str, ca_token: str, ocsp_token: str) -> dict[str, str]:
    """Both key backends set to `backend`, each on its own PKCS#11 token label."""
    return {'\nbackend = "file"': f'\nbackend = "{backend}"',  # not responder_backend's line
            '\npkcs11_token = "jpki"': f'\npkcs11_token = "{ca_token}"',
            '\nresponder_backend = "file"': f'\nresponder_backend = "{backend}"',
            '\nresponder_pkcs11_token = "jpki-ocsp"':
                f'\nresponder_pkcs11_token = "{ocsp_token}"'}


def softhsm_tokens(tmp: Path, tokens: dict[str, str]) -> dict[str, str]:
    """Fresh SoftHSM2 tokens {label: user PIN} in a token directory of our own.

    Returns the environment that points SoftHSM2 at it (SOFTHSM2_CONF); the PINs are the
    caller's to hand out, each to the process that may log into that token.
    """
    import pytest

    if shutil.which("softhsm2-util") is None or not Path(SOFTHSM_MODULE).exists():
        pytest.skip("SoftHSM2 is not installed (`make test` installs the softhsm2 package)")
    directory = tmp / "tokens"
    directory.mkdir()
    conf = tmp / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {directory}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n", encoding="utf-8")
    env = {"SOFTHSM2_CONF": str(conf)}
    for label, pin in tokens.items():
        made = subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label,
                               "--so-pin", "12345678", "--pin", pin], capture_output=True,
                              text=True, env={**os.environ, **env}, timeout=60)
        assert made.returncode == 0, made.stderr
    return env


ISSUE_DEFAULTS = {
    "name": "山田 太郎",
    "dob": "1980-04-02",
    "sex": "male",
    "address": "東京都新宿区西新宿二丁目8番1号",
    "municipality_code": "13104",
    "sign_pin": "abc12345",
    "auth_pin": "1234",
}


def issue_args(resident_id: str, out: Path, **overrides: str | None) -> list[str]:
    values = {**ISSUE_DEFAULTS, **overrides}
    args = ["issue", "--resident-id", resident_id, "--out", str(out)]
    for key, value in values.items():
        if value is None:
            continue
        args += [f"--{key.replace('_', '-')}", value]
    return args
