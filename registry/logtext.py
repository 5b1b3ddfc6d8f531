"""Untrusted text made safe for a log line (issue 14, defect 11: log injection).

A JSON key, a header or a path segment that reaches a log line unescaped can end the line and
forge the next one ("x\\nINFO jpki.events: event applied ..."). `untrusted()` keeps printable
characters (Japanese text included) and writes every other one the way Python's `repr` does:
control characters, line and paragraph separators, format characters and lone surrogates
become `\\xNN`, `\\uNNNN` or `\\UNNNNNNNN`. Unlike `repr`, a backslash is kept as it is, so
escaping twice changes nothing: a value escaped where it entered (an unknown key named in a
rejection) can pass through every later log call unchanged. The price is that a literal
`\\x0a` in the input reads like an escaped newline; it can never be a line break. Long values
are cut, so one request cannot write megabytes into the log.
"""

from __future__ import annotations

LIMIT = 120


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def untrusted(value: object, limit: int = LIMIT) -> str:
    """`value` as one line of printable text, at most `limit` characters of the input."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    if cut:
        text = text[:limit]
    if text.isprintable():  # the common case costs one C-level scan
        safe = text
    else:
        safe = "".join(char if char.isprintable() else _escape(char) for char in text)
    return safe + "..." if cut else safe
