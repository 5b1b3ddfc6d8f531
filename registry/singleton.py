"""One process of a role per registry: two `jpki signer`s would both re-issue CRLs and renew
responder certificates (harmless for numbering, which the registry serialises, but wasteful
and confusing), so the second one refuses to start and says why.

SQLite: an flock on `<data dir>/<role>.lock` (only processes on this host share the file).
PostgreSQL: a session advisory lock on a connection of its own, held while the process runs,
so the rule holds across hosts; PostgreSQL releases it if the process dies.
"""

from __future__ import annotations

import fcntl
import os
import zlib
from collections.abc import Callable

from registry import datadir
from registry.errors import Conflict
from registry.store import Store


def claim(store: Store, role: str) -> Callable[[], None]:
    """Hold the role's lock; return the function that releases it. Raises Conflict if another
    process holds it."""
    refusal = (f"another jpki {role} is already running against this registry; run one"
               f" {role} per registry")
    if store.dialect == "postgresql":
        from registry.pg import connect

        conn = connect(store.url)
        key = zlib.crc32(f"jpki-{role}".encode())
        row = conn.execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()
        if not (row and row[0]):
            conn.close()
            raise Conflict(refusal)
        return conn.close
    path = store.data_dir / f"{role}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, datadir.PRIVATE_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Conflict(refusal) from None
    return lambda: os.close(fd)
