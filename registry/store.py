"""The registry store: one API, two engines.

SQLite (the default, embedded): one file in the data directory, WAL mode, synchronous=FULL.
WAL lets the daemon's readers run beside the CLI's writers; synchronous=FULL makes every
commit durable before it returns, so a revocation that was acknowledged survives `kill -9`
and a power cut. Writes go through `transaction()` (BEGIN IMMEDIATE), which takes the write
lock up front so that read-then-write sequences (the audit chain, replay checks) cannot race.

PostgreSQL (`[registry] url = "postgresql://..."`, registry/pg.py): the same statements, the
same transaction contract (one writer at a time, taken up front), for many responders on
many hosts. Query modules write SQL once, with `?` placeholders, in the dialect both engines
share (`INSERT ... ON CONFLICT`, `RETURNING id`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import sqlite_utils

from registry import datadir
from registry.errors import ConfigError
from registry.migrations import migrate

DB_NAME = "registry.db"
Params = tuple[Any, ...] | dict[str, Any]
# A bulk load's page cache: the serial and CRL indexes of tens of millions of rows.
BULK_CACHE_KIB = 256 * 1024
# Overrides `[registry] url`: a PostgreSQL password belongs in the environment, not in a
# configuration file that is copied around.
URL_ENV = "JPKI_REGISTRY_URL"


class Cursor(Protocol):
    """What query modules use of a cursor, alike in sqlite3 and psycopg."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What query modules use of a connection: sqlite3's, or registry/pg.py's wrapper."""

    def execute(self, sql: str, parameters: Any = (), /) -> Any: ...
    def executemany(self, sql: str, seq_of_parameters: Any, /) -> Any: ...
    def cursor(self) -> Any: ...
    def close(self) -> None: ...


def read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to the registry file, for one thread of a reader (the OCSP
    signing threads each hold one: sqlite3 drops the GIL around every call)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=True,
                           timeout=30)


def is_postgresql(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def effective_url(url: str) -> str:
    """`$JPKI_REGISTRY_URL` if set, else the configured `[registry] url`."""
    return os.environ.get(URL_ENV) or url


def registry_file(url: str, data_dir: Path) -> Path:
    """The registry file that `[registry] url` names, checked before anything is opened.

    "" means `sqlite:///` + the data directory's registry.db, the default. Every process that
    reads the registry (CRL workers, metrics, the responder's readers) finds it in the data
    directory, so a SQLite URL must name that file. A PostgreSQL URL names no file: the
    data directory still holds keys, journals and published files.
    """
    default = data_dir / DB_NAME
    if not url:
        return default
    if is_postgresql(url):
        return default
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"registry.url: {url.split(':', 1)[0]!r} is not a registry engine;"
                          f" use sqlite:///{default} or postgresql://...")
    named = Path(url.removeprefix("sqlite:///"))  # sqlite:////abs/path -> /abs/path
    if named.resolve() != default.resolve():
        raise ConfigError(f"registry.url: {named} is not the data directory's registry"
                          f" ({default}); a registry file elsewhere is not supported yet")
    return default


class Store:
    """A connection to the registry database; one per thread or task that writes.

    `open` picks the engine from the URL. A store also knows how to make more connections of
    its kind (`reader`, `reopen`): the OCSP signing threads, CRL workers and the fee journal
    open their own, never sharing one across threads.
    """

    dialect = "sqlite"

    def __init__(self, data_dir: Path, url: str) -> None:
        self.data_dir = data_dir
        self.url = url
        self._lock = threading.RLock()
        self._depth = 0
        self._after_commit: list[Callable[[], None]] = []

    @classmethod
    def open(cls, data_dir: Path, url: str = "") -> Store:
        """Open (creating, 0700/0600) the registry; a data dir others can read is refused.

        Migrations run here, for either engine, under that engine's write lock.
        """
        url = effective_url(url)
        registry_file(url, data_dir)
        if is_postgresql(url):
            from registry.pg import PgStore  # psycopg is imported only when it is used

            datadir.prepare_dir(data_dir)
            return PgStore.connect(data_dir, url)
        return SqliteStore.connect(data_dir, url)

    def reopen(self) -> Store:
        """Another store on the same registry (for another thread or process)."""
        return Store.open(self.data_dir, self.url)

    @property
    def conn(self) -> Connection:
        raise NotImplementedError

    def reader(self) -> Connection:
        """A new connection for one reading thread (the caller closes it)."""
        raise NotImplementedError

    def _begin(self) -> None:
        raise NotImplementedError

    def _end(self, commit: bool) -> None:
        raise NotImplementedError

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One writer at a time, taken up front; nested calls join the outer transaction."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            self._begin()
            self._depth = 1
            try:
                yield self.conn
            except BaseException:
                self._end(commit=False)
                self._after_commit.clear()
                raise
            else:
                self._end(commit=True)
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
        """Synthetic rows only: the engine may trade durability of the last commits for speed
        (a re-run of the bulk load adds them again)."""
        yield

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def one(self, sql: str, params: Params = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def close(self) -> None:
        self.conn.close()


class SqliteStore(Store):
    """The embedded engine: the data directory's registry.db through sqlite-utils."""

    def __init__(self, data_dir: Path, url: str, path: Path) -> None:
        super().__init__(data_dir, url)
        self.path = path
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        self.db = sqlite_utils.Database(conn)

    @classmethod
    def connect(cls, data_dir: Path, url: str) -> SqliteStore:
        store = cls(data_dir, url, datadir.prepare(data_dir, DB_NAME))
        migrate(store.db)
        return store

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def reader(self) -> sqlite3.Connection:
        return read_only(self.path)

    def _begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def _end(self, commit: bool) -> None:
        self.conn.execute("COMMIT" if commit else "ROLLBACK")

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """A larger page cache, and WAL commits without fsync (SQLite: synchronous=NORMAL in
        WAL mode stays consistent after a crash; it may only lose the last transactions)."""
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
