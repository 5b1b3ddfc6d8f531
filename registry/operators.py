"""Operators: the staff allowed to feed resident-register events to the daemon."""

from __future__ import annotations

from registry import audit, tokens
from registry.clock import Clock, epoch
from registry.errors import Conflict, NotFound
from registry.store import Connection, Store


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


def _stored_hash(conn: Connection, name: str) -> str:
    row = conn.execute("SELECT token_sha256 FROM operators WHERE name = ?",
                       (tokens.check_name(name),)).fetchone()
    if row is None:
        raise NotFound(f"no operator named {name}", field="name")
    return str(row[0])


def rotate_token(store: Store, clock: Clock, name: str, *, actor: str,
                 reason: str | None = None) -> str:
    """Replace an operator's token and return the new one (shown once). POST /registry/events
    looks the token up on every request, so the old one is refused from the next request."""
    with store.transaction() as conn:
        if tokens.is_revoked(_stored_hash(conn, name)):
            raise Conflict(f"operator {name} is revoked; add a new operator instead",
                           field="name")
        token = tokens.new_token("op")
        conn.execute("UPDATE operators SET token_sha256 = ? WHERE name = ?",
                     (tokens.digest(token), name))
        audit.append(store, clock, actor=actor, action="operator.token.rotate",
                     detail={"operator": name, "reason": reason})
    return token


def revoke(store: Store, clock: Clock, name: str, *, actor: str,
           reason: str | None = None) -> None:
    """Withdraw an operator's token for good; the name stays taken (audit rows name it)."""
    with store.transaction() as conn:
        if tokens.is_revoked(_stored_hash(conn, name)):
            raise Conflict(f"operator {name} is already revoked", field="name")
        conn.execute("UPDATE operators SET token_sha256 = ? WHERE name = ?",
                     (tokens.revoked_marker(), name))
        audit.append(store, clock, actor=actor, action="operator.revoke",
                     detail={"operator": name, "reason": reason})


def authenticate(store: Store, token: str | None) -> str | None:
    """The operator's name for a token, or None."""
    if not token:
        return None
    row = store.conn.execute("SELECT name FROM operators WHERE token_sha256 = ?",
                             (tokens.digest(token),)).fetchone()
    return row[0] if row else None
