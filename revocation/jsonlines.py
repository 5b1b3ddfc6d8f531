"""Decoding events: JSON Lines for the CLI, a JSON body for POST /registry/events.

Issue 14, defect 5: one bad event must not block the others. Python's `json` raises more than
`JSONDecodeError` on hostile input: `ValueError` for an integer of more than 4,300 digits
(CPython's int-parsing limit) and `RecursionError` for deep nesting. Here neither escapes:
long integers decode to `NumberTooLong` (which no event field accepts, so the event is rejected
naming its field), and a value nested too deeply becomes a `BadLine` that names the top-level
field holding it. In a batch whose body nests too deeply, the array is split into its elements
so that only the offending element is rejected; the others still apply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from registry.logtext import untrusted

# An event is an object of scalars (depth 1; 2 inside a batch). Anything deeper is refused
# before the decoder's recursion could reach the interpreter's limit.
MAX_DEPTH = 32
# CPython's default int_max_str_digits; an event field never holds a number anyway.
MAX_INT_DIGITS = 4300
# Strings (with their escapes) and the structural characters, in document order.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:,]', re.DOTALL)


class BadLine:
    """A line or element that is not an acceptable JSON value: rejected with its location."""

    def __init__(self, message: str, field: str = "event") -> None:
        self.message = message
        self.field = field


class NumberTooLong:
    """An integer literal too long to convert; kept as a marker so only its event fails."""

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"<integer of {self.digits} digits>"


def _int(text: str) -> int | NumberTooLong:
    return int(text) if len(text) <= MAX_INT_DIGITS else NumberTooLong(len(text))


def _key(token: str) -> str:
    try:
        key = json.loads(token)
    except ValueError:
        return "event"
    return untrusted(key) if isinstance(key, str) else "event"  # the sender's text


def _too_deep(text: str, base: int = 0) -> BadLine | None:
    """The field of the first value nested deeper than MAX_DEPTH, if any (no recursion).

    `base` is the depth of the event objects: 0 for a line or an element, 1 for a batch body.
    """
    depth = 0
    field = "event"
    previous = ""
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return BadLine(f"nested deeper than {MAX_DEPTH} levels", field)
        elif token in "]}":
            depth -= 1
        elif token == ":" and depth == base + 1 and previous.startswith('"'):
            field = _key(previous)
        elif token == "," and depth == base:
            field = "event"
        previous = token
    return None


def decode(text: str | bytes) -> Any:
    """One JSON value, or a BadLine saying what is wrong with it; never raises."""
    try:
        return json.loads(text, parse_int=_int)
    except json.JSONDecodeError as exc:
        return BadLine(f"not JSON: {exc.msg} at column {exc.colno}")
    except UnicodeDecodeError:
        return BadLine("not UTF-8 text")
    except RecursionError:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return _too_deep(text) or BadLine(f"nested deeper than {MAX_DEPTH} levels")
    except ValueError as exc:  # belt and braces: whatever else the decoder refuses
        return BadLine(f"not JSON: {exc}")


def _elements(text: str) -> list[str] | None:
    """The source text of each element of a top-level JSON array, or None if it is not one."""
    stripped = text.strip()
    if not stripped.startswith("[") or not stripped.endswith("]"):
        return None
    inner_start = text.index("[") + 1
    depth = 0
    start = inner_start
    items: list[str] = []
    for match in _TOKENS.finditer(text, inner_start):
        token = match.group()
        if token in "[{":
            depth += 1
        elif token in "]}":
            if depth == 0:  # the closing bracket of the array
                last = text[start:match.start()]
                if last.strip() or items:
                    items.append(last)
                return items
            depth -= 1
        elif token == "," and depth == 0:
            items.append(text[start:match.start()])
            start = match.end()
    return None


def decode_body(body: bytes) -> tuple[bool, list[Any]]:
    """A POST body: (is it one event, the events or BadLines). Raises ValueError if the body
    as a whole is not JSON (a 400 for the whole request).
    """
    parsed = decode(body)
    if isinstance(parsed, BadLine) and parsed.message.startswith("nested deeper"):
        text = body.decode("utf-8", "replace")
        elements = _elements(text)
        if elements is not None:
            return False, [decode(item) for item in elements]
        return True, [parsed]
    if isinstance(parsed, BadLine):
        raise ValueError(parsed.message)
    if isinstance(parsed, list):
        return False, parsed
    return True, [parsed]


def read(lines: Iterable[bytes | str]) -> Iterator[tuple[str, Any]]:
    """Each non-blank line's location and decoded event (or BadLine); never raises on content.

    Bytes are decoded per line, so a line that is not UTF-8 is rejected alone.
    """
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield f"line {number}", BadLine(f"not UTF-8 text at byte {exc.start + 1}")
                continue
        if not line.strip():
            continue
        yield f"line {number}", decode(line)
