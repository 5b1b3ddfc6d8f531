"""The fee journal's frames: one group commit of priced checks, as bytes.

A frame is `magic, payload length, sequence number, crc32(payload)` then the payload. The end
of the written frames of a segment is the first header that is not a frame: the zeros of a
preallocated segment, or a torn write (a crash mid-write: never acknowledged).

Why marshal for the payload (JFB3): the frame is encoded on the event loop, once per group,
and read back by the fold process; marshal is CPython's own C codec for tuples of ints and
strings, several times cheaper than JSON both ways, and it executes nothing (unlike pickle).
Its format 4 has been stable since Python 3.4. The CRC is checked before a payload is decoded,
and only the journal's own process writes these private files (0600 in a 0700 directory).
JSON frames of earlier daemons (JFB2, and JFB1 led by the verifier's name) still read, so an
upgrade over a journal that was not yet folded loses nothing.
"""

from __future__ import annotations

import json
import marshal
import mmap
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HEADER_FORMAT = "<4sIQI"  # magic, payload length, sequence number, crc32(payload)
MAGIC = b"JFB3"  # marshal: (repeat rule id, [row, ...]), rows in the ledger INSERT's order
MAGIC_V2 = b"JFB2"  # JSON {"r": repeat rule id, "rows": [row, ...]}
MAGIC_V1 = b"JFB1"  # JSON rows led by the verifier's name, no resident
_MAGICS = (MAGIC, MAGIC_V2, MAGIC_V1)
MARSHAL_VERSION = 4

# A journal row is the ledger INSERT's parameters, in its column order, priced when the check
# happened (the rule in force on its JST day): folding a row without a status confirmation is
# no Python work at all. The resident (None here) and the status-confirmation once-per-year
# rule are applied when folding, in sequence order; metrics name the verifier by its id.
# (at, month, year, verifier_id, check_type, channel, serial, resident_id (None),
#  status_confirmation, rule_id, amount_yen)
Row = tuple[int, str, int, int, str, str, str | None, None, int, str, int]
# (sequence number, repeat rule id, rows)
Frame = tuple[int, str, list[Row]]

HEADER = struct.Struct(HEADER_FORMAT)


def encode(seq: int, repeat_rule_id: str, rows: list[Row]) -> bytes:
    """Frame `seq` holding `rows`."""
    payload = marshal.dumps((repeat_rule_id, rows), MARSHAL_VERSION)
    return HEADER.pack(MAGIC, len(payload), seq, zlib.crc32(payload)) + payload


def _decode(magic: bytes, payload: bytes) -> tuple[str, list[Row]]:
    if magic == MAGIC:
        repeat_rule_id, rows = marshal.loads(payload)
        return repeat_rule_id, rows
    body: dict[str, Any] = json.loads(payload)
    if magic == MAGIC_V2:
        return body["r"], [tuple(row) for row in body["rows"]]
    # JFB1: (name, at, month, year, verifier_id, check_type, channel, serial, sc, rule, yen)
    return body["r"], [(*row[1:8], None, *row[8:]) for row in body["rows"]]


def scan(data: bytes | mmap.mmap, offset: int = 0, above: int = 0, upto: int | None = None,
         ) -> Iterator[tuple[int, Frame | None]]:
    """(end offset, frame) of each complete frame of a segment from `offset` on, in file order;
    the frame is None (not decoded, not even checked) when its sequence number is at or below
    `above`: already folded. Stops at the end of the written frames, or before the first frame
    above `upto` (not yet durable: read it again later)."""
    size = HEADER.size
    while offset + size <= len(data):
        magic, length, seq, crc = HEADER.unpack_from(data, offset)
        end = offset + size + length
        if magic not in _MAGICS or end > len(data):
            return  # zeros, or a torn frame
        if upto is not None and seq > upto:
            return
        if seq <= above:
            yield end, None
        else:
            payload = data[offset + size:end]
            if zlib.crc32(payload) != crc:
                return
            yield end, (seq, *_decode(magic, payload))
        offset = end


def segment_name(run: int, part: int) -> str:
    """Segments are named by the run (its first sequence number) and a part number; a spare
    made ahead may be used after one the loop had to make itself, so write order is the
    frames' sequence numbers, not the names."""
    return f"{run:012d}-00-{part:06d}.log"


def segment_part(path: Path) -> int:
    return int(path.stem.rsplit("-", 1)[1])


def segments(directory: Path) -> list[Path]:
    """The journal's segments (in name order; frames carry their own order)."""
    return sorted(directory.glob("*.log"))


def read_frames(directory: Path, above: int = 0, upto: int | None = None) -> dict[int, Frame]:
    """Every complete frame in the journal's segments above `above` (and at most `upto`), by
    sequence number."""
    found: dict[int, Frame] = {}
    for path in segments(directory):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # folded and removed meanwhile
            continue
        for _end, frame in scan(data, 0, above, upto):
            if frame is not None:
                found[frame[0]] = frame
    return found


def contiguous(frames: dict[int, Frame], mark: int) -> list[Frame]:
    """The frames that follow `mark` without a gap, in order: folding never skips one."""
    out = []
    seq = mark + 1
    while seq in frames:
        out.append(frames[seq])
        seq += 1
    return out
