"""How the manager's dashboard shows the analytics report: number formats, charts and the CSV downloads.

The views in app/views/manager.py stay thin: they read the range, refresh the roll-ups, build the report and hand
it here. Shares are exact fractions until this point; they are rounded only for people to read.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Any

from flask import Response, stream_with_context
from markupsafe import Markup

from app.charts import stacked_bar_chart
from app.domain import analytics as a
from app.domain.analytics_report import SEGMENT_LABELS, Report
from app.domain.dashboard import CHANNEL_LABELS, StackedSeries, display_money, fold_small_series
from app.domain.exports import safe_cell

PRESETS = (("Last 30 days", 30), ("Last 90 days", 90), ("Last 12 months", 365))
HEAT_STEPS = 10


def percent(share: Fraction | None) -> str:
    return "–" if share is None else f"{float(share) * 100:.1f} %"


def heat(share: Fraction | None) -> int:
    """A colour step 0..10 for a cohort cell (CSS classes heat-0 .. heat-10; the CSP allows no inline styles)."""
    return 0 if share is None else min(HEAT_STEPS, round(float(share) * HEAT_STEPS))


def _series(starts: Sequence[dt.date], names: Sequence[str], counts: dict[tuple[dt.date, str], int]) -> StackedSeries:
    return StackedSeries(days=tuple(starts), series=tuple(names), counts=counts)


def charts(report: Report) -> dict[str, Markup]:
    bucket = {"day": "day", "week": "week", "month": "month"}[report.range.bucket]
    enrollments = report.enrollments
    sales = _series(
        [point.start for point in report.sales_series], ["purchases"],
        {(point.start, "purchases"): point.purchases for point in report.sales_series},
    )
    nps = _series(
        [row.month for row in report.nps_months], ["promoters", "passives", "detractors"],
        {(row.month, name): getattr(row, name) for row in report.nps_months
         for name in ("promoters", "passives", "detractors")},
    )
    return {
        "nps": stacked_bar_chart(nps, chart_id="nps", dimension="answer", unit="answers", bucket="month",
                                 title="NPS answers per month",
                                 labels={"promoters": "Promoters (9–10)", "passives": "Passives (7–8)",
                                         "detractors": "Detractors (0–6)"}),
        "sales": stacked_bar_chart(sales, chart_id="sales", dimension="series", unit="purchases", bucket=bucket,
                                   title=f"Purchases per {bucket}", labels={"purchases": "Purchases"}),
        "channel": stacked_bar_chart(
            _series(enrollments.starts, enrollments.channels, enrollments.by_channel),
            chart_id="enrollments-channel", dimension="channel", labels=CHANNEL_LABELS, bucket=bucket,
            title=f"Enrollments per {bucket}, by channel"),
        "location": stacked_bar_chart(
            fold_small_series(_series(enrollments.starts, enrollments.locations, enrollments.by_location),
                              enrollments.locations),
            chart_id="enrollments-location", dimension="location", bucket=bucket,
            title=f"Enrollments per {bucket}, by location"),
    }


def template_context(report: Report) -> dict[str, Any]:
    """What manager.html needs besides the report: formatters and the range form's presets."""
    currency = report.currency

    def money(minor: int) -> str:
        return display_money(minor, currency)

    def money_or_dash(value: Fraction | None) -> str:
        return "–" if value is None else display_money(round(value), currency)

    today = report.today
    presets = [(label, {"from": (today - dt.timedelta(days=days - 1)).isoformat(), "to": today.isoformat()})
               for label, days in PRESETS]
    return {
        "report": report,
        "charts": charts(report),
        "money": money,
        "money_or_dash": money_or_dash,
        "round_or_none": lambda value: None if value is None else round(value),
        "decimal_or_none": lambda value: None if value is None else f"{float(value):.4f}",
        "number_or_dash": lambda value: "–" if value is None else f"{float(value):.2f}",
        "percent": percent,
        "ratio": a.ratio,
        "heat": heat,
        "presets": presets,
        "cohort_months": a.COHORT_MONTHS,
        "segment_labels": SEGMENT_LABELS,
        "channel_labels": CHANNEL_LABELS,
        "nps_months": report.nps_months,
        "nps_overall": report.nps_overall,
        "nps_comments": report.nps_comments,
    }


def csv_response(rows: Sequence[Sequence[Any]], filename: str) -> Response:
    """A CSV download, written row by row as it is sent. Text cells (coupon labels, members' NPS comments) are
    neutralised against spreadsheet formulas the way the exports are (docs/exports.md)."""

    def generate() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in rows:
            writer.writerow([safe_cell(cell) if isinstance(cell, str) else cell for cell in row])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()

    response = Response(stream_with_context(generate()), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
