"""The manager's key figures over a range of days, read from the analytics roll-ups (app/models/analytics.py).

Every figure here is defined in docs/analytics.md, and each is a sum over roll-up rows (a few thousand at most,
whatever the program's size) or a count in an index, never a scan of the purchases. Days are UTC calendar days
and ranges include both ends. Money is in minor units of the program currency. The caller folds the latest rows
in first (`refresh_rollups`), so the figures are exact as of that moment.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from sqlalchemy import and_, case, func, or_, select, text
from sqlalchemy.orm import Session

from app.domain.dashboard import ONLINE
from app.domain.errors import ValidationError
from app.domain.rules import rules_from_json
from app.domain.segments import SEGMENTS, SegmentFacts, SegmentSettings, segment_of
from app.models import Card, Coupon, Customer, Location, Program

DEFAULT_RANGE_DAYS = 90
# "All time": from before any program existed.
EPOCH_RANGE_START = dt.date(2000, 1, 1)
MAX_RANGE_DAYS = 366 * 10
# Up to this many days a chart shows days, up to the second weeks, beyond that months.
DAILY_UP_TO, WEEKLY_UP_TO = 62, 26 * 7
COHORT_MONTHS = 12  # months after enrollment shown for each cohort
CHURN_POINTS = 12  # month ends shown in the churn trend
CHANNEL_ORDER = ("web", "till", "api", "referral")


@dataclass(frozen=True)
class DateRange:
    """From `start` to `end`, both included."""

    start: dt.date
    end: dt.date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def bucket(self) -> str:
        """How the range's charts group days: "day", "week" (Monday) or "month"."""
        if self.days <= DAILY_UP_TO:
            return "day"
        return "week" if self.days <= WEEKLY_UP_TO else "month"

    def query(self) -> dict[str, str]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat()}


def default_range(today: dt.date, days: int = DEFAULT_RANGE_DAYS) -> DateRange:
    return DateRange(today - dt.timedelta(days=days - 1), today)


def parse_range(start: str | None, end: str | None, today: dt.date) -> DateRange:
    """The range a manager or a till asked for (`from`/`to` as YYYY-MM-DD; either may be left out: the last
    90 days to today by default). Raises ValidationError naming the field."""
    end_day = _parse_day(end, "to") if end else today
    start_day = _parse_day(start, "from") if start else end_day - dt.timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if start_day > end_day:
        raise ValidationError(f"The range starts ({start_day}) after it ends ({end_day}).", field="from")
    if (end_day - start_day).days + 1 > MAX_RANGE_DAYS:
        raise ValidationError(f"A range is at most {MAX_RANGE_DAYS:,} days.", field="from")
    return DateRange(start_day, end_day)


def _parse_day(value: str, name: str) -> dt.date:
    try:
        if len(value) != 10:
            raise ValueError
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{name} must be a date written YYYY-MM-DD, like 2026-11-25; got {value[:40]!r}.",
                              field=name) from None
    if day.year < 2000 or day.year > 2100:
        raise ValidationError(f"{name} must be between the years 2000 and 2100.", field=name)
    return day


def bucket_start(day: dt.date, bucket: str) -> dt.date:
    """The first day of the day, ISO week (Monday) or month that holds `day`."""
    if bucket == "day":
        return day
    if bucket == "week":
        return day - dt.timedelta(days=day.weekday())
    if bucket == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown bucket {bucket!r}")


def buckets(rng: DateRange) -> tuple[dt.date, ...]:
    """The starts of the buckets that cover the range, oldest first."""
    starts: list[dt.date] = []
    day = rng.start
    while day <= rng.end:
        start = bucket_start(day, rng.bucket)
        if not starts or starts[-1] != start:
            starts.append(start)
        day += dt.timedelta(days=1)
    return tuple(starts)


def ratio(part: int, whole: int) -> Fraction | None:
    """An exact share; None when there is nothing to divide by (shown as "no data", never as 0 %)."""
    return Fraction(part, whole) if whole else None


