"""Enrollment statistics for managers and the stats API."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy.orm import Session

from app.domain.analytics import EPOCH_RANGE_START, DateRange, bucket_start, enrollments
from app.models import Program

PERIODS = ("day", "week", "month")


def period_start(moment: dt.datetime | dt.date, period: str) -> dt.date:
    """The first day of the day, ISO week (Monday) or month that holds the moment."""
    return bucket_start(moment.date() if isinstance(moment, dt.datetime) else moment, period)


def enrollment_counts(session: Session, program: Program, period: str, today: dt.date) -> dict[str, Any]:
    """Enrollments per period, in total, by channel and by location name (oldest period first).

    Read from the daily enrollment roll-up (one row per day, channel and location, however many members); the
    days are then folded into weeks or months here, which is the same on every engine.
    """
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}")
    totals: Counter[dt.date] = Counter()
    by_channel: dict[dt.date, Counter[str]] = defaultdict(Counter)
    by_location: dict[dt.date, Counter[str]] = defaultdict(Counter)
    daily = enrollments(session, program, DateRange(EPOCH_RANGE_START, today), bucket="day", online="online")
    for (day, channel), count in daily.by_channel.items():
        start = period_start(day, period)
        totals[start] += count
        by_channel[start][channel] += count
    for (day, location), count in daily.by_location.items():
        by_location[period_start(day, period)][location] += count
    return {
        "period": period,
        "total": sum(totals.values()),
        "series": [
            {
                "start": start.isoformat(),
                "count": totals[start],
                "by_channel": dict(sorted(by_channel[start].items())),
                "by_location": dict(sorted(by_location[start].items())),
            }
            for start in sorted(totals)
        ],
    }
