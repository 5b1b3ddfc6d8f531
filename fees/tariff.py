"""The tariff: dated price rules per check type and channel, and monthly discount tiers.

A check is priced by the rule in force on the JST day it happened (DOMAIN.md, "Fees": tariffs
change over time). Loading validates the whole file and refuses overlapping rules, so a price
is never ambiguous.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from registry.clock import JST
from registry.errors import ConfigError, JPKIError

CHANNELS = ("ocsp", "crl", "linkage", "any")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TariffRule(_Model):
    id: str = Field(min_length=1, max_length=64)
    check: str = Field(min_length=1, max_length=64)
    channel: str = "any"
    valid_from: date
    valid_to: date | None = None
    yen: int = Field(ge=0)

    @model_validator(mode="after")
    def _check(self) -> TariffRule:
        if self.channel not in CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
        if self.valid_to is not None and self.valid_to < self.valid_from:
            raise ValueError("valid_to is before valid_from")
        return self

    def in_force(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)


class Tier(_Model):
    from_checks: int = Field(ge=0)
    percent: int = Field(ge=0, le=100)


class Discounts(_Model):
    tiers: list[Tier] = []


class DiscountTable(_Model):
    default: Discounts = Discounts()
    verifiers: dict[str, Discounts] = {}


class StatusConfirmation(_Model):
    repeat_rule_id: str = "status-confirmation-repeat"


class TariffFile(_Model):
    rule: list[TariffRule]
    status_confirmation: StatusConfirmation = StatusConfirmation()
    discounts: DiscountTable = DiscountTable()


class UnpricedCheck(JPKIError):
    """No rule prices this check: the tariff must be fixed before such checks are answered."""


@dataclass(frozen=True)
class Price:
    rule_id: str
    yen: int


class Tariff:
    def __init__(self, spec: TariffFile) -> None:
        self.spec = spec
        self.repeat_rule_id = spec.status_confirmation.repeat_rule_id
        self._by_check: dict[str, list[TariffRule]] = {}
        for rule in spec.rule:
            self._by_check.setdefault(rule.check, []).append(rule)
        self._refuse_overlaps()

    def _refuse_overlaps(self) -> None:
        for check, rules in self._by_check.items():
            for channel in CHANNELS:
                same = sorted((r for r in rules if r.channel == channel),
                              key=lambda r: r.valid_from)
                for earlier, later in zip(same, same[1:], strict=False):
                    if earlier.valid_to is None or earlier.valid_to >= later.valid_from:
                        raise ConfigError(f"tariff: rules {earlier.id} and {later.id} overlap"
                                          f" for {check} on channel {channel}")

    @property
    def check_types(self) -> list[str]:
        return sorted(self._by_check)

    def price(self, check: str, channel: str, at: datetime) -> Price:
        """The rule in force on the JST day of `at`; a channel-specific rule beats "any"."""
        day = at.astimezone(JST).date()
        candidates = [r for r in self._by_check.get(check, ()) if r.in_force(day)]
        for wanted in (channel, "any"):
            for rule in candidates:
                if rule.channel == wanted:
                    return Price(rule.id, rule.yen)
        raise UnpricedCheck(f"no tariff rule prices {check} on {channel} on {day}")

    def discount_percent(self, verifier: str, charged_checks: int) -> int:
        table = self.spec.discounts.verifiers.get(verifier, self.spec.discounts.default)
        percent = 0
        for tier in sorted(table.tiers, key=lambda t: t.from_checks):
            if charged_checks >= tier.from_checks:
                percent = tier.percent
        return percent


def discounted(subtotal: int, percent: int) -> int:
    """Integer yen: the total is rounded down (1円未満切り捨て)."""
    return subtotal * (100 - percent) // 100


def load_tariff(path: Path) -> Tariff:
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such tariff file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Tariff(TariffFile(**raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{path}: {key}: {first['msg']}") from None
