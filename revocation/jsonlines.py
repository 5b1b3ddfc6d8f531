"""Reading events from JSON Lines: each line is one event, located by its line number."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


class BadLine:
    """A line that is not JSON: the applier rejects it with its location."""

    def __init__(self, message: str) -> None:
        self.message = message


def read(lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line)
        except json.JSONDecodeError as exc:
            yield f"line {number}", BadLine(f"not JSON: {exc.msg} at column {exc.colno}")