def _as_date(value: dt.date | str) -> dt.date:
    # SQLite hands dates back as ISO text, PostgreSQL as dates.
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


# --- sales -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sales:
    """Committed purchases in the range (a voided one counts nowhere)."""

    purchases: int
    amount: int  # baskets before the program's discounts
    discount: int
    amount_due: int  # what members paid
    points_earned: int
    points_redeemed: int

    @property
    def average_basket(self) -> Fraction | None:
        """Average check before the program's discounts."""
        return ratio(self.amount, self.purchases)

    @property
    def average_paid(self) -> Fraction | None:
        """Average check after them: what a member's visit brings in."""
        return ratio(self.amount_due, self.purchases)


def sales(session: Session, program: Program, rng: DateRange) -> Sales:
    row = session.execute(text(
        "SELECT COALESCE(SUM(purchases), 0), COALESCE(SUM(amount), 0), COALESCE(SUM(discount), 0),"
        " COALESCE(SUM(amount_due), 0), COALESCE(SUM(points_earned), 0), COALESCE(SUM(points_redeemed), 0)"
        " FROM daily_sales WHERE program_id = :p AND day BETWEEN :start AND :end"
    ), _params(program, rng)).one()
    return Sales(*(int(value) for value in row))


@dataclass(frozen=True)
class SalesPoint:
    start: dt.date
    purchases: int
    amount: int
    amount_due: int


def sales_over_time(session: Session, program: Program, rng: DateRange) -> list[SalesPoint]:
    """Purchases, baskets and amounts paid per bucket of the range (every bucket, empty ones as zeros)."""
    rows = session.execute(text(
        "SELECT day, SUM(purchases), SUM(amount), SUM(amount_due) FROM daily_sales"
        " WHERE program_id = :p AND day BETWEEN :start AND :end GROUP BY day"
    ), _params(program, rng)).tuples()
    totals: dict[dt.date, list[int]] = {start: [0, 0, 0] for start in buckets(rng)}
    for day, purchases, amount, amount_due in rows:
        bucket = totals[bucket_start(_as_date(day), rng.bucket)]
        bucket[0] += int(purchases)
        bucket[1] += int(amount)
        bucket[2] += int(amount_due)
    return [SalesPoint(start, *values) for start, values in totals.items()]


# --- visits: buyers, frequency, repeat purchases, churn ---------------------------------------------------------


@dataclass(frozen=True)
class Visits:
    purchases: int
    buyers: int  # distinct members with a committed purchase in the range
    new_buyers: int  # ... whose first purchase ever is in the range
    second_purchases: int  # new buyers who made their second purchase within the range too

    @property
    def returning_buyers(self) -> int:
        return self.buyers - self.new_buyers

    @property
    def purchase_frequency(self) -> Fraction | None:
        """Purchases per buying member in the range."""
        return ratio(self.purchases, self.buyers)

    @property
    def repeat_rate(self) -> Fraction | None:
        """Of the members whose first purchase fell in the range, the share who came back within it."""
        return ratio(self.second_purchases, self.new_buyers)


def visits(session: Session, program: Program, rng: DateRange) -> Visits:
    # A member's first purchase within the range is the one purchase whose previous one (or, for a first
    # purchase, whose enrollment) is before the range; first purchases ever all count, however recent the
    # enrollment.
    row = session.execute(text(
        "SELECT COALESCE(SUM(purchases), 0),"
        " COALESCE(SUM(CASE WHEN nth = 1 OR prev_day < :start THEN purchases ELSE 0 END), 0),"
        " COALESCE(SUM(CASE WHEN nth = 1 THEN purchases ELSE 0 END), 0),"
        " COALESCE(SUM(CASE WHEN nth = 2 AND prev_day >= :start THEN purchases ELSE 0 END), 0)"
        " FROM daily_visits WHERE program_id = :p AND day BETWEEN :start AND :end"
    ), _params(program, rng)).one()
    return Visits(*(int(value) for value in row))


