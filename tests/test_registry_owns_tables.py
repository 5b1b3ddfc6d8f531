"""The registry owns its tables: no role package names one in SQL (issue 13).

Each table is named in one package (STYLE.md: "SQL on another role's table"); everything else
calls a registry query function named for what it answers. `fees/` keeps its own ledger and
journal tables. The check is textual on purpose: it reads every line of the role packages and
fails naming the file and line of any SQL keyword or sqlite-utils accessor aimed at a table.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROLE_PACKAGES = ("ca", "crl", "ocsp", "linkage", "revocation", "httpapi", "jpki", "fees", "demo")
# fees/ keeps the SQL of its own tables: the ledger and its journal's fold marks.
OWN_TABLES = {"fees": {"ledger", "ledger_journal", "journal", "fee_journal_marks",
                      "fee_journal_folds"}}


def _tables() -> set[str]:
    """Every table the migrations create, read from the migrations' own text."""
    text = (ROOT / "registry" / "migrations.py").read_text()
    names = set(re.findall(r"table\(\"([a-z_]+)\"\)", text))
    names |= set(re.findall(r"TABLE(?: IF NOT EXISTS)? ([a-z_]+)", text))
    return names


def _pattern(tables: set[str]) -> re.Pattern[str]:
    names = "|".join(sorted(tables, key=len, reverse=True))
    # Keywords in capitals, as every statement here is written: prose ("read from the
    # certificates of ...") must not trip the check.
    return re.compile(
        rf"\b(?:FROM|INTO|UPDATE|JOIN|TABLE|EXISTS)\s+(?:{names})\b"
        rf"|\b(?:db|database)\[\"(?:{names})\"\]|\.table\(\"(?:{names})\"\)",
    )


def test_the_migrations_name_the_tables() -> None:
    assert {"certificates", "ca_generations", "ocsp_signers", "successors", "municipalities",
            "crl_state", "crl_entries", "state_changes"} <= _tables()


def test_no_role_package_names_a_registry_table() -> None:
    tables = _tables()
    offences: list[str] = []
    for package in ROLE_PACKAGES:
        pattern = _pattern(tables - OWN_TABLES.get(package, set()))
        for path in sorted((ROOT / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if pattern.search(line):
                    offences.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offences, ("SQL on registry tables outside registry/ (move it into a registry"
                          " query function):\n" + "\n".join(offences))


def test_the_check_catches_a_statement() -> None:
    pattern = _pattern(_tables())
    assert pattern.search('"SELECT serial FROM certificates WHERE ca_id = ?"')
    assert pattern.search('" AND NOT EXISTS (SELECT 1 FROM crl_entries e"')
    assert pattern.search('"INSERT OR IGNORE INTO crl_entries (ca_id)"')
    assert not pattern.search("# rows from the certificates table, newest first")
