"""The fold process: a serving worker's fee journal folded into the ledger in the background,
at the lowest CPU priority.

Why a process of its own: folding costs a few microseconds of Python and SQL per check; in a
thread of the serving process that work held the interpreter lock the event loop needs, and it
delayed answers (metered p99 35-82 ms). Here it runs beside the daemon at `fees.fold_nice`
(default 19, which also puts it in the idle scheduling class, SCHED_IDLE): under a peak
that saturates the cores it yields to the answers, the backlog waits durably in the journal,
and it catches up as soon as there is idle CPU. Readers of the
ledger never see the lag: invoices, usage and the linkage preconditions fold first
(`fees.fold.catch_up`).

It folds only frames its writer has published as durable (`fees.progress`), reads each
segment once (its mapped tail, from where it stopped), and removes a segment once every frame
in it is folded and its writer has moved to a later one. Its parent writes `F` on its stdin
when closing (one last fold, then exit); end of file alone means the parent died: the next
start of the daemon folds everything that is left.

Run by `fees.journal.Journal` as `python -m fees.folder DATA_DIR WORKER INTERVAL NICE`, with
the registry URL in `$JPKI_REGISTRY_URL` (never on the command line: it may hold a password).
"""

from __future__ import annotations

import logging
import mmap
import os
import select
import sys
from pathlib import Path

from fees import progress
from fees.fold import Residents, fold, folded_mark, journal_dir
from fees.frames import Frame, contiguous, scan, segment_part, segments
from registry.store import URL_ENV, Store

log = logging.getLogger("jpki.fees")


class Tail:
    """The journal's segments read incrementally: per segment, where its unread frames start
    and the highest sequence number seen in it; frames read and not yet folded are kept
    (`pending`) until a fold succeeds."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.offsets: dict[Path, int] = {}
        self.last: dict[Path, int] = {}
        self.pending: dict[int, Frame] = {}

    def read(self, above: int, upto: int) -> dict[int, Frame]:
        """Every unfolded frame above `above`, at most `upto`."""
        found = self.pending
        for seq in [seq for seq in found if seq <= above]:
            del found[seq]
        for path in segments(self.directory):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                if os.fstat(fd).st_size == 0:
                    continue
                data = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
            with data:
                offset = self.offsets.get(path, 0)
                for end, frame in scan(data, offset, above, upto):
                    offset = end
                    if frame is not None:
                        found[frame[0]] = frame
                        self.last[path] = frame[0]
                self.offsets[path] = offset
        return found

    def folded(self, mark: int, writing: int) -> None:
        """Forget the frames at or below `mark`, and remove the segments that held only
        those, except segment part `writing` (the writer's current one: more may come)."""
        for seq in [seq for seq in self.pending if seq <= mark]:
            del self.pending[seq]
        for path in [path for path in self.offsets if self.offsets[path]]:
            if self.last.get(path, 0) <= mark and segment_part(path) != writing:
                path.unlink(missing_ok=True)
                self.offsets.pop(path, None)
                self.last.pop(path, None)


def run(data_dir: Path, worker: int, interval: float, control: int) -> None:
    directory = journal_dir(data_dir, worker)
    store = Store.open(data_dir, os.environ.get(URL_ENV, ""))
    shared = progress.Progress(directory)
    tail = Tail(directory)
    residents = Residents()
    mark = folded_mark(store, worker)
    try:
        while True:
            readable, _w, _x = select.select([control], [], [], interval)
            final = False
            if readable:
                command = os.read(control, 64)
                if not command:
                    return  # the parent died: its next start folds what is left
                final = b"F" in command
            durable = shared.get(progress.DURABLE)
            if durable > mark:
                todo = contiguous(tail.read(mark, durable), mark)
                if todo:
                    try:
                        mark = max(mark, fold(store, todo, residents, worker))
                    except Exception:  # the frames stay in the journal; retried next time
                        log.exception("fee journal: fold into the ledger failed")
                # swept before published: whoever sees a frame folded sees its segment gone
                tail.folded(mark, shared.get(progress.WRITING))
                shared.set(progress.FOLDED, mark)
            if final:
                return
    finally:
        shared.close()
        store.close()


def main(argv: list[str]) -> int:
    data_dir, worker, interval, nice = Path(argv[0]), int(argv[1]), float(argv[2]), int(argv[3])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s "
                        "fold[%(process)d]: %(message)s")
    os.nice(nice)
    if nice >= 19 and hasattr(os, "SCHED_IDLE"):
        # the idle class: nice 19 alone still takes ~1.5% of a saturated core from answers
        # (CFS weight 15 against 1024); SCHED_IDLE runs only on time nothing else wants
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    run(data_dir, worker, interval, sys.stdin.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
