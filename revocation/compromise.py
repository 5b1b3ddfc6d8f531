"""A CA key compromise: every certificate of that key is revoked with cACompromise (2).

DOMAIN.md, "Revocation": this is an operator action on a whole CA generation, not a resident
event. It runs in one transaction, so either every certificate of the generation is revoked or
none is; each revocation still gets its audit row and its state-change notification.
"""

from __future__ import annotations

from ca import authority
from ca.kinds import CertKind
from registry import audit, certificates
from registry.clock import Clock
from registry.reasons import Reason
from registry.store import Store


def revoke_generation(store: Store, clock: Clock, kind: CertKind, generation: int, *,
                      actor: str = "operator") -> list[str]:
    """Revoke every unrevoked certificate issued under one CA generation; return the serials."""
    ca = authority.by_generation(store, kind, generation)
    with store.transaction():
        serials = certificates.good_serials_under(store, ca.id)
        for serial in serials:
            certificates.revoke(store, clock, serial, Reason.cACompromise, actor=actor,
                                cause=f"CA key compromise {ca.label}")
        audit.append(store, clock, actor=actor, action="ca.generation.compromise",
                     detail={"ca": ca.label, "key_id": ca.key_id, "revoked": len(serials)})
    return serials
