"""The PostgreSQL engine of the registry (psycopg 3), behind the same `Store` API as SQLite.

Query modules write each statement once with `?` placeholders; `translate` turns them into
psycopg's `%s` (a literal `%` doubled), outside quoted text only, and caches the result.

The transaction contract is SQLite's BEGIN IMMEDIATE: a write transaction takes one
transaction-scoped advisory lock before its first statement, so writers run one at a time
across every process and host, and read-then-write sequences (the audit chain, replay checks,
CRL numbers) cannot race. Because the lock is held until COMMIT, `state_changes` sequence
numbers also commit in order: a responder that has read up to seq N never later finds a
smaller one committed (which identity columns alone would not promise).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from registry.errors import ConfigError
from registry.pg_migrations import CHANGES_CHANNEL, MIGRATIONS
from registry.store import Params, Store

log = logging.getLogger("jpki.registry")

# pg_advisory_xact_lock key of the registry's single writer ("jpki" in ASCII).
WRITER_LOCK = 0x6A706B69
# pg_advisory_xact_lock key of schema migrations (several processes may start at once).
MIGRATION_LOCK = WRITER_LOCK + 1


@functools.lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """`?` -> `%s` and `%` -> `%%` outside single-quoted literals and double-quoted names."""
    out: list[str] = []
    quote = ""
    for char in sql:
        if quote:
            out.append("%%" if char == "%" else char)
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
            out.append(char)
        elif char == "?":
            out.append("%s")
        elif char == "%":
            out.append("%%")
        else:
            out.append(char)
    return "".join(out)


class PgConnection:
    """A psycopg connection that speaks the query modules' `?` dialect.

    Long-lived connections (the responder's, each signing thread's, the signer's) outlive a
    PostgreSQL restart or failover: a SELECT that meets the dead session is sent again on a
    new one (a read, so nothing happens twice); any other statement fails (the caller
    reports it, as for any failure) and the next one opens a new session instead of failing
    forever. A transaction that loses its session is lost and reported, never replayed.
    """

    def __init__(self, raw: psycopg.Connection[Any], url: str | None = None) -> None:
        self.raw = raw
        self.url = url  # None: never reconnect
        self.in_transaction = False  # set by PgStore: a lost transaction is never continued

    def usable(self) -> psycopg.Connection[Any]:
        """The session, a new one if the server dropped the old (psycopg marks it broken)."""
        if self.raw.broken and self.url is not None:
            if self.in_transaction:
                raise psycopg.OperationalError("PostgreSQL session lost inside a transaction;"
                                               " nothing of it was committed")
            log.warning("PostgreSQL session lost; reconnecting")
            self.raw = _dial(self.url)
        return self.raw

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        raw = self.usable()
        try:
            return raw.execute(translate(sql), parameters or None)
        except psycopg.OperationalError:
            if not (raw.broken and self.url is not None and _is_read(sql)):
                raise
            return self.usable().execute(translate(sql), parameters or None)

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> psycopg.Cursor[Any]:
        cursor = self.usable().cursor()
        cursor.executemany(translate(sql), seq_of_parameters)
        return cursor

    def cursor(self) -> PgConnection:
        """psycopg opens a cursor per statement; the connection itself serves as one."""
        return self

    def close(self) -> None:
        self.raw.close()


def scalar_text(conn: PgConnection, sql: bytes) -> str:
    """The one text value of a fixed, parameterless SELECT, straight through libpq.

    For the per-request freshness proof (registry/changes.py): psycopg's cursor (a new one per
    statement, its adaptation and result machinery) costs more than the round trip itself
    (`make bench-scale`: about 100 µs a proof through `execute` against 60 µs here, on a loaded
    2-core host). The connection's own lock is taken as psycopg's `execute` does, so a
    statement of another thread on the same connection is never interleaved. A session the
    server dropped is replaced and the read sent again, as `PgConnection.execute` does.
    """
    for attempt in (1, 2):
        raw = conn.usable()
        with raw.lock:
            result = raw.pgconn.exec_(sql)
        if result.status == psycopg.pq.ExecStatus.TUPLES_OK and result.ntuples == 1:
            value = result.get_value(0, 0)
            return bytes(value).decode() if value is not None else ""
        if attempt == 1 and raw.broken and conn.url is not None and not conn.in_transaction:
            continue
        message = (result.error_message or b"no row").decode(errors="replace").strip()
        raise psycopg.OperationalError(f"{sql.decode()}: {message}")
    raise AssertionError("unreachable")


class _Pools:
    """One psycopg_pool per (process, URL): short-lived stores (a /healthz check, a metrics
    scrape, each CLI step) borrow a connection instead of dialling and migrating each time.

    Keyed by pid too: a pool's worker threads and sockets do not survive fork (CRL workers),
    so a child builds its own. Migrations run once per process and URL, on the first store.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[tuple[int, str], ConnectionPool[Any]] = {}

    def get(self, url: str) -> ConnectionPool[Any]:
        key = (os.getpid(), url)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                migrate(connect(url), close=True)  # fails fast, with the cause, if unreachable
                pool = ConnectionPool(url, min_size=1, max_size=POOL_SIZE, open=True,
                                      kwargs={"autocommit": True}, name="jpki-registry",
                                      check=ConnectionPool.check_connection)
                self._pools[key] = pool
            return pool

    def close(self, url: str | None = None) -> None:
        """Close this process's pools (of one URL, or all): e.g. before the database is
        copied or dropped, which PostgreSQL refuses while sessions are connected."""
        with self._lock:
            keys = [key for key in self._pools if url is None or key[1] == url]
            pools = [self._pools.pop(key) for key in keys]
        for pool in pools:
            pool.close()


