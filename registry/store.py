"""The SQLite store: one file in the data directory, WAL mode, synchronous=FULL.

WAL lets the daemon's readers run beside the CLI's writers; synchronous=FULL makes every
commit durable before it returns, so a revocation that was acknowledged survives `kill -9`
and a power cut. Writes go through `transaction()` (BEGIN IMMEDIATE), which takes the write
lock up front so that read-then-write sequences (the audit chain, replay checks) cannot race.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from registry import datadir
from registry.errors import ConfigError
from registry.migrations import migrate

DB_NAME = "registry.db"
Params = tuple[Any, ...] | dict[str, Any]
# A bulk load's page cache: the serial and CRL indexes of tens of millions of rows.
BULK_CACHE_KIB = 256 * 1024


def read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to the registry file, for one thread of a reader (the OCSP
    signing threads each hold one: sqlite3 drops the GIL around every call)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=True,
                           timeout=30)


def registry_file(url: str, data_dir: Path) -> Path:
    """The registry file that `[registry] url` names, checked before anything is opened.

    "" means `sqlite:///` + the data directory's registry.db, the default. Every process that
    reads the registry (CRL workers, metrics, the responder's readers) finds it in the data
    directory, so a SQLite URL must name that file for now; `postgresql://` is the engine of
    issue 13 and is refused until it exists, rather than silently falling back to SQLite.
    """
    default = data_dir / DB_NAME
    if not url:
        return default
    if url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("registry.url: PostgreSQL is not supported yet; leave the URL empty"
                          f" or use sqlite:///{default}")
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"registry.url: {url.split(':', 1)[0]!r} is not a registry engine;"
                          f" use sqlite:///{default}")
    named = Path(url.removeprefix("sqlite:///"))  # sqlite:////abs/path -> /abs/path
    if named.resolve() != default.resolve():
        raise ConfigError(f"registry.url: {named} is not the data directory's registry"
                          f" ({default}); a registry file elsewhere is not supported yet")
    return default


class Store:
    """A connection to the registry database; one per thread or task that writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        self.db = sqlite_utils.Database(conn)
        self._lock = threading.RLock()
        self._depth = 0
        self._after_commit: list[Callable[[], None]] = []

    @classmethod
    def open(cls, data_dir: Path, url: str = "") -> Store:
        """Open (creating, 0700/0600) the registry; a data dir others can read is refused."""
        registry_file(url, data_dir)
        store = cls(datadir.prepare(data_dir, DB_NAME))
        migrate(store.db)
        return store

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; nested calls join the outer transaction."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                self._after_commit.clear()
                raise
            else:
                self.conn.execute("COMMIT")
            finally:
                self._depth = 0
            callbacks, self._after_commit = self._after_commit, []
            for callback in callbacks:
                callback()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the outermost transaction has committed (now, if none is open).

        Notifications must never announce a change that a rollback could still undo.
        """
        if self._depth:
            self._after_commit.append(callback)
        else:
            callback()

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Synthetic rows only: a larger page cache, and WAL commits without fsync (SQLite:
        synchronous=NORMAL in WAL mode stays consistent after a crash; it may only lose the
        last transactions, which a re-run of the bulk load adds again)."""
        conn = self.conn
        previous = (int(conn.execute("PRAGMA synchronous").fetchone()[0]),
                    int(conn.execute("PRAGMA cache_size").fetchone()[0]))
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
        try:
            yield
        finally:
            conn.execute(f"PRAGMA synchronous={previous[0]}")
            conn.execute(f"PRAGMA cache_size={previous[1]}")

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        return list(self.db.query(sql, params))

    def one(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def close(self) -> None:
        self.conn.close()
