"""The basic 4 facts (name, date of birth, sex, address) and their certificate encodings.

These values are personal data: they go into the signature certificate and the registry and
nowhere else (never a log line, never an audit row, never an error sent to a verifier).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from registry.charset import CertifiedText, certify
from registry.errors import InvalidInput

IDEOGRAPHIC_SPACE = "\u3000"
NAME_MAX = 100
ADDRESS_MAX = 200
POSTCODE = re.compile(r"^(〒|[0-9０-９]{3}[-－ー‐][0-9０-９]{4})")

# (first day, era digit): Meiji 1, Taisho 2, Showa 3, Heisei 4, Reiwa 5 (DOMAIN.md SAN table).
ERAS: tuple[tuple[date, str], ...] = (
    (date(2019, 5, 1), "5"),
    (date(1989, 1, 8), "4"),
    (date(1926, 12, 25), "3"),
    (date(1912, 7, 30), "2"),
    (date(1868, 10, 23), "1"),
)


class Sex(StrEnum):
    MALE = "male"
    FEMALE = "female"
    UNKNOWN = "unknown"

    @property
    def digit(self) -> str:
        """SAN 1.2.392.200149.8.5.5.3: "1" male, "2" female, "3" unknown."""
        return {"male": "1", "female": "2", "unknown": "3"}[self.value]


def era_digit(day: date) -> str:
    for start, digit in ERAS:
        if day >= start:
            return digit
    return "0"  # before Meiji: the era is recorded as unknown


def encode_dob(day: date) -> str:
    """SAN 1.2.392.200149.8.5.5.4: `EYYYYMMDD`, the era digit then the Gregorian date."""
    return f"{era_digit(day)}{day:%Y%m%d}"


def normalise_name(raw: str, *, field: str = "name") -> str:
    """Surname and given name separated by exactly one U+3000 (an ASCII space is accepted)."""
    text = raw.strip().replace(" ", IDEOGRAPHIC_SPACE)
    parts = [part for part in text.split(IDEOGRAPHIC_SPACE) if part]
    if len(parts) != 2:
        raise InvalidInput("must be a surname and a given name separated by one space",
                           field=field)
    name = IDEOGRAPHIC_SPACE.join(parts)
    if len(name) > NAME_MAX:
        raise InvalidInput(f"is longer than {NAME_MAX} characters", field=field)
    return name


def parse_dob(raw: str, *, today: date | None = None) -> date:
    try:
        day = date.fromisoformat(raw)
    except (TypeError, ValueError):
        raise InvalidInput("must be a real date as YYYY-MM-DD", field="dob") from None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        raise InvalidInput("must be a real date as YYYY-MM-DD", field="dob")
    if today is not None and day > today:
        raise InvalidInput("is in the future", field="dob")
    if day.year < 1850:
        raise InvalidInput("is before 1850", field="dob")
    return day


def parse_sex(raw: str) -> Sex:
    try:
        return Sex(raw)
    except ValueError:
        raise InvalidInput("must be male, female or unknown", field="sex") from None


@dataclass(frozen=True)
class Facts:
    """The 4 facts as the register holds them, with the municipality they belong to."""

    name: str
    dob: date
    sex: Sex
    address: str
    municipality_code: str
    name_alt: str | None = None
    address_alt: str | None = None

    @classmethod
    def parse(cls, *, name: str, dob: str, sex: str, address: str, municipality_code: str,
              name_alt: str | None = None, address_alt: str | None = None,
              today: date | None = None) -> Facts:
        """Validate raw input; every failure names its field."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput("is required", field="name")
        if not isinstance(address, str) or not address.strip():
            raise InvalidInput("is required", field="address")
        facts = cls(
            name=normalise_name(name),
            dob=parse_dob(dob, today=today),
            sex=parse_sex(sex),
            address=address.strip(),
            municipality_code=municipality_code,
            name_alt=normalise_name(name_alt, field="name_alt") if name_alt else None,
            address_alt=address_alt.strip() if address_alt else None,
        )
        if len(facts.address) > ADDRESS_MAX:
            raise InvalidInput(f"is longer than {ADDRESS_MAX} characters", field="address")
        if POSTCODE.match(facts.address):
            raise InvalidInput("starts with a postcode; give it from the prefecture on",
                               field="address")
        facts.certified_name()
        facts.certified_address()
        return facts

    def certified_name(self) -> CertifiedText:
        return certify(self.name, self.name_alt, field="name")

    def certified_address(self) -> CertifiedText:
        return certify(self.address, self.address_alt, field="address")

    def same_four(self, other: Facts) -> bool:
        """True when no fact a verifier relies on differs (a move between towns is an address
        change even if the street text were identical)."""
        return (
            self.certified_name().text == other.certified_name().text
            and self.dob == other.dob
            and self.sex == other.sex
            and self.certified_address().text == other.certified_address().text
            and self.municipality_code == other.municipality_code
        )
