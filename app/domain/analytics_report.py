"""Everything the manager's dashboard shows for a range of days, and each chart's data as CSV rows.

The figures come from app/domain/analytics.py (defined in docs/analytics.md); this module only gathers them for
one page and lays them out as tables, so the page, the CSV downloads and the stats API can never disagree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from sqlalchemy.orm import Session

from app.domain import analytics as a
from app.domain.money import format_amount
from app.domain.nps import NpsComment, NpsFigures, NpsMonth, nps_by_month, nps_comments, nps_overall_of
from app.domain.segments import SegmentSettings, program_segment_settings
from app.models import Program

GLANCE_DAYS = 30

SEGMENT_LABELS = {"new": "New", "active": "Active", "lapsed": "Lapsed", "vip": "VIP"}


@dataclass(frozen=True)
class Glance:
    """The headline figures: all time, and the last 30 days including today."""

    members: int
    active_members: int  # distinct members with a purchase in the last 30 days
    purchases: int
    purchases_in_window: int
    revenue: int  # what members paid, purchases not voided
    revenue_in_window: int
    points_issued: int
    points_redeemed: int
    points_outstanding: int


@dataclass(frozen=True)
class Report:
    program: Program
    range: a.DateRange
    today: dt.date
    glance: Glance
    sales: a.Sales
    visits: a.Visits
    sales_series: list[a.SalesPoint]
    churn: list[a.Churn]
    cohorts: list[a.Cohort]
    points: a.Points
    coupons: list[a.CouponPerformance]
    referrals: a.ReferralFunnel
    tiers: list[a.TierCount]
    enrollments: a.EnrollmentSeries
    segments: a.SegmentCounts
    segment_settings: SegmentSettings
    nps_months: list[NpsMonth]
    nps_overall: NpsFigures
    nps_comments: list[NpsComment]

    @property
    def currency(self) -> str:
        return str(self.program.currency)


def build_report(session: Session, program: Program, rng: a.DateRange, now: dt.datetime) -> Report:
    """All of the dashboard's figures for `rng`, as of `now` (the roll-ups must be fresh)."""
    today = now.astimezone(dt.UTC).date()
    settings = program_segment_settings(program)
    nps_months = nps_by_month(session, program, rng.start, rng.end)
    return Report(
        program=program,
        range=rng,
        today=today,
        glance=glance(session, program, today),
        sales=a.sales(session, program, rng),
        visits=a.visits(session, program, rng),
        sales_series=a.sales_over_time(session, program, rng),
        churn=a.churn_trend(session, program, rng, settings.lapsed_days),
        cohorts=a.cohorts(session, program, rng, today),
        points=a.points(session, program, rng),
        coupons=a.coupon_performance(session, program, rng),
        referrals=a.referral_funnel(session, program, rng),
        tiers=a.tier_distribution(session, program),
        enrollments=a.enrollments(session, program, rng),
        segments=a.segment_counts(session, program, settings, today),
        segment_settings=settings,
        nps_months=nps_months,
        nps_overall=nps_overall_of(nps_months),
        nps_comments=nps_comments(session, program, rng.start, rng.end),
    )


def glance(session: Session, program: Program, today: dt.date) -> Glance:
    ever, recent = a.DateRange(a.EPOCH_RANGE_START, today), a.default_range(today, GLANCE_DAYS)
    all_sales, recent_sales = a.sales(session, program, ever), a.sales(session, program, recent)
    points = a.points(session, program, ever)
    return Glance(
        members=a.member_count(session, program),
        active_members=a.visits(session, program, recent).buyers,
        purchases=all_sales.purchases,
        purchases_in_window=recent_sales.purchases,
        revenue=all_sales.amount_due,
        revenue_in_window=recent_sales.amount_due,
        points_issued=points.issued,
        points_redeemed=points.redeemed,
        points_outstanding=points.outstanding,
    )


# --- CSV ----------------------------------------------------------------------------------------------------------


def _share(value: Fraction | None) -> str:
    """A share as a decimal with 4 places ("0.2500"), empty when undefined."""
    return "" if value is None else f"{float(value):.4f}"


