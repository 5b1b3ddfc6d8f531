"""The daily run: every CRL once a day at a configured local (JST) time.

`DailyRunner.tick()` is the whole decision and takes its time from the clock it is given, so a
test with a frozen clock can walk it across the scheduled minute. The daemon calls `tick()`
from a worker thread once a minute (signing must not block the event loop).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, time, timedelta

from registry.clock import JST, Clock, epoch

log = logging.getLogger("jpki.crl.schedule")


class DailySchedule:
    def __init__(self, at: str) -> None:
        hours, minutes = at.split(":")
        self.at = time(int(hours), int(minutes), tzinfo=JST)

    def last_due(self, now: datetime) -> datetime:
        """The latest scheduled moment at or before `now`."""
        local = now.astimezone(JST)
        today = datetime.combine(local.date(), self.at)
        return today if today <= local else today - timedelta(days=1)

    def next_due(self, now: datetime) -> datetime:
        return self.last_due(now) + timedelta(days=1)


class DailyRunner:
    """Runs `job` when the last complete run is older than the latest scheduled moment.

    `last_run` returns the epoch of the last complete run (None: never, or a CRL is missing),
    read from the registry so that a restart neither skips nor repeats a day, and a run made
    by `jpki crl generate` counts.
    """

    def __init__(self, schedule: DailySchedule, clock: Clock, job: Callable[[], object],
                 last_run: Callable[[datetime], int | None]) -> None:
        self.schedule = schedule
        self.clock = clock
        self.job = job
        self.last_run = last_run

    def due(self) -> bool:
        now = self.clock()
        last = self.last_run(now)
        return last is None or last < epoch(self.schedule.last_due(now))

    def tick(self) -> bool:
        if not self.due():
            return False
        log.info("daily CRL run starting")
        self.job()
        return True

    def seconds_until_next(self) -> float:
        now = self.clock()
        return max(0.0, (self.schedule.next_due(now) - now).total_seconds())
