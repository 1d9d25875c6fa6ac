"""The loyalty mechanics are pure functions: tables of values in and values out, no fixtures.

Each quote row is one till scenario: the rules, the member's card before the purchase, the basket, what was asked
for (coupons, offers, a reward, a voucher, points or cashback to redeem, a referral), the time, and what the till
must show: the lines in order with their amounts, the amount due, what is earned and redeemed, the refusals and
warnings. The module docstring of app/domain/mechanics.py states the order and the rounding these rows pin down.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.errors import PointsAlreadySpent, ValidationError
from app.domain.mechanics import (
    NON_MEMBER,
    Balances,
    BirthdayRules,
    Bonus,
    CardChange,
    CashbackRules,
    Coupon,
    CouponUse,
    Discount,
    ExpiryRules,
    HistoricPurchase,
    MechanicsRules,
    MemberFacts,
    Offer,
    PurchaseEffects,
    Quote,
    Referral,
    ReferralParty,
    ReferralRules,
    Reward,
    SecondVisitRules,
    SimulationTotals,
    StampRules,
    add_months,
    add_stamps,
    birthday_bonus_due,
    check_coupon,
    expiry_due,
    expiry_warning_due,
    is_self_referral,
    mechanics_from_json,
    normalize_code,
    percent_text,
    points_expiry_date,
    quote,
    reverse,
    second_visit_applies,
    simulate,
    single_use_codes,
    unknown_coupon,
)
from app.domain.rules import ProgramRules, Tier, price_purchase, rules_from_json

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
LONG_AGO = datetime(2024, 6, 1, tzinfo=UTC)
FIRST_AT = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)  # a first purchase: NOW is day 7 after it
SPRING_FROM = datetime(2025, 3, 1, tzinfo=UTC)
SPRING_UNTIL = datetime(2025, 4, 1, tzinfo=UTC)
SECOND = timedelta(seconds=1)

SILVER = Tier("Silver", 10_000, 500)
GOLD = Tier("Gold", 50_000, 1000)
BASE = ProgramRules(points_per_unit=Decimal(1), tiers=(SILVER, GOLD), point_value=1, redeem_max_percent=50)
POINTS = MechanicsRules(
    base=BASE,
    second_visit=SecondVisitRules(percent_bp=1500, within_days=7),
    referral=ReferralRules(referrer_bonus=100, referee_bonus=50),
)
NO_REDEEM = replace(POINTS, base=replace(BASE, point_value=0))
COFFEE_CARD = StampRules(stamps_needed=10, min_basket=300, reward_label="Free coffee", reward_value=350)
STAMPS = MechanicsRules("stamps", stamps=COFFEE_CARD, referral=ReferralRules(referrer_bonus=1, referee_bonus=1))
STAMPS_BY_MULTIPLE = MechanicsRules("stamps", stamps=replace(COFFEE_CARD, stamps_needed=5, per_multiple=True))
CASHBACK = MechanicsRules(
    "cashback", base=ProgramRules(redeem_max_percent=100), cashback=CashbackRules(percent_bp=200),
    referral=ReferralRules(referrer_bonus=500, referee_bonus=250),
)
CASHBACK_HALF = replace(CASHBACK, base=ProgramRules(redeem_max_percent=50))

NEW = MemberFacts("NEW1")
REGULAR = MemberFacts("REG1", points=500, lifetime_spend=2_000, purchases_committed=5, first_purchase_at=LONG_AGO)
NEAR_SILVER = replace(REGULAR, serial="REG2", lifetime_spend=9_500)
LOW = replace(REGULAR, serial="LOW1", points=120)
MID = replace(REGULAR, serial="MID1", points=300)
SILVER_M = MemberFacts("SIL1", points=1_000, lifetime_spend=10_000, purchases_committed=8, first_purchase_at=LONG_AGO)
GOLD_M = MemberFacts("GLD1", points=5_000, lifetime_spend=50_000, purchases_committed=40, first_purchase_at=LONG_AGO)
SECOND_VISIT = MemberFacts("SEC1", points=20, lifetime_spend=2_000, purchases_committed=1, first_purchase_at=FIRST_AT)
SILVER_SECOND = replace(SECOND_VISIT, serial="SIL2", lifetime_spend=10_000)
STAMPER = MemberFacts("STA1", stamps=3, purchases_committed=3, first_purchase_at=LONG_AGO)
SAVER = MemberFacts("CSH1", cashback=500, purchases_committed=3, first_purchase_at=LONG_AGO)

SPRING10 = Coupon("SPRING10", Discount("percent", 1000), min_basket=2_000, valid_from=SPRING_FROM,
                  valid_until=SPRING_UNTIL)
FIVEOFF = Coupon("FIVEOFF", Discount("fixed", 500), stackable=True)
EXTRA2 = Coupon("EXTRA2", Discount("percent", 200), stackable=True)
BIG50 = Coupon("BIG50", Discount("fixed", 5_000), stackable=True)
WELCOME5 = Coupon("WELCOME5", Discount("fixed", 500), per_member_limit=1)
GIFT3 = Coupon("GIFT-7KQ2M-9XD4T", Discount("fixed", 300), kind="single_use", assigned_card="SIL1",
               label="Gift voucher 3.00")
MEMBERS10 = Coupon("MEMBERS10", Discount("percent", 1000), member_only=True)

SPRING_OFFER = Offer("spring", "Spring member offer 20%", Discount("percent", 2000), valid_from=SPRING_FROM,
                     valid_until=SPRING_UNTIL)
CAKE = Offer("cake", "2.00 off cake", Discount("fixed", 200), min_basket=1_000)
WINTER = Offer("winter", "Winter offer 10%", Discount("percent", 1000), valid_until=SPRING_FROM)
COFFEE = Reward("coffee", "Free coffee", points_cost=150, value=350)


def use(coupon: Coupon, by_member: int = 0, total: int = 0) -> tuple[Coupon, CouponUse]:
    return coupon, CouponUse(by_member=by_member, total=total)


@dataclass(frozen=True)
class Ask:
    """What the till asks for, besides the basket."""

    coupons: tuple[tuple[Coupon, CouponUse], ...] = ()
    unknown: tuple[str, ...] = ()
    offers: tuple[Offer, ...] = ()
    reward: Reward | None = None
    voucher: bool = False
    points: int = 0
    cashback: int = 0
    referral: Referral | None = None
    now: datetime = NOW


@dataclass(frozen=True)
class Want:
    """What the till must show. None means "not what this row is about"."""

    lines: tuple[tuple[str, int], ...]
    due: int
    earned: int = 0
    redeemed: int = 0
    refusals: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()
    stamps: tuple[int, int, int] | None = None  # added, after, vouchers issued
    vouchers_after: int | None = None
    cashback: tuple[int, int, int] | None = None  # earned, redeemed, balance after
    bonuses: tuple[tuple[str, str, int], ...] = ()
    points_after: int | None = None
    tier_after: str | None = "unchecked"


def run(rules: MechanicsRules, member: MemberFacts, basket: int, ask: Ask, currency: str = "EUR") -> Quote:
    return quote(rules, member, basket, now=ask.now, currency=currency, coupons=ask.coupons,
                 unknown_codes=ask.unknown, offers_chosen=ask.offers, reward_chosen=ask.reward,
                 use_voucher=ask.voucher, redeem_points=ask.points, redeem_cashback=ask.cashback,
                 referral=ask.referral)


QUOTES = [
    # --- Points and tiers
    pytest.param(POINTS, REGULAR, 1250, Ask(), Want((), 1250, earned=12, points_after=512),
                 id="plain purchase: one point per euro, rounded down"),
    pytest.param(POINTS, SILVER_M, 2000, Ask(), Want((("tier_discount", 100),), 1900, earned=19),
                 id="silver tier 5%"),
    pytest.param(POINTS, GOLD_M, 2345, Ask(), Want((("tier_discount", 235),), 2110, earned=21),
                 id="gold tier 10% of 23.45 rounds half up to 2.35"),
    pytest.param(POINTS, NEAR_SILVER, 600, Ask(), Want((), 600, earned=6, tier_after="Silver"),
                 id="the purchase that crosses into silver: the discount starts next time"),
    # --- Tier, coupon and redemption together: reward, tier, offers, second visit, coupons, then redemption
    pytest.param(POINTS, SILVER_M, 2345, Ask(coupons=(use(SPRING10),), points=500),
                 Want((("tier_discount", 117), ("coupon", 223), ("points_redemption", 500)), 1505, earned=15,
                      redeemed=500, points_after=515),
                 id="tier 5% (117.25 -> 1.17), then coupon 10% of 22.28 (-> 2.23), then 500 points"),
    pytest.param(POINTS, SILVER_M, 2345, Ask(coupons=(use(SPRING10),), points=1200),
                 Want((("tier_discount", 117), ("coupon", 223), ("points_redemption", 1000)), 1005, earned=10,
                      redeemed=1000, warnings=("points_lowered",), points_after=10),
                 id="tier, coupon, redemption: never more points than the card holds"),
    pytest.param(POINTS, GOLD_M, 2345, Ask(coupons=(use(SPRING10),), points=5000),
                 Want((("tier_discount", 235), ("coupon", 211), ("points_redemption", 949)), 950, earned=9,
                      redeemed=949, warnings=("points_lowered",), points_after=4060),
                 id="tier, coupon, redemption: points capped at 50% of 18.99, floored to 9.49"),
    pytest.param(POINTS, GOLD_M, 400, Ask(coupons=(use(BIG50),), points=100),
                 Want((("tier_discount", 40), ("coupon", 360)), 0, warnings=("points_lowered",), points_after=5000),
                 id="tier, coupon, redemption: never below zero, nothing left to redeem against"),
    # --- Coupons
    pytest.param(POINTS, REGULAR, 2000, Ask(coupons=(use(SPRING10),)), Want((("coupon", 200),), 1800, earned=18),
                 id="coupon at exactly the minimum basket"),
    pytest.param(POINTS, REGULAR, 1999, Ask(coupons=(use(SPRING10),)),
                 Want((), 1999, earned=19, refusals=(("SPRING10", "below_minimum"),)),
                 id="coupon one cent below the minimum"),
    pytest.param(POINTS, REGULAR, 2000, Ask(coupons=(use(SPRING10),), now=SPRING_FROM),
                 Want((("coupon", 200),), 1800, earned=18), id="coupon at the first moment of its window"),
    pytest.param(POINTS, REGULAR, 2000, Ask(coupons=(use(SPRING10),), now=SPRING_FROM - SECOND),
                 Want((), 2000, earned=20, refusals=(("SPRING10", "not_yet_valid"),)),
                 id="coupon a second before its window"),
    pytest.param(POINTS, REGULAR, 2000, Ask(coupons=(use(SPRING10),), now=SPRING_UNTIL - SECOND),
                 Want((("coupon", 200),), 1800, earned=18), id="coupon in the last second of its window"),
    pytest.param(POINTS, REGULAR, 2000, Ask(coupons=(use(SPRING10),), now=SPRING_UNTIL),
                 Want((), 2000, earned=20, refusals=(("SPRING10", "expired"),)),
                 id="coupon at valid_until: expired (the end is exclusive)"),
    pytest.param(POINTS, REGULAR, 1000, Ask(coupons=(use(WELCOME5, by_member=1, total=40),)),
                 Want((), 1000, earned=10, refusals=(("WELCOME5", "already_used"),)),
                 id="reusable code: per-member limit reached"),
    pytest.param(POINTS, REGULAR, 1000, Ask(coupons=(use(WELCOME5, by_member=0, total=40),)),
                 Want((("coupon", 500),), 500, earned=5), id="reusable code: others' uses do not count"),
    pytest.param(POINTS, SILVER_M, 1000, Ask(coupons=(use(GIFT3, by_member=1, total=1),)),
                 Want((("tier_discount", 50),), 950, earned=9, refusals=(("GIFT-7KQ2M-9XD4T", "already_used"),)),
                 id="single-use code already used"),
    pytest.param(POINTS, SILVER_M, 1000, Ask(coupons=(use(GIFT3),)),
                 Want((("tier_discount", 50), ("coupon", 300)), 650, earned=6),
                 id="single-use code on the card it was issued to"),
    pytest.param(POINTS, REGULAR, 1000, Ask(coupons=(use(GIFT3),)),
                 Want((), 1000, earned=10, refusals=(("GIFT-7KQ2M-9XD4T", "not_for_member"),)),
                 id="single-use code issued to another card"),
    pytest.param(POINTS, NON_MEMBER, 2000, Ask(coupons=(use(MEMBERS10),)),
                 Want((), 2000, refusals=(("MEMBERS10", "not_for_member"),), tier_after=None),
                 id="member-only code, customer without a card"),
    pytest.param(POINTS, NON_MEMBER, 2000, Ask(coupons=(use(FIVEOFF),), points=100),
                 Want((("coupon", 500),), 1500, warnings=("points_members_only",), tier_after=None),
                 id="open code, customer without a card: the discount, nothing earned or redeemed"),
    pytest.param(POINTS, NON_MEMBER, 1000, Ask(coupons=(use(WELCOME5),)),
                 Want((), 1000, refusals=(("WELCOME5", "not_for_member"),), tier_after=None),
                 id="a code limited per member, customer without a card"),
    pytest.param(POINTS, REGULAR, 1000, Ask(unknown=("NOPE",)),
                 Want((), 1000, earned=10, refusals=(("NOPE", "unknown"),)), id="unknown code"),
    pytest.param(POINTS, REGULAR, 3000, Ask(coupons=(use(FIVEOFF), use(EXTRA2))),
                 Want((("coupon", 500), ("coupon", 50)), 2450, earned=24),
                 id="two stackable coupons: fixed, then 2% of what is left"),
    pytest.param(POINTS, REGULAR, 3000, Ask(coupons=(use(EXTRA2), use(FIVEOFF))),
                 Want((("coupon", 60), ("coupon", 500)), 2440, earned=24),
                 id="two stackable coupons: the order given is the order applied"),
    pytest.param(POINTS, REGULAR, 3000, Ask(coupons=(use(FIVEOFF), use(SPRING10))),
                 Want((("coupon", 500),), 2500, earned=25, refusals=(("SPRING10", "not_stackable"),)),
                 id="a non-stackable coupon cannot join another"),
    pytest.param(POINTS, REGULAR, 3000, Ask(coupons=(use(SPRING10), use(FIVEOFF))),
                 Want((("coupon", 300),), 2700, earned=27, refusals=(("FIVEOFF", "not_stackable"),)),
                 id="nothing joins a non-stackable coupon"),
    pytest.param(POINTS, REGULAR, 3000, Ask(coupons=(use(FIVEOFF), use(FIVEOFF))),
                 Want((("coupon", 500),), 2500, earned=25, refusals=(("FIVEOFF", "already_used"),)),
                 id="the same code twice on one purchase"),
    pytest.param(POINTS, REGULAR, 300, Ask(coupons=(use(BIG50),)), Want((("coupon", 300),), 0),
                 id="fixed coupon larger than the basket: capped, due zero"),
    pytest.param(POINTS, REGULAR, 1500, Ask(coupons=(use(SPRING10), use(FIVEOFF))),
                 Want((("coupon", 500),), 1000, earned=10, refusals=(("SPRING10", "below_minimum"),)),
                 id="a refused coupon does not block the next"),
    # --- Second visit: 15% within 7 calendar days of the first purchase (3 March 09:00)
    pytest.param(POINTS, SECOND_VISIT, 2000, Ask(), Want((("second_visit", 300),), 1700, earned=17),
                 id="second visit on day N"),
    pytest.param(POINTS, SECOND_VISIT, 2000, Ask(now=datetime(2025, 3, 10, 23, 59, 59, tzinfo=UTC)),
                 Want((("second_visit", 300),), 1700, earned=17), id="second visit in the last second of day N"),
    pytest.param(POINTS, SECOND_VISIT, 2000, Ask(now=datetime(2025, 3, 11, tzinfo=UTC)),
                 Want((), 2000, earned=20), id="second visit on day N+1: no discount"),
    pytest.param(POINTS, SECOND_VISIT, 2000, Ask(now=datetime(2025, 3, 3, 17, tzinfo=UTC)),
                 Want((("second_visit", 300),), 1700, earned=17), id="second visit the same day"),
    pytest.param(POINTS, replace(SECOND_VISIT, purchases_committed=2), 2000, Ask(), Want((), 2000, earned=20),
                 id="third purchase within N days: no discount"),
    pytest.param(POINTS, SILVER_SECOND, 2000, Ask(coupons=(use(FIVEOFF),)),
                 Want((("tier_discount", 100), ("second_visit", 285), ("coupon", 500)), 1115, earned=11),
                 id="tier, then second visit 15% of 19.00, then a fixed coupon"),
    # --- Member-only offers
    pytest.param(POINTS, REGULAR, 2000, Ask(offers=(SPRING_OFFER,)), Want((("offer", 400),), 1600, earned=16),
                 id="offer chosen at the till"),
    pytest.param(POINTS, SILVER_M, 1000, Ask(offers=(CAKE,)),
                 Want((("tier_discount", 50), ("offer", 200)), 750, earned=7), id="fixed offer after the tier"),
    pytest.param(POINTS, REGULAR, 2000, Ask(offers=(WINTER,)),
                 Want((), 2000, earned=20, warnings=("offer_expired",)), id="offer past its window"),
    pytest.param(POINTS, REGULAR, 999, Ask(offers=(CAKE,)),
                 Want((), 999, earned=9, warnings=("offer_below_minimum",)), id="offer below its minimum basket"),
    pytest.param(POINTS, NON_MEMBER, 2000, Ask(offers=(SPRING_OFFER,)),
                 Want((), 2000, warnings=("offer_members_only",), tier_after=None),
                 id="offer for a customer without a card"),
    pytest.param(POINTS, SECOND_VISIT, 2000, Ask(offers=(SPRING_OFFER,), coupons=(use(FIVEOFF),)),
                 Want((("offer", 400), ("second_visit", 240), ("coupon", 500)), 860, earned=8),
                 id="offer, then second visit, then coupon"),
    # --- Catalogue rewards
    pytest.param(POINTS, REGULAR, 1000, Ask(reward=COFFEE), Want((("reward", 350),), 650, earned=6, points_after=356),
                 id="free coffee for 150 points"),
    pytest.param(POINTS, LOW, 1000, Ask(reward=COFFEE),
                 Want((), 1000, earned=10, warnings=("not_enough_points",), points_after=130),
                 id="reward with too few points"),
    pytest.param(POINTS, SILVER_M, 1000, Ask(reward=COFFEE),
                 Want((("reward", 350), ("tier_discount", 33)), 617, earned=6, points_after=856),
                 id="the free item comes off first: the tier 5% is on the 6.50 left"),
    pytest.param(POINTS, MID, 1000, Ask(reward=COFFEE, points=200),
                 Want((("reward", 350), ("points_redemption", 150)), 500, earned=5, redeemed=150,
                      warnings=("points_lowered",), points_after=5),
                 id="reward then points: the reward's cost is not redeemed twice"),
    pytest.param(POINTS, REGULAR, 200, Ask(reward=COFFEE), Want((("reward", 200),), 0, points_after=350),
                 id="reward worth more than the basket: capped, due zero"),
    # --- Points redemption
    pytest.param(NO_REDEEM, REGULAR, 1000, Ask(points=100), Want((), 1000, earned=10, warnings=("redemption_off",)),
                 id="a program that does not let points pay"),
    pytest.param(POINTS, REGULAR, 600, Ask(points=500),
                 Want((("points_redemption", 300),), 300, earned=3, redeemed=300, warnings=("points_lowered",)),
                 id="redemption capped at half of the basket"),
    pytest.param(POINTS, REGULAR, 1000, Ask(points=500),
                 Want((("points_redemption", 500),), 500, earned=5, redeemed=500, points_after=5),
                 id="redemption exactly at the cap"),
    # --- Stamp cards: a stamp per purchase of at least 3.00 due, a free coffee (3.50) at 10
    pytest.param(STAMPS, STAMPER, 299, Ask(), Want((), 299, stamps=(0, 3, 0)), id="stamps: below the minimum"),
    pytest.param(STAMPS, STAMPER, 300, Ask(), Want((), 300, stamps=(1, 4, 0)), id="stamps: at the minimum"),
    pytest.param(STAMPS, STAMPER, 5000, Ask(), Want((), 5000, stamps=(1, 4, 0)),
                 id="stamps: one per purchase, however large"),
    pytest.param(STAMPS, replace(STAMPER, stamps=9), 500, Ask(),
                 Want((), 500, stamps=(1, 0, 1), vouchers_after=1), id="stamps: the tenth issues a voucher"),
    pytest.param(STAMPS_BY_MULTIPLE, replace(STAMPER, stamps=4), 2100, Ask(),
                 Want((), 2100, stamps=(7, 1, 2), vouchers_after=2),
                 id="stamps per multiple: one purchase fills the card twice"),
    pytest.param(STAMPS, replace(STAMPER, stamps=2, vouchers=1), 500, Ask(voucher=True),
                 Want((("voucher", 350),), 150, stamps=(0, 2, 0), vouchers_after=0),
                 id="stamps: the voucher pays, and 1.50 due earns no stamp"),
    pytest.param(STAMPS, replace(STAMPER, stamps=2, vouchers=1), 700, Ask(voucher=True),
                 Want((("voucher", 350),), 350, stamps=(1, 3, 0), vouchers_after=0),
                 id="stamps: the voucher pays, and 3.50 due earns a stamp"),
    pytest.param(STAMPS, replace(STAMPER, stamps=2), 500, Ask(voucher=True),
                 Want((), 500, warnings=("no_voucher",), stamps=(1, 3, 0)), id="stamps: no voucher to use"),
    # --- Cashback: 2% of the amount due, rounded down
    pytest.param(CASHBACK, SAVER, 1999, Ask(), Want((), 1999, cashback=(39, 0, 539)),
                 id="cashback earned: 2% of 19.99 rounds down to 0.39"),
    pytest.param(CASHBACK, SAVER, 2000, Ask(cashback=500),
                 Want((("cashback_redemption", 500),), 1500, cashback=(30, 500, 30)), id="cashback spent"),
    pytest.param(CASHBACK, SAVER, 2000, Ask(cashback=800),
                 Want((("cashback_redemption", 500),), 1500, cashback=(30, 500, 30), warnings=("cashback_lowered",)),
                 id="cashback: never more than the card holds"),
    pytest.param(CASHBACK_HALF, SAVER, 600, Ask(cashback=500),
                 Want((("cashback_redemption", 300),), 300, cashback=(6, 300, 206), warnings=("cashback_lowered",)),
                 id="cashback: capped at half of the basket"),
    # --- Referrals: 50 points to the new member, 100 to the referrer, on the first purchase only
    pytest.param(POINTS, NEW, 1000, Ask(referral=Referral("REF1")),
                 Want((), 1000, earned=10, points_after=60,
                      bonuses=(("referral_referee", "NEW1", 50), ("referral_referrer", "REF1", 100))),
                 id="referral: the first purchase pays both bonuses"),
    pytest.param(POINTS, replace(NEW, purchases_committed=1, first_purchase_at=LONG_AGO), 1000,
                 Ask(referral=Referral("REF1")), Want((), 1000, earned=10, points_after=10),
                 id="referral: the second purchase pays nothing"),
    pytest.param(POINTS, NEW, 1000, Ask(referral=Referral("REF1", self_referral=True)),
                 Want((), 1000, earned=10, warnings=("self_referral",), points_after=10),
                 id="referral: self-referral earns nothing"),
    pytest.param(POINTS, NEW, 1000, Ask(referral=Referral("REF1", bonus_paid=True)),
                 Want((), 1000, earned=10, points_after=10), id="referral: already paid, not paid again"),
    pytest.param(STAMPS, MemberFacts("STN1", stamps=8), 300, Ask(referral=Referral("REF1")),
                 Want((), 300, stamps=(1, 0, 1), vouchers_after=1,
                      bonuses=(("referral_referee", "STN1", 1), ("referral_referrer", "REF1", 1))),
                 id="referral in a stamp program: the bonus stamp completes the card"),
    pytest.param(CASHBACK, NEW, 1000, Ask(referral=Referral("REF1")),
                 Want((), 1000, cashback=(20, 0, 270),
                      bonuses=(("referral_referee", "NEW1", 250), ("referral_referrer", "REF1", 500))),
                 id="referral in a cashback program: bonuses in money"),
]


@pytest.mark.parametrize(("rules", "member", "basket", "ask", "want"), QUOTES)
def test_quote(rules: MechanicsRules, member: MemberFacts, basket: int, ask: Ask, want: Want) -> None:
    q = run(rules, member, basket, ask)
    assert [(line.kind, line.amount) for line in q.lines] == list(want.lines)
    assert q.amount_due == want.due
    assert q.discount_total + q.amount_due == basket
    assert q.points_earned == want.earned
    assert q.points_redeemed == want.redeemed
    assert [(r.code, r.reason) for r in q.refusals] == list(want.refusals)
    assert [w.code for w in q.warnings] == list(want.warnings)
    assert [(b.kind, b.serial, b.amount) for b in q.bonuses] == list(want.bonuses)
    if want.stamps is not None:
        assert (q.stamps_added, q.stamps_after, q.vouchers_issued) == want.stamps
    if want.vouchers_after is not None:
        assert q.vouchers_after == want.vouchers_after
    if want.cashback is not None:
        assert (q.cashback_earned, q.cashback_redeemed, q.cashback_after) == want.cashback
    else:
        assert (q.cashback_earned, q.cashback_redeemed) == (0, 0)
    if want.points_after is not None:
        assert q.points_after == want.points_after
    if want.tier_after != "unchecked":
        assert q.tier_after == want.tier_after


def test_the_interaction_row_names_every_line() -> None:
    q = run(POINTS, SILVER_M, 2345, Ask(coupons=(use(SPRING10),), points=500))
    assert q.to_lines("EUR") == [
        {"kind": "tier_discount", "label": "Silver member 5%", "amount": "1.17"},
        {"kind": "coupon", "label": "Coupon SPRING10 10%", "amount": "2.23"},
        {"kind": "points_redemption", "label": "500 points redeemed", "amount": "5.00"},
    ]
    body = q.to_json("EUR")
    assert (body["amount"], body["discount_total"], body["amount_due"]) == ("23.45", "8.40", "15.05")
    assert (body["points_earned"], body["points_redeemed"], body["points_after"]) == (15, 500, 515)


@pytest.mark.parametrize(
    ("rules", "member", "basket", "ask", "labels"),
    [
        (POINTS, SECOND_VISIT, 2000, Ask(offers=(SPRING_OFFER,), coupons=(use(FIVEOFF),)),
         ["Spring member offer 20%", "Second visit 15%", "Coupon FIVEOFF 5.00"]),
        (POINTS, SILVER_M, 1000, Ask(reward=COFFEE, coupons=(use(GIFT3),)),
         ["Free coffee (150 points)", "Silver member 5%", "Gift voucher 3.00"]),
        (STAMPS, replace(STAMPER, vouchers=1), 500, Ask(voucher=True), ["Stamp card: Free coffee"]),
        (CASHBACK, SAVER, 2000, Ask(cashback=100), ["Cashback redeemed"]),
    ],
)
def test_line_labels(rules: MechanicsRules, member: MemberFacts, basket: int, ask: Ask, labels: list[str]) -> None:
    assert [line.label for line in run(rules, member, basket, ask).lines] == labels


def test_quote_json_names_no_referrer() -> None:
    body = run(POINTS, NEW, 1000, Ask(referral=Referral("REF1"))).to_json("EUR")
    assert body["bonuses"] == [{"kind": "referral_referee", "label": "Welcome, referred friend", "amount": 50,
                                "unit": "points"}]
    assert "REF1" not in repr(body)


@pytest.mark.parametrize(
    ("coupon_use", "member", "basket", "now", "currency", "reason", "message", "shortfall"),
    [
        (use(SPRING10), REGULAR, 1999, NOW, "EUR", "below_minimum",
         "SPRING10 needs a basket of at least 20.00; this one is 0.01 short.", 1),
        (use(SPRING10), REGULAR, 1500, NOW, "JPY", "below_minimum",
         "SPRING10 needs a basket of at least 2000; this one is 500 short.", 500),
        (use(SPRING10), REGULAR, 2000, SPRING_FROM - SECOND, "EUR", "not_yet_valid",
         "SPRING10 can be used from 2025-03-01 00:00 UTC.", 0),
        (use(SPRING10), REGULAR, 2000, SPRING_UNTIL, "EUR", "expired", "SPRING10 expired at 2025-04-01 00:00 UTC.", 0),
        (use(WELCOME5, by_member=1), REGULAR, 2000, NOW, "EUR", "already_used",
         "WELCOME5 can be used once per member, and this member has used it once.", 0),
        (use(GIFT3, total=1), SILVER_M, 2000, NOW, "EUR", "already_used",
         "GIFT-7KQ2M-9XD4T has already been used; it was good for one purchase.", 0),
        (use(GIFT3), REGULAR, 2000, NOW, "EUR", "not_for_member",
         "GIFT-7KQ2M-9XD4T was issued to another member's card.", 0),
        (use(MEMBERS10), NON_MEMBER, 2000, NOW, "EUR", "not_for_member",
         "MEMBERS10 is for members only: scan the customer's card.", 0),
    ],
)
def test_coupon_refusals_say_why(
    coupon_use: tuple[Coupon, CouponUse], member: MemberFacts, basket: int, now: datetime, currency: str,
    reason: str, message: str, shortfall: int,
) -> None:
    refusal = check_coupon(*coupon_use, member, basket, now, currency=currency)
    assert refusal is not None
    assert (refusal.reason, refusal.message, refusal.shortfall) == (reason, message, shortfall)


@pytest.mark.parametrize(
    ("coupon", "accepted", "message"),
    [
        (SPRING10, (FIVEOFF,), "SPRING10 cannot be combined with another coupon; FIVEOFF is already on."),
        (FIVEOFF, (SPRING10,), "FIVEOFF cannot be added: SPRING10 is on this purchase and is used alone."),
        (FIVEOFF, (FIVEOFF,), "FIVEOFF is already on this purchase."),
    ],
)
def test_stacking_refusals_name_the_other_coupon(coupon: Coupon, accepted: tuple[Coupon, ...], message: str) -> None:
    refusal = check_coupon(coupon, CouponUse(), REGULAR, 3000, NOW, currency="EUR", accepted=accepted)
    assert refusal is not None and refusal.message == message


def test_unknown_code_refusal() -> None:
    assert unknown_coupon("NOPE").reason == "unknown"
    assert unknown_coupon("NOPE").message == "NOPE is not a coupon of this program; check the spelling."


@pytest.mark.parametrize(
    ("first", "purchases", "now", "within", "applies"),
    [
        (FIRST_AT, 1, FIRST_AT + timedelta(days=7), 7, True),
        (FIRST_AT, 1, datetime(2025, 3, 10, 23, 59, 59, tzinfo=UTC), 7, True),  # still day 7
        (FIRST_AT, 1, datetime(2025, 3, 11, tzinfo=UTC), 7, False),  # day 8
        (FIRST_AT, 1, FIRST_AT, 7, True),
        (FIRST_AT, 1, FIRST_AT - timedelta(days=1), 7, False),  # a clock behind the first purchase
        (FIRST_AT, 2, FIRST_AT + timedelta(days=1), 7, False),  # third purchase
        (FIRST_AT, 0, FIRST_AT + timedelta(days=1), 7, False),
        (None, 1, NOW, 7, False),
        (FIRST_AT, 1, datetime(2025, 3, 3, 23, 59, tzinfo=UTC), 0, True),
        (FIRST_AT, 1, datetime(2025, 3, 4, tzinfo=UTC), 0, False),
    ],
)
def test_second_visit_applies(first: datetime | None, purchases: int, now: datetime, within: int,
                              applies: bool) -> None:
    assert second_visit_applies(first, purchases, now, within) is applies


# --- The pricing the API has today is the special case with no mechanics ------------------------------------------


@pytest.mark.parametrize(
    ("base", "amount", "balance", "spend", "redeem"),
    [
        (BASE, 1250, 50, 0, 0),
        (BASE, 2000, 0, 10_000, 0),
        (BASE, 2000, 500, 10_000, 300),
        (BASE, 1000, 10_000, 0, 500),  # exactly the cap
        (BASE, 1000, 10_000, 0, 501),  # over the cap
        (BASE, 1000, 100, 0, 101),  # over the balance
        (BASE, 50, 100, 0, 26),  # 50% of 0.50 is 25 points
        (ProgramRules(), 1000, 10_000, 0, 1),  # points cannot pay
        (replace(BASE, point_value=3, rounding="half_up"), 2345, 10_000, 50_000, 400),
    ],
)
def test_strict_quote_is_price_purchase_without_mechanics(
    base: ProgramRules, amount: int, balance: int, spend: int, redeem: int
) -> None:
    member = MemberFacts("M1", points=balance, lifetime_spend=spend, purchases_committed=3)
    try:
        expected = price_purchase(base, amount=amount, balance=balance, lifetime_spend=spend, redeem_points=redeem,
                                  exponent=2)
    except ValidationError as refused:
        with pytest.raises(ValidationError) as raised:
            quote(MechanicsRules(base=base), member, amount, now=NOW, currency="EUR", redeem_points=redeem,
                  strict_redemption=True)
        assert (raised.value.detail, raised.value.field) == (refused.detail, refused.field)
        return
    got = quote(MechanicsRules(base=base), member, amount, now=NOW, currency="EUR", redeem_points=redeem,
                strict_redemption=True)
    assert got.lines == expected.lines
    assert (got.amount_due, got.discount_total, got.points_earned, got.points_redeemed, got.points_after,
            got.tier_before, got.tier_after, got.lifetime_spend_after) == (
        expected.amount_due, expected.discount_total, expected.points_earned, expected.points_redeemed,
        expected.points_after, expected.tier_before, expected.tier_after, expected.lifetime_spend_after)


@pytest.mark.parametrize(
    ("rules", "member", "basket", "points", "cashback", "field", "message"),
    [
        (POINTS, NON_MEMBER, 1000, 10, 0, "redeem_points", "Only a member's card holds points to redeem."),
        (CASHBACK, SAVER, 2000, 0, 800, "redeem_cashback",
         "8.00 of cashback cannot be redeemed: the card holds 5.00."),
        (CASHBACK_HALF, SAVER, 600, 0, 500, "redeem_cashback",
         "5.00 of cashback cannot be redeemed: at most 3.00 can be paid this way (50% of the amount after "
         "discounts, less points redeemed)."),
    ],
)
def test_strict_redemption_refuses_what_it_would_lower(
    rules: MechanicsRules, member: MemberFacts, basket: int, points: int, cashback: int, field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        quote(rules, member, basket, now=NOW, currency="EUR", redeem_points=points, redeem_cashback=cashback,
              strict_redemption=True)
    assert (raised.value.field, raised.value.detail) == (field, message)


# --- Reversal ---------------------------------------------------------------------------------------------------------


def effects_of(rules: MechanicsRules, member: MemberFacts, basket: int, ask: Ask = Ask()) -> PurchaseEffects:
    return run(rules, member, basket, ask).effects()


REFERRED_FIRST = effects_of(POINTS, NEW, 1000, Ask(referral=Referral("REF1")))
TENTH_STAMP = effects_of(STAMPS, replace(STAMPER, stamps=9), 500)
VOUCHER_USED = effects_of(STAMPS, replace(STAMPER, stamps=2, vouchers=1), 500, Ask(voucher=True))
COUPON_PURCHASE = effects_of(POINTS, REGULAR, 2000, Ask(coupons=(use(SPRING10),)))
TIER_COUPON_POINTS = effects_of(POINTS, SILVER_M, 2345, Ask(coupons=(use(SPRING10),), points=500))
REWARD_PURCHASE = effects_of(POINTS, REGULAR, 1000, Ask(reward=COFFEE))
CASHBACK_SPENT = effects_of(CASHBACK, SAVER, 2000, Ask(cashback=500))
CASHBACK_REFERRED = effects_of(CASHBACK, NEW, 1000, Ask(referral=Referral("REF1")))


@pytest.mark.parametrize(
    ("effects", "member", "referrer", "changes", "released", "reopened", "tier_after"),
    [
        pytest.param(REFERRED_FIRST, Balances("NEW1", points=60, lifetime_spend=1000), Balances("REF1", points=340),
                     (CardChange("NEW1", points=-60, lifetime_spend=-1000), CardChange("REF1", points=-100)),
                     (), True, None, id="void after a referral bonus: both bonuses back, the referral reopens"),
        pytest.param(effects_of(POINTS, replace(NEW, purchases_committed=1, first_purchase_at=LONG_AGO), 1000,
                                Ask(referral=Referral("REF1", bonus_paid=True))),
                     Balances("NEW1", points=120, lifetime_spend=2000), None,
                     (CardChange("NEW1", points=-10, lifetime_spend=-1000),), (), False, None,
                     id="void of a later purchase of a referred member: the bonuses stay"),
        pytest.param(TENTH_STAMP, Balances("STA1", stamps=0, vouchers=1, lifetime_spend=3500), None,
                     (CardChange("STA1", stamps=9, vouchers=-1, lifetime_spend=-500),), (), False, None,
                     id="void of the stamp that issued a voucher: voucher back, nine stamps again"),
        pytest.param(TENTH_STAMP, Balances("STA1", stamps=1, vouchers=1, lifetime_spend=4000), None,
                     (CardChange("STA1", stamps=-1, lifetime_spend=-500),), (), False, None,
                     id="void of that stamp after a later one: the later stamp completes the card instead"),
        pytest.param(VOUCHER_USED, Balances("STA1", stamps=2, vouchers=0, lifetime_spend=3500), None,
                     (CardChange("STA1", vouchers=1, lifetime_spend=-150),), (), False, None,
                     id="void of the purchase that used a voucher: the voucher comes back"),
        pytest.param(COUPON_PURCHASE, Balances("REG1", points=518, lifetime_spend=3800), None,
                     (CardChange("REG1", points=-18, lifetime_spend=-1800),), ("SPRING10",), False, None,
                     id="void of a coupon use: the use is released"),
        pytest.param(TIER_COUPON_POINTS, Balances("SIL1", points=515, lifetime_spend=11_505), None,
                     (CardChange("SIL1", points=485, lifetime_spend=-1505),), ("SPRING10",), False, "Silver",
                     id="void of a redemption: the points redeemed come back, the earned go"),
        pytest.param(REWARD_PURCHASE, Balances("REG1", points=356, lifetime_spend=2650), None,
                     (CardChange("REG1", points=144, lifetime_spend=-650),), (), False, None,
                     id="void of a catalogue reward: its 150 points come back"),
        pytest.param(CASHBACK_SPENT, Balances("CSH1", cashback=30, lifetime_spend=1500), None,
                     (CardChange("CSH1", cashback=470, lifetime_spend=-1500),), (), False, None,
                     id="void of a cashback purchase: spent back, earned taken"),
        pytest.param(CASHBACK_REFERRED, Balances("NEW1", cashback=270, lifetime_spend=1000),
                     Balances("REF1", cashback=800),
                     (CardChange("NEW1", cashback=-270, lifetime_spend=-1000), CardChange("REF1", cashback=-500)),
                     (), True, None, id="void after a cashback referral bonus"),
        pytest.param(PurchaseEffects("REG2", amount_due=600, points_earned=6),
                     Balances("REG2", points=6, lifetime_spend=10_100), None,
                     (CardChange("REG2", points=-6, lifetime_spend=-600),), (), False, None,
                     id="void of the purchase that reached silver: the tier goes back"),
    ],
)
def test_reverse(effects: PurchaseEffects, member: Balances, referrer: Balances | None,
                 changes: tuple[CardChange, ...], released: tuple[str, ...], reopened: bool,
                 tier_after: str | None) -> None:
    reversal = reverse(effects, member, referrer=referrer, tiers=(SILVER, GOLD))
    assert reversal.changes == changes
    assert reversal.coupons_released == released
    assert reversal.referral_reopened is reopened
    assert reversal.tier_after == tier_after


@pytest.mark.parametrize(
    ("effects", "member", "referrer", "message"),
    [
        pytest.param(PurchaseEffects("REG1", amount_due=10_000, points_earned=100), Balances("REG1", points=40),
                     None, "the card has 40 points and the void would take 100", id="points already spent"),
        pytest.param(REFERRED_FIRST, Balances("NEW1", points=60), Balances("REF1", points=30),
                     "the referral bonus gave the referrer", id="referrer already spent the bonus"),
        pytest.param(TENTH_STAMP, Balances("STA1", stamps=0, vouchers=0), None, "voucher",
                     id="the voucher it issued is already used"),
        pytest.param(effects_of(CASHBACK, SAVER, 1999), Balances("CSH1", cashback=10), None,
                     "already spent cashback", id="cashback already spent"),
    ],
)
def test_reverse_refuses_what_was_spent(effects: PurchaseEffects, member: Balances, referrer: Balances | None,
                                        message: str) -> None:
    with pytest.raises(PointsAlreadySpent, match=message):
        reverse(effects, member, referrer=referrer)


def test_reverse_needs_the_referrer_when_it_paid_one() -> None:
    with pytest.raises(ValidationError, match="referrer"):
        reverse(REFERRED_FIRST, Balances("NEW1", points=60))


# --- Dates ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2025, 1, 15), 6, date(2025, 7, 15)),
        (date(2025, 1, 31), 1, date(2025, 2, 28)),
        (date(2024, 1, 31), 1, date(2024, 2, 29)),
        (date(2024, 12, 15), 1, date(2025, 1, 15)),
        (date(2024, 8, 31), 6, date(2025, 2, 28)),
        (date(2024, 2, 29), 12, date(2025, 2, 28)),
        (date(2025, 3, 31), -1, date(2025, 2, 28)),
    ],
)
def test_add_months(day: date, months: int, expected: date) -> None:
    assert add_months(day, months) == expected


@pytest.mark.parametrize(
    ("last", "today", "months", "expected"),
    [
        (date(2025, 1, 15), date(2025, 7, 14), 6, None),
        (date(2025, 1, 15), date(2025, 7, 15), 6, date(2025, 7, 15)),
        (date(2025, 1, 15), date(2025, 9, 1), 6, date(2025, 7, 15)),
        (date(2024, 8, 31), date(2025, 2, 28), 6, date(2025, 2, 28)),
        (date(2020, 1, 1), date(2025, 1, 1), None, None),
        (date(2020, 1, 1), date(2025, 1, 1), 0, None),
    ],
)
def test_expiry_due(last: date, today: date, months: int | None, expected: date | None) -> None:
    assert expiry_due(last, today, months) == expected
    if months:
        assert points_expiry_date(last, months) == add_months(last, months)


@pytest.mark.parametrize(
    ("today", "warned_for", "expected"),
    [
        (date(2025, 6, 30), None, None),  # 15 days before: not yet
        (date(2025, 7, 1), None, date(2025, 7, 15)),  # 14 days before
        (date(2025, 7, 14), None, date(2025, 7, 15)),  # a missed run still warns
        (date(2025, 7, 14), date(2025, 7, 15), None),  # already warned about this date
        (date(2025, 7, 14), date(2025, 1, 10), date(2025, 7, 15)),  # a warning about an older date does not count
        (date(2025, 7, 15), None, None),  # expiry day: expire, do not warn
    ],
)
def test_expiry_warning_due(today: date, warned_for: date | None, expected: date | None) -> None:
    assert expiry_warning_due(date(2025, 1, 15), today, 6, 14, warned_for) == expected


def test_no_expiry_warning_when_off() -> None:
    assert expiry_warning_due(date(2025, 1, 15), date(2025, 7, 14), None, 14) is None
    assert expiry_warning_due(date(2025, 1, 15), date(2025, 7, 14), 6, 0) is None


@pytest.mark.parametrize(
    ("birthday", "last_year", "today", "grace", "expected"),
    [
        ((3, 10), None, date(2025, 3, 10), 0, date(2025, 3, 10)),
        ((3, 10), 2025, date(2025, 3, 10), 0, None),  # paid already this year
        ((3, 10), 2024, date(2025, 3, 9), 0, None),
        ((3, 10), None, date(2025, 3, 11), 0, None),
        ((3, 10), None, date(2025, 3, 13), 3, date(2025, 3, 10)),  # a missed run, within the grace days
        ((3, 10), None, date(2025, 3, 14), 3, None),
        ((2, 29), None, date(2025, 2, 28), 0, date(2025, 2, 28)),  # not a leap year: 28 February
        ((2, 29), None, date(2025, 3, 1), 0, None),
        ((2, 29), None, date(2024, 2, 28), 0, None),  # a leap year: the day itself
        ((2, 29), None, date(2024, 2, 29), 0, date(2024, 2, 29)),
        ((2, 29), None, date(2100, 2, 28), 0, date(2100, 2, 28)),  # 2100 is not a leap year
        ((12, 30), 2023, date(2025, 1, 2), 5, date(2024, 12, 30)),  # across New Year, for last year
        ((12, 30), 2024, date(2025, 1, 2), 5, None),
    ],
)
def test_birthday_bonus_due(birthday: tuple[int, int], last_year: int | None, today: date, grace: int,
                            expected: date | None) -> None:
    assert birthday_bonus_due(birthday, last_year, today, grace) == expected


# --- Referrals, codes, labels, stored rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("referrer", "referee", "same"),
    [
        (ReferralParty(email="amina@example.com"), ReferralParty(email="Amina@Example.com"), True),
        (ReferralParty(phone="+491701234567"), ReferralParty(email="b@example.com", phone="+491701234567"), True),
        (ReferralParty(email="a@example.com", device="dev-1"), ReferralParty(email="b@example.com", device="dev-1"),
         True),
        (ReferralParty(email="a@example.com", phone="+4917011"), ReferralParty(email="b@example.com",
                                                                               phone="+4917022"), False),
        (ReferralParty(), ReferralParty(), False),  # nothing known is nothing shared
    ],
)
def test_is_self_referral(referrer: ReferralParty, referee: ReferralParty, same: bool) -> None:
    assert is_self_referral(referrer, referee) is same


def counter(*chunks: bytes) -> Callable[[int], bytes]:
    stream: Iterator[bytes] = iter(chunks)
    return lambda size: next(stream)[:size]


@pytest.mark.parametrize(
    ("source", "count", "codes"),
    [
        (counter(bytes(7)), 1, ("GIFT-00000-00000",)),
        (counter(b"\xff" * 7), 1, ("GIFT-ZZZZZ-ZZZZZ",)),
        # A repeated draw is drawn again, so the batch still holds `count` distinct codes.
        (counter(bytes(7), bytes(7), b"\x00" * 6 + b"\x40"), 2, ("GIFT-00000-00000", "GIFT-00000-00001")),
    ],
)
def test_single_use_codes(source: Callable[[int], bytes], count: int, codes: tuple[str, ...]) -> None:
    assert single_use_codes(" gift ", count, source) == codes


def test_single_use_codes_are_unambiguous_and_distinct() -> None:
    import secrets

    batch = single_use_codes("SPRING", 500, secrets.token_bytes)
    assert len(set(batch)) == 500
    assert all(re.fullmatch(r"SPRING-[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}", code) for code in batch)


@pytest.mark.parametrize(("prefix", "count"), [("GI-FT", 1), ("", 1), ("GIFT", 0), ("GIFT", 100_001)])
def test_single_use_codes_refuse_bad_batches(prefix: str, count: int) -> None:
    with pytest.raises(ValidationError):
        single_use_codes(prefix, count, counter(bytes(7)))


@pytest.mark.parametrize(("text", "code"), [("spring10", "SPRING10"), (" Spring 10 ", "SPRING10"),
                                             ("gift-7kq2m-9xd4t", "GIFT-7KQ2M-9XD4T")])
def test_normalize_code(text: str, code: str) -> None:
    assert normalize_code(text) == code


@pytest.mark.parametrize(("bp", "text"), [(500, "5%"), (250, "2.5%"), (1234, "12.34%"), (10_000, "100%"), (10, "0.1%"),
                                          (0, "0%")])
def test_percent_text(bp: int, text: str) -> None:
    assert percent_text(bp) == text


@pytest.mark.parametrize(("stamps", "added", "needed", "expected"),
                         [(3, 1, 10, (4, 0)), (9, 1, 10, (0, 1)), (4, 7, 5, (1, 2)), (0, 0, 10, (0, 0)),
                          (2, 1, 0, (3, 0))])
def test_add_stamps(stamps: int, added: int, needed: int, expected: tuple[int, int]) -> None:
    assert add_stamps(stamps, added, needed) == expected


FULL_RULES = MechanicsRules(
    "stamps",
    base=BASE,
    second_visit=SecondVisitRules(1500, 7),
    stamps=replace(COFFEE_CARD, per_multiple=True),
    cashback=CashbackRules(200),
    referral=ReferralRules(100, 50),
    birthday=BirthdayRules(bonus=200, grace_days=7),
    expiry=ExpiryRules(months=12, warn_days=30),
)


def test_mechanics_round_trip_through_json() -> None:
    stored = FULL_RULES.to_json()
    assert mechanics_from_json(stored) == FULL_RULES
    assert rules_from_json(stored) == BASE  # the current reader still reads its part
    assert mechanics_from_json(BASE.to_json()) == MechanicsRules(base=BASE)  # rules stored before mechanics


@pytest.mark.parametrize(
    ("stored", "field"),
    [
        ({"program_type": "miles"}, "program_type"),
        ({"program_type": "stamps"}, "stamps"),
        ({"program_type": "cashback"}, "cashback"),
        ({"stamps": {"stamps_needed": 0}}, "stamps.stamps_needed"),
        ({"stamps": {"stamps_needed": 10, "per_multiple": "yes"}}, "stamps.per_multiple"),
        ({"stamps": {"stamps_needed": 10, "reward_label": " "}}, "stamps.reward_label"),
        ({"second_visit": {"percent_bp": 10_001, "within_days": 7}}, "second_visit.percent_bp"),
        ({"second_visit": {"percent_bp": 1500, "within_days": -1}}, "second_visit.within_days"),
        ({"cashback": {"percent_bp": 2.5}}, "cashback.percent_bp"),
        ({"referral": {"referrer_bonus": True}}, "referral.referrer_bonus"),
        ({"referral": []}, "referral"),
        ({"birthday": {"bonus": -1}}, "birthday.bonus"),
        ({"expiry": {"months": 0}}, "expiry.months"),
        ({"earn": {"rounding": "banker"}}, "earn.rounding"),  # the base rules are validated too
    ],
)
def test_mechanics_from_json_names_the_bad_field(stored: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        mechanics_from_json(stored)
    assert raised.value.field == field


@pytest.mark.parametrize(("kind", "value"), [("percent", 10_001), ("percent", -1), ("fixed", -1), ("bogus", 1)])
def test_discount_refuses_impossible_values(kind: str, value: int) -> None:
    with pytest.raises(ValidationError):
        Discount(kind, value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "kwargs"), [("amount", {"basket": -1}), ("redeem_points", {"redeem_points": -1}),
                                              ("redeem_cashback", {"redeem_cashback": -1})])
def test_quote_refuses_negative_input(name: str, kwargs: dict[str, int]) -> None:
    args = {"basket": 1000, "redeem_points": 0, "redeem_cashback": 0, **kwargs}
    with pytest.raises(ValidationError) as raised:
        quote(POINTS, REGULAR, args["basket"], now=NOW, currency="EUR", redeem_points=args["redeem_points"],
              redeem_cashback=args["redeem_cashback"])
    assert raised.value.field == name


# --- Simulation -------------------------------------------------------------------------------------------------------

LAST_30_DAYS = (
    HistoricPurchase(REGULAR, 1250, NOW),
    HistoricPurchase(SILVER_M, 2345, NOW, coupons=(use(SPRING10),), redeem_points=500),
    HistoricPurchase(SECOND_VISIT, 2000, NOW),
    HistoricPurchase(replace(SECOND_VISIT, serial="SEC2", first_purchase_at=datetime(2025, 2, 28, tzinfo=UTC)),
                     2000, NOW),
    HistoricPurchase(NEW, 1000, NOW, referral=Referral("REF1")),
    HistoricPurchase(NON_MEMBER, 2000, NOW, coupons=(use(FIVEOFF),)),
    HistoricPurchase(GOLD_M, 400, NOW, coupons=(use(BIG50),), redeem_points=100),
    HistoricPurchase(MID, 1000, NOW, reward=COFFEE, redeem_points=200),
)
# The proposal: Silver 7% instead of 5%, and the second visit 20% within 14 days instead of 15% within 7.
PROPOSED = replace(POINTS, base=replace(BASE, tiers=(Tier("Silver", 10_000, 700), GOLD)),
                   second_visit=SecondVisitRules(2000, 14))


@pytest.mark.parametrize("rules", [POINTS, PROPOSED], ids=["current", "proposed"])
def test_simulation_matches_what_the_rules_then_do(rules: MechanicsRules) -> None:
    report = simulate(POINTS, PROPOSED, LAST_30_DAYS, currency="EUR")
    totals = report.before if rules is POINTS else report.after
    direct = [quote(rules, p.member, p.basket, now=p.at, currency="EUR", coupons=p.coupons, offers_chosen=p.offers,
                    reward_chosen=p.reward, use_voucher=p.use_voucher, redeem_points=p.redeem_points,
                    redeem_cashback=p.redeem_cashback, referral=p.referral)
              for p in LAST_30_DAYS]
    assert [row.before if rules is POINTS else row.after for row in report.rows] == direct
    assert totals.purchases == len(direct)
    assert totals.discount_given == sum(q.discount_total for q in direct)
    assert totals.amount_due == sum(q.amount_due for q in direct)
    assert totals.points_issued == sum(q.points_earned + sum(b.amount for b in q.bonuses) for q in direct)
    assert totals.points_spent == sum(q.points_spent for q in direct)
    assert totals.members_discounted == len({q.member_serial for q in direct if q.member_serial and q.discount_total})


def test_simulation_reports_the_difference() -> None:
    report = simulate(POINTS, PROPOSED, LAST_30_DAYS, currency="EUR")
    # SIL1: tier 7% of 23.45 = 1.64 (was 1.17), coupon 10% of 21.81 = 2.18 (was 2.23): 0.42 more;
    #       then 500 points; 14.63 due earns 14 (was 15.05: 15).
    # SEC1: second visit 20% (was 15%) of 20.00: 1.00 more; earns 16 (was 17).
    # SEC2: day 10, now inside 14 days: 4.00 off (was nothing); earns 16 (was 20).
    assert report.difference.discount_given == 42 + 100 + 400
    assert report.difference.points_issued == -1 - 1 - 4
    assert report.difference.amount_due == -(42 + 100 + 400)
    assert report.members_changed == ("SEC1", "SEC2", "SIL1")
    assert report.members_affected == 3
    assert report.difference.members_discounted == 1  # SEC2 now gets a discount; the others did already
    unchanged = simulate(POINTS, POINTS, LAST_30_DAYS, currency="EUR")
    assert unchanged.difference == SimulationTotals()
    assert unchanged.members_changed == ()


# --- Properties -------------------------------------------------------------------------------------------------------

discounts = st.one_of(
    st.builds(Discount, st.just("percent"), st.integers(0, 10_000)),
    st.builds(Discount, st.just("fixed"), st.integers(0, 20_000)),
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[MechanicsRules, MemberFacts, int, Ask]:
    program_type = draw(st.sampled_from(["points", "stamps", "cashback"]))
    tiers = tuple(Tier(f"T{i}", draw(st.integers(0, 60_000)), draw(st.integers(0, 10_000)))
                  for i in range(draw(st.integers(0, 2))))
    base = ProgramRules(points_per_unit=Decimal(draw(st.sampled_from(["0", "0.5", "1", "10"]))),
                        rounding=draw(st.sampled_from(["down", "half_up", "up"])), tiers=tiers,
                        point_value=draw(st.integers(0, 5)), redeem_max_percent=draw(st.integers(0, 100)))
    stamps_needed = draw(st.integers(1, 10))
    rules = MechanicsRules(
        program_type,  # type: ignore[arg-type]
        base=base,
        second_visit=SecondVisitRules(draw(st.integers(0, 10_000)), draw(st.integers(0, 30))),
        stamps=StampRules(stamps_needed, min_basket=draw(st.integers(0, 1000)), reward_value=draw(st.integers(0, 5000)),
                          per_multiple=draw(st.booleans())),
        cashback=CashbackRules(draw(st.integers(0, 10_000))),
        referral=ReferralRules(draw(st.integers(0, 500)), draw(st.integers(0, 500))),
    )
    member = draw(st.one_of(st.just(NON_MEMBER), st.builds(
        MemberFacts, serial=st.just("M1"), points=st.integers(0, 100_000), cashback=st.integers(0, 100_000),
        lifetime_spend=st.integers(0, 100_000), purchases_committed=st.integers(0, 3),
        first_purchase_at=st.just(FIRST_AT), stamps=st.integers(0, stamps_needed - 1), vouchers=st.integers(0, 2),
    )))
    coupon = st.builds(Coupon, code=st.sampled_from(["A", "B", "C"]), discount=discounts, stackable=st.booleans(),
                       min_basket=st.integers(0, 5000), member_only=st.booleans())
    ask = Ask(
        coupons=tuple((c, CouponUse()) for c in draw(st.lists(coupon, max_size=4))),
        offers=tuple(draw(st.lists(st.builds(Offer, id=st.sampled_from(["o1", "o2"]), title=st.just("Offer"),
                                             discount=discounts, min_basket=st.integers(0, 5000)), max_size=2))),
        reward=draw(st.none() | st.builds(Reward, id=st.just("r"), name=st.just("Reward"),
                                          points_cost=st.integers(0, 2000), value=st.integers(0, 5000))),
        voucher=draw(st.booleans()),
        points=draw(st.integers(0, 200_000)),
        cashback=draw(st.integers(0, 200_000)),
        referral=draw(st.none() | st.builds(Referral, referrer_serial=st.just("REF1"), self_referral=st.booleans(),
                                            bonus_paid=st.booleans())),
        now=FIRST_AT + timedelta(days=draw(st.integers(0, 40))),
    )
    return rules, member, draw(st.integers(0, 10**6)), ask


REDEMPTIONS = {"points_redemption", "cashback_redemption"}


@settings(max_examples=400, deadline=None, database=None)
@given(scenario=scenarios())
def test_quote_properties(scenario: tuple[MechanicsRules, MemberFacts, int, Ask]) -> None:
    rules, member, basket, ask = scenario
    q = run(rules, member, basket, ask)
    assert q.amount_due >= 0
    assert q.discount_total + q.amount_due == basket
    assert all(line.amount >= 0 for line in q.lines)
    assert q.points_spent <= member.points
    assert q.points_redeemed <= ask.points and q.cashback_redeemed <= ask.cashback
    assert q.cashback_redeemed <= member.cashback
    before_redemption = basket - sum(line.amount for line in q.lines if line.kind not in REDEMPTIONS)
    redeemed_value = sum(line.amount for line in q.lines if line.kind in REDEMPTIONS)
    assert redeemed_value <= before_redemption * rules.base.redeem_max_percent // 100
    assert q.points_after >= 0 and q.cashback_after >= 0 and q.vouchers_after >= 0
    assert 0 <= q.stamps_after < q.stamps_needed or q.stamps_needed == 0
    if not member.is_member:
        assert (q.points_earned, q.cashback_earned, q.stamps_added, q.bonuses) == (0, 0, 0, ())


@settings(max_examples=300, deadline=None, database=None)
@given(scenario=scenarios(), referrer_points=st.integers(0, 1000), referrer_stamps=st.integers(0, 9))
def test_void_undoes_exactly_what_the_purchase_did(
    scenario: tuple[MechanicsRules, MemberFacts, int, Ask], referrer_points: int, referrer_stamps: int
) -> None:
    rules, member, basket, ask = scenario
    q = run(rules, member, basket, ask)
    if member.serial is None:
        return
    before = Balances(member.serial, points=member.points, cashback=member.cashback, stamps=member.stamps,
                      vouchers=member.vouchers, lifetime_spend=member.lifetime_spend)
    committed = Balances(member.serial, points=q.points_after, cashback=q.cashback_after, stamps=q.stamps_after,
                         vouchers=q.vouchers_after, lifetime_spend=q.lifetime_spend_after)
    needed = q.stamps_needed
    referrer_before = Balances("REF1", points=referrer_points, cashback=referrer_points,
                               stamps=min(referrer_stamps, needed - 1), vouchers=1)
    referrer_after = referrer_before
    for bonus in q.bonuses:
        if bonus.serial == "REF1":
            stamps, vouchers = add_stamps(referrer_after.stamps, bonus.amount if bonus.unit == "stamps" else 0, needed)
            referrer_after = replace(
                referrer_after,
                points=referrer_after.points + (bonus.amount if bonus.unit == "points" else 0),
                cashback=referrer_after.cashback + (bonus.amount if bonus.unit == "cashback" else 0),
                stamps=stamps, vouchers=referrer_after.vouchers + vouchers,
            )
    reversal = reverse(q.effects(), committed, referrer=referrer_after)
    assert reversal.changes[0].apply(committed) == before
    if len(reversal.changes) > 1:
        assert reversal.changes[1].apply(referrer_after) == referrer_before
    assert reversal.coupons_released == q.coupons_applied
    assert reversal.referral_reopened is bool(q.bonuses)


@settings(max_examples=300, deadline=None, database=None)
@given(
    tier_bp=st.integers(0, 10_000), rate=st.sampled_from(["0", "0.5", "1", "2.5"]),
    rounding=st.sampled_from(["down", "half_up", "up"]), point_value=st.integers(0, 5),
    max_percent=st.integers(0, 100), amount=st.integers(1, 10**6), balance=st.integers(0, 10**5),
    spend=st.integers(0, 20_000), redeem=st.integers(0, 10**5),
)
def test_strict_quote_agrees_with_price_purchase(
    tier_bp: int, rate: str, rounding: str, point_value: int, max_percent: int, amount: int, balance: int,
    spend: int, redeem: int,
) -> None:
    base = ProgramRules(points_per_unit=Decimal(rate), rounding=rounding, tiers=(Tier("T", 10_000, tier_bp),),
                        point_value=point_value, redeem_max_percent=max_percent)
    member = MemberFacts("M1", points=balance, lifetime_spend=spend, purchases_committed=3)

    def new() -> Quote:
        return quote(MechanicsRules(base=base), member, amount, now=NOW, currency="EUR", redeem_points=redeem,
                     strict_redemption=True)

    try:
        old = price_purchase(base, amount=amount, balance=balance, lifetime_spend=spend, redeem_points=redeem,
                             exponent=2)
    except ValidationError as refused:
        with pytest.raises(ValidationError, match=re.escape(refused.detail)):
            new()
        return
    got = new()
    assert (got.lines, got.amount_due, got.points_earned, got.points_after, got.tier_after) == (
        old.lines, old.amount_due, old.points_earned, old.points_after, old.tier_after)


def test_bonus_dataclass_is_what_quote_reports() -> None:
    q = run(POINTS, NEW, 1000, Ask(referral=Referral("REF1")))
    assert q.bonuses[0] == Bonus("referral_referee", "NEW1", 50, "points", "Welcome, referred friend")
