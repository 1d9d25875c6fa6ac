"""Charts drawn on the server as inline SVG: values in, markup out, no Flask and no JavaScript.

The pages' Content-Security-Policy forbids inline scripts and inline styles, so colours are SVG presentation
attributes (`fill="..."`), which the policy allows, and the legend's swatches are tiny SVGs of their own. Every
bar carries `data-day`, `data-count` and `data-<dimension>` (e.g. `data-channel="web"`), so a browser test
can read the figures the chart shows and compare them with the database.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping

from markupsafe import Markup, escape

from app.domain.dashboard import StackedSeries

# Okabe-Ito colours (safe for the common colour-blindnesses), led by the app's own green.
PALETTE = ("#0b6e4f", "#e69f00", "#56b4e9", "#cc79a7", "#0072b2", "#d55e00", "#f0e442", "#7f7f7f")

# Drawn at about the size it is shown in half a desktop page, so 12-unit text stays readable when scaled.
WIDTH, HEIGHT = 480, 230
LEFT, RIGHT, TOP, BOTTOM = 44, 6, 12, 42
FONT = 12


def nice_scale(largest: int) -> tuple[int, int]:
    """The axis top and tick step for counts up to `largest`: steps of 1, 2 or 5 times a power of ten,
    at most five of them, so the gridlines land on round numbers."""
    if largest <= 0:
        return 4, 1
    step = 1
    for magnitude in (10**k for k in range(0, 12)):
        step = next((m * magnitude for m in (1, 2, 5) if largest / (m * magnitude) <= 5), 0)
        if step:
            break
    return math.ceil(largest / step) * step, step


def label_step(days: int) -> int:
    """How many days apart the x-axis labels are: every day for a week or so, weekly, then fortnightly."""
    if days <= 10:
        return 1
    return 7 if days <= 45 else 14


def short_day(day: dt.date) -> str:
    return f"{day.day} {day:%b}"


def _num(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text or "0"


def stacked_bar_chart(
    data: StackedSeries,
    *,
    chart_id: str,
    title: str,
    dimension: str,
    labels: Mapping[str, str] | None = None,
    unit: str = "enrollments",
    bucket: str = "day",
) -> Markup:
    """A figure with a stacked bar per day (or per week or month starting on each of `data.days`: `bucket`), one
    colour per series, with axes, gridlines and a legend with totals."""
    labels = labels or {}
    names = {name: labels.get(name, name) for name in data.series}
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(data.series)}
    top, step = nice_scale(max((data.day_total(day) for day in data.days), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(data.days), 1)
    bar_w = max(slot * 0.72, 1.0)

    def y_of(value: float) -> float:
        return TOP + plot_h - plot_h * value / top

    first, last = (data.days[0], data.days[-1]) if data.days else (None, None)
    span = f"from {short_day(first)} to {short_day(last)} {last.year}" if first and last else ""
    breakdown = ", ".join(f"{data.series_total(name)} {names[name]}" for name in data.series)
    parts: list[str] = [
        f'<svg class="chart-svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" data-split="{escape(dimension)}" '
        f'data-days="{len(data.days)}" data-total="{data.total}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{data.total} {unit} {span}'
        f'{": " + str(escape(breakdown)) if breakdown else ""}.</desc>',
        '<g class="chart-grid" aria-hidden="true">',
    ]
    for tick in range(0, top + 1, step):
        y = _num(y_of(tick))
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" stroke="#d9dee4" />')
        parts.append(f'<text x="{LEFT - 6}" y="{y}" text-anchor="end" dominant-baseline="middle" '
                     f'font-size="{FONT}" fill="#5b6673">{tick}</text>')
    parts.append("</g>")

    parts.append('<g class="chart-bars">')
    for index, day in enumerate(data.days):
        x = _num(LEFT + index * slot + (slot - bar_w) / 2)
        stacked = 0
        parts.append(f'<g data-day="{day.isoformat()}" data-total="{data.day_total(day)}">')
        for name in data.series:
            count = data.count(day, name)
            if not count:
                continue
            y_top, y_bottom = y_of(stacked + count), y_of(stacked)
            stacked += count
            parts.append(
                f'<rect x="{x}" y="{_num(y_top)}" width="{_num(bar_w)}" height="{_num(y_bottom - y_top)}" '
                f'fill="{colours[name]}" data-day="{day.isoformat()}" data-{escape(dimension)}="{escape(name)}" '
                f'data-count="{count}"><title>{short_day(day)}: {count} {escape(names[name])}</title></rect>'
            )
        parts.append("</g>")
    parts.append("</g>")

    step_days = label_step(len(data.days))
    parts.append('<g class="chart-axis" aria-hidden="true">')
    baseline = _num(TOP + plot_h)
    parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{baseline}" y2="{baseline}" stroke="#5b6673" />')
    for index, day in enumerate(data.days):
        # Counted back from today, so the newest day always has its label.
        if (len(data.days) - 1 - index) % step_days:
            continue
        x = _num(LEFT + (index + 0.5) * slot)
        newest = index == len(data.days) - 1
        parts.append(f'<line x1="{x}" x2="{x}" y1="{baseline}" y2="{_num(TOP + plot_h + 4)}" stroke="#5b6673" />')
        # The newest day's label ends at its tick rather than centring on it, or it would run off the edge.
        parts.append(f'<text x="{_num(WIDTH - RIGHT) if newest else x}" y="{_num(TOP + plot_h + 17)}" '
                     f'text-anchor="{"end" if newest else "middle"}" font-size="{FONT}" '
                     f'fill="#5b6673">{short_day(day)}</text>')
    parts.append(f'<text x="{_num(LEFT + plot_w / 2)}" y="{HEIGHT - 4}" text-anchor="middle" font-size="{FONT}" '
                 f'fill="#1d232b">{bucket.capitalize()} (UTC)</text>')
    parts.append(f'<text transform="translate(12 {_num(TOP + plot_h / 2)}) rotate(-90)" text-anchor="middle" '
                 f'font-size="{FONT}" fill="#1d232b">{escape(unit.capitalize())} per {bucket}</text>')
    parts.append("</g></svg>")

    legend = ['<ul class="chart-legend">']
    for name in data.series:
        legend.append(
            f'<li data-{escape(dimension)}="{escape(name)}" data-count="{data.series_total(name)}">'
            f'<svg class="chart-swatch" viewBox="0 0 10 10" aria-hidden="true">'
            f'<rect width="10" height="10" rx="2" fill="{colours[name]}" /></svg>'
            f'{escape(names[name])} <strong>{data.series_total(name)}</strong></li>'
        )
    legend.append("</ul>")

    return Markup(
        f'<figure class="chart" id="{chart_id}"><figcaption>{escape(title)}</figcaption>'
        f'<div class="chart-scroll">{"".join(parts)}</div>{"".join(legend)}</figure>'
    )
