"""Rate limits as fixed windows counted in the database: values in, a refusal out, nothing kept in memory."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.domain.errors import RateLimited
from app.models import RateLimitWindow


@dataclass(frozen=True)
class Limit:
    """At most `hits` within `seconds`; `what` names the action in the refusal ("sign-in attempts")."""

    hits: int
    seconds: int
    what: str


def check_rate(session: Session, key: str, limit: Limit, now: dt.datetime) -> None:
    """Raise RateLimited if `key` has used up `limit` in the current window; does not count a hit."""
    window = session.get(RateLimitWindow, key)
    if window is not None and _open(window, limit, now) and window.hits >= limit.hits:
        retry_after = _seconds_left(window, limit, now)
        raise RateLimited(
            f"Too many {limit.what}. Try again in {_in_words(retry_after)}.", retry_after=retry_after
        )


def count_hit(session: Session, key: str, limit: Limit, now: dt.datetime) -> None:
    """Count one hit against `key`, starting a new window when the last one has closed."""
    window = session.scalar(
        select(RateLimitWindow).where(RateLimitWindow.key == key).with_for_update()
        .execution_options(populate_existing=True)
    )
    if window is None:
        try:
            with session.begin_nested():  # another server may open the same window at the same moment
                session.add(RateLimitWindow(key=key, window_start=now, hits=1))
            return
        except IntegrityError:
            window = session.scalar(
                select(RateLimitWindow).where(RateLimitWindow.key == key).with_for_update()
                .execution_options(populate_existing=True)
            )
            assert window is not None
    if _open(window, limit, now):
        window.hits += 1
    else:
        window.window_start, window.hits = now, 1
    session.flush()


def clear_hits(session: Session, key: str) -> None:
    window = session.get(RateLimitWindow, key)
    if window is not None:
        session.delete(window)
        session.flush()


def _open(window: RateLimitWindow, limit: Limit, now: dt.datetime) -> bool:
    return now < window.window_start + dt.timedelta(seconds=limit.seconds)


def _seconds_left(window: RateLimitWindow, limit: Limit, now: dt.datetime) -> int:
    end = window.window_start + dt.timedelta(seconds=limit.seconds)
    return max(1, math.ceil((end - now).total_seconds()))


def _in_words(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
