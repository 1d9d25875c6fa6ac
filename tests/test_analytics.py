"""Each figure of docs/analytics.md against a hand computation on a small program, as the dashboard, its CSV
downloads and the stats API show it; bad ranges; and voids taken back out after the roll-ups counted them.

The program (TEST_RULES: 1 point per EUR rounded down, 50 welcome points, Silver from 100.00 EUR with 5% off,
Gold from 500.00 EUR, a point redeems for 0.01 EUR; VIP from Silver), with T = today (UTC), purchases at noon:

    A  web form, enrolled T-100  T-95 100.00 (no tier yet: pays 100.00, 100 points; now Silver)
                                 T-20  50.00 (Silver 5%: 47.50, 47 points)
                                 T-3   20.00 (5%: 19.00, then 100 points redeemed: 18.00, 18 points)
    B  till, High Street, T-50   T-40  30.00 (30 points);  T-2 10.00, voided
    C  API at Station, T-10      T-8   60.00 with SPRING10 (10%: 54.00, 54 points);  T-7 40.00 (40 points)
    D  A's referral link, T-5    no purchase
    E  web form, T-400           no purchase
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import uuid
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.analytics import fresh_rollups
from app.domain import analytics as a
from app.domain.analytics_report import build_report
from app.domain.cards import card_code
from app.domain.enrollment import EnrollmentRequest, enroll_customer
from app.domain.programs import create_location
from app.domain.purchases import Actor, PurchaseRequest, commit_purchase, void_purchase
from app.keys import get_keys
from app.models import Card, Coupon, Customer, LedgerEntry, NpsResponse, utcnow
from tests.conftest import TEST_RULES, ProgramKit

RULES = {**TEST_RULES, "segments": {"vip_tier": "Silver"}}


@dataclass
class Shop:
    app: Flask
    kit: ProgramKit
    today: dt.date
    cards: dict[str, Card]
    purchases: dict[str, int]  # "A-20" -> purchase id

    @property
    def program(self) -> Any:
        return self.kit.program


def _noon(today: dt.date, days_ago: int) -> dt.datetime:
    return dt.datetime.combine(today - dt.timedelta(days=days_ago), dt.time(12), tzinfo=dt.UTC)


@pytest.fixture()
def shop(app: Flask, make_program, db_session: Session) -> Shop:
    kit = make_program(rules=RULES)
    program = kit.program
    today = utcnow().date()
    station = create_location(db_session, program, "Station")
    db_session.add(Coupon(program_id=program.id, code="SPRING10", kind="reusable", discount_type="percent",
                          discount_value=1000, label="Spring"))
    db_session.flush()
    cards: dict[str, Card] = {}

    def member(name: str, days_ago: int, channel: str, location_id: int | None, referral: str | None = None) -> Card:
        card = enroll_customer(db_session, program, EnrollmentRequest(f"{name} Member", f"{name.lower()}@example.com",
                                                                      None, True, referral),
                               channel=channel, location_id=location_id)
        when = _noon(today, days_ago)
        db_session.execute(update(Customer).where(Customer.id == card.customer_id).values(created_at=when))
        db_session.execute(update(LedgerEntry).where(LedgerEntry.card_id == card.id).values(created_at=when))
        cards[name] = card
        return card

    member("E", 400, "web", None)
    member("A", 100, "web", None)
    member("B", 50, "till", kit.location.id)
    member("C", 10, "api", station.id)
    member("D", 5, "referral", None, referral=cards["A"].referral_code)
    db_session.commit()

    purchases: dict[str, int] = {}
    with app.app_context():
        keys = get_keys()
        for name, days_ago, amount, coupon, redeem in (
            ("A", 95, 100_00, None, 0), ("B", 40, 30_00, None, 0), ("A", 20, 50_00, None, 0),
            ("C", 8, 60_00, "SPRING10", 0), ("C", 7, 40_00, None, 0), ("A", 3, 20_00, None, 100),
            ("B", 2, 10_00, None, 0),
        ):
            card = cards[name]
            request = PurchaseRequest(code=card_code(db_session, card, keys), amount=amount,
                                      coupon_codes=(coupon,) if coupon else (), redeem_points=redeem)
            location = station.id if name == "C" else kit.location.id
            result = commit_purchase(db_session, program, request, Actor(location_id=location), str(uuid.uuid4()),
                                     now=_noon(today, days_ago))
            purchases[f"{name}-{days_ago}"] = result.purchase.id
        void_purchase(db_session, program, purchases["B-2"], Actor(location_id=kit.location.id),
                      now=_noon(today, 1))
    for name, days_ago, score, comment in (("A", 3, 10, "=HYPERLINK(\"http://x\")"), ("C", 7, 6, "Queue too long"),
                                           ("B", 40, 8, None)):
        db_session.add(NpsResponse(program_id=program.id, card_id=cards[name].id, score=score, comment=comment,
                                   channel="card_page", created_at=_noon(today, days_ago)))
    db_session.commit()
    return Shop(app, kit, today, cards, purchases)


def _fresh(shop: Shop) -> bool:
    with shop.app.app_context():
        return fresh_rollups(shop.program.id)


def _report(db_session: Session, shop: Shop, days_ago_from: int, days_ago_to: int = 0) -> Any:
    _fresh(shop)
    rng = a.DateRange(shop.today - dt.timedelta(days=days_ago_from), shop.today - dt.timedelta(days=days_ago_to))
    return build_report(db_session, shop.program, rng, utcnow())


def test_the_purchases_are_priced_as_the_docstring_says(shop: Shop, db_session: Session) -> None:
    from app.models import Purchase

    rows = {p.id: p for p in db_session.scalars(select(Purchase).where(Purchase.program_id == shop.program.id))}
    paid = {key: (rows[pid].amount_due, rows[pid].points_earned, rows[pid].status)
            for key, pid in shop.purchases.items()}
    assert paid == {
        "A-95": (100_00, 100, "committed"), "B-40": (30_00, 30, "committed"), "A-20": (47_50, 47, "committed"),
        "C-8": (54_00, 54, "committed"), "C-7": (40_00, 40, "committed"), "A-3": (18_00, 18, "committed"),
        "B-2": (10_00, 10, "voided"),
    }


def test_each_figure_of_the_last_30_days_matches_the_hand_computation(shop: Shop, db_session: Session) -> None:
    report = _report(db_session, shop, 29)
    s, v = report.sales, report.visits
    # C-8, C-7 (B-2 was voided).
    assert (s.purchases, s.amount, s.amount_due, s.discount) == (4, 170_00, 159_50, 10_50)
    assert s.average_basket == Fraction(170_00, 4) and s.average_paid == Fraction(159_50, 4)
    assert (v.buyers, v.new_buyers, v.returning_buyers) == (2, 1, 1)  # A and C; C bought first on T-8
    assert v.purchase_frequency == 2
    assert v.repeat_rate == 1  # C came back on T-7
    # Churn at 90 days (the program's lapsed days): only A had bought by T-90, and A came back.
    assert [(c.buyers_before, c.churned) for c in report.churn][-1] == (1, 0)
    # Points in the range: welcome bonuses of C and D, and A-20, C-8, C-7, A-3; B-2's 10 never counted.
    p = report.points
    assert p.issued == 50 + 50 + 47 + 54 + 40 + 18
    assert p.redeemed == 100 and p.removed == 0
    assert p.redemption_rate == Fraction(100, 50 + 50 + 47 + 54 + 40 + 18)
    held = sum(db_session.scalars(select(Card.points).where(Card.program_id == shop.program.id)))
    assert p.outstanding == held == 5 * 50 + 100 + 30 + 47 + 54 + 40 + 18 - 100
    assert p.liability == held * 1  # a point is worth 1 cent
    assert [(c.code, c.uses, c.discount, c.amount, c.revenue) for c in report.coupons] == [
        ("SPRING10", 1, 6_00, 60_00, 54_00)]
    f = report.referrals
    assert (f.referred, f.self_referrals, f.purchased, f.rewarded) == (1, 0, 0, 0)
    assert [(t.name, t.members) for t in report.tiers] == [("Silver", 1), ("Gold", 0), ("No tier", 4)]
    # E lapsed (enrolled T-400, never bought); A is Silver = VIP; C and D enrolled in the last 30 days; B active.
    assert report.segments.counts == {"new": 2, "active": 1, "lapsed": 1, "vip": 1}
    days = {start: 0 for start in a.buckets(report.range)}
    assert report.range.bucket == "day"
    assert report.enrollments.by_channel == {
        (shop.today - dt.timedelta(days=10), "api"): 1, (shop.today - dt.timedelta(days=5), "referral"): 1}
    assert report.enrollments.by_location == {
        (shop.today - dt.timedelta(days=10), "Station"): 1, (shop.today - dt.timedelta(days=5), "Online"): 1}
    assert len(report.enrollments.starts) == len(days) == 30
    # NPS: A 10 (promoter) and C 6 (detractor) in the range, B's 8 before it: 50 % - 50 % = 0.
    assert (report.nps_overall.responses, report.nps_overall.nps) == (2, 0)
    assert [(c.score, c.comment) for c in report.nps_comments] == [(10, '=HYPERLINK("http://x")'),
                                                                   (6, "Queue too long")]
    g = report.glance
    assert (g.members, g.active_members, g.purchases, g.purchases_in_window) == (5, 2, 6, 4)
    assert (g.revenue, g.revenue_in_window) == (100_00 + 47_50 + 18_00 + 30_00 + 54_00 + 40_00, 159_50)
    assert (g.points_issued, g.points_redeemed, g.points_outstanding) == (
        5 * 50 + 100 + 30 + 47 + 54 + 40 + 18, 100, held)


def test_churn_and_buyers_over_other_ranges(shop: Shop, db_session: Session) -> None:
    report = _report(db_session, shop, 99)  # T-99 .. T: everything but E's enrollment
    assert (report.visits.buyers, report.visits.new_buyers) == (3, 3)  # A, B, C all bought first in the range
    assert report.visits.purchases == 6 and report.visits.purchase_frequency == 2
    # New buyers A, B, C: A and C came back within the range, B's second purchase was voided.
    assert report.visits.repeat_rate == Fraction(2, 3)
    # 30-day churn at T: A (T-95) and B (T-40) had bought by T-30; A came back, B did not.
    at_today = a.churn(db_session, shop.program, shop.today, 30)
    assert (at_today.buyers_before, at_today.churned, at_today.rate) == (2, 1, Fraction(1, 2))
    # ... and at T-21 (cutoff T-51): only A had bought, and A's next purchase was on T-20, after T-21.
    earlier = a.churn(db_session, shop.program, shop.today - dt.timedelta(days=21), 30)
    assert (earlier.buyers_before, earlier.churned) == (1, 1)
    # A single day holds A's redemption.
    one_day = _report(db_session, shop, 3, 3)
    assert (one_day.sales.purchases, one_day.visits.buyers, one_day.points.redeemed) == (1, 1, 100)


def test_retention_cohorts_match_a_hand_computation(shop: Shop, db_session: Session) -> None:
    today = shop.today

    def month(days_ago: int) -> dt.date:
        return (today - dt.timedelta(days=days_ago)).replace(day=1)

    def offset(enrolled: int, bought: int) -> int:
        first, then = month(enrolled), month(bought)
        return (then.year - first.year) * 12 + then.month - first.month

    report = _report(db_session, shop, 100)  # the months of T-100 .. T
    expected_active: dict[tuple[dt.date, int], int] = {}
    for enrolled, bought in ((100, 95), (100, 20), (100, 3), (50, 40), (10, 8), (10, 7)):
        key = (month(enrolled), offset(enrolled, bought))
        expected_active[key] = 1  # one member per cohort here, counted once a month whatever they bought
    expected_size: dict[dt.date, int] = {}
    for enrolled in (100, 50, 10, 5):
        expected_size[month(enrolled)] = expected_size.get(month(enrolled), 0) + 1
    for cohort in report.cohorts:
        assert cohort.members == expected_size.get(cohort.month, 0), cohort
        for k, active in enumerate(cohort.active):
            want = sum(n for (m, o), n in expected_active.items() if m == cohort.month and o == k)
            assert active == want, (cohort.month, k)
    assert report.cohorts[0].month == month(100) and report.cohorts[-1].month == today.replace(day=1)


def test_a_void_after_the_figures_were_read_takes_the_purchase_back_out(app: Flask, shop: Shop,
                                                                        db_session: Session) -> None:
    before = _report(db_session, shop, 29)
    assert before.sales.purchases == 4
    with app.app_context():
        void_purchase(db_session, shop.program, shop.purchases["A-3"], Actor(location_id=shop.kit.location.id),
                      now=utcnow())
    db_session.commit()
    after = _report(db_session, shop, 29)
    assert (after.sales.purchases, after.sales.amount_due) == (3, 159_50 - 18_00)
    assert after.points.redeemed == 0 and after.points.issued == before.points.issued - 18
    held = sum(db_session.scalars(select(Card.points).where(Card.program_id == shop.program.id)))
    assert after.points.outstanding == held
    assert after.visits.buyers == 2 and after.visits.purchase_frequency == Fraction(3, 2)


def _kpis(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-kpi="(\w+)" data-value="([^"]*)"', html))


def test_the_dashboard_shows_the_figures_and_each_csv_holds_them(shop: Shop, manager_client) -> None:
    client = manager_client(shop.kit)
    start = (shop.today - dt.timedelta(days=29)).isoformat()
    query = f"from={start}&to={shop.today.isoformat()}"
    page = client.get(f"/manager?{query}")
    assert page.status_code == 200
    kpis = _kpis(page.text)
    assert kpis["range_purchases"] == "4" and kpis["range_revenue"] == "15950"
    assert kpis["average_check_paid"] == "3988" and kpis["average_check_basket"] == "4250"
    assert kpis["purchase_frequency"] == "2.0000" and kpis["repeat_rate"] == "1.0000"
    assert kpis["buyers"] == "2" and kpis["liability"] == kpis["liability_points"]
    assert 'data-segment="lapsed" data-count="1"' in page.text and 'data-tier="Silver" data-count="1"' in page.text
    assert 'data-coupon="SPRING10" data-uses="1" data-discount="600" data-revenue="5400"' in page.text
    links = set(re.findall(r'href="(/manager/analytics/[\w-]+\.csv\?[^"]+)"', page.text))
    names = {re.search(r"/analytics/([\w-]+)\.csv", link).group(1) for link in links}  # type: ignore[union-attr]
    assert names == {"summary", "sales", "enrollments-by-channel", "enrollments-by-location", "cohorts", "churn",
                     "points", "coupons", "referrals", "tiers", "segments", "nps", "nps-comments"}
    for link in links:
        download = client.get(link.replace("&amp;", "&"))
        assert download.status_code == 200 and download.mimetype == "text/csv"
        assert "attachment" in download.headers["Content-Disposition"]
        assert list(csv.reader(io.StringIO(download.text)))[0], link  # a header row
    summary = {row[0]: row[1] for row in csv.reader(io.StringIO(
        client.get(f"/manager/analytics/summary.csv?{query}").text))}
    assert summary["purchases"] == "4" and summary["revenue"] == "159.50"
    assert summary["average_check_after_discounts"] == "39.88" and summary["average_check_before_discounts"] == "42.50"
    assert summary["buyers"] == "2" and summary["purchase_frequency"] == "2.0000"
    assert summary["redemption_rate"] == f"{100 / 259:.4f}"
    coupons = list(csv.reader(io.StringIO(client.get(f"/manager/analytics/coupons.csv?{query}").text)))
    assert coupons == [["code", "label", "uses", "discount_given", "amount_before_discounts", "revenue"],
                       ["SPRING10", "Spring", "1", "6.00", "60.00", "54.00"]]
    comments = list(csv.reader(io.StringIO(client.get(f"/manager/analytics/nps-comments.csv?{query}").text)))
    # A member's comment that looks like a formula is written so a spreadsheet shows it rather than runs it.
    assert [row[1:] for row in comments] == [["score", "comment"], ["10", "'=HYPERLINK(\"http://x\")"],
                                             ["6", "Queue too long"]]
    by_channel = list(csv.reader(io.StringIO(
        client.get(f"/manager/analytics/enrollments-by-channel.csv?{query}").text)))
    assert by_channel[0] == ["day_from", "api", "referral", "total"] and len(by_channel) == 31
    assert by_channel[1][0] == start  # the first day of the range, then one row per day


def test_the_stats_api_gives_the_same_figures(client: FlaskClient, shop: Shop) -> None:
    start = (shop.today - dt.timedelta(days=29)).isoformat()
    answer = client.get(f"/api/v1/stats/summary?from={start}&to={shop.today.isoformat()}",
                        headers=shop.kit.headers)
    assert answer.status_code == 200
    body = answer.json
    assert body["purchases"] == 4 and body["revenue"] == "159.50" and body["discounts"] == "10.50"
    assert body["average_check"] == {"before_discounts": "42.50", "after_discounts": "39.88"}
    assert (body["buyers"], body["new_buyers"], body["returning_buyers"]) == (2, 1, 1)
    assert body["purchase_frequency"] == 2.0 and body["repeat_purchase_rate"] == 1.0
    assert body["churn"] == {"days": 90, "churned": 0, "rate": 0.0}
    assert body["points"]["redeemed"] == 100 and body["points"]["issued"] == 259
    assert body["segments"] == {"new": 2, "active": 1, "lapsed": 1, "vip": 1}
    assert body["tiers"] == {"Silver": 1, "Gold": 0, "No tier": 4}
    assert body["coupons"] == [{"code": "SPRING10", "uses": 1, "discount": "6.00", "revenue": "54.00"}]
    assert body["members"] == 5 and body["enrollments"] == 2
    assert body["nps"] == {"score": 0, "answers": 2, "promoters": 1, "passives": 0, "detractors": 1}


@pytest.mark.parametrize(("query", "field", "message"), [
    ("from=2026-13-01", "from", "YYYY-MM-DD"),
    ("to=yesterday", "to", "YYYY-MM-DD"),
    ("from=2026-05-02&to=2026-05-01", "from", "after it ends"),
    ("from=1999-12-31&to=2000-01-01", "from", "between the years"),
    ("from=2000-01-01&to=2026-01-01", "from", "at most"),
    ("from=2026-01-01%00", "from", "YYYY-MM-DD"),
])
def test_a_bad_range_says_what_is_wrong_everywhere(client: FlaskClient, shop: Shop, manager_client, query: str,
                                                   field: str, message: str) -> None:
    api = client.get(f"/api/v1/stats/summary?{query}", headers=shop.kit.headers)
    assert api.status_code == 422
    assert api.json["code"] == "validation_error" and api.json["field"] == field and message in api.json["detail"]
    manager = manager_client(shop.kit)
    page = manager.get(f"/manager?{query}")
    assert page.status_code == 400
    assert f'data-error-for="{field}"' in page.text and message in page.text
    assert "Showing the last 90 days instead" in page.text
    download = manager.get(f"/manager/analytics/summary.csv?{query}")
    assert download.status_code == 400 and message in download.text
    assert manager.get("/manager/analytics/nonsense.csv").status_code == 404


def test_reading_with_nothing_new_writes_nothing(shop: Shop, db_session: Session) -> None:
    assert _fresh(shop) is True
    assert _fresh(shop) is False


def test_the_empty_program_shows_empty_states(make_program, manager_client) -> None:
    kit = make_program()
    page = manager_client(kit).get("/manager")
    assert page.status_code == 200
    assert 'data-empty="enrollments"' in page.text and 'data-empty="range-purchases"' in page.text
    assert 'data-empty="coupons"' in page.text
    kpis = _kpis(page.text)
    assert kpis["purchase_frequency"] == "" and kpis["repeat_rate"] == ""  # nothing to divide by: no 0 %
