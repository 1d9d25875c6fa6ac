"""Fixed-window rate limits counted in the database."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from app.domain.errors import RateLimited
from app.domain.ratelimit import Limit, check_rate, clear_hits, count_hit

LIMIT = Limit(hits=3, seconds=60, what="tries")
T0 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def test_the_limit_opens_again_when_the_window_closes(db_session: Session) -> None:
    for second in range(3):
        check_rate(db_session, "k", LIMIT, T0 + dt.timedelta(seconds=second))
        count_hit(db_session, "k", LIMIT, T0 + dt.timedelta(seconds=second))
    with pytest.raises(RateLimited, match=r"Too many tries\. Try again in 50 seconds\.") as refused:
        check_rate(db_session, "k", LIMIT, T0 + dt.timedelta(seconds=10))
    assert refused.value.extra["retry_after"] == 50
    assert refused.value.status == 429
    check_rate(db_session, "k", LIMIT, T0 + dt.timedelta(seconds=60))  # a new window
    count_hit(db_session, "k", LIMIT, T0 + dt.timedelta(seconds=60))
    check_rate(db_session, "k", LIMIT, T0 + dt.timedelta(seconds=61))


def test_keys_are_counted_apart_and_can_be_cleared(db_session: Session) -> None:
    for _ in range(3):
        count_hit(db_session, "a", LIMIT, T0)
    check_rate(db_session, "b", LIMIT, T0)
    with pytest.raises(RateLimited, match="Try again in 10 minutes"):
        check_rate(db_session, "a", Limit(hits=3, seconds=600, what="tries"), T0 + dt.timedelta(seconds=1))
    clear_hits(db_session, "a")
    check_rate(db_session, "a", LIMIT, T0)