@dataclass(frozen=True)
class Churn:
    """Members who had bought by `cutoff` (the end day minus the churn days) and bought nothing after it."""

    as_of: dt.date
    days: int
    buyers_before: int
    churned: int

    @property
    def cutoff(self) -> dt.date:
        return self.as_of - dt.timedelta(days=self.days)

    @property
    def rate(self) -> Fraction | None:
        return ratio(self.churned, self.buyers_before)


def churn(session: Session, program: Program, as_of: dt.date, days: int) -> Churn:
    """Churn at the end of `as_of`: of the members with a purchase on or before as_of - days, those with no
    purchase in the `days` days that end on as_of."""
    return churn_trend_at(session, program, [as_of], days)[0]


def churn_trend(session: Session, program: Program, rng: DateRange, days: int) -> list[Churn]:
    """Churn at the end of each month of the range (the last point is the range's end day), at most 12."""
    ends: list[dt.date] = [rng.end]
    month = rng.end.replace(day=1)
    while len(ends) < CHURN_POINTS:
        month_end = month - dt.timedelta(days=1)
        if month_end < rng.start:
            break
        ends.append(month_end)
        month = month_end.replace(day=1)
    return churn_trend_at(session, program, list(reversed(ends)), days)


def churn_trend_at(session: Session, program: Program, ends: list[dt.date], days: int) -> list[Churn]:
    """Churn at the end of each of `ends` (oldest first). The members who had bought by each cutoff come from one
    pass over the first purchases; those who came back, from the window of days after each cutoff."""
    firsts = {
        _as_date(day): int(count) for day, count in session.execute(text(
            "SELECT day, SUM(purchases) FROM daily_visits WHERE program_id = :p AND nth = 1 AND day <= :last"
            " GROUP BY day"
        ), {"p": program.id, "last": max(ends) - dt.timedelta(days=days)}).tuples()
    }
    result = []
    for as_of in ends:
        cutoff = as_of - dt.timedelta(days=days)
        before = sum(count for day, count in firsts.items() if day <= cutoff)
        # Each member who had bought by the cutoff and came back has exactly one purchase after it whose previous
        # purchase is on or before it.
        came_back = int(session.scalar(text(
            "SELECT COALESCE(SUM(purchases), 0) FROM daily_visits WHERE program_id = :p AND day > :cutoff"
            " AND day <= :as_of AND nth > 1 AND prev_day <= :cutoff"
        ), {"p": program.id, "cutoff": cutoff, "as_of": as_of}) or 0)
        result.append(Churn(as_of=as_of, days=days, buyers_before=before, churned=before - came_back))
    return result


# --- retention cohorts ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cohort:
    month: dt.date  # the enrollment month
    members: int  # enrolled that month
    active: tuple[int, ...]  # members of the cohort with a purchase in month +0, +1, ... (up to today's month)

    def share(self, offset: int) -> Fraction | None:
        return ratio(self.active[offset], self.members) if offset < len(self.active) else None


def _month_index(month: dt.date) -> int:
    return month.year * 12 + month.month - 1


