"""Metering: every answered CertID goes to the fees hook (ocsp.meter.CheckMeter), awaited
before the answer leaves (DOMAIN.md, "Fees": the ledger row is committed first).

Errors are not metered: they propagate through this layer untouched.
"""

from __future__ import annotations

from datetime import datetime

from ocsp.meter import CheckMeter
from ocsp.source import Query, Reply, Source
from registry.clock import from_epoch


class MeteringSource:
    def __init__(self, next_source: Source, meter: CheckMeter) -> None:
        self.next = next_source
        self.meter = meter
        self._moment = (0, from_epoch(0))

    def moment(self, now: int) -> datetime:
        """The metering time as a datetime, built once per second (hot path)."""
        if self._moment[0] != now:
            self._moment = (now, from_epoch(now))
        return self._moment[1]

    async def answer(self, query: Query) -> Reply:
        reply = await self.next.answer(query)
        await self.meter.record(query.verifier, reply.metered, self.moment(query.now),
                                status_confirmation=query.status_confirmation)
        return reply
