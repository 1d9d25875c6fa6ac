"""Enrollment statistics for managers and the stats API."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Customer, Location, Program

PERIODS = ("day", "week", "month")


def period_start(moment: dt.datetime, period: str) -> dt.date:
    """The first day of the day, ISO week (Monday) or month that holds the moment."""
    day = moment.date()
    if period == "day":
        return day
    if period == "week":
        return day - dt.timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown period {period!r}")


def enrollment_counts(session: Session, program: Program, period: str) -> dict[str, Any]:
    """Enrollments per period, in total, by channel and by location name (oldest period first)."""
    locations: dict[int | None, str] = {
        location_id: name
        for location_id, name in session.execute(
            select(Location.id, Location.name).where(Location.program_id == program.id)
        ).tuples()
    }
    rows = session.execute(
        select(Customer.created_at, Customer.channel, Customer.location_id).where(Customer.program_id == program.id)
    ).all()
    totals: Counter[dt.date] = Counter()
    by_channel: Counter[tuple[dt.date, str]] = Counter()
    by_location: Counter[tuple[dt.date, str]] = Counter()
    for created_at, channel, location_id in rows:
        start = period_start(created_at, period)
        totals[start] += 1
        by_channel[start, channel] += 1
        by_location[start, locations.get(location_id, "online")] += 1
    return {
        "period": period,
        "total": sum(totals.values()),
        "series": [
            {
                "start": start.isoformat(),
                "count": totals[start],
                "by_channel": {c: n for (s, c), n in sorted(by_channel.items()) if s == start},
                "by_location": {loc: n for (s, loc), n in sorted(by_location.items()) if s == start},
            }
            for start in sorted(totals)
        ],
    }
