"""How far back an operator may date a revocation (`jpki revoke --at`).

RFC 5280 §5.3.2's invalidityDate is not used: the revocation time itself is back-dated, which a
verifier sees as "revoked since". A long window would let an operator silently invalidate
signatures made days ago, so the window is short (revocation.backdate_window_hours, 72 h by
default), the moment must carry an offset and must not lie in the future.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from registry.clock import epoch
from registry.errors import InvalidInput


def revocation_time(text: str, now: datetime, window: timedelta) -> int:
    """The epoch of an operator's `--at` value, or InvalidInput naming the rule it breaks."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput("must be an ISO 8601 time with offset", field="at") from None
    if moment.tzinfo is None:
        raise InvalidInput("must carry a UTC offset", field="at")
    if moment > now:
        raise InvalidInput("is in the future", field="at")
    if now - moment > window:
        raise InvalidInput(f"is further back than the back-dating window ({window})",
                           field="at")
    return epoch(moment)
