"""The time source, passed in rather than read deep inside logic, so tests can freeze time."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

Clock = Callable[[], datetime]
JST = timezone(timedelta(hours=9), "JST")


def system_clock() -> datetime:
    return datetime.now(UTC)


class FrozenClock:
    """A clock that stands still until moved; for tests and for reproducible demos."""

    def __init__(self, now: datetime) -> None:
        if now.tzinfo is None:
            raise ValueError("a frozen clock needs an aware datetime")
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def epoch_reader(clock: Clock) -> Callable[[], int]:
    """`epoch(clock())` for hot paths: the system clock skips building a datetime."""
    if clock is system_clock:
        return lambda: int(time.time())
    return lambda: int(clock().timestamp())


def from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def iso(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return from_epoch(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")