_POOLS = _Pools()
close_pools = _POOLS.close
# Stores borrowed at once by one process: the loop's, the events writer, the fee journal's
# fold, CRL freshness and metrics checks (the OCSP signing threads hold their own).
POOL_SIZE = 16


def _is_read(sql: str) -> bool:
    return sql.lstrip()[:6].upper() == "SELECT"


def _dial(url: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, autocommit=True)
    except psycopg.OperationalError as exc:
        raise ConfigError(f"registry.url: cannot connect to PostgreSQL: {_first_line(exc)}"
                          ) from None


def connect(url: str) -> PgConnection:
    """An autocommit connection (a statement outside `transaction()` commits on its own) that
    reconnects after the server dropped it."""
    return PgConnection(_dial(url), url)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def schema_version(conn: PgConnection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY,"
                 " applied_at BIGINT NOT NULL DEFAULT (extract(epoch FROM now())::bigint))")
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: PgConnection, close: bool = False) -> int:
    """Apply every pending version in one transaction, under the migration lock."""
    try:
        return _migrate(conn)
    finally:
        if close:
            conn.close()


def _migrate(conn: PgConnection) -> int:
    with conn.raw.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
        current = schema_version(conn)
        for version, statements in enumerate(MIGRATIONS, start=1):
            if version > current:
                for statement in statements:
                    conn.raw.execute(statement.encode())  # DDL with `$$` bodies: no params
                conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))
    return len(MIGRATIONS)


def listen(url: str) -> psycopg.Connection[Any]:
    """A connection that LISTENs for committed state changes (registry/changes.py)."""
    raw = _dial(url)
    raw.execute(f"LISTEN {CHANGES_CHANNEL}".encode())
    return raw


class PgStore(Store):
    """The scale-out engine: one PostgreSQL database shared by every process and host."""

    dialect = "postgresql"

    def __init__(self, data_dir: Path, url: str, conn: PgConnection,
                 pool: ConnectionPool[Any] | None = None) -> None:
        super().__init__(data_dir, url)
        self._conn = conn
        self._pool = pool
        self._borrowed = conn.raw  # what goes back to the pool
        self._transaction: Any = None

    @classmethod
    def connect(cls, data_dir: Path, url: str) -> PgStore:
        pool = _POOLS.get(url)
        try:
            raw = pool.getconn(timeout=30)
        except PoolTimeout:
            raise ConfigError("registry.url: no PostgreSQL connection within 30 s (pool of"
                              f" {POOL_SIZE} busy, or the server stopped answering)") from None
        return cls(data_dir, url, PgConnection(raw, url), pool)

    def close(self) -> None:
        """Give the connection back to the pool (which rolls back anything left open, and
        drops a broken one); a session opened after a lost one is closed instead."""
        if self._pool is None:
            self._conn.close()
            return
        pool, self._pool = self._pool, None
        if self._conn.raw is not self._borrowed:
            self._conn.raw.close()
        pool.putconn(self._borrowed)

    @property
    def conn(self) -> PgConnection:
        return self._conn

    def reader(self) -> PgConnection:
        return connect(self.url)

    def _begin(self) -> None:
        self._transaction = self._conn.usable().transaction()
        self._transaction.__enter__()
        self._conn.in_transaction = True
        try:
            self._conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITER_LOCK,))
        except BaseException:
            self._end(commit=False)
            raise

    def _end(self, commit: bool) -> None:
        transaction, self._transaction = self._transaction, None
        self._conn.in_transaction = False
        if commit:
            transaction.__exit__(None, None, None)
        else:
            # psycopg rolls back when the block exits with an exception.
            error = RuntimeError("rolled back")
            transaction.__exit__(type(error), error, None)

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Synthetic rows only: commits without waiting for the WAL flush (PostgreSQL stays
        consistent after a crash; only the last transactions may be lost).

        Where the role may (a superuser, or one granted SET on it), triggers are off too
        (session_replication_role = replica): PostgreSQL checks each foreign key of each
        COPYed row with a trigger, about half the time of a synthetic load (`make
        bench-scale`), while demo/populate.py writes references that hold by construction
        (the residents of the same transaction, the current CA generations)."""
        self._conn.execute("SET synchronous_commit = off")
        try:
            self._conn.execute("SET session_replication_role = replica")
            relaxed = True
        except psycopg.errors.InsufficientPrivilege:
            relaxed = False  # autocommit: the refused SET left no transaction behind
        try:
            yield
        finally:
            if relaxed:
                self._conn.execute("SET session_replication_role = DEFAULT")
            self._conn.execute("SET synchronous_commit = on")

    def query(self, sql: str, params: Params = ()) -> list[dict[str, Any]]:
        """Rows as dicts; a read that met a dropped session is sent again on a new one."""
        for attempt in (1, 2):
            raw = self._conn.usable()
            try:
                with raw.cursor(row_factory=dict_row) as cursor:
                    cursor.execute(translate(sql), params or None)
                    return list(cursor.fetchall()) if cursor.description else []
            except psycopg.OperationalError:
                if attempt == 2 or not (raw.broken and _is_read(sql)):
                    raise
        raise AssertionError("unreachable")


def copy_rows(store: PgStore, table: str, columns: Sequence[str],
              rows: Sequence[Sequence[object]]) -> None:
    """Bulk rows through COPY (synthetic populations of millions): the fastest path in."""
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with store.conn.raw.cursor() as cursor, cursor.copy(statement.encode()) as copy:
        for row in rows:
            copy.write_row(row)
