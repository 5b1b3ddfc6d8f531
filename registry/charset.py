"""The character repertoire of certificate names and addresses, and alternative characters.

Repertoire (design): a character is allowed when Python's strict `shift_jis` codec can encode it,
i.e. it is in JIS X 0208 (kanji levels 1-2, kana, full-width forms) or JIS X 0201 (ASCII and
half-width katakana), and it is not a control or format character. That is what "characters an
ordinary computer displays" meant for the systems the seeds describe. Anything else is refused
with the character named, unless the operator supplies the alternative text (代替文字) chosen at
the counter; the substitution flags then mark each position where the alternative differs.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from registry.errors import InvalidInput


def in_repertoire(char: str) -> bool:
    if unicodedata.category(char)[0] == "C":
        return False
    try:
        char.encode("shift_jis")
    except UnicodeEncodeError:
        return False
    return True


def first_outside(text: str) -> tuple[int, str] | None:
    for index, char in enumerate(text):
        if not in_repertoire(char):
            return index, char
    return None


def describe(char: str) -> str:
    return f"U+{ord(char):04X}" + (f" {char!r}" if char.isprintable() else "")


@dataclass(frozen=True)
class CertifiedText:
    """The text that goes into the certificate and its substitution flags ('0'/'1' per char)."""

    text: str
    flags: str

    @property
    def substituted(self) -> bool:
        return "1" in self.flags


def certify(original: str, alternative: str | None, *, field: str) -> CertifiedText:
    """Check `original` against the repertoire, or apply the operator's alternative text."""
    if alternative is None:
        bad = first_outside(original)
        if bad is not None:
            index, char = bad
            raise InvalidInput(
                f"character {index + 1} ({describe(char)}) is outside the repertoire"
                f" (JIS X 0208/0201); pass --{field}-alt with the alternative characters",
                field=field,
            )
        return CertifiedText(original, "0" * len(original))
    if len(alternative) != len(original):
        raise InvalidInput(
            f"the alternative text must have one character per character of {field}"
            f" ({len(original)}), not {len(alternative)}",
            field=f"{field}_alt",
        )
    bad = first_outside(alternative)
    if bad is not None:
        index, char = bad
        raise InvalidInput(
            f"character {index + 1} ({describe(char)}) is itself outside the repertoire",
            field=f"{field}_alt",
        )
    flags = "".join("1" if a != o else "0" for a, o in zip(alternative, original, strict=True))
    return CertifiedText(alternative, flags)
