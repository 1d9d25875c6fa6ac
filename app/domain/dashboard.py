"""What the manager's dashboard shows: enrollments per day, the program's key figures, the latest members.

Every figure is one aggregate query scoped to one program; nothing loads rows to count them in Python. Days are
UTC calendar days: the database buckets timestamps into dates (SQLite's `date()`, PostgreSQL's cast of the UTC
wall-clock time), and the pure functions below lay those buckets out on a window of consecutive days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Date, and_, case, cast, distinct, func, literal_column, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from app.domain.cards import display_name
from app.domain.enrollment import CHANNELS
from app.domain.money import format_amount
from app.models import Card, Customer, LedgerEntry, Location, Program, Purchase

WINDOWS = (30, 90)
# The name of the "location" of enrollments that happened at no till: the web form and referral links.
ONLINE = "Online"
CHANNEL_LABELS = {"web": "Web form", "till": "Till", "api": "API", "referral": "Referral"}
# More locations than this would make an unreadable stack; the smallest ones are folded into one series.
MAX_LOCATION_SERIES = 7
OTHER_LOCATIONS = "Other locations"


@dataclass(frozen=True)
class DailyEnrollments:
    """How many members enrolled on one UTC day through one channel at one location."""

    day: dt.date
    channel: str
    location: str
    count: int


@dataclass(frozen=True)
class StackedSeries:
    """Counts per day for each series (a channel or a location), laid out on consecutive days, oldest first."""

    days: tuple[dt.date, ...]
    series: tuple[str, ...]
    counts: Mapping[tuple[dt.date, str], int]

    def count(self, day: dt.date, series: str) -> int:
        return self.counts.get((day, series), 0)

    def day_total(self, day: dt.date) -> int:
        return sum(self.count(day, name) for name in self.series)

    def series_total(self, series: str) -> int:
        return sum(self.count(day, series) for day in self.days)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Kpis:
    """The program's key figures; money in minor units of the program currency."""

    members: int
    active_members: int  # members with a committed purchase in the window
    purchases: int
    purchases_in_window: int
    revenue: int
    revenue_in_window: int
    points_issued: int
    points_redeemed: int
    points_outstanding: int


@dataclass(frozen=True)
class RecentEnrollment:
    display_name: str  # masked: a manager's screen may be seen by others, so never a full name
    channel: str
    location: str
    enrolled_at: dt.datetime


@dataclass(frozen=True)
class Dashboard:
    today: dt.date
    kpis: Kpis
    # Enrollments per day over the longest window; the shorter windows are cut from it.
    daily: tuple[DailyEnrollments, ...]
    latest: tuple[RecentEnrollment, ...]
    ever_enrolled: bool

    def by_channel(self, days: int) -> StackedSeries:
        return stack_by(self.daily, window(self.today, days), "channel", CHANNELS)

    def by_location(self, days: int) -> StackedSeries:
        return stack_by(self.daily, window(self.today, days), "location", location_order(self.daily))


def build_dashboard(session: Session, program: Program, now: dt.datetime, latest: int = 10) -> Dashboard:
    """Everything the dashboard shows for one program, as of `now` (an aware datetime)."""
    today = now.astimezone(dt.UTC).date()
    since = window_start(today, max(WINDOWS))
    kpis = program_kpis(session, program, since=window_start(today, 30))
    recent = latest_enrollments(session, program, limit=latest)
    return Dashboard(
        today=today,
        kpis=kpis,
        daily=tuple(daily_enrollments(session, program, since=since)),
        latest=tuple(recent),
        ever_enrolled=kpis.members > 0,
    )


def window(today: dt.date, days: int) -> tuple[dt.date, ...]:
    """The `days` consecutive days that end today, oldest first."""
    return tuple(today - dt.timedelta(days=offset) for offset in range(days - 1, -1, -1))


def window_start(today: dt.date, days: int) -> dt.datetime:
    """Midnight UTC of the first day of the window, so "the last 30 days" means the same in every figure."""
    first = today - dt.timedelta(days=days - 1)
    return dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC)


def utc_day(session: Session, column: Any) -> ColumnElement[Any]:
    """A timestamp column bucketed into its UTC calendar date, in the session's SQL dialect."""
    if session.get_bind().dialect.name == "postgresql":
        # timestamptz is converted to the session's time zone when cast; AT TIME ZONE 'UTC' pins it. The zone is
        # a literal, not a bound parameter, so the SELECT and GROUP BY expressions are textually the same and
        # PostgreSQL accepts the grouping.
        return cast(func.timezone(literal_column("'UTC'"), column), Date)
    # SQLite stores the UTC timestamp as "YYYY-MM-DD HH:MM:SS..." text; date() takes its day.
    return func.date(column)


def _as_date(value: dt.date | str) -> dt.date:
    # SQLite's date() answers text, PostgreSQL a date.
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


def daily_enrollments(
    session: Session, program: Program, *, since: dt.datetime | None, online: str = ONLINE
) -> list[DailyEnrollments]:
    """Enrollments per UTC day, channel and location (`online` names no location), since `since` or ever:
    one GROUP BY, one row per bucket."""
    day = utc_day(session, Customer.created_at).label("day")
    query = select(day, Customer.channel, Customer.location_id, func.count().label("n")).where(
        Customer.program_id == program.id
    )
    if since is not None:
        query = query.where(Customer.created_at >= since)
    rows = session.execute(query.group_by(day, Customer.channel, Customer.location_id)).tuples()
    names = _location_names(session, program)
    return [
        DailyEnrollments(_as_date(bucket), channel, names.get(location_id, online), count)
        for bucket, channel, location_id, count in rows
    ]