def _add_months(month: dt.date, count: int) -> dt.date:
    index = _month_index(month) + count
    return dt.date(index // 12, index % 12 + 1, 1)


def cohorts(session: Session, program: Program, rng: DateRange, today: dt.date) -> list[Cohort]:
    """Retention by enrollment month, for the months the range touches, oldest first."""
    first, last = rng.start.replace(day=1), rng.end.replace(day=1)
    params = {"p": program.id, "first": first, "last_end": _add_months(last, 1)}
    sizes: dict[dt.date, int] = {}
    for day, members in session.execute(text(
        "SELECT day, SUM(members) FROM daily_enrollments WHERE program_id = :p AND day >= :first"
        " AND day < :last_end GROUP BY day"
    ), params).tuples():
        month = _as_date(day).replace(day=1)
        sizes[month] = sizes.get(month, 0) + int(members)
    active: dict[tuple[dt.date, int], int] = {}
    for cohort_month, activity_month, members in session.execute(text(
        "SELECT cohort_month, activity_month, members FROM monthly_cohorts WHERE program_id = :p"
        " AND cohort_month >= :first AND cohort_month < :last_end"
    ), params).tuples():
        cohort, activity = _as_date(cohort_month), _as_date(activity_month)
        offset = _month_index(activity) - _month_index(cohort)
        if 0 <= offset < COHORT_MONTHS:
            active[cohort, offset] = active.get((cohort, offset), 0) + int(members)
    result = []
    month = first
    current = today.replace(day=1)
    while month <= last:
        shown = min(COHORT_MONTHS, _month_index(current) - _month_index(month) + 1)
        result.append(Cohort(month, sizes.get(month, 0), tuple(active.get((month, k), 0) for k in range(shown))))
        month = _add_months(month, 1)
    return result


# --- points -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Points:
    issued: int  # earned by purchases, bonuses and manual additions (of purchases that were not voided)
    redeemed: int  # spent on purchases that were not voided
    removed: int  # taken by expiry and manual removals
    outstanding: int  # held by members at the end of the range
    point_value: int  # minor units a point is worth when redeemed (0: redemption is off)

    @property
    def liability(self) -> int:
        """What the outstanding points would cost if all were redeemed, in minor units."""
        return self.outstanding * self.point_value

    @property
    def redemption_rate(self) -> Fraction | None:
        """Points redeemed in the range per point issued in it."""
        return ratio(self.redeemed, self.issued)


def points(session: Session, program: Program, rng: DateRange) -> Points:
    # Entries of voided purchases were taken back out under their own kinds (app/domain/analytics_rollups.py),
    # so for each kind added - taken is what stands.
    row = session.execute(text(
        "SELECT"
        " COALESCE(SUM(CASE WHEN day >= :start AND kind IN ('earn', 'bonus') THEN points_added - points_taken"
        "                   WHEN day >= :start AND kind = 'adjust' THEN points_added END), 0),"
        " COALESCE(SUM(CASE WHEN day >= :start AND kind = 'redeem' THEN points_taken - points_added END), 0),"
        " COALESCE(SUM(CASE WHEN day >= :start AND kind = 'adjust' THEN points_taken END), 0),"
        " COALESCE(SUM(points_added - points_taken), 0)"
        " FROM daily_points WHERE program_id = :p AND day <= :end"
    ), _params(program, rng)).one()
    issued, redeemed, removed, outstanding = (int(value) for value in row)
    return Points(issued=issued, redeemed=redeemed, removed=removed, outstanding=outstanding,
                  point_value=rules_from_json(program.rules).point_value)


# --- coupons, referrals, tiers, enrollments, segments -----------------------------------------------------------


@dataclass(frozen=True)
class CouponPerformance:
    code: str
    label: str
    uses: int
    discount: int  # given by the coupon
    amount: int  # baskets of the purchases that used it, before discounts
    revenue: int  # what those purchases paid


def coupon_performance(session: Session, program: Program, rng: DateRange) -> list[CouponPerformance]:
    """Each coupon used in the range (by a purchase not voided), most used first."""
    rows = session.execute(text(
        "SELECT coupon_id, SUM(uses) AS uses, SUM(discount), SUM(amount), SUM(amount_due) FROM daily_coupon_uses"
        " WHERE program_id = :p AND day BETWEEN :start AND :end GROUP BY coupon_id HAVING SUM(uses) <> 0"
    ), _params(program, rng)).tuples()
    figures = {int(coupon_id): tuple(int(v) for v in values) for coupon_id, *values in rows}
    if not figures:
        return []
    names = {
        coupon_id: (code, label) for coupon_id, code, label in session.execute(
            select(Coupon.id, Coupon.code, Coupon.label).where(Coupon.id.in_(figures))
        ).tuples()
    }
    result = [CouponPerformance(names[coupon_id][0], names[coupon_id][1], *values)
              for coupon_id, values in figures.items()]
    return sorted(result, key=lambda row: (-row.uses, row.code))


@dataclass(frozen=True)
class ReferralFunnel:
    """Members who enrolled with a member's referral code in the range, and how far they have gone since."""

    referred: int  # enrolled with a member's code (their link, or a till or the API passing it)
    self_referrals: int  # ... from the referrer's own email, phone or device: attributed, paid nothing
    purchased: int  # ... have made a purchase since (one not voided)
    rewarded: int  # ... whose first purchase paid both bonuses (and was not voided)


def referral_funnel(session: Session, program: Program, rng: DateRange) -> ReferralFunnel:
    row = session.execute(text(
        "SELECT COALESCE(SUM(referred), 0), COALESCE(SUM(self_referrals), 0), COALESCE(SUM(purchased), 0),"
        " COALESCE(SUM(rewarded), 0) FROM daily_referrals WHERE program_id = :p AND day BETWEEN :start AND :end"
    ), _params(program, rng)).one()
    return ReferralFunnel(*(int(value) for value in row))


@dataclass(frozen=True)
class TierCount:
    name: str  # "No tier" for members below the first threshold
    members: int


NO_TIER = "No tier"


def tier_distribution(session: Session, program: Program) -> list[TierCount]:
    """Members per tier now, lowest tier first, then those with none. One index range per tier."""
    members = member_count(session, program)
    counts = [
        TierCount(tier.name, int(session.scalar(
            select(func.count()).select_from(Card).where(Card.program_id == program.id, Card.tier == tier.name)
        ) or 0))
        for tier in rules_from_json(program.rules).tiers
    ]
    return [*counts, TierCount(NO_TIER, members - sum(count.members for count in counts))]


def member_count(session: Session, program: Program) -> int:
    return int(session.scalar(text(
        "SELECT COALESCE(SUM(members), 0) FROM daily_enrollments WHERE program_id = :p"
    ), {"p": program.id}) or 0)


@dataclass(frozen=True)
class EnrollmentSeries:
    """Enrollments per bucket of the range, by channel and by location name."""

    starts: tuple[dt.date, ...]
    by_channel: dict[tuple[dt.date, str], int] = field(default_factory=dict)
    by_location: dict[tuple[dt.date, str], int] = field(default_factory=dict)
    channels: tuple[str, ...] = ()
    locations: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return sum(self.by_channel.values())


def enrollments(session: Session, program: Program, rng: DateRange, *, bucket: str | None = None,
                online: str = ONLINE) -> EnrollmentSeries:
    """Enrollments in the range per bucket (the range's own, or `bucket`), by channel and by location name
    (`online` names enrollments at no till)."""
    bucket = bucket or rng.bucket
    names = {
        location_id: name for location_id, name in session.execute(
            select(Location.id, Location.name).where(Location.program_id == program.id)
        ).tuples()
    }
    by_channel: dict[tuple[dt.date, str], int] = {}
    by_location: dict[tuple[dt.date, str], int] = {}
    location_totals: dict[str, int] = {}
    for day, channel, location_key, members in session.execute(text(
        "SELECT day, channel, location_key, SUM(members) FROM daily_enrollments"
        " WHERE program_id = :p AND day BETWEEN :start AND :end GROUP BY day, channel, location_key"
    ), _params(program, rng)).tuples():
        start = bucket_start(_as_date(day), bucket)
        location = names.get(int(location_key), online)
        by_channel[start, channel] = by_channel.get((start, channel), 0) + int(members)
        by_location[start, location] = by_location.get((start, location), 0) + int(members)
        location_totals[location] = location_totals.get(location, 0) + int(members)
    used_channels = {channel for _, channel in by_channel}
    return EnrollmentSeries(
        starts=buckets(rng) if bucket == rng.bucket else tuple(sorted({start for start, _ in by_channel})),
        by_channel=by_channel,
        by_location=by_location,
        channels=tuple(channel for channel in CHANNEL_ORDER if channel in used_channels),
        locations=tuple(sorted(location_totals, key=lambda name: (-location_totals[name], name))),
    )


@dataclass(frozen=True)
class SegmentCounts:
    today: dt.date
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def segment_counts(session: Session, program: Program, settings: SegmentSettings, today: dt.date) -> SegmentCounts:
    """Members per named segment today (docs/segments.md), from the roll-ups and two small indexes.

    lapsed = enrolled on or before the cutoff with no purchase after it; vip = in a VIP tier and not lapsed;
    new = enrolled after today - new_days and neither; active = the rest. Members whose card is revoked (lost,
    not yet reissued) are in no segment: they are counted from the cards that are not active, a handful, and
    taken back out.
    """
    cutoff = today - dt.timedelta(days=settings.lapsed_days)
    new_after = today - dt.timedelta(days=settings.new_days)
    enrolled_by_cutoff, enrolled_recently, members = (int(value) for value in session.execute(text(
        "SELECT COALESCE(SUM(CASE WHEN day <= :cutoff THEN members END), 0),"
        " COALESCE(SUM(CASE WHEN day > :new_after THEN members END), 0), COALESCE(SUM(members), 0)"
        " FROM daily_enrollments WHERE program_id = :p"
    ), {"p": program.id, "cutoff": cutoff, "new_after": new_after}).one())
    # Members enrolled by the cutoff who bought after it: each has exactly one purchase after the cutoff whose
    # previous purchase (or enrollment) is on or before it.
    came_back = int(session.scalar(text(
        "SELECT COALESCE(SUM(purchases), 0) FROM daily_visits WHERE program_id = :p AND day > :cutoff"
        " AND prev_day <= :cutoff"
    ), {"p": program.id, "cutoff": cutoff}) or 0)
    lapsed = enrolled_by_cutoff - came_back
    seen_after = dt.datetime.combine(cutoff + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)
    new_from = dt.datetime.combine(new_after + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)
    vip = vip_new = 0
    if settings.vip_tiers:
        # The VIP cards come from the tier index; each one's enrollment is looked up by key (a join would make
        # PostgreSQL hash all the program's members).
        enrolled_at = select(Customer.created_at).where(Customer.id == Card.customer_id).scalar_subquery()
        not_lapsed = or_(Card.last_purchase_at >= seen_after,
                         and_(Card.last_purchase_at.is_(None), enrolled_at >= seen_after))
        vip_row = session.execute(
            select(func.count(), func.coalesce(func.sum(case((enrolled_at >= new_from, 1), else_=0)), 0))
            .select_from(Card)
            .where(Card.program_id == program.id, Card.tier.in_(settings.vip_tiers), not_lapsed)
        ).one()
        vip, vip_new = int(vip_row[0]), int(vip_row[1])
    new = enrolled_recently - vip_new
    counts = {"new": new, "active": members - lapsed - vip - new, "lapsed": lapsed, "vip": vip}
    for segment in _revoked_members_segments(session, program, settings, today):
        counts[segment] -= 1
    return SegmentCounts(today, {name: counts[name] for name in SEGMENTS})


def _revoked_members_segments(session: Session, program: Program, settings: SegmentSettings,
                              today: dt.date) -> list[str]:
    """The segment each member with a revoked card would be in (read through the partial index of cards that
    are not active, which holds only those)."""
    rows = session.execute(
        select(Customer.created_at, Card.last_purchase_at, Card.tier)
        .join(Customer, Customer.id == Card.customer_id)
        .where(Card.program_id == program.id, Card.status != "active")
    ).tuples()
    return [segment_of(SegmentFacts(enrolled_at=enrolled, last_purchase_at=last, tier=tier), settings, today)
            for enrolled, last, tier in rows]


# --- helpers ----------------------------------------------------------------------------------------------------


def _params(program: Program, rng: DateRange) -> dict[str, Any]:
    return {"p": program.id, "start": rng.start, "end": rng.end}

