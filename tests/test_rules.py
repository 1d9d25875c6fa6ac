"""The pricing rules are pure functions: tables of values in and values out, no fixtures."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.domain.errors import ValidationError
from app.domain.money import format_amount, parse_amount
from app.domain.rules import (
    ProgramRules,
    Tier,
    next_tier,
    percent_of,
    points_for,
    price_purchase,
    rules_from_json,
    tier_for,
)

SILVER = Tier("Silver", 10_000, 500)
GOLD = Tier("Gold", 50_000, 1000)
TIERED = ProgramRules(points_per_unit=Decimal(1), tiers=(SILVER, GOLD), point_value=1, redeem_max_percent=50)


@pytest.mark.parametrize(
    ("amount", "rate", "rounding", "exponent", "expected"),
    [
        (1250, "1", "down", 2, 12),
        (1299, "1", "down", 2, 12),
        (1250, "1", "half_up", 2, 13),
        (1249, "1", "half_up", 2, 12),
        (1201, "1", "up", 2, 13),
        (1200, "1", "up", 2, 12),
        (1250, "10", "down", 2, 125),
        (1250, "0.5", "down", 2, 6),
        (999, "1", "down", 2, 9),
        (99, "1", "down", 2, 0),
        (1500, "1", "down", 0, 1500),  # JPY: no minor unit
        (1500, "0.01", "down", 0, 15),
        (12345, "1", "down", 3, 12),  # KWD: three decimals
        (0, "1", "down", 2, 0),
    ],
)
def test_points_for_rounds_as_stated(amount: int, rate: str, rounding: str, exponent: int, expected: int) -> None:
    rules = ProgramRules(points_per_unit=Decimal(rate), rounding=rounding)
    assert points_for(amount, rules, exponent) == expected


@pytest.mark.parametrize(
    ("spend", "expected"),
    [(0, None), (9_999, None), (10_000, "Silver"), (49_999, "Silver"), (50_000, "Gold"), (10**9, "Gold")],
)
def test_tier_for_lifetime_spend(spend: int, expected: str | None) -> None:
    tier = tier_for(spend, (GOLD, SILVER))  # order of definition does not matter
    assert (tier.name if tier else None) == expected


@pytest.mark.parametrize(
    ("spend", "expected"), [(0, "Silver"), (9_999, "Silver"), (10_000, "Gold"), (50_000, None)],
)
def test_next_tier(spend: int, expected: str | None) -> None:
    tier = next_tier(spend, (GOLD, SILVER))
    assert (tier.name if tier else None) == expected


@pytest.mark.parametrize(
    ("amount", "basis_points", "expected"),
    [(1000, 500, 50), (999, 500, 50), (989, 500, 49), (1, 500, 0), (10, 500, 1), (1234, 1000, 123), (1235, 1000, 124)],
)
def test_percent_of_rounds_half_up(amount: int, basis_points: int, expected: int) -> None:
    assert percent_of(amount, basis_points) == expected


@pytest.mark.parametrize(
    ("amount", "balance", "spend", "redeem", "lines", "due", "earned", "tier_after", "points_after"),
    [
        # A new member: no discount, one point per euro, rounded down.
        (1250, 50, 0, 0, [], 1250, 12, None, 62),
        # The purchase that crosses into Silver earns on its full amount; the discount starts next time.
        (10_000, 0, 0, 0, [], 10_000, 100, "Silver", 100),
        # A Silver member gets 5% off and earns on what they pay.
        (2000, 0, 10_000, 0, [("tier_discount", "Silver member 5%", 100)], 1900, 19, "Silver", 19),
        # Gold: 10%.
        (2000, 0, 50_000, 0, [("tier_discount", "Gold member 10%", 200)], 1800, 18, "Gold", 18),
        # Redeeming 300 points (1 cent each) after the tier discount; earn on the remainder.
        (2000, 500, 10_000, 300,
         [("tier_discount", "Silver member 5%", 100), ("points_redemption", "300 points redeemed", 300)],
         1600, 16, "Silver", 216),
        # The cap: at most 50% of 10.00 can be paid in points.
        (1000, 10_000, 0, 500, [("points_redemption", "500 points redeemed", 500)], 500, 5, None, 9505),
    ],
)
def test_price_purchase_lines(
    amount: int, balance: int, spend: int, redeem: int, lines: list[tuple[str, str, int]],
    due: int, earned: int, tier_after: str | None, points_after: int,
) -> None:
    quote = price_purchase(TIERED, amount=amount, balance=balance, lifetime_spend=spend,
                           redeem_points=redeem, exponent=2)
    assert [(line.kind, line.label, line.amount) for line in quote.lines] == lines
    assert quote.discount_total == sum(line[2] for line in lines)
    assert quote.amount_due == due
    assert quote.points_earned == earned
    assert quote.tier_after == tier_after
    assert quote.points_after == points_after


@pytest.mark.parametrize(
    ("rules", "balance", "redeem", "message"),
    [
        (TIERED, 100, 101, "The card has 100 points"),
        (TIERED, 10_000, 501, "At most 500 points"),
        (ProgramRules(), 10_000, 1, "does not let points pay"),
        (TIERED, 100, -1, "cannot be negative"),
    ],
)
def test_price_purchase_refuses_bad_redemptions(rules: ProgramRules, balance: int, redeem: int, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as raised:
        price_purchase(rules, amount=1000, balance=balance, lifetime_spend=0, redeem_points=redeem, exponent=2)
    assert raised.value.field == "redeem_points"


@pytest.mark.parametrize(
    ("stored", "field"),
    [
        ({"earn": {"points_per_unit": "abc"}}, "earn.points_per_unit"),
        ({"earn": {"points_per_unit": "-1"}}, "earn.points_per_unit"),
        ({"earn": {"rounding": "banker"}}, "earn.rounding"),
        ({"tiers": [{"name": "", "min_spend": 1}]}, "tiers.name"),
        ({"tiers": [{"name": "Silver", "min_spend": -5}]}, "tiers.min_spend"),
        ({"tiers": [{"name": "Silver", "min_spend": 5, "discount_bp": 10_001}]}, "tiers.discount_bp"),
        ({"welcome_bonus": 1.5}, "welcome_bonus"),
        ({"welcome_bonus": True}, "welcome_bonus"),
        ({"redeem": {"max_percent": 101}}, "redeem.max_percent"),
    ],
)
def test_rules_from_json_names_the_bad_field(stored: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        rules_from_json(stored)
    assert raised.value.field == field


def test_rules_round_trip_through_json() -> None:
    assert rules_from_json(TIERED.to_json()) == TIERED


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [("12.50", "EUR", 1250), ("12.5", "EUR", 1250), ("12", "EUR", 1200), ("0.01", "EUR", 1),
     ("1500", "JPY", 1500), ("1.234", "KWD", 1234), ("10000000.00", "EUR", 10**9)],
)
def test_parse_amount(text: str, currency: str, minor: int) -> None:
    assert parse_amount(text, currency) == minor


@pytest.mark.parametrize(
    ("value", "currency", "message"),
    [("0", "EUR", "more than zero"), ("-1", "EUR", "not a positive decimal"), ("12.345", "EUR", "more decimals"),
     ("12.5", "JPY", "more decimals"), ("10000000.01", "EUR", "larger than"), (12.5, "EUR", "decimal string"),
     ("1e3", "EUR", "not a positive decimal"), ("1,50", "EUR", "not a positive decimal"),
     ("١٢", "EUR", "not a positive decimal")],
)
def test_parse_amount_refuses(value: object, currency: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_amount(value, currency)


@pytest.mark.parametrize(("minor", "currency", "text"), [(1250, "EUR", "12.50"), (5, "EUR", "0.05"),
                                                          (1500, "JPY", "1500"), (-1250, "EUR", "-12.50"),
                                                          (1, "KWD", "0.001")])
def test_format_amount(minor: int, currency: str, text: str) -> None:
    assert format_amount(minor, currency) == text
