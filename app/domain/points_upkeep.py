"""The daily upkeep of balances: birthday bonuses, points expiry, and the warning members get before it.

Each job comes in two halves, so an operator can look before anything changes (`--dry-run`) and a large run
can show its progress: a plan (`birthday_bonuses_due`, `points_to_expire`, `expiry_warnings_due`) that only
reads, and a step per card (`grant_birthday_bonus`, `expire_points`, `mark_expiry_warned`) that re-checks
the card under its lock, changes it by SQL-side increments with its ledger row, and notes the card changed so
its wallet passes are republished. A step that finds the card moved on since the plan (a purchase landed, an
earlier run got there first) does nothing, so running a job twice, or two at once, applies it once.

The rules are the engine's (app/domain/mechanics.py): `BirthdayRules` (the bonus, in the program's unit, and
grace days for a missed run), `ExpiryRules` (months without a purchase, days of warning). Days are UTC calendar
days, as the dashboard counts them. A member's last activity is their last purchase, or their enrollment if
they never bought.

Expiry takes points only: a cashback balance is money the member earned and a stamp card has no expiry rule.
The warning is a service message about the member's own balance, not marketing, so it goes to every member
with an email address whatever their marketing consent; once per expiry date, because `expiry_warned_at`
counts only while it is later than the last activity (a purchase moves the expiry date, and the next expiry
is warned about afresh).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import ColumnElement, CursorResult, and_, func, or_, select, update
from sqlalchemy.orm import Session

from app.domain.cards import display_name
from app.domain.errors import ValidationError
from app.domain.mechanics import (
    BonusUnit,
    MechanicsRules,
    add_months,
    add_stamps,
    birthday_bonus_due,
    expiry_due,
    expiry_warning_due,
    mechanics_from_json,
    points_expiry_date,
)
from app.domain.pass_changes import note_card_changed
from app.models import Card, Customer, LedgerEntry, Program

log = logging.getLogger(__name__)

# add_months clamps to the month's end (31 January + 1 month = 28 February), so up to three later days of
# activity may share an expiry date: the SQL prefilter looks this many days further, the engine decides.
_MONTH_END_SLACK = dt.timedelta(days=4)


T = TypeVar("T")


@dataclass(frozen=True)
class Plan(Generic[T]):
    """What a job would do, and the programs it had to leave out (rules that do not read), with why."""

    items: tuple[T, ...]
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class BirthdayBonus:
    card_id: int
    serial: str
    holder: str  # masked: "Amina K."
    program: str
    currency: str
    birthday: dt.date  # the birthday paid for; its year is stored as the card's birthday_bonus_year
    amount: int
    unit: BonusUnit
    stamps_needed: int


@dataclass(frozen=True)
class PointsExpiry:
    card_id: int
    serial: str
    holder: str
    program: str
    points: int  # as the plan saw them; the step takes what is still there
    last_purchase_at: dt.datetime | None
    last_activity_at: dt.datetime
    expires_on: dt.date
    months: int


@dataclass(frozen=True)
class ExpiryWarning:
    card_id: int
    serial: str
    holder: str
    name: str
    email: str
    program: str
    page_token: str
    points: int
    last_activity_at: dt.datetime
    warned_at: dt.datetime | None  # the last warning, about an earlier expiry date
    expires_on: dt.date
    months: int


# --- Birthdays ----------------------------------------------------------------------------------------------------


def birthday_bonuses_due(session: Session, today: dt.date) -> Plan[BirthdayBonus]:
    """Active cards whose member's birthday bonus is due `today` (or within the grace days after it)."""
    programs, skipped = _programs_with(session, lambda rules: bool(rules.birthday and rules.birthday.bonus))
    items: list[BirthdayBonus] = []
    for program, rules in programs:
        assert rules.birthday is not None
        days = _birthday_filter(today, rules.birthday.grace_days)
        rows = session.execute(
            select(Card, Customer)
            .join(Customer, Customer.id == Card.customer_id)
            .where(Card.program_id == program.id, Card.status == "active",
                   Customer.birthday_month.is_not(None), Customer.birthday_day.is_not(None), *days)
            .order_by(Card.id)
        ).all()
        for card, customer in rows:
            assert customer.birthday_month is not None and customer.birthday_day is not None
            birthday = birthday_bonus_due((customer.birthday_month, customer.birthday_day),
                                          card.birthday_bonus_year, today, rules.birthday.grace_days)
            if birthday is not None:
                items.append(BirthdayBonus(
                    card_id=card.id, serial=card.serial, holder=display_name(customer.name), program=program.name,
                    currency=program.currency, birthday=birthday, amount=rules.birthday.bonus, unit=rules.bonus_unit,
                    stamps_needed=rules.stamps.stamps_needed if rules.stamps else 0,
                ))
    return Plan(tuple(items), skipped)


