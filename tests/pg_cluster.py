"""A throwaway PostgreSQL cluster for the test session: Debian's `postgresql` binaries, a
temporary directory, a Unix socket only (no TCP listener), stopped when the session ends.

PostgreSQL refuses to run as root (CI runs as root): initdb, pg_ctl and the server then run as
the `postgres` user that the Debian package creates. The test cluster trades durability for speed
(fsync off): the crash tests kill our processes, never PostgreSQL itself. `make bench-scale`
starts one with fsync on (`start(durable=True)`).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from tests.helpers import free_port


def _bindir() -> Path:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not versions:
        raise RuntimeError("PostgreSQL server binaries not found: `make test` installs Debian's"
                           " postgresql package (make deps)")
    return Path(versions[-1]).parent


class Cluster:
    def __init__(self) -> None:
        # Not under pytest's base temp: that is private to root, and the server runs as
        # `postgres`, which must reach its own directory.
        self.root = Path(tempfile.mkdtemp(prefix="jpki-postgresql-"))
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.port = free_port()
        self.bindir = _bindir()
        self._serial = 0
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}")

    def start(self, durable: bool = False, settings: str = "") -> Cluster:
        """`durable`: fsync and full-page writes on, PostgreSQL's defaults (the scale bench
        measures an honest server); `settings`: more `-c name=value` options."""
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            os.chmod(self.root, 0o700)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8",
                  "--no-sync")
        safety = "on" if durable else "off"
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=''"
                   f" -c fsync={safety} -c synchronous_commit=on -c full_page_writes={safety}"
                   f" -c max_connections=300 {settings}")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.root / "server.log"), "-w", "start")
        return self

    def restart(self) -> None:
        """A restart as an operator's (or a failover's): every session is dropped."""
        # -l: the new server must not inherit our pipes (the run would wait for them forever);
        # its options are the ones it was started with (postmaster.opts).
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-l",
                  str(self.root / "server.log"), "-w", "restart")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@/{database}?host={self.socket_dir}&port={self.port}"

    def create_database(self, template: str | None = None) -> str:
        """A new empty database (or a copy of `template`); returns its URL."""
        self._serial += 1
        name = f"jpki_{os.getpid()}_{self._serial}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            clause = f" TEMPLATE {template}" if template else ""
            conn.execute(f"CREATE DATABASE {name}{clause}".encode())
        return self.url(name)