def _location_names(session: Session, program: Program) -> dict[int | None, str]:
    rows = session.execute(select(Location.id, Location.name).where(Location.program_id == program.id)).tuples()
    return {location_id: name for location_id, name in rows}


def program_kpis(session: Session, program: Program, *, since: dt.datetime) -> Kpis:
    """Members, activity, purchases, revenue and points of one program; `since` starts the recent window."""
    members = session.scalar(select(func.count()).select_from(Customer).where(Customer.program_id == program.id))

    committed = and_(Purchase.program_id == program.id, Purchase.status == "committed")
    recent = Purchase.created_at >= since
    purchases = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((recent, 1), else_=0)), 0),
            func.coalesce(func.sum(Purchase.amount_due), 0),
            func.coalesce(func.sum(case((recent, Purchase.amount_due), else_=0)), 0),
            func.count(distinct(case((recent, Purchase.card_id)))),
        ).where(committed)
    ).one()

    # A voided purchase's points were reversed, so its earn and redeem entries (and the void entry itself)
    # count as neither issued nor redeemed. Then issued - redeemed - points taken by negative adjustments is
    # exactly what the cards hold.
    not_voided = or_(LedgerEntry.purchase_id.is_(None), Purchase.status == "committed")
    issued = or_(LedgerEntry.kind.in_(("earn", "bonus")), and_(LedgerEntry.kind == "adjust", LedgerEntry.points > 0))
    points = session.execute(
        select(
            func.coalesce(func.sum(case((and_(issued, not_voided), LedgerEntry.points), else_=0)), 0),
            func.coalesce(func.sum(case((and_(LedgerEntry.kind == "redeem", not_voided), -LedgerEntry.points),
                                        else_=0)), 0),
        )
        .select_from(LedgerEntry)
        .join(Card, Card.id == LedgerEntry.card_id)
        .outerjoin(Purchase, Purchase.id == LedgerEntry.purchase_id)
        .where(Card.program_id == program.id)
    ).one()
    outstanding = session.scalar(
        select(func.coalesce(func.sum(Card.points), 0)).where(Card.program_id == program.id)
    )
    return Kpis(
        members=int(members or 0),
        active_members=int(purchases[4]),
        purchases=int(purchases[0]),
        purchases_in_window=int(purchases[1]),
        revenue=int(purchases[2]),
        revenue_in_window=int(purchases[3]),
        points_issued=int(points[0]),
        points_redeemed=int(points[1]),
        points_outstanding=int(outstanding or 0),
    )


def latest_enrollments(session: Session, program: Program, *, limit: int = 10) -> list[RecentEnrollment]:
    """The newest members, newest first, with masked names."""
    rows = session.execute(
        select(Customer.name, Customer.channel, Location.name, Customer.created_at)
        .outerjoin(Location, Location.id == Customer.location_id)
        .where(Customer.program_id == program.id)
        .order_by(Customer.created_at.desc(), Customer.id.desc())
        .limit(limit)
    ).tuples()
    return [
        RecentEnrollment(display_name(name), channel, location or ONLINE, created_at)
        for name, channel, location, created_at in rows
    ]


def location_order(rows: Iterable[DailyEnrollments]) -> tuple[str, ...]:
    """Locations by enrollments, busiest first (ties by name); the smallest beyond the limit become one series."""
    totals: dict[str, int] = {}
    for row in rows:
        totals[row.location] = totals.get(row.location, 0) + row.count
    ranked = sorted(totals, key=lambda name: (-totals[name], name))
    if len(ranked) > MAX_LOCATION_SERIES:
        return (*ranked[: MAX_LOCATION_SERIES - 1], OTHER_LOCATIONS)
    return tuple(ranked)


def stack_by(
    rows: Iterable[DailyEnrollments], days: Sequence[dt.date], dimension: str, series: Sequence[str]
) -> StackedSeries:
    """Lay enrollments out on `days`, one series per channel or location; rows outside the days are left out.

    A location not among `series` is counted under OTHER_LOCATIONS when that series exists.
    """
    if dimension not in ("channel", "location"):
        raise ValueError(f"unknown dimension {dimension!r}")
    wanted = set(days)
    known = set(series)
    counts: dict[tuple[dt.date, str], int] = {}
    for row in rows:
        if row.day not in wanted:
            continue
        name = row.channel if dimension == "channel" else row.location
        if name not in known:
            if OTHER_LOCATIONS not in known:
                continue
            name = OTHER_LOCATIONS
        counts[row.day, name] = counts.get((row.day, name), 0) + row.count
    return StackedSeries(days=tuple(days), series=tuple(series), counts=counts)


def display_money(minor: int, currency: str) -> str:
    """An amount for people to read: thousands grouped, then the currency code ("1,234.50 EUR")."""
    plain = format_amount(minor, currency)
    sign = "-" if plain.startswith("-") else ""
    units, dot, fraction = plain.lstrip("-").partition(".")
    return f"{sign}{int(units):,}{dot}{fraction} {currency}"
