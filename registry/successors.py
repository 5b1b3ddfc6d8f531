"""The `successors` table: which certificate replaced which at renewal (the linkage chain).

`certificates.link_successor` writes it at issuance; these read one step of a chain. The
unique indexes on both columns make each step a single-row lookup.
"""

from __future__ import annotations

from registry.store import Store


def of(store: Store, serial: str) -> str | None:
    """The serial that replaced `serial`, if any."""
    row = store.conn.execute("SELECT new_serial FROM successors WHERE old_serial = ?",
                             (serial,)).fetchone()
    return str(row[0]) if row else None


def predecessor_of(store: Store, serial: str) -> str | None:
    """The serial that `serial` replaced, if any."""
    row = store.conn.execute("SELECT old_serial FROM successors WHERE new_serial = ?",
                             (serial,)).fetchone()
    return str(row[0]) if row else None
