"""The state of every CA generation, as an operator reads it before a rotation or retirement.

A generation is `live` while its CA certificate is valid and not retired, `expired` past its
notAfter, `retired` once its key is archived; `current` is the one new issuance uses. Coverage
says how many certificates still depend on it (ca.rotation.coverage): retirement is refused
while any is unexpired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ca import authority, responders, rotation
from ca.authority import CAGeneration
from registry.clock import from_epoch
from registry.store import Store

State = Literal["live", "expired", "retired"]


def state(ca: CAGeneration, now: datetime) -> State:
    return "retired" if ca.retired else "expired" if ca.not_after <= now else "live"


@dataclass(frozen=True)
class GenerationStatus:
    ca: CAGeneration
    current: bool
    state: State
    coverage: rotation.Coverage
    responder: responders.ResponderRecord | None

    def to_json(self) -> dict[str, object]:
        ca, covered, responder = self.ca, self.coverage, self.responder
        return {
            "kind": ca.kind.value,
            "generation": ca.generation,
            "current": self.current,
            "state": self.state,
            "serial": format(ca.serial, "x"),
            "key_id": ca.key_id,
            "algorithm": ca.algorithm.name,
            "fingerprint": ca.fingerprint,
            "not_before": ca.certificate.not_valid_before_utc.isoformat(),
            "not_after": ca.not_after.isoformat(),
            "unexpired_certificates": covered.unexpired,
            "live_certificates": covered.live,
            "last_certificate_expiry": from_epoch(covered.last_expiry).isoformat()
            if covered.last_expiry else None,
            "responder_serial": format(responder.certificate.serial_number, "x")
            if responder else None,
            "responder_not_after": responder.not_after.isoformat() if responder else None,
            "retired_at": from_epoch(ca.retired_at).isoformat() if ca.retired_at else None,
        }


def generations(store: Store, now: datetime) -> list[GenerationStatus]:
    current = {kind: authority.current(store, kind).id
               for kind in {ca.kind for ca in authority.generations(store)}}
    return [GenerationStatus(ca, current[ca.kind] == ca.id, state(ca, now),
                             rotation.coverage(store, ca.id, now),
                             responders.latest(store, ca.id))
            for ca in authority.generations(store)]
