"""Operators: the staff allowed to feed resident-register events to the daemon."""

from __future__ import annotations

from registry import audit, tokens
from registry.clock import Clock, epoch
from registry.errors import Conflict
from registry.store import Store


def add(store: Store, clock: Clock, name: str, *, actor: str) -> str:
    """Create an operator and return its token; only the hash is kept."""
    tokens.check_name(name)
    token = tokens.new_token("op")
    with store.transaction() as conn:
        if conn.execute("SELECT 1 FROM operators WHERE name = ?", (name,)).fetchone():
            raise Conflict(f"operator {name} exists", field="name")
        conn.execute("INSERT INTO operators (name, token_sha256, created_at) VALUES (?, ?, ?)",
                     (name, tokens.digest(token), epoch(clock())))
        audit.append(store, clock, actor=actor, action="operator.add",
                     detail={"operator": name})
    return token


def authenticate(store: Store, token: str | None) -> str | None:
    """The operator's name for a token, or None."""
    if not token:
        return None
    row = store.conn.execute("SELECT name FROM operators WHERE token_sha256 = ?",
                             (tokens.digest(token),)).fetchone()
    return row[0] if row else None
