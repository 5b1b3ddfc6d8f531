"""Metering: every answered CertID goes to the fees hook (ocsp.meter.CheckMeter), awaited
before the answer leaves (DOMAIN.md, "Fees": the ledger row is committed first).

Errors are not metered: they propagate through this layer untouched. A meter that cannot make
the check durable (a failed journal write or flush) makes the answer tryLater (RFC 6960
§4.2.1): the answer is not sent unbilled, and the verifier retries.
"""

from __future__ import annotations

import logging
from datetime import datetime

from ocsp.errors import TryLater
from ocsp.meter import CheckMeter
from ocsp.source import Query, Reply, Source
from registry.clock import from_epoch

log = logging.getLogger("jpki.ocsp")


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
        try:
            durable = self.meter.record(query.verifier, reply.metered, self.moment(query.now),
                                        status_confirmation=query.status_confirmation)
            if durable is not None:
                await durable
        except OSError as exc:
            log.error("OCSP answer withheld: its check could not be made durable (%s)", exc)
            raise TryLater("billing is unavailable") from exc
        return reply
