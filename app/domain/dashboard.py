"""What the manager's dashboard shows beside the analytics: the series a chart stacks, the newest members, and
money for people to read. The figures themselves are in app/domain/analytics.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.cards import display_name
from app.domain.money import format_amount
from app.models import Customer, Location, Program

# The name of the "location" of enrollments that happened at no till: the web form and referral links.
ONLINE = "Online"
CHANNEL_LABELS = {"web": "Web form", "till": "Till", "api": "API", "referral": "Referral"}
# More locations than this would make an unreadable stack; the smallest ones are folded into one series.
MAX_LOCATION_SERIES = 7
OTHER_LOCATIONS = "Other locations"


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
class RecentEnrollment:
    display_name: str  # masked: a manager's screen may be seen by others, so never a full name
    channel: str
    location: str
    enrolled_at: dt.datetime


def fold_small_series(data: StackedSeries, largest_first: Sequence[str]) -> StackedSeries:
    """The series beyond MAX_LOCATION_SERIES (given largest first) folded into one OTHER_LOCATIONS series."""
    if len(largest_first) <= MAX_LOCATION_SERIES:
        return data
    kept = set(largest_first[: MAX_LOCATION_SERIES - 1])
    counts: dict[tuple[dt.date, str], int] = {}
    for (day, name), count in data.counts.items():
        key = (day, name if name in kept else OTHER_LOCATIONS)
        counts[key] = counts.get(key, 0) + count
    return StackedSeries(days=data.days, series=(*largest_first[: MAX_LOCATION_SERIES - 1], OTHER_LOCATIONS),
                         counts=counts)


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


def display_money(minor: int, currency: str) -> str:
    """An amount for people to read: thousands grouped, then the currency code ("1,234.50 EUR")."""
    plain = format_amount(minor, currency)
    sign = "-" if plain.startswith("-") else ""
    units, dot, fraction = plain.lstrip("-").partition(".")
    return f"{sign}{int(units):,}{dot}{fraction} {currency}"
