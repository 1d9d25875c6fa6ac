"""Member segments and RFM scores: the pure rules as tables (every boundary day exactly), then the SQL the database
runs (`members_in_segment`) checked against the pure rule over members on and around every boundary."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.domain import segments
from app.domain.enrollment import EnrollmentRequest, enroll_customer
from app.domain.errors import ValidationError
from app.domain.segments import Rfm, SegmentFacts, SegmentSettings
from app.models import Card, Customer, Program
from tests.conftest import TEST_RULES, ProgramKit

UTC = dt.UTC
TIERS = [
    {"name": "Bronze", "min_spend": 1_000, "discount_bp": 0},
    {"name": "Gold", "min_spend": 50_000, "discount_bp": 1000},
    {"name": "Silver", "min_spend": 10_000, "discount_bp": 500},  # out of order: tiers sort by threshold
]


# --- Settings -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rules", "expected"), [
    ({}, SegmentSettings(30, 90, None, (), None)),
    ({"tiers": TIERS}, SegmentSettings(30, 90, None, ("Gold",), None)),
    ({"tiers": TIERS, "segments": {"vip_tier": "Silver"}}, SegmentSettings(30, 90, "Silver", ("Silver", "Gold"), None)),
    ({"tiers": TIERS, "segments": {"vip_tier": "Bronze", "new_days": 1, "lapsed_days": 2}},
     SegmentSettings(1, 2, "Bronze", ("Bronze", "Silver", "Gold"), None)),
    ({"segments": {"new_days": 3649, "lapsed_days": 3650, "typical_basket": 1}},
     SegmentSettings(3649, 3650, None, (), 1)),
    ({"segments": {"vip_tier": None, "typical_basket": 2500}}, SegmentSettings(30, 90, None, (), 2500)),
])
def test_segment_settings(rules: dict[str, Any], expected: SegmentSettings) -> None:
    assert segments.segment_settings(rules) == expected


@pytest.mark.parametrize(("stored", "field", "message"), [
    ({"new_days": 0}, "segments.new_days", "from 1 to 3650"),
    ({"new_days": "30"}, "segments.new_days", "from 1 to 3650"),
    ({"new_days": True}, "segments.new_days", "from 1 to 3650"),
    ({"lapsed_days": 3651}, "segments.lapsed_days", "from 1 to 3650"),
    ({"lapsed_days": 12.5}, "segments.lapsed_days", "from 1 to 3650"),
    ({"new_days": 90, "lapsed_days": 90}, "segments.new_days", "must be fewer than segments.lapsed_days"),
    ({"new_days": 100}, "segments.new_days", "must be fewer than segments.lapsed_days (90)"),
    ({"vip_tier": "Platinum"}, "segments.vip_tier", "not one of the program's tiers (Bronze, Silver, Gold)"),
    ({"vip_tier": "gold"}, "segments.vip_tier", "not one of the program's tiers"),
    ({"vip_tier": 3}, "segments.vip_tier", "not one of the program's tiers"),
    ({"typical_basket": 0}, "segments.typical_basket", "1 or more"),
    ({"typical_basket": "20.00"}, "segments.typical_basket", "1 or more"),
])
def test_segment_settings_refuse(stored: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        segments.segment_settings({"tiers": TIERS, "segments": stored})
    assert refused.value.field == field
    assert message in refused.value.detail


def test_a_vip_tier_in_a_program_without_tiers_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"not one of the program's tiers \(none\)"):
        segments.segment_settings({"segments": {"vip_tier": "Gold"}})


# --- segment_of ---------------------------------------------------------------------------------------------------

TODAY = dt.date(2026, 5, 4)
SETTINGS = SegmentSettings(new_days=30, lapsed_days=90, vip_tier="Silver", vip_tiers=("Silver", "Gold"))


def at(days_ago: int, time: dt.time = dt.time(12, 0)) -> dt.datetime:
    return dt.datetime.combine(TODAY - dt.timedelta(days=days_ago), time, tzinfo=UTC)


LAST_MOMENT = dt.time(23, 59, 59, 999_999)
MIDNIGHT = dt.time(0, 0)


@pytest.mark.parametrize(("enrolled", "last_purchase", "tier", "segment"), [
    # lapsed: the last purchase's day on or before today - 90
    (at(400), at(90), None, "lapsed"),
    (at(400), at(90, LAST_MOMENT), None, "lapsed"),
    (at(400), at(89, MIDNIGHT), None, "active"),
    (at(400), at(91), None, "lapsed"),
    # never bought: the day of enrollment counts instead
    (at(90, LAST_MOMENT), None, None, "lapsed"),
    (at(89, MIDNIGHT), None, None, "active"),
    # lapsed comes before VIP
    (at(400), at(90), "Gold", "lapsed"),
    (at(400), at(89), "Gold", "vip"),
    (at(400), at(0), "Silver", "vip"),
    (at(400), at(0), "Bronze", "active"),
    # VIP comes before new
    (at(0), at(0), "Gold", "vip"),
    # new: enrolled on a day after today - 30
    (at(29, MIDNIGHT), None, None, "new"),
    (at(29), at(1), "Bronze", "new"),
    (at(30, LAST_MOMENT), None, None, "active"),
    (at(30), at(2), None, "active"),
    (at(0, MIDNIGHT), None, None, "new"),
    # a purchase in another timezone's evening is still judged by its UTC day
    (at(400), dt.datetime.combine(TODAY - dt.timedelta(days=89), dt.time(1, 0),
                                  tzinfo=dt.timezone(dt.timedelta(hours=2))), None, "lapsed"),
])
def test_segment_of(enrolled: dt.datetime, last_purchase: dt.datetime | None, tier: str | None,
                    segment: str) -> None:
    assert segments.segment_of(SegmentFacts(enrolled, last_purchase, tier), SETTINGS, TODAY) == segment


def test_without_tiers_nobody_is_vip() -> None:
    settings = segments.segment_settings({})
    facts = SegmentFacts(at(400), at(1), "Gold")  # a tier name left on the card from rules since changed
    assert segments.segment_of(facts, settings, TODAY) == "active"


# --- RFM ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("days_ago", "recency"), [
    (0, 5), (14, 5), (15, 4), (30, 4), (31, 3), (60, 3), (61, 2), (120, 2), (121, 1), (2000, 1),
])
def test_recency(days_ago: int, recency: int) -> None:
    scores = segments.rfm_scores(last_purchase_at=at(days_ago, LAST_MOMENT), purchase_count=1, lifetime_spend=100,
                                 typical_basket=1000, today=TODAY)
    assert scores.recency == recency


@pytest.mark.parametrize(("count", "frequency"), [
    (1, 1), (2, 2), (4, 2), (5, 3), (9, 3), (10, 4), (19, 4), (20, 5), (500, 5),
])
def test_frequency(count: int, frequency: int) -> None:
    scores = segments.rfm_scores(last_purchase_at=at(3), purchase_count=count, lifetime_spend=100,
                                 typical_basket=1000, today=TODAY)
    assert scores.frequency == frequency


@pytest.mark.parametrize(("spend", "money"), [
    (0, 1), (1_999, 1), (2_000, 2), (4_999, 2), (5_000, 3), (9_999, 3), (10_000, 4), (19_999, 4), (20_000, 5),
    (10_000_000, 5),
])
def test_money_counts_typical_baskets(spend: int, money: int) -> None:
    scores = segments.rfm_scores(last_purchase_at=at(3), purchase_count=3, lifetime_spend=spend,
                                 typical_basket=1000, today=TODAY)
    assert scores.money == money


@pytest.mark.parametrize(("last", "count", "spend", "basket", "expected"), [
    (None, 0, 0, 1000, Rfm(0, 0, 0)),
    (at(5), 0, 0, 1000, Rfm(0, 0, 0)),  # every purchase voided: as if never bought
    (at(5), 12, 30_000, 1000, Rfm(5, 4, 5)),
    (at(45), 3, 1_500, 500, Rfm(3, 2, 2)),
    (at(45), 3, 10, 0, Rfm(3, 2, 4)),  # a zero basket counts as one minor unit: 10 of them
])
def test_rfm_scores(last: dt.datetime | None, count: int, spend: int, basket: int, expected: Rfm) -> None:
    assert segments.rfm_scores(last_purchase_at=last, purchase_count=count, lifetime_spend=spend,
                               typical_basket=basket, today=TODAY) == expected
    assert expected.code == f"{expected.recency}{expected.frequency}{expected.money}"


# --- The SQL agrees with the rule ---------------------------------------------------------------------------------

NOW = dt.datetime.combine(TODAY, dt.time(9, 30), tzinfo=UTC)


def _member(session: Session, program: Program, *, enrolled: dt.datetime, last_purchase: dt.datetime | None,
            tier: str | None, status: str = "active") -> Card:
    card = enroll_customer(session, program, EnrollmentRequest(
        name="Member Test", email=f"{secrets.token_hex(6)}@example.com", phone=None, marketing_consent=False,
        referral_code=None), channel="api")
    session.execute(update(Customer).where(Customer.id == card.customer_id).values(created_at=enrolled))
    session.execute(update(Card).where(Card.id == card.id).values(
        last_purchase_at=last_purchase, purchase_count=0 if last_purchase is None else 1, tier=tier, status=status))
    session.flush()
    return card


def _boundary_members(session: Session, program: Program, settings: SegmentSettings,
                      tiers: list[str | None]) -> list[Card]:
    """Members enrolled and last buying on and around every boundary day, at both ends of the day."""
    cards = []
    days = sorted({0, 1, settings.new_days - 1, settings.new_days, settings.new_days + 1,
                   settings.lapsed_days - 1, settings.lapsed_days, settings.lapsed_days + 1, 400})
    for tier in tiers:
        for enrolled_days in days:
            for time in (MIDNIGHT, LAST_MOMENT):
                enrolled = dt.datetime.combine(NOW.date() - dt.timedelta(days=enrolled_days), time, tzinfo=UTC)
                cards.append(_member(session, program, enrolled=enrolled, last_purchase=None, tier=tier))
                for bought_days in days:
                    if bought_days > enrolled_days:
                        continue
                    last = dt.datetime.combine(NOW.date() - dt.timedelta(days=bought_days), time, tzinfo=UTC)
                    cards.append(_member(session, program, enrolled=enrolled, last_purchase=last, tier=tier))
    return cards


@pytest.fixture()
def program_with(make_program: Callable[..., ProgramKit], db_session: Session) -> Callable[..., Program]:
    def make(rules: dict[str, Any]) -> Program:
        kit = make_program(rules={**TEST_RULES, "tiers": TIERS})
        kit.program.rules = rules
        db_session.commit()
        return kit.program
    return make


def _by_sql(session: Session, program: Program, now: dt.datetime) -> dict[int, str]:
    found: dict[int, str] = {}
    for name in segments.SEGMENTS:
        for card_id in session.scalars(segments.members_in_segment(session, program, name, now)):
            assert card_id not in found, f"card {card_id} is in {found[card_id]} and {name}"
            found[card_id] = name
    return found


@pytest.mark.parametrize("rules", [
    {"tiers": TIERS},
    {"tiers": TIERS, "segments": {"vip_tier": "Silver", "new_days": 7, "lapsed_days": 8}},
    {"segments": {"new_days": 1, "lapsed_days": 45}},
])
def test_members_in_segment_agrees_with_segment_of(program_with, db_session: Session,
                                                   rules: dict[str, Any]) -> None:
    program = program_with(rules)
    settings = segments.segment_settings(rules)
    cards = _boundary_members(db_session, program, settings, [None, "Bronze", "Silver", "Gold"])
    revoked = _member(db_session, program, enrolled=NOW, last_purchase=None, tier=None, status="revoked")
    db_session.commit()

    found = _by_sql(db_session, program, NOW)
    expected = {}
    for card in cards:
        db_session.refresh(card)
        expected[card.id] = segments.card_segment(card, NOW)
    assert found == expected
    assert revoked.id not in found
    # Every segment is exercised by the fixture (VIP only where the program has tiers).
    assert set(expected.values()) == set(segments.SEGMENTS) - ({"vip"} if not settings.vip_tiers else set())


def test_members_in_segment_judges_by_the_utc_day_of_now(program_with, db_session: Session) -> None:
    program = program_with({"segments": {"new_days": 30, "lapsed_days": 90}})
    enrolled = dt.datetime(2026, 1, 1, 12, tzinfo=UTC)
    card = _member(db_session, program, enrolled=enrolled, last_purchase=dt.datetime(2026, 2, 3, 23, 0, tzinfo=UTC),
                   tier=None)
    db_session.commit()
    # 3 Feb + 90 days = 4 May: lapsed from the first moment of 4 May UTC, not before.
    just_before = dt.datetime(2026, 5, 3, 23, 59, 59, tzinfo=UTC)
    from_midnight = dt.datetime(2026, 5, 4, 0, 0, tzinfo=UTC)
    assert _by_sql(db_session, program, just_before) == {card.id: "active"}
    assert _by_sql(db_session, program, from_midnight) == {card.id: "lapsed"}
    # A `now` given in another timezone is the same instant.
    paris = from_midnight.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert _by_sql(db_session, program, paris) == {card.id: "lapsed"}


def test_members_in_segment_is_one_query_usable_as_a_subquery(program_with, db_session: Session) -> None:
    program = program_with({"tiers": TIERS})
    gold = _member(db_session, program, enrolled=NOW - dt.timedelta(days=200), last_purchase=NOW, tier="Gold")
    _member(db_session, program, enrolled=NOW - dt.timedelta(days=200), last_purchase=NOW, tier="Silver")
    db_session.commit()
    vip = segments.members_in_segment(db_session, program, "vip", NOW)
    serials = db_session.scalars(select(Card.serial).where(Card.id.in_(vip))).all()
    assert serials == [gold.serial]
    with pytest.raises(ValidationError, match="'sleepy' is not a segment"):
        segments.members_in_segment(db_session, program, "sleepy", NOW)


def test_the_typical_basket_is_the_setting_or_the_programs_average(program_with, db_session: Session) -> None:
    program = program_with({})
    assert segments.program_typical_basket(db_session, program) == 1  # no purchases yet
    for spend, count in ((3_000, 2), (1_500, 1), (0, 0)):
        card = _member(db_session, program, enrolled=NOW, last_purchase=NOW if count else None, tier=None)
        db_session.execute(update(Card).where(Card.id == card.id).values(lifetime_spend=spend, purchase_count=count))
    db_session.commit()
    assert segments.program_typical_basket(db_session, program) == 1_500  # 4,500 over 3 purchases
    program.rules = {"segments": {"typical_basket": 2_000}}
    db_session.commit()
    assert segments.program_typical_basket(db_session, program) == 2_000
