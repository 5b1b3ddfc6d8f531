"""The validity rule (DOMAIN.md, "Validity").

From 00:00:00 JST on the day of issue to 23:59:59 JST on the earliest of:
- the 5th birthday after issuance (the 6th when a renewal happens within the last three months
  of the old certificate's validity), counting only birthdays strictly after the day of issue;
  under the next-generation profile the 10th (the 11th after a renewal within the last year:
  ca/cardprofile.py has the table);
- the card's expiry (10th birthday after issuance, 5th for residents under 18, unless given;
  under the next-generation profile one birthday later after a renewal in the window, since
  card and certificates are renewed together);
- for the signature certificate, the authentication certificate's end;
- the issuing CA's notAfter (a leaf never outlives its issuer, RFC 5280 §6.1.3).

29 February (design): in a common year the birthday of someone born on 29 February is taken to
be 28 February, so a certificate never runs past the day the holder's age changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from registry.clock import JST
from registry.errors import InvalidInput

ADULT_AGE = 18


def birthday_in(dob: date, year: int) -> date:
    try:
        return dob.replace(year=year)
    except ValueError:  # 29 February in a common year
        return date(year, 2, 28)


def nth_birthday_after(dob: date, day: date, n: int) -> date:
    """The n-th birthday strictly after `day`."""
    first_year = day.year if birthday_in(dob, day.year) > day else day.year + 1
    return birthday_in(dob, first_year + n - 1)


def age_on(dob: date, day: date) -> int:
    years = day.year - dob.year
    return years - 1 if birthday_in(dob, day.year) > day else years


def default_card_expiry(dob: date, issue_day: date, extra_birthdays: int = 0) -> date:
    """The card expires on the 10th birthday after issuance (5th for minors), plus
    `extra_birthdays` (a next-generation card renewed in its window, ca/cardprofile.py)."""
    years = 10 if age_on(dob, issue_day) >= ADULT_AGE else 5
    return nth_birthday_after(dob, issue_day, years + extra_birthdays)


def renewal_within_window(old_not_after: datetime, issued_at: datetime, days: int = 92) -> bool:
    """A renewal in the last `days` of the old validity earns one more birthday: the last
    three months (92 days) today, the last year (366 days) for the next-generation card."""
    return issued_at >= old_not_after - timedelta(days=days)


@dataclass(frozen=True)
class Validity:
    not_before: datetime
    authentication_not_after: datetime
    signature_not_after: datetime
    card_expiry: date


def end_of_day(day: date) -> datetime:
    return datetime.combine(day, time(23, 59, 59), JST)


def plan(dob: date, issued_at: datetime, *, birthdays: int = 5, card_expiry: date | None = None,
         renewal_bonus: bool = False, ca_not_after: datetime | None = None,
         renewal_extends_card: bool = False) -> Validity:
    issue_day = issued_at.astimezone(JST).date()
    if dob > issue_day:
        raise InvalidInput("is after the day of issue", field="dob")
    card = card_expiry or default_card_expiry(
        dob, issue_day, int(renewal_bonus and renewal_extends_card))
    if card <= issue_day:
        raise InvalidInput("must be after the day of issue", field="card_expiry")
    end_day = min(nth_birthday_after(dob, issue_day, birthdays + int(renewal_bonus)), card)
    auth_end = end_of_day(end_day)
    if ca_not_after is not None and ca_not_after < auth_end:
        auth_end = ca_not_after
    not_before = datetime.combine(issue_day, time(0, 0, 0), JST)
    # The signature certificate ends with the authentication one, never after it.
    return Validity(not_before, auth_end, auth_end, card)
