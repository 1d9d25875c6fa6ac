"""Daily roll-ups behind the manager's analytics, and the watermark of what they have folded in.

A purchase, ledger entry or member is written with `rollup_state` ROLLUP_NEW (a server default, so the hot
purchase path sends nothing more); a void moves a purchase to ROLLUP_VOIDED_COUNTED or ROLLUP_VOIDED_NEW.
`refresh_rollups` (app/domain/analytics_rollups.py) folds the rows that are not settled into these tables and
settles them at ROLLUP_SETTLED. The dashboard then reads a few thousand roll-up rows instead of millions of
purchases.
Bulk loaders insert rows already settled and call `rebuild_rollups`. Keys never hold NULL (NULLs are never
equal in a unique key), so "no location" is 0.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigIntId

# On SQLite the roll-ups are stored in their key's order (WITHOUT ROWID), so summing a range of days reads the
# rows in place instead of looking each one up from the key's index: several times faster at a chain's size.
_CLUSTERED = {"sqlite_with_rowid": False}

ROLLUP_SETTLED = 0  # folded in: counted if committed, not counted if voided
ROLLUP_NEW = 1  # written since the last refresh
ROLLUP_VOIDED_COUNTED = 2  # a purchase voided after a refresh counted it: to be taken back out
ROLLUP_VOIDED_NEW = 3  # a purchase voided before any refresh saw it: nothing to take out

# The location key of what happened at no till (the web form, referral links) and of purchases made without one.
NO_LOCATION = 0


class AnalyticsState(Base):
    """One row per program: taken FOR UPDATE by a refresh, so two refreshes never fold the same rows twice."""

    __tablename__ = "analytics_state"

    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), primary_key=True)
    refreshed_at: Mapped[dt.datetime | None]


class DailySales(Base):
    """Committed purchases per UTC day and location: their count, basket, discounts, amount paid and points."""

    __tablename__ = "daily_sales"
    __table_args__ = _CLUSTERED

    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), primary_key=True)
    day: Mapped[dt.date] = mapped_column(primary_key=True)
    location_key: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    purchases: Mapped[int] = mapped_column(BigInteger, default=0)
    amount: Mapped[int] = mapped_column(BigInteger, default=0)
    discount: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_due: Mapped[int] = mapped_column(BigInteger, default=0)
    points_earned: Mapped[int] = mapped_column(BigInteger, default=0)
    points_redeemed: Mapped[int] = mapped_column(BigInteger, default=0)


class DailyVisits(Base):
    """Committed purchases per UTC day, by the day of the member's previous purchase (`prev_day`; for a first
    purchase, the day they enrolled) and which purchase of the member it was (`nth`: 1, 2, or 3 for any later
    one). A member's first purchase within a range of days is the one whose previous purchase falls before the
    range, so distinct buyers of any range, first and second purchases and churn are sums over this table
    (docs/analytics.md)."""

    __tablename__ = "daily_visits"
    __table_args__ = _CLUSTERED

    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), primary_key=True)
    day: Mapped[dt.date] = mapped_column(primary_key=True)
    prev_day: Mapped[dt.date] = mapped_column(primary_key=True)
    nth: Mapped[int] = mapped_column(primary_key=True)
    purchases: Mapped[int] = mapped_column(BigInteger, default=0)


class MonthlyCohorts(Base):
    """Members of an enrollment month who made at least one committed purchase in a calendar month."""

    __tablename__ = "monthly_cohorts"
    __table_args__ = _CLUSTERED

    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), primary_key=True)
    cohort_month: Mapped[dt.date] = mapped_column(primary_key=True)
    activity_month: Mapped[dt.date] = mapped_column(primary_key=True)
    members: Mapped[int] = mapped_column(BigInteger, default=0)


class DailyPoints(Base):
    """Ledger entries per UTC day and kind: points added (positive entries) and taken (negative ones)."""

    __tablename__ = "daily_points"
    __table_args__ = _CLUSTERED

    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), primary_key=True)
    day: Mapped[dt.date] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    points_added: Mapped[int] = mapped_column(BigInteger, default=0)
    points_taken: Mapped[int] = mapped_column(BigInteger, default=0)
    entries: Mapped[int] = mapped_column(BigInteger, default=0)


class DailyEnrollments(Base):
    """Members enrolled per UTC day, channel and location."""

    __tablename__ = "daily_enrollments"
    __table_args__ = _CLUSTERED

    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), primary_key=True)
    day: Mapped[dt.date] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    location_key: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    members: Mapped[int] = mapped_column(BigInteger, default=0)


class DailyReferrals(Base):
    """Members who enrolled with a referral code per UTC day of enrollment, and how far they have gone since."""

    __tablename__ = "daily_referrals"
    __table_args__ = _CLUSTERED

    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), primary_key=True)
    day: Mapped[dt.date] = mapped_column(primary_key=True)
    referred: Mapped[int] = mapped_column(BigInteger, default=0)
    self_referrals: Mapped[int] = mapped_column(BigInteger, default=0)
    purchased: Mapped[int] = mapped_column(BigInteger, default=0)
    rewarded: Mapped[int] = mapped_column(BigInteger, default=0)


class DailyCouponUses(Base):
    """Uses of a coupon by committed purchases per UTC day: the discount it gave and what those purchases were."""

    __tablename__ = "daily_coupon_uses"
    __table_args__ = _CLUSTERED

    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), primary_key=True)
    day: Mapped[dt.date] = mapped_column(primary_key=True)
    coupon_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("coupons.id"), primary_key=True)
    uses: Mapped[int] = mapped_column(BigInteger, default=0)
    discount: Mapped[int] = mapped_column(BigInteger, default=0)
    amount: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_due: Mapped[int] = mapped_column(BigInteger, default=0)