def grant_birthday_bonus(session: Session, bonus: BirthdayBonus) -> bool:
    """Pay one birthday bonus, unless this year's was paid already; True if it was paid now.

    Points go on the ledger as a "bonus" row. Cashback and stamps are not points: the ledger row then records
    the bonus in its note, with zero points, so the ledger still tells the story and still sums to the balance.
    """
    year = bonus.birthday.year
    card = session.scalar(
        select(Card)
        .where(Card.id == bonus.card_id, Card.status == "active",
               or_(Card.birthday_bonus_year.is_(None), Card.birthday_bonus_year != year))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if card is None:
        return False
    changes: dict[str, object] = {"birthday_bonus_year": year}
    points = 0
    if bonus.unit == "points":
        points = bonus.amount
        changes["points"] = Card.points + bonus.amount
        note = f"Birthday bonus {year}"
    elif bonus.unit == "cashback":
        changes["cashback"] = Card.cashback + bonus.amount
        note = f"Birthday bonus {year}: {bonus.amount} cashback (minor units)"
    else:
        stamps_after, vouchers = add_stamps(card.stamps, bonus.amount, bonus.stamps_needed)
        changes["stamps"] = Card.stamps + (stamps_after - card.stamps)
        changes["vouchers"] = Card.vouchers + vouchers
        note = f"Birthday bonus {year}: {bonus.amount} stamp{'' if bonus.amount == 1 else 's'}"
    session.execute(update(Card).where(Card.id == card.id).values(changes)
                    .execution_options(synchronize_session=False))
    session.add(LedgerEntry(card_id=card.id, kind="bonus", points=points, note=note))
    note_card_changed(session, card.id)
    session.flush()
    return True


def _birthday_filter(today: dt.date, grace_days: int) -> list[ColumnElement[bool]]:
    """SQL conditions for the (month, day) birthdays that can be due today: today and the grace days before,
    and 29 February on 28 February of a year without one. None when the window is too wide to list."""
    if grace_days > 60:
        return []
    pairs: set[tuple[int, int]] = set()
    for back in range(grace_days + 1):
        day = today - dt.timedelta(days=back)
        pairs.add((day.month, day.day))
        if (day.month, day.day) == (2, 28) and not _is_leap(day.year):
            pairs.add((2, 29))
    return [or_(*(and_(Customer.birthday_month == m, Customer.birthday_day == d) for m, d in sorted(pairs)))]


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


# --- Expiry -------------------------------------------------------------------------------------------------------


_ACTIVITY = func.coalesce(Card.last_purchase_at, Card.created_at)


def points_to_expire(session: Session, today: dt.date) -> Plan[PointsExpiry]:
    """Cards holding points whose last purchase (or enrollment) is the program's expiry months ago or more."""
    programs, skipped = _programs_with(session, lambda rules: rules.expiry is not None)
    items: list[PointsExpiry] = []
    for program, rules in programs:
        assert rules.expiry is not None
        months = rules.expiry.months
        latest = _midnight(add_months(today, -months) + _MONTH_END_SLACK)
        rows = session.execute(
            select(Card, Customer.name)
            .join(Customer, Customer.id == Card.customer_id)
            .where(Card.program_id == program.id, Card.points > 0, _ACTIVITY < latest)
            .order_by(Card.id)
        ).all()
        for card, name in rows:
            activity = _last_activity(card)
            expires = expiry_due(activity.date(), today, months)
            if expires is not None:
                items.append(PointsExpiry(
                    card_id=card.id, serial=card.serial, holder=display_name(name), program=program.name,
                    points=card.points, last_purchase_at=card.last_purchase_at, last_activity_at=activity,
                    expires_on=expires, months=months,
                ))
    return Plan(tuple(items), skipped)


def expire_points(session: Session, expiry: PointsExpiry) -> int:
    """Take a card's points to zero with an "adjust" ledger row; the points taken (0 if it moved on meanwhile).

    The card is read under its lock, so what is taken is what is still there, and a purchase that landed
    after the plan (a new last activity) keeps the points.
    """
    card = session.scalar(
        select(Card).where(Card.id == expiry.card_id).with_for_update().execution_options(populate_existing=True)
    )
    if card is None or card.points <= 0 or _last_activity(card) != expiry.last_activity_at:
        return 0
    taken = card.points
    session.execute(update(Card).where(Card.id == card.id).values(points=Card.points - taken)
                    .execution_options(synchronize_session=False))
    session.add(LedgerEntry(card_id=card.id, kind="adjust", points=-taken,
                            note=f"Expired after {expiry.months} months without a purchase"))
    note_card_changed(session, card.id)
    session.flush()
    return taken


def expiry_warnings_due(session: Session, today: dt.date) -> Plan[ExpiryWarning]:
    """Members with an email address whose points expire within the program's warning days and who have not
    been warned about this expiry date yet."""
    programs, skipped = _programs_with(session, lambda rules: bool(rules.expiry and rules.expiry.warn_days))
    items: list[ExpiryWarning] = []
    for program, rules in programs:
        assert rules.expiry is not None
        months, warn_days = rules.expiry.months, rules.expiry.warn_days
        # Activity before `earliest` has expired already; from `latest` on it expires after the warning days.
        earliest = _midnight(add_months(today, -months))
        latest = _midnight(add_months(today + dt.timedelta(days=warn_days), -months) + _MONTH_END_SLACK)
        rows = session.execute(
            select(Card, Customer)
            .join(Customer, Customer.id == Card.customer_id)
            .where(Card.program_id == program.id, Card.points > 0, Customer.email.is_not(None),
                   _ACTIVITY >= earliest, _ACTIVITY < latest)
            .order_by(Card.id)
        ).all()
        for card, customer in rows:
            assert customer.email is not None
            activity = _last_activity(card)
            expires = expiry_warning_due(activity.date(), today, months, warn_days, _warned_for(card, months))
            if expires is not None:
                items.append(ExpiryWarning(
                    card_id=card.id, serial=card.serial, holder=display_name(customer.name),
                    name=customer.name, email=customer.email, program=program.name, page_token=card.page_token,
                    points=card.points, last_activity_at=activity, warned_at=card.expiry_warned_at,
                    expires_on=expires, months=months,
                ))
    return Plan(tuple(items), skipped)


def mark_expiry_warned(session: Session, warning: ExpiryWarning, now: dt.datetime) -> bool:
    """Record that the member is warned now; False if they were already (another run) or bought since.

    The caller commits the mark before sending, so no crash or second run can send a warning twice; a send
    that fails is undone with `unmark_expiry_warned`. (A crash between the commit and the send loses that
    one warning: at most once, as for every message we send.)
    """
    result = cast(CursorResult[Any], session.execute(
        update(Card)
        .where(Card.id == warning.card_id, Card.points > 0, _ACTIVITY == warning.last_activity_at,
               or_(Card.expiry_warned_at.is_(None), Card.expiry_warned_at < _ACTIVITY))
        .values(expiry_warned_at=now)
        .execution_options(synchronize_session=False)
    ))
    return result.rowcount == 1


def unmark_expiry_warned(session: Session, warning: ExpiryWarning, now: dt.datetime) -> None:
    """Undo `mark_expiry_warned` after the message could not be sent, so the next run sends it."""
    session.execute(
        update(Card)
        .where(Card.id == warning.card_id, Card.expiry_warned_at == now)
        .values(expiry_warned_at=warning.warned_at)
        .execution_options(synchronize_session=False)
    )


def _warned_for(card: Card, months: int) -> dt.date | None:
    """The expiry date the member was last warned about, if that warning is about the current expiry date."""
    activity = _last_activity(card)
    if card.expiry_warned_at is None or card.expiry_warned_at < activity:
        return None
    return points_expiry_date(activity.date(), months)


def _last_activity(card: Card) -> dt.datetime:
    return card.last_purchase_at or card.created_at


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), dt.UTC)


# --- Programs ------------------------------------------------------------------------------------------------------


def _programs_with(
    session: Session, wanted: Callable[[MechanicsRules], bool]
) -> tuple[list[tuple[Program, MechanicsRules]], tuple[str, ...]]:
    """The programs whose rules turn the job on, and a message for each whose rules do not read."""
    found: list[tuple[Program, MechanicsRules]] = []
    skipped: list[str] = []
    for program in session.scalars(select(Program).order_by(Program.id)):
        try:
            rules = mechanics_from_json(program.rules)
        except ValidationError as error:
            skipped.append(f"{program.slug}: its rules do not read ({error.detail}); fix them in the settings.")
            log.warning("Program %s skipped by points upkeep: %s", program.slug, error.detail)
            continue
        if wanted(rules):
            found.append((program, rules))
    return found, tuple(skipped)