def _money(report: Report, minor: int | Fraction | None) -> str:
    if minor is None:
        return ""
    if isinstance(minor, Fraction):
        minor = round(minor)
    return format_amount(int(minor), report.currency)


def _summary(report: Report) -> list[list[Any]]:
    s, v, p = report.sales, report.visits, report.points
    last_churn = report.churn[-1] if report.churn else None
    rows: list[list[Any]] = [
        ["figure", "value", "unit"],
        ["from", report.range.start.isoformat(), "date"],
        ["to", report.range.end.isoformat(), "date"],
        ["purchases", s.purchases, "count"],
        ["revenue", _money(report, s.amount_due), report.currency],
        ["average_check_before_discounts", _money(report, s.average_basket), report.currency],
        ["average_check_after_discounts", _money(report, s.average_paid), report.currency],
        ["discounts_given", _money(report, s.discount), report.currency],
        ["buyers", v.buyers, "members"],
        ["new_buyers", v.new_buyers, "members"],
        ["returning_buyers", v.returning_buyers, "members"],
        ["purchase_frequency", _share(v.purchase_frequency), "purchases per buyer"],
        ["repeat_purchase_rate", _share(v.repeat_rate), "share of new buyers"],
        ["churn_rate", _share(last_churn.rate if last_churn else None),
         f"share, no purchase in {report.segment_settings.lapsed_days} days"],
        ["churned_members", last_churn.churned if last_churn else "", "members"],
        ["points_issued", p.issued, "points"],
        ["points_redeemed", p.redeemed, "points"],
        ["redemption_rate", _share(p.redemption_rate), "points redeemed per point issued"],
        ["points_outstanding", p.outstanding, "points"],
        ["points_liability", _money(report, p.liability), report.currency],
        ["nps", "" if report.nps_overall.nps is None else report.nps_overall.nps, "promoters % - detractors %"],
        ["nps_answers", report.nps_overall.responses, "answers"],
    ]
    return rows


def _sales(report: Report) -> list[list[Any]]:
    rows: list[list[Any]] = [[f"{report.range.bucket}_from", "purchases", "amount_before_discounts",
                              "amount_paid", "average_check_paid"]]
    for point in report.sales_series:
        rows.append([point.start.isoformat(), point.purchases, _money(report, point.amount),
                     _money(report, point.amount_due), _money(report, a.ratio(point.amount_due, point.purchases))])
    return rows


def _enrollments(dimension: str) -> Callable[[Report], list[list[Any]]]:
    def rows(report: Report) -> list[list[Any]]:
        series = report.enrollments
        names = series.channels if dimension == "channel" else series.locations
        counts = series.by_channel if dimension == "channel" else series.by_location
        table: list[list[Any]] = [[f"{report.range.bucket}_from", *names, "total"]]
        for start in series.starts:
            values = [counts.get((start, name), 0) for name in names]
            table.append([start.isoformat(), *values, sum(values)])
        return table
    return rows


def _cohorts(report: Report) -> list[list[Any]]:
    table: list[list[Any]] = [["enrolled_month", "members", *(f"month_{k}" for k in range(a.COHORT_MONTHS))]]
    for cohort in report.cohorts:
        cells = [_share(cohort.share(k)) if k < len(cohort.active) else "" for k in range(a.COHORT_MONTHS)]
        table.append([cohort.month.strftime("%Y-%m"), cohort.members, *cells])
    return table


def _churn(report: Report) -> list[list[Any]]:
    table: list[list[Any]] = [["as_of", "days_without_purchase", "buyers_before_cutoff", "churned", "churn_rate"]]
    for point in report.churn:
        table.append([point.as_of.isoformat(), point.days, point.buyers_before, point.churned, _share(point.rate)])
    return table


def _points(report: Report) -> list[list[Any]]:
    p = report.points
    return [["issued", "redeemed", "removed", "redemption_rate", "outstanding_at_end", "point_value",
             "liability"],
            [p.issued, p.redeemed, p.removed, _share(p.redemption_rate), p.outstanding,
             _money(report, p.point_value), _money(report, p.liability)]]


