"""The municipality table: 5-digit local-government codes, the CRL partitions of the CAs.

The shipped CSV covers the prefectural seats and Tokyo's special wards; `jpki municipalities
import FILE` loads the full official list in the same format. The whole file is validated before
a single row is written, so a bad file changes nothing.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from registry.errors import InvalidInput
from registry.facts import Facts
from registry.store import Store

COLUMNS = ("code", "prefecture", "name", "prefecture_roman", "name_roman")
CODE = re.compile(r"^[0-9]{5}$")
# Romanised forms go into the subject's L attributes as PrintableString.
ROMAN = re.compile(r"^[A-Za-z0-9 '()+,\-./:=?]{1,64}$")


@dataclass(frozen=True)
class Municipality:
    code: str
    prefecture: str
    name: str
    prefecture_roman: str
    name_roman: str


def read_csv(path: Path) -> list[Municipality]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise InvalidInput(f"{path}: header must be {','.join(COLUMNS)}")
            rows: list[Municipality] = []
            seen: set[str] = set()
            for line, raw in enumerate(reader, start=2):
                values = {key: (raw.get(key) or "").strip() for key in COLUMNS}
                if not CODE.match(values["code"]):
                    raise InvalidInput(f"{path}:{line}: code must be 5 digits")
                if values["code"] in seen:
                    raise InvalidInput(f"{path}:{line}: duplicate code {values['code']}")
                for key in ("prefecture_roman", "name_roman"):
                    if not ROMAN.match(values[key]):
                        raise InvalidInput(f"{path}:{line}: {key} must be printable ASCII")
                for key in ("prefecture", "name"):
                    if not values[key]:
                        raise InvalidInput(f"{path}:{line}: {key} is empty")
                seen.add(values["code"])
                rows.append(Municipality(**values))
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read: {exc.strerror}") from None
    return rows


def import_csv(store: Store, path: Path) -> int:
    """Insert or update every row of the file in one transaction; return the row count."""
    rows = read_csv(path)
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO municipalities (code, prefecture, name, prefecture_roman, name_roman)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT(code) DO UPDATE SET"
            " prefecture=excluded.prefecture, name=excluded.name,"
            " prefecture_roman=excluded.prefecture_roman, name_roman=excluded.name_roman",
            [(m.code, m.prefecture, m.name, m.prefecture_roman, m.name_roman) for m in rows],
        )
    return len(rows)


def count(store: Store) -> int:
    return int(store.conn.execute("SELECT COUNT(*) FROM municipalities").fetchone()[0])


def codes(store: Store) -> list[str]:
    """Every municipality code (each is a CRL partition, published even when empty)."""
    return [str(row[0]) for row in store.conn.execute("SELECT code FROM municipalities")]


def exists(store: Store, code: str) -> bool:
    return store.conn.execute("SELECT 1 FROM municipalities WHERE code = ?",
                              (code,)).fetchone() is not None


def get(store: Store, code: str) -> Municipality:
    if not CODE.match(code or ""):
        raise InvalidInput("must be a 5-digit local-government code", field="municipality_code")
    row = store.one("SELECT * FROM municipalities WHERE code = ?", (code,))
    if row is None:
        raise InvalidInput(f"{code} is not in the municipality table",
                           field="municipality_code")
    return Municipality(**row)


def check_address(store: Store, facts: Facts) -> Municipality:
    """The municipality must be known and the certified address must start in its prefecture."""
    municipality = get(store, facts.municipality_code)
    if not facts.certified_address().text.startswith(municipality.prefecture):
        raise InvalidInput(
            f"must start with the prefecture of municipality {municipality.code}",
            field="address",
        )
    return municipality
