"""The validity rule under a frozen clock: birthdays, 29 February, card expiry, under-15s."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from ca import cardprofile, validity
from ca.issuance import IssueRequest
from ca.kinds import CertKind
from jpki.context import Context
from jpki.settings import load_settings
from registry import certificates
from registry.clock import JST, FrozenClock
from registry.errors import InvalidInput
from registry.facts import Facts
from tests.helpers import CONFIG

pytestmark = pytest.mark.engines


def jst(*args: int) -> datetime:
    return datetime(*args, tzinfo=JST)


@pytest.mark.parametrize(
    ("dob", "issued", "end"),
    [
        # birthday later in the year of issue: that one is the 1st
        (date(1980, 12, 1), date(2026, 11, 24), date(2030, 12, 1)),
        # birthday already passed this year: next year's is the 1st
        (date(1980, 3, 1), date(2026, 11, 24), date(2031, 3, 1)),
        # issued on the birthday itself: it does not count
        (date(1980, 11, 24), date(2026, 11, 24), date(2031, 11, 24)),
        # 29 February: 28 February in a common year ...
        (date(1980, 2, 29), date(2026, 11, 24), date(2031, 2, 28)),
        # ... and 29 February when the 5th birthday falls in a leap year
        (date(1980, 2, 29), date(2027, 3, 10), date(2032, 2, 29)),
    ],
)
def test_fifth_birthday_after_issuance(dob: date, issued: date, end: date) -> None:
    plan = validity.plan(dob, jst(issued.year, issued.month, issued.day, 10, 30))
    assert plan.not_before == jst(issued.year, issued.month, issued.day, 0, 0, 0)
    assert plan.authentication_not_after == jst(end.year, end.month, end.day, 23, 59, 59)
    assert plan.signature_not_after <= plan.authentication_not_after


def test_day_of_issue_is_the_jst_day() -> None:
    # 2026-11-24 16:00 UTC is already 25 November in Japan
    plan = validity.plan(date(1980, 1, 1), datetime(2026, 11, 24, 16, 0, tzinfo=UTC))
    assert plan.not_before == jst(2026, 11, 25, 0, 0, 0)


def test_card_expiry_caps_the_certificates() -> None:
    plan = validity.plan(date(1980, 12, 1), jst(2026, 11, 24, 9), card_expiry=date(2028, 5, 1))
    assert plan.authentication_not_after == jst(2028, 5, 1, 23, 59, 59)


def test_renewal_in_the_last_three_months_earns_the_sixth_birthday() -> None:
    plan = validity.plan(date(1980, 12, 1), jst(2026, 11, 24, 9), renewal_bonus=True)
    assert plan.authentication_not_after == jst(2031, 12, 1, 23, 59, 59)


def test_minor_card_expires_on_the_fifth_birthday() -> None:
    assert validity.default_card_expiry(date(2015, 6, 1), date(2026, 11, 24)) == date(2031, 6, 1)
    assert validity.default_card_expiry(date(1980, 6, 1), date(2026, 11, 24)) == date(2036, 6, 1)


def test_ca_not_after_caps_the_leaf() -> None:
    cap = jst(2027, 1, 1, 0, 0, 0)
    plan = validity.plan(date(1980, 12, 1), jst(2026, 11, 24, 9), ca_not_after=cap)
    assert plan.authentication_not_after == cap


# The next-generation profile (ca/cardprofile.py NEXT): the same rule with 10 birthdays, a
# renewal window of one year, and a card renewed with its certificates.
NEXT = dict(birthdays=cardprofile.NEXT.birthdays,
            renewal_extends_card=cardprofile.NEXT.renewal_extends_card)


def test_next_profile_ends_on_the_tenth_birthday() -> None:
    plan = validity.plan(date(1980, 12, 1), jst(2026, 11, 24, 9), **NEXT)  # type: ignore[arg-type]
    assert plan.authentication_not_after == jst(2035, 12, 1, 23, 59, 59)
    # 29 February, 10th birthday in a common year: 28 February
    plan = validity.plan(date(1980, 2, 29), jst(2026, 11, 24, 9), **NEXT)  # type: ignore[arg-type]
    assert plan.authentication_not_after == jst(2036, 2, 29, 23, 59, 59)
    plan = validity.plan(date(1980, 2, 29), jst(2027, 11, 24, 9), **NEXT)  # type: ignore[arg-type]
    assert plan.authentication_not_after == jst(2037, 2, 28, 23, 59, 59)


@pytest.mark.parametrize(("days_left", "bonus"), [(366, True), (367, False)])
def test_next_profile_renewal_window_is_one_year(days_left: int, bonus: bool) -> None:
    now = jst(2026, 11, 24, 9)
    old_end = now + timedelta(days=days_left)
    assert validity.renewal_within_window(old_end, now,
                                          cardprofile.NEXT.renewal_window_days) is bonus
    # today's window: 92 days
    assert validity.renewal_within_window(old_end, now,
                                          cardprofile.CURRENT.renewal_window_days) is False
    assert validity.renewal_within_window(now + timedelta(days=92), now,
                                          cardprofile.CURRENT.renewal_window_days) is True
    plan = validity.plan(date(1980, 12, 1), now, renewal_bonus=bonus,
                         **NEXT)  # type: ignore[arg-type]
    end = 2036 if bonus else 2035  # one birthday more, and the card follows
    assert plan.authentication_not_after == jst(end, 12, 1, 23, 59, 59)


def test_next_profile_capped_as_today() -> None:
    # a minor's card lasts 5 years and caps the certificates
    plan = validity.plan(date(2015, 6, 1), jst(2026, 11, 24, 9), **NEXT)  # type: ignore[arg-type]
    assert plan.authentication_not_after == jst(2031, 6, 1, 23, 59, 59)
    cap = jst(2030, 1, 1, 0, 0, 0)
    plan = validity.plan(date(1980, 12, 1), jst(2026, 11, 24, 9), ca_not_after=cap,
                         **NEXT)  # type: ignore[arg-type]
    assert plan.authentication_not_after == cap
    plan = validity.plan(date(1980, 12, 1), jst(2026, 11, 24, 9), card_expiry=date(2030, 5, 1),
                         **NEXT)  # type: ignore[arg-type]
    assert plan.authentication_not_after == jst(2030, 5, 1, 23, 59, 59)


def _frozen_context(data_dir: Path, now: datetime) -> Context:
    return Context(load_settings(CONFIG, data_dir), FrozenClock(now))


def _request(tmp_path: Path, resident_id: str, dob: str, **kw: object) -> IssueRequest:
    facts = Facts.parse(name="佐藤 花子", dob=dob, sex="female",
                        address="大阪府大阪市北区中之島一丁目3番20号", municipality_code="27100")
    return IssueRequest(resident_id=resident_id, facts=facts, out_dir=tmp_path / resident_id,
                        sign_pin="pin123456", auth_pin="0000", **kw)  # type: ignore[arg-type]


def test_issuance_under_a_frozen_clock(data_dir: Path, tmp_path: Path) -> None:
    context = _frozen_context(data_dir, jst(2027, 3, 10, 14, 0))
    pair = context.issuer.issue(_request(tmp_path, "leap", "1980-02-29"))
    for kind in CertKind:
        record = certificates.require(context.store, pair.issued[kind].serial)
        assert record.not_before == int(jst(2027, 3, 10).timestamp())
        assert record.not_after == int(jst(2032, 2, 29, 23, 59, 59).timestamp())


def test_under_fifteen_gets_only_the_authentication_certificate(data_dir: Path,
                                                                tmp_path: Path) -> None:
    context = _frozen_context(data_dir, jst(2026, 11, 24, 10))
    pair = context.issuer.issue(_request(tmp_path, "child", "2012-11-25"))  # 13 years old
    assert set(pair.issued) == {CertKind.AUTHENTICATION}
    assert "signature" not in pair.to_json()
    record = certificates.require(context.store, pair.issued[CertKind.AUTHENTICATION].serial)
    # a minor's card ends on the 5th birthday: 2012-11-25 -> 5th after 2026-11-24 is 2030
    assert record.not_after == int(jst(2030, 11, 25, 23, 59, 59).timestamp())


def test_operator_override_issues_a_signature_certificate_to_a_minor(
        data_dir: Path, tmp_path: Path) -> None:
    context = _frozen_context(data_dir, jst(2026, 11, 24, 10))
    pair = context.issuer.issue(_request(tmp_path, "teen", "2012-11-24",
                                         allow_minor_signature=True))
    assert set(pair.issued) == {CertKind.SIGNATURE, CertKind.AUTHENTICATION}


def test_fifteenth_birthday_today_gets_the_pair(data_dir: Path, tmp_path: Path) -> None:
    context = _frozen_context(data_dir, jst(2026, 11, 24, 10))
    pair = context.issuer.issue(_request(tmp_path, "fifteen", "2011-11-24"))
    assert set(pair.issued) == {CertKind.SIGNATURE, CertKind.AUTHENTICATION}


def test_card_expiry_in_the_past_is_refused(data_dir: Path, tmp_path: Path) -> None:
    context = _frozen_context(data_dir, jst(2026, 11, 24, 10))
    with pytest.raises(InvalidInput, match="card_expiry"):
        context.issuer.issue(_request(tmp_path, "old-card", "1980-01-01",
                                      card_expiry=date(2026, 1, 1)))
    assert context.store.one("SELECT COUNT(*) AS n FROM certificates")["n"] == 0
