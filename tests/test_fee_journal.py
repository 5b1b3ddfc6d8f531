"""The fee journal's segments: preallocated, zero-filled, written in place (fees/journal.py),
folded in the background by the fold process (fees/folder.py).

A writer killed without closing (`os._exit` in a child process: nothing flushed or folded on
the way out) leaves several segments, full ones and one whose tail is still zeros; the next
start folds every frame exactly once, across the rotations, and removes the files. Frames in
the earlier layout (JFB1, the verifier's name first) left by an older daemon still fold.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

from fees import frames, progress
from fees import journal as fee_journal
from fees.journal import Journal
from jpki.context import Context
from tests.helpers import jpki

REPO = Path(__file__).resolve().parent.parent

WRITER = """
import asyncio, os, sys
from pathlib import Path
from fees.journal import Journal

data_dir, verifier_id, groups = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
journal = Journal(data_dir, fold_interval=3600, segment_bytes=4096)
journal.start("status-confirmation-repeat")

async def main() -> None:
    async def one(i: int) -> None:
        rows = 3 if i < groups else 300
        # distinct tuples (marshal would write a repeated one as a back-reference)
        await journal.record([(1790000000 + i * 1000 + k, "2026-09", 2026, verifier_id,
                               "signature_check", "ocsp", format(i, "x"), None, 0,
                               "signature-check", 20) for k in range(rows)])
    for start in range(0, groups, 8):  # several groups in flight, one per loop turn
        await asyncio.gather(*(one(i) for i in range(start, start + 8)))
    await one(groups)  # one group larger than a segment: a segment of its own

asyncio.run(main())
print(len(list((data_dir / "fees-journal").glob("*.log"))), flush=True)
os._exit(0)  # like SIGKILL: the journal is neither closed nor folded
"""


def _ledger(context: Context, verifier_id: int) -> list[tuple[str, int]]:
    return [(str(row[0]), int(row[1])) for row in context.store.conn.execute(
        "SELECT serial, amount_yen FROM ledger WHERE verifier_id = ? ORDER BY at",
        (verifier_id,))]


def test_a_killed_writer_leaves_segments_that_fold_exactly_once(context: Context) -> None:
    data_dir = context.data_dir
    jpki(data_dir, "verifier", "add", "bank-seg")
    verifier_id = context.store.conn.execute(
        "SELECT id FROM verifiers WHERE name = 'bank-seg'").fetchone()[0]
    out = subprocess.run([sys.executable, "-c", WRITER, str(data_dir), str(verifier_id), "400"],
                         capture_output=True, text=True, cwd=REPO, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert int(out.stdout) > 4, "the writer should have rotated through several segments"
    assert _ledger(context, verifier_id) == []  # nothing folded by the writer

    journal = Journal(data_dir)
    journal.start("status-confirmation-repeat")
    try:
        rows = _ledger(context, verifier_id)
        assert len(rows) == 400 * 3 + 300
        assert sorted({serial for serial, _yen in rows}) == sorted(format(i, "x")
                                                                   for i in range(401))
        assert sum(yen for _serial, yen in rows) == (400 * 3 + 300) * 20
        # only the new run's segments remain
        assert all(path.name.startswith(f"{journal._next_seq:012d}-")  # noqa: SLF001
                   for path in fee_journal.journal_dir(data_dir).glob("*.log"))
    finally:
        journal.close()
    assert len(_ledger(context, verifier_id)) == 400 * 3 + 300  # closing folds nothing twice


def test_frames_of_the_earlier_layout_still_fold(context: Context) -> None:
    data_dir = context.data_dir
    jpki(data_dir, "verifier", "add", "bank-v1")
    verifier_id = context.store.conn.execute(
        "SELECT id FROM verifiers WHERE name = 'bank-v1'").fetchone()[0]
    directory = fee_journal.journal_dir(data_dir)
    directory.mkdir(mode=0o700, exist_ok=True)
    payload = json.dumps({"r": "status-confirmation-repeat", "rows": [
        ["bank-v1", 1790000000, "2026-09", 2026, verifier_id, "authentication_check", "ocsp",
         "abc", 0, "authentication-check", 10]]}).encode()
    frame = struct.pack("<4sIQI", b"JFB1", len(payload), 1, zlib.crc32(payload)) + payload
    (directory / "000000000001-00-000001.log").write_bytes(frame + bytes(64))
    journal = Journal(data_dir)
    journal.start("status-confirmation-repeat")
    journal.close()
    assert _ledger(context, verifier_id) == [("abc", 10)]


def test_the_fold_process_folds_in_the_background_and_removes_folded_segments(
        context: Context) -> None:
    """While the writer runs, its fold process (nice 19) folds every durable frame into the
    ledger without any reader asking, publishes how far it folded, and removes segments once
    folded and left behind by the writer; the segment being written stays."""
    data_dir = context.data_dir
    jpki(data_dir, "verifier", "add", "bank-bg")
    verifier_id = context.store.conn.execute(
        "SELECT id FROM verifiers WHERE name = 'bank-bg'").fetchone()[0]
    journal = Journal(data_dir, fold_interval=0.05, segment_bytes=2048)
    journal.start("status-confirmation-repeat")
    try:
        async def load() -> None:
            for start in range(0, 200, 10):
                await asyncio.gather(*(journal.record(
                    [(1790000000 + i * 10 + k, "2026-09", 2026, verifier_id, "signature_check",
                      "ocsp", format(i, "x"), None, 0, "signature-check", 20) for k in range(5)])
                    for i in range(start, start + 10)))

        asyncio.run(load())
        directory = fee_journal.journal_dir(data_dir)
        shared = progress.Progress(directory)
        try:
            deadline = time.monotonic() + 30  # bounded: the fold runs every 50 ms
            while time.monotonic() < deadline and (
                    len(_ledger(context, verifier_id)) < 1000
                    or shared.get(progress.FOLDED) < shared.get(progress.DURABLE)):
                time.sleep(0.05)
            assert len(_ledger(context, verifier_id)) == 1000
            assert shared.get(progress.FOLDED) == shared.get(progress.DURABLE) > 0
            writing = shared.get(progress.WRITING)
        finally:
            shared.close()
        folder = journal._folder  # noqa: SLF001 - the process under test
        assert folder is not None and folder.poll() is None
        stat = Path(f"/proc/{folder.pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert int(stat[16]) == 19, "the fold process yields the CPU to answers (nice 19)"
        assert os.sched_getscheduler(folder.pid) == os.SCHED_IDLE  # only on idle CPU time
        # 1,000 rows took many 2 KiB segments (larger groups under the commit delay pack
        # tighter: marshal shares strings within a frame): the earlier ones are
        # folded and gone
        parts = {frames.segment_part(path) for path in frames.segments(directory)}
        assert writing > 3, "the writer should have moved through several segments"
        assert writing in parts
        assert len(parts) <= 3, parts  # the one written, at most a spare and one not yet swept
    finally:
        journal.close()
    assert len(_ledger(context, verifier_id)) == 1000  # closing folds nothing twice
