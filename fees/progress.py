"""How far a fee journal is durable, and how far it is folded: counters in a small file
of the journal's directory, shared through the page cache.

Why a mapped file and not a pipe or the registry: the writer publishes the durable sequence
number after every flush (thousands a second), and a store into a mapping costs no system
call. The fold process, and any process that folds on demand (`jpki fees invoice`, the
linkage preconditions), reads it to fold only frames whose answers may have left: a frame
written but not yet flushed is not folded while its writer lives. The file is not a
durability record: after a crash every complete frame is folded (fees/journal.py).
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

from registry import datadir

FILE = "progress"
# the durable sequence number, the folded one, and the part number of the segment being
# written (the fold process never removes that one, whatever it has folded of it)
_LAYOUT = struct.Struct("<QQQ")
DURABLE, FOLDED, WRITING = 0, 8, 16


class Progress:
    """The writer's and the folder's view of the file (both map it)."""

    def __init__(self, directory: Path, create: bool = False) -> None:
        path = directory / FILE
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        fd = os.open(path, flags, datadir.PRIVATE_FILE)
        try:
            if create:
                os.ftruncate(fd, _LAYOUT.size)
            self._map = mmap.mmap(fd, _LAYOUT.size)
        finally:
            os.close(fd)

    def set(self, field: int, seq: int) -> None:
        struct.pack_into("<Q", self._map, field, seq)  # aligned: one store

    def get(self, field: int) -> int:
        return int(struct.unpack_from("<Q", self._map, field)[0])

    def close(self) -> None:
        self._map.close()


def durable_seq(directory: Path) -> int | None:
    """The durable sequence number the journal's writer published, None without a file."""
    try:
        fd = os.open(directory / FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        data = os.pread(fd, _LAYOUT.size, 0)
    finally:
        os.close(fd)
    return _LAYOUT.unpack(data)[0] if len(data) == _LAYOUT.size else None
