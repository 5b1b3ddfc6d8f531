"""Folding: the rows of durable journal frames into the ledger, exactly once, in order.

Folding inserts the rows of frames into `ledger` and moves the journal's mark
(`fee_journal_marks.seq`) in the same transaction, so a crash between journal and ledger
neither loses a row (the frame is still in its segment, above the mark) nor counts one twice
(a frame at or below the mark is skipped). Frames are folded in sequence order, which decides
the status-confirmation once-per-year rule exactly as a single writer would.

One mark per journal (`fee_journal_marks`, registry migration 12), keyed by the journal's
identity (`journal_key`), not by the worker index: responder hosts sharing one PostgreSQL
registry each have a worker 0. `fee_journal_folds` is the single mark of the journal before
workers existed: worker 0 starts from it until its own row is written. Folds of different
journals are serialised by the registry's write lock, so the once-per-year rule still charges
exactly one check per verifier, resident and year; which of two concurrent checks on
different workers is the charged one follows fold order.
"""

from __future__ import annotations

import fcntl
import os
import socket
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fees import progress
from fees.frames import Frame, contiguous, read_frames
from registry import certificates, datadir, verifiers
from registry.store import Store

DIR_NAME = "fees-journal"
ID_FILE = "id"
_INSERT = ("INSERT INTO ledger (at, month, year, verifier_id, check_type, channel, serial,"
           " resident_id, status_confirmation, rule_id, amount_yen) VALUES ")
_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# Rows per INSERT statement when folding: one multi-row statement of 200 rows costs 2.3-2.8 µs
# a row against 3.7-4.2 µs through executemany (bench/fee_path_costs.py, the ledger's
# indexes); 2,200 parameters stay far below SQLite's limit of 32,766.
_CHUNK = 200
_INSERT_CHUNK = _INSERT + ", ".join([_VALUES] * _CHUNK)


def insert(conn: Any, rows: list[Any]) -> None:
    """The rows into the ledger, in order, _CHUNK rows per statement."""
    full = len(rows) - len(rows) % _CHUNK
    for start in range(0, full, _CHUNK):
        conn.execute(_INSERT_CHUNK, [v for row in rows[start:start + _CHUNK] for v in row])
    if full < len(rows):
        tail = rows[full:]
        conn.execute(_INSERT + ", ".join([_VALUES] * len(tail)), [v for row in tail for v in row])


def journal_dir(data_dir: Path, worker: int = 0) -> Path:
    """The journal of serving worker `worker` (0: also the only one of a single process)."""
    return data_dir / (DIR_NAME if worker == 0 else f"{DIR_NAME}-{worker}")


def journal_dirs(data_dir: Path) -> list[tuple[int, Path]]:
    """(worker, directory) of every journal present, also of workers no longer configured
    (server.workers lowered): their frames are still to be folded."""
    found = [(0, journal_dir(data_dir))] if journal_dir(data_dir).is_dir() else []
    for path in data_dir.glob(f"{DIR_NAME}-*"):
        suffix = path.name[len(DIR_NAME) + 1:]
        if suffix.isdigit() and int(suffix) > 0 and path.is_dir():
            found.append((int(suffix), path))
    return sorted(found)