def _coupons(report: Report) -> list[list[Any]]:
    table: list[list[Any]] = [["code", "label", "uses", "discount_given", "amount_before_discounts", "revenue"]]
    for row in report.coupons:
        table.append([row.code, row.label, row.uses, _money(report, row.discount), _money(report, row.amount),
                      _money(report, row.revenue)])
    return table


def _referrals(report: Report) -> list[list[Any]]:
    f = report.referrals
    return [["step", "members"], ["enrolled_through_a_referral_link", f.referred],
            ["of_which_self_referrals", f.self_referrals], ["made_a_purchase", f.purchased],
            ["bonuses_paid", f.rewarded]]


def _tiers(report: Report) -> list[list[Any]]:
    return [["tier", "members"], *([row.name, row.members] for row in report.tiers)]


def _nps(report: Report) -> list[list[Any]]:
    table: list[list[Any]] = [["month", "answers", "promoters", "passives", "detractors", "nps"]]
    for row in report.nps_months:
        table.append([row.month.strftime("%Y-%m"), row.responses, row.promoters, row.passives, row.detractors,
                      "" if row.nps is None else row.nps])
    return table


def _nps_comments(report: Report) -> list[list[Any]]:
    return [["day", "score", "comment"],
            *([item.day.isoformat(), item.score, item.comment] for item in report.nps_comments)]


def _segments(report: Report) -> list[list[Any]]:
    return [["segment", "members"], *([name, count] for name, count in report.segments.counts.items())]


DATASETS: dict[str, Callable[[Report], list[list[Any]]]] = {
    "summary": _summary,
    "sales": _sales,
    "enrollments-by-channel": _enrollments("channel"),
    "enrollments-by-location": _enrollments("location"),
    "cohorts": _cohorts,
    "churn": _churn,
    "points": _points,
    "coupons": _coupons,
    "referrals": _referrals,
    "tiers": _tiers,
    "segments": _segments,
    "nps": _nps,
    "nps-comments": _nps_comments,
}


def dataset_rows(report: Report, name: str) -> Sequence[Sequence[Any]]:
    """The rows of one chart's or table's CSV, header first. KeyError for an unknown name."""
    return DATASETS[name](report)


def summary_json(report: Report) -> dict[str, Any]:
    """The stats API's answer: the same figures as the summary CSV, typed for JSON."""
    s, v, p = report.sales, report.visits, report.points
    last_churn = report.churn[-1] if report.churn else None

    def share(value: Fraction | None) -> float | None:
        return None if value is None else round(float(value), 4)

    return {
        "from": report.range.start.isoformat(),
        "to": report.range.end.isoformat(),
        "currency": report.currency,
        "purchases": s.purchases,
        "revenue": _money(report, s.amount_due),
        "discounts": _money(report, s.discount),
        "average_check": {"before_discounts": _money(report, s.average_basket) or None,
                          "after_discounts": _money(report, s.average_paid) or None},
        "buyers": v.buyers,
        "new_buyers": v.new_buyers,
        "returning_buyers": v.returning_buyers,
        "purchase_frequency": share(v.purchase_frequency),
        "repeat_purchase_rate": share(v.repeat_rate),
        "churn": {"days": report.segment_settings.lapsed_days,
                  "churned": last_churn.churned if last_churn else 0,
                  "rate": share(last_churn.rate) if last_churn else None},
        "points": {"issued": p.issued, "redeemed": p.redeemed, "removed": p.removed,
                   "redemption_rate": share(p.redemption_rate), "outstanding": p.outstanding,
                   "liability": _money(report, p.liability)},
        "enrollments": report.enrollments.total,
        "members": report.glance.members,
        "tiers": {row.name: row.members for row in report.tiers},
        "segments": dict(report.segments.counts),
        "nps": {"score": report.nps_overall.nps, "answers": report.nps_overall.responses,
                "promoters": report.nps_overall.promoters, "passives": report.nps_overall.passives,
                "detractors": report.nps_overall.detractors},
        "referrals": {"referred": report.referrals.referred, "purchased": report.referrals.purchased,
                      "rewarded": report.referrals.rewarded},
        "coupons": [{"code": row.code, "uses": row.uses, "discount": _money(report, row.discount),
                     "revenue": _money(report, row.revenue)} for row in report.coupons],
    }