def journal_key(data_dir: Path, worker: int = 0) -> str:
    """The identity of a journal: host name, worker and a random part, made once and kept in
    its directory. Provision a new responder host without the `fees-journal*` directories of
    another (a copied `id` would make two journals share one mark)."""
    cached = _KEYS.get((data_dir, worker))
    if cached is not None:
        return cached
    directory = datadir.make_private_dirs(journal_dir(data_dir, worker))
    path = directory / ID_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    key = f"{socket.gethostname()}/{worker}/{uuid.uuid4().hex[:16]}"
    staging = directory / f".{ID_FILE}.{os.getpid()}"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, datadir.PRIVATE_FILE)
    try:
        os.write(fd, key.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(staging, path)  # the first process to name the journal wins
    except FileExistsError:
        pass
    finally:
        os.unlink(staging)
    key = path.read_text(encoding="ascii").strip()
    _KEYS[(data_dir, worker)] = key
    return key


_KEYS: dict[tuple[Path, int], str] = {}


def _mark(conn: Any, data_dir: Path, worker: int) -> int:
    row = conn.execute("SELECT seq FROM fee_journal_marks WHERE journal = ?",
                       (journal_key(data_dir, worker),)).fetchone()
    if row is None and worker == 0:
        row = conn.execute("SELECT seq FROM fee_journal_folds WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def folded_mark(store: Store, worker: int = 0) -> int:
    with store.transaction() as conn:
        return _mark(conn, store.data_dir, worker)


class Residents:
    """serial -> resident id, memoized (a certificate's resident never changes)."""

    def __init__(self) -> None:
        self._known: dict[str, str | None] = {}

    def of(self, store: Store, serial: str) -> str | None:
        if serial not in self._known:
            self._known[serial] = certificates.resident_of(store, serial)
        return self._known[serial]


class Names:
    """verifier id -> name for the metrics, read from the registry on a miss (a verifier's
    name never changes; a new verifier is one more read)."""

    def __init__(self) -> None:
        self.known: dict[int, str] = {}

    def cover(self, store: Store, verifier_ids: set[int]) -> dict[int, str]:
        if not verifier_ids <= self.known.keys():
            self.known = verifiers.names_by_id(store)
        return self.known


def fold(store: Store, frames: Sequence[Frame], residents: Residents | None = None,
         worker: int = 0) -> int:
    """Insert the rows of `frames` (sequence number, repeat rule id, rows) of `worker`'s
    journal, sorted by sequence number, skipping frames at or below its mark; return the new
    mark. One transaction."""
    residents = residents or Residents()
    with store.transaction() as conn:
        mark = _mark(conn, store.data_dir, worker)
        todo = sorted((f for f in frames if f[0] > mark), key=lambda f: f[0])
        if not todo:
            return mark
        charged: set[tuple[int, str, int]] = set()
        out: list[Any] = []
        for _seq, repeat_rule_id, rows in todo:
            for row in rows:
                if not (row[8] and row[6]):  # no status confirmation: the row as journaled
                    out.append(row)
                    continue
                # the once-per-year rule (configs/tariff.toml [status_confirmation])
                at, month, year, verifier_id, check_type, channel, serial, _r, sc, rule_id, \
                    amount = row
                resident = residents.of(store, serial) if serial else None
                if resident is not None:
                    key = (verifier_id, resident, year)
                    seen = key in charged or conn.execute(
                        "SELECT 1 FROM ledger WHERE verifier_id = ? AND resident_id = ?"
                        " AND year = ? AND status_confirmation = 1 AND rule_id != ?"
                        " LIMIT 1", (verifier_id, resident, year, repeat_rule_id),
                    ).fetchone()
                    if seen:
                        rule_id, amount = repeat_rule_id, 0
                    else:
                        charged.add(key)
                out.append((at, month, year, verifier_id, check_type, channel, serial,
                            resident, sc, rule_id, amount))
        insert(conn, out)
        new_mark = todo[-1][0]
        conn.execute("INSERT INTO fee_journal_marks (journal, seq) VALUES (?, ?)"
                     " ON CONFLICT (journal) DO UPDATE SET seq = excluded.seq",
                     (journal_key(store.data_dir, worker), new_mark))
    return new_mark


def fold_journal(store: Store, worker: int, directory: Path,
                 residents: Residents | None = None) -> int:
    """Fold what `worker`'s journal holds: while its writer lives, the frames up to the
    durable sequence number it published (`fees.progress`), without a gap; once no process
    holds the journal, every complete frame (a frame that never became durable had its
    answers never sent, and a gap is a frame lost with a crash before its flush). Returns the
    mark."""
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, datadir.PRIVATE_FILE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            writer_alive = False
        except BlockingIOError:
            writer_alive = True
        mark = folded_mark(store, worker)
        upto = progress.durable_seq(directory) if writer_alive else None
        if writer_alive and upto is None:
            return mark  # a writer that has not published yet: nothing of it is durable
        frames = read_frames(directory, above=mark, upto=upto)
        todo = contiguous(frames, mark) if writer_alive else sorted(frames.values())
        return fold(store, todo, residents, worker) if todo else mark
    finally:
        os.close(fd)  # releases the flock


def catch_up(store: Store) -> None:
    """Fold what the journals hold before the ledger is read (invoices, usage, the linkage
    preconditions, the status-confirmation rule of direct metering): they stay exact. Every
    journal of the data directory, the calling process's own included."""
    for worker, directory in journal_dirs(store.data_dir):
        fold_journal(store, worker, directory)
