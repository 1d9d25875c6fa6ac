"""Every figure of docs/analytics.md, recomputed by brute force from the raw rows and compared exactly with the
dashboard's report, over a random but reproducible program history and many ranges of days.

The history (one per seed): 40 members enrolled over 400 days by the web form, a till or the API (at one of two
locations, or at none), 7 more through referral links (two of them self-referrals, one typed in at a till), and
~250 purchases on or after each member's enrollment, some with a coupon, points or a reward redeemed, ~5% voided
minutes or weeks later; a few birthday bonuses, expiries and manual corrections too. Everything happens in time
order, and the roll-ups are refreshed every 20 to 40 operations, as dashboard views would, so purchases are voided
both before and after the refresh that counted them.

The expected figures are computed in plain Python from purchases, ledger entries, members, cards, referrals and
coupon uses, never through app/domain/analytics.py, for 25 random ranges and the edge ones (a single day, the
whole history, a range starting on a member's first purchase, ranges ending on the churn cutoff, the bucket
switches at 62/63 and 182/183 days); segments by docs/segments.md, and by `members_in_segment` too. Finally the
incrementally folded roll-ups must equal a rebuild from scratch.
"""

from __future__ import annotations

import datetime as dt
import heapq
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.domain import analytics as a
from app.domain.analytics_report import Report, build_report
from app.domain.analytics_rollups import rebuild_rollups, refresh_rollups
from app.domain.cards import card_code, revoke_card
from app.domain.enrollment import EnrollmentRequest, enroll_customer
from app.domain.errors import PointsAlreadySpent, ValidationError
from app.domain.points_upkeep import BirthdayBonus, PointsExpiry, expire_points, grant_birthday_bonus
from app.domain.programs import create_location
from app.domain.purchases import Actor, CouponRefused, PurchaseRequest, commit_purchase, void_purchase
from app.domain.segments import members_in_segment
from app.models import (
    ROLLUP_NEW,
    ROLLUP_SETTLED,
    Card,
    Coupon,
    CouponUse,
    Customer,
    DailyCouponUses,
    DailyEnrollments,
    DailyPoints,
    DailySales,
    DailyVisits,
    LedgerEntry,
    Location,
    MonthlyCohorts,
    Purchase,
    Referral,
    Reward,
)
from tests.conftest import TEST_RULES, ProgramKit

UTC = dt.UTC
DAY = dt.timedelta(days=1)
HISTORY_DAYS = 400
MEMBERS = 40
PURCHASES = 250
VOID_SHARE = 0.05
RANDOM_RANGES = 25
OTHER_CHURN_DAYS = (1, 7, 30, 61, 365)
ONLINE = "Online"  # docs/analytics.md: the "location" of the web form and referral links
CHANNELS = ("web", "till", "api", "referral")  # in the order docs/analytics.md lists them
NO_TIER = "No tier"

# TEST_RULES (Silver from 100.00 EUR with 5% off, Gold from 500.00 with 10%, a point redeems for 0.01 EUR) with
# the mechanics that add discount lines and ledger entries of their own kinds.
BASE_RULES: dict[str, Any] = {
    **TEST_RULES,
    "second_visit": {"percent_bp": 1000, "within_days": 14},
    "referral": {"referrer_bonus": 200, "referee_bonus": 100},
}
# A first tier from 0: every member holds it from enrollment, before any purchase.
TIERS_FROM_ZERO = [{"name": "Bronze", "min_spend": 0, "discount_bp": 0}, *TEST_RULES["tiers"]]
# (seed, what the rules change, cards revoked at the end). The last two once found the dashboard's segment counts
# disagreeing with docs/segments.md: revoked cards counted, and VIP members of a tier from 0 who never bought.
SCENARIOS = (
    pytest.param(20261125, {}, 0, id="default-segments"),
    pytest.param(7, {"segments": {"lapsed_days": 60, "new_days": 21, "vip_tier": "Silver"}}, 0, id="vip-from-silver"),
    pytest.param(424242, {"segments": {"lapsed_days": 120, "new_days": 45}}, 0, id="longer-windows"),
    pytest.param(99, {}, 3, id="revoked-cards"),
    pytest.param(1234, {"tiers": TIERS_FROM_ZERO, "segments": {"vip_tier": "Bronze"}}, 0, id="vip-tier-from-zero"),
)


# --- The history ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedMember:
    number: int
    enrolled_at: dt.datetime
    channel: str
    location_id: int | None
    device: str | None
    referrer: int | None = None  # the number of the member whose link (or code) they came by


@dataclass
class History:
    """What the simulation did, for the edge ranges and for checking it exercised what it should."""

    today: dt.date
    now: dt.datetime
    first_day: dt.date
    refreshes: int = 0
    voids_after_refresh: int = 0  # voids of purchases a refresh had already counted
    voids_before_refresh: int = 0  # voids of purchases no refresh had seen yet
    voids_refused: int = 0  # the member had already spent what the void would take back
    bonus_voids: int = 0  # voids of a purchase that had paid the referral bonuses
    coupon_uses: int = 0
    redemptions: int = 0
    rewards: int = 0
    removals: int = 0


def _moment(rng: random.Random, day: dt.date, after: dt.datetime | None = None) -> dt.datetime:
    """A random instant of `day` (UTC), later than `after`; now and then the first or last second of the day,
    where a day computed in the wrong time zone or as a timestamp rather than a date would show."""
    midnight = dt.datetime.combine(day, dt.time(0), tzinfo=UTC)
    earliest = 0 if after is None or after < midnight else int((after - midnight).total_seconds()) + 1
    roll = rng.random()
    if roll < 0.05 and earliest == 0:
        second = 0
    elif roll < 0.10:
        second = 86_399
    else:
        second = rng.randint(earliest, 86_399)
    return midnight + dt.timedelta(seconds=second, microseconds=rng.randrange(1_000_000))


def _amount(rng: random.Random) -> int:
    """A basket in cents: mostly small, sometimes large enough to reach a tier within a few visits."""
    low, high = rng.choice(((300, 2_000), (300, 2_000), (2_000, 8_000), (2_000, 8_000), (8_000, 25_000)))
    return rng.randint(low, high)


def _plan_members(rng: random.Random, first_day: dt.date, today: dt.date, tills: tuple[int, int]
                  ) -> list[PlannedMember]:
    members: list[PlannedMember] = []
    for number in range(MEMBERS):
        day = first_day + dt.timedelta(days=rng.randint(0, HISTORY_DAYS))
        channel = rng.choice(("web", "web", "till", "till", "api"))
        # Enrolled in the day's opening hours (a purchase the same day comes later), or at midnight sharp.
        enrolled = dt.datetime.combine(day, dt.time(0), tzinfo=UTC)
        if rng.random() > 0.05:
            enrolled += dt.timedelta(seconds=rng.randint(6 * 3600, 21 * 3600))
        members.append(PlannedMember(
            number, enrolled, channel, None if channel == "web" else rng.choice(tills),
            f"device-{number:04d}-{rng.getrandbits(40):010x}" if channel == "web" else None,
        ))
    # Referred members: two self-referrals (from the referrer's own browser), four friends by the link, and one whose
    # code was typed in at a till (attributed like a link, but enrolled on the till's channel).
    with_device = [m for m in members if m.device and m.enrolled_at.date() < today - 30 * DAY]
    others = [m for m in members if m.enrolled_at.date() < today - 30 * DAY]
    for kind in ("self", "self", "link", "link", "link", "link", "till"):
        referrer = rng.choice(with_device if kind == "self" else others)
        gap = (today - referrer.enrolled_at.date()).days
        day = referrer.enrolled_at.date() + dt.timedelta(days=rng.randint(1, gap))
        enrolled = dt.datetime.combine(day, dt.time(0), tzinfo=UTC) + dt.timedelta(
            seconds=rng.randint(6 * 3600, 21 * 3600))
        number = len(members)
        if kind == "till":
            members.append(PlannedMember(number, enrolled, "api", rng.choice(tills), None, referrer.number))
        else:
            device = referrer.device if kind == "self" else f"device-{number:04d}-{rng.getrandbits(40):010x}"
            members.append(PlannedMember(number, enrolled, "referral", None, device, referrer.number))
    return members


def _plan_purchases(rng: random.Random, members: list[PlannedMember], today: dt.date
                    ) -> list[tuple[dt.datetime, int]]:
    """(when, member number) of each purchase: some members never buy, a few buy often."""
    weights = [rng.choice((0, 1, 1, 3, 3, 8)) for _ in members]
    weights[-1] = max(weights[-1], 1)  # the member referred at a till buys, so their bonus is paid
    plan: list[tuple[dt.datetime, int]] = []
    for number in rng.choices(range(len(members)), weights=weights, k=PURCHASES):
        enrolled = members[number].enrolled_at
        day = enrolled.date() + dt.timedelta(days=rng.randint(0, (today - enrolled.date()).days))
        when = _moment(rng, day, after=enrolled)
        plan.append((when, number))
        if rng.random() < 0.08 and when.time() < dt.time(23):  # back later the same day
            plan.append((_moment(rng, day, after=when), number))
    return plan


def build_history(app: Flask, db_session: Session, kit: ProgramKit, seed: int, revoked: int = 0) -> History:
    """Enroll, buy, void, refresh... in time order, as the tills and the dashboard would have over 400 days."""
    rng = random.Random(seed)
    program = kit.program
    keys = app.extensions["keys"]
    today = dt.date(2026, 1, 1) + dt.timedelta(days=rng.randrange(365))
    now = dt.datetime.combine(today, dt.time(23, 59, 59, 999_999), tzinfo=UTC)
    history = History(today=today, now=now, first_day=today - dt.timedelta(days=HISTORY_DAYS))
    station = create_location(db_session, program, "Station")
    db_session.add_all([
        Coupon(program_id=program.id, code="SPRING10", kind="reusable", discount_type="percent",
               discount_value=1000, label="Spring 10%"),
        Coupon(program_id=program.id, code="TAKE5", kind="reusable", discount_type="fixed", discount_value=500,
               min_basket=3000, label="5 EUR off 30"),
    ])
    coffee = Reward(program_id=program.id, name="A coffee", points_cost=150, value=250)
    db_session.add(coffee)
    db_session.flush()
    tills = (kit.location.id, station.id)
    members = _plan_members(rng, history.first_day, today, tills)
    cards: dict[int, Card] = {}
    codes: dict[int, str] = {}
    program_cards = select(Card.id).where(Card.program_id == program.id)

    def stamp_new_entries(since: int, when: dt.datetime) -> None:
        # Enrollment, birthday and expiry entries are written at the wall clock (they happen "now" in real
        # life); in this replayed history they happen at `when`.
        db_session.execute(update(LedgerEntry).where(LedgerEntry.id > since, LedgerEntry.card_id.in_(program_cards))
                           .values(created_at=when).execution_options(synchronize_session=False))

    def last_entry() -> int:
        return int(db_session.scalar(select(func.max(LedgerEntry.id))) or 0)

    def points_of(card: Card) -> int:
        return int(db_session.scalar(select(Card.points).where(Card.id == card.id)) or 0)

    def enroll(member: PlannedMember, when: dt.datetime) -> None:
        since = last_entry()
        referrer = cards[member.referrer] if member.referrer is not None else None
        phone = f"+999{seed % 1000:03d}{member.number:06d}"
        card = enroll_customer(
            db_session, program,
            EnrollmentRequest(f"Member {member.number}", f"m{member.number}@example.com", phone, True,
                              referrer.referral_code if referrer else None),
            channel=member.channel, location_id=member.location_id, device=member.device,
        )
        db_session.execute(update(Customer).where(Customer.id == card.customer_id).values(created_at=when))
        db_session.execute(update(Card).where(Card.id == card.id).values(created_at=when))
        db_session.execute(update(Referral).where(Referral.referee_card_id == card.id).values(created_at=when))
        stamp_new_entries(since, when)
        cards[member.number] = card
        codes[member.number] = card_code(db_session, card, keys)

    def buy(number: int, when: dt.datetime) -> int:
        card = cards[number]
        coupon = rng.choice(("SPRING10", "TAKE5")) if rng.random() < 0.12 else None
        points = points_of(card)
        redeem = rng.randint(1, min(points, 1_500)) if points >= 20 and rng.random() < 0.2 else 0
        reward = coffee.id if points >= coffee.points_cost + redeem and rng.random() < 0.1 else None
        amount = _amount(rng)
        location = rng.choice((*tills, None)) if rng.random() < 0.2 else (members[number].location_id or tills[0])
        asked = ((coupon,) if coupon else (), redeem, reward)
        for coupons, points_asked, reward_id in (asked, ((), redeem, reward), ((), redeem, None), ((), 0, None)):
            request = PurchaseRequest(code=codes[number], amount=amount, coupon_codes=coupons,
                                      redeem_points=points_asked, reward_id=reward_id)
            try:
                result = commit_purchase(db_session, program, request, Actor(location_id=location),
                                         str(uuid.uuid4()), now=when)
            except (CouponRefused, ValidationError):  # below the coupon's minimum, or more points than allowed
                continue
            history.coupon_uses += bool(coupons)
            history.redemptions += bool(points_asked)
            history.rewards += reward_id is not None
            return result.purchase.id
        raise AssertionError(f"a plain purchase of {amount} cents was refused")

    def void(purchase_id: int, when: dt.datetime) -> None:
        state = db_session.scalar(select(Purchase.rollup_state).where(Purchase.id == purchase_id))
        paid_bonus = db_session.scalar(select(Referral.id).where(Referral.bonus_purchase_id == purchase_id))
        try:
            void_purchase(db_session, program, purchase_id, Actor(location_id=tills[0]), now=when)
        except PointsAlreadySpent:
            history.voids_refused += 1
            return
        history.voids_after_refresh += state == ROLLUP_SETTLED
        history.voids_before_refresh += state == ROLLUP_NEW
        history.bonus_voids += paid_bonus is not None

    def birthday(number: int, when: dt.datetime) -> None:
        since, card = last_entry(), cards[number]
        grant_birthday_bonus(db_session, BirthdayBonus(
            card_id=card.id, serial=card.serial, holder="Member", program=program.name, currency=program.currency,
            birthday=when.date(), amount=25, unit="points", stamps_needed=0))
        stamp_new_entries(since, when)

    def expire(number: int, when: dt.datetime) -> None:
        since, card = last_entry(), cards[number]
        db_session.refresh(card)
        if card.points > 0:
            activity = card.last_purchase_at or card.created_at
            history.removals += bool(expire_points(db_session, PointsExpiry(
                card_id=card.id, serial=card.serial, holder="Member", program=program.name,
                points=card.points, last_purchase_at=card.last_purchase_at, last_activity_at=activity,
                expires_on=when.date(), months=6)))
        stamp_new_entries(since, when)

    def correct(number: int, when: dt.datetime) -> None:
        # A manager's manual correction: no domain function makes one yet, so the row and the balance are
        # written as a correction would write them (an "adjust" entry and an SQL-side increment).
        card = cards[number]
        change = rng.choice((40, -15))
        change = max(change, -points_of(card))
        if change:
            db_session.add(LedgerEntry(card_id=card.id, kind="adjust", points=change, note="Correction",
                                       created_at=when))
            db_session.execute(update(Card).where(Card.id == card.id).values(points=Card.points + change))
            db_session.flush()
            history.removals += change < 0

    # The event queue: (when, tie-breaker, what, argument). Voids are queued when their purchase commits.
    events: list[tuple[dt.datetime, int, str, int]] = []
    sequence = iter(range(10**9))
    for member in members:
        events.append((member.enrolled_at, next(sequence), "enroll", member.number))
    for when, number in _plan_purchases(rng, members, today):
        events.append((when, next(sequence), "buy", number))
    for what, count in (("birthday", 3), ("expire", 3), ("correct", 4)):
        for _ in range(count):
            member = rng.choice(members)
            day = member.enrolled_at.date() + dt.timedelta(days=rng.randint(1, HISTORY_DAYS))
            if day <= today:
                events.append((_moment(rng, day), next(sequence), what, member.number))
    heapq.heapify(events)
    operations, next_refresh = 0, rng.randint(20, 40)
    while events:
        when, _, what, argument = heapq.heappop(events)
        if what == "enroll":
            enroll(members[argument], when)
        elif what == "buy":
            purchase_id = buy(argument, when)
            first_of_referred = members[argument].referrer is not None and db_session.scalar(
                select(Referral.id).where(Referral.bonus_purchase_id == purchase_id)) is not None
            if rng.random() < (0.5 if first_of_referred else VOID_SHARE):
                later = rng.choice((dt.timedelta(minutes=rng.randint(1, 90)), dt.timedelta(days=rng.randint(1, 60))))
                if when + later <= now:
                    heapq.heappush(events, (when + later, next(sequence), "void", purchase_id))
        elif what == "void":
            void(argument, when)
        else:
            {"birthday": birthday, "expire": expire, "correct": correct}[what](argument, when)
        operations += 1
        if operations == next_refresh:
            refresh_rollups(db_session, program.id, when)
            history.refreshes += 1
            operations, next_refresh = 0, rng.randint(20, 40)
    for number in rng.sample(sorted(cards), revoked):  # lost and not replaced (yet): `flask card revoke`
        revoke_card(db_session, cards[number])
    refresh_rollups(db_session, program.id, now)
    return history


# --- The raw rows, and every figure computed from them by hand -------------------------------------------------------


@dataclass(frozen=True)
class Bought:
    id: int
    card_id: int
    at: dt.datetime
    amount: int
    amount_due: int
    points_earned: int
    points_redeemed: int

    @property
    def day(self) -> dt.date:
        return self.at.astimezone(UTC).date()


@dataclass(frozen=True)
class Member:
    card_id: int
    enrolled_at: dt.datetime
    channel: str
    location: str
    tier: str | None  # the card's, as stored
    points: int  # the card's balance, as stored
    active: bool

    @property
    def enrolled(self) -> dt.date:
        return self.enrolled_at.astimezone(UTC).date()


@dataclass(frozen=True)
class Entry:
    card_id: int
    kind: str
    points: int
    purchase_id: int | None
    day: dt.date


@dataclass(frozen=True)
class Referred:
    referrer: int
    referee: int
    self_referral: bool


@dataclass(frozen=True)
class UsedCoupon:
    code: str
    label: str
    purchase_id: int
    discount: int


@dataclass
class Rows:
    members: dict[int, Member]
    committed: list[Bought]  # in the order they were made
    voided: set[int]
    stored_discounts: dict[int, int]
    entries: list[Entry]
    referrals: list[Referred]
    coupon_uses: list[UsedCoupon]
    by_card: dict[int, list[Bought]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        by_card: dict[int, list[Bought]] = defaultdict(list)
        for purchase in self.committed:
            by_card[purchase.card_id].append(purchase)
        self.by_card = dict(by_card)


def read_rows(db_session: Session, program_id: int) -> Rows:
    names = dict(db_session.execute(select(Location.id, Location.name).where(Location.program_id == program_id))
                 .tuples().all())
    members = {
        card_id: Member(card_id, enrolled_at, channel, names[location_id] if location_id else ONLINE, tier, points,
                        status == "active")
        for card_id, enrolled_at, channel, location_id, tier, points, status in db_session.execute(
            select(Card.id, Customer.created_at, Customer.channel, Customer.location_id, Card.tier, Card.points,
                   Card.status)
            .join(Customer, Customer.id == Card.customer_id).where(Card.program_id == program_id)
        ).tuples()
    }
    committed: list[Bought] = []
    voided: set[int] = set()
    discounts: dict[int, int] = {}
    for row in db_session.execute(
        select(Purchase.id, Purchase.card_id, Purchase.created_at, Purchase.amount, Purchase.amount_due,
               Purchase.points_earned, Purchase.points_redeemed, Purchase.status, Purchase.discount)
        .where(Purchase.program_id == program_id).order_by(Purchase.created_at, Purchase.id)
    ).tuples():
        *fields, status, discount = row
        discounts[row[0]] = discount
        if status == "committed":
            committed.append(Bought(*fields))
        else:
            voided.add(row[0])
    entries = [
        Entry(card_id, kind, points, purchase_id, created_at.astimezone(UTC).date())
        for card_id, kind, points, purchase_id, created_at in db_session.execute(
            select(LedgerEntry.card_id, LedgerEntry.kind, LedgerEntry.points, LedgerEntry.purchase_id,
                   LedgerEntry.created_at)
            .join(Card, Card.id == LedgerEntry.card_id).where(Card.program_id == program_id)
        ).tuples()
    ]
    referrals = [Referred(*row) for row in db_session.execute(
        select(Referral.referrer_card_id, Referral.referee_card_id, Referral.self_referral)
        .join(Card, Card.id == Referral.referee_card_id).where(Card.program_id == program_id)
    ).tuples()]
    coupon_uses = [UsedCoupon(*row) for row in db_session.execute(
        select(Coupon.code, Coupon.label, CouponUse.purchase_id, CouponUse.discount)
        .join(Coupon, Coupon.id == CouponUse.coupon_id).where(Coupon.program_id == program_id)
    ).tuples()]
    return Rows(members, committed, voided, discounts, entries, referrals, coupon_uses)


def share(part: int, whole: int) -> Fraction | None:
    """docs/analytics.md: exact fractions, empty (None) when there is nothing to divide by, never 0."""
    return Fraction(part, whole) if whole else None


def days_of(start: dt.date, end: dt.date) -> Iterable[dt.date]:
    day = start
    while day <= end:
        yield day
        day += DAY


def bucket_of(start: dt.date, end: dt.date) -> str:
    """Charts group by day up to 62 days, by ISO week up to 182, by month beyond."""
    length = (end - start).days + 1
    return "day" if length <= 62 else "week" if length <= 182 else "month"


def bucket_first_day(day: dt.date, bucket: str) -> dt.date:
    return {"day": day, "week": day - dt.timedelta(days=day.isoweekday() - 1), "month": day.replace(day=1)}[bucket]


def month_number(day: dt.date) -> int:
    return day.year * 12 + day.month - 1


def month_of_number(number: int) -> dt.date:
    return dt.date(number // 12, number % 12 + 1, 1)


def tier_for_spend(spend: int, tiers: list[dict[str, Any]]) -> str | None:
    """The highest tier whose threshold the lifetime spend (amount due of committed purchases) reached."""
    reached = [tier for tier in tiers if spend >= tier["min_spend"]]
    return max(reached, key=lambda tier: tier["min_spend"])["name"] if reached else None


class BruteForce:
    """Each figure of docs/analytics.md, by its definition, from the raw rows."""

    def __init__(self, rows: Rows, rules: dict[str, Any], today: dt.date) -> None:
        self.rows = rows
        self.rules = rules
        self.today = today
        # Entries of voided purchases count nowhere; void entries only exist for those.
        self.standing = [entry for entry in rows.entries
                         if entry.kind != "void" and entry.purchase_id not in rows.voided]

    def bought_in(self, start: dt.date, end: dt.date) -> list[Bought]:
        return [p for p in self.rows.committed if start <= p.day <= end]

    def sales(self, start: dt.date, end: dt.date) -> dict[str, Any]:
        bought = self.bought_in(start, end)
        basket, paid = sum(p.amount for p in bought), sum(p.amount_due for p in bought)
        return {
            "purchases": len(bought), "basket": basket, "paid": paid, "discounts given": basket - paid,
            "points earned": sum(p.points_earned for p in bought),
            "points redeemed": sum(p.points_redeemed for p in bought),
            "average check (paid)": share(paid, len(bought)),
            "average check before discounts": share(basket, len(bought)),
        }

    def sales_series(self, start: dt.date, end: dt.date) -> list[tuple[dt.date, int, int, int]]:
        bucket = bucket_of(start, end)
        starts = sorted({bucket_first_day(day, bucket) for day in days_of(start, end)})
        totals = {first: [0, 0, 0] for first in starts}
        for p in self.bought_in(start, end):
            total = totals[bucket_first_day(p.day, bucket)]
            total[0] += 1
            total[1] += p.amount
            total[2] += p.amount_due
        return [(first, totals[first][0], totals[first][1], totals[first][2]) for first in starts]

    def visits(self, start: dt.date, end: dt.date) -> dict[str, Any]:
        bought = self.bought_in(start, end)
        buyers = {p.card_id for p in bought}
        new = {card for card in buyers if start <= self.rows.by_card[card][0].day <= end}
        repeat = {card for card in new if len(self.rows.by_card[card]) > 1 and self.rows.by_card[card][1].day <= end}
        return {
            "purchases": len(bought), "buyers": len(buyers), "new buyers": len(new),
            "returning buyers": len(buyers - new), "purchase frequency": share(len(bought), len(buyers)),
            "repeat purchase rate": share(len(repeat), len(new)),
        }

    def churn(self, as_of: dt.date, days: int) -> tuple[dt.date, int, int, int, Fraction | None]:
        cutoff = as_of - dt.timedelta(days=days)
        before = {p.card_id for p in self.rows.committed if p.day <= cutoff}
        came_back = {p.card_id for p in self.rows.committed if cutoff < p.day <= as_of}
        churned = before - came_back
        return as_of, days, len(before), len(churned), share(len(churned), len(before))

    def churn_trend(self, start: dt.date, end: dt.date, days: int) -> list[tuple[Any, ...]]:
        """At `to` and at the end of each earlier month in the range, up to 12 points."""
        month_ends = [day for day in days_of(start, end - DAY) if (day + DAY).day == 1]
        ends = sorted([end, *month_ends[::-1][:11]])
        return [self.churn(day, days) for day in ends]

    def cohorts(self, start: dt.date, end: dt.date) -> list[tuple[Any, ...]]:
        result = []
        current = month_number(self.today)
        for number in range(month_number(start), month_number(end) + 1):
            cohort = [m.card_id for m in self.rows.members.values() if month_number(m.enrolled) == number]
            shown = max(0, min(12, current - number + 1))
            months_bought = [{month_number(p.day) for p in self.rows.by_card.get(card, ())} for card in cohort]
            active = tuple(sum(1 for months in months_bought if number + k in months) for k in range(shown))
            result.append((month_of_number(number), len(cohort), active,
                           tuple(share(count, len(cohort)) for count in active)))
        return result

    def points(self, start: dt.date, end: dt.date) -> dict[str, Any]:
        in_range = [e for e in self.standing if start <= e.day <= end]
        issued = sum(e.points for e in in_range if e.kind in ("earn", "bonus") or (e.kind == "adjust" and e.points > 0))
        redeemed = -sum(e.points for e in in_range if e.kind == "redeem")
        outstanding = sum(e.points for e in self.standing if e.day <= end)
        point_value = self.rules["redeem"]["point_value"]
        return {
            "issued": issued, "redeemed": redeemed,
            "expired or removed": -sum(e.points for e in in_range if e.kind == "adjust" and e.points < 0),
            "outstanding": outstanding, "liability": outstanding * point_value,
            "redemption rate": share(redeemed, issued),
        }

    def coupons(self, start: dt.date, end: dt.date) -> dict[str, tuple[str, int, int, int, int]]:
        bought = {p.id: p for p in self.bought_in(start, end)}
        figures: dict[str, list[Any]] = {}
        for use in self.rows.coupon_uses:
            purchase = bought.get(use.purchase_id)
            if purchase is None:
                continue
            row = figures.setdefault(use.code, [use.label, 0, 0, 0, 0])
            row[1] += 1
            row[2] += use.discount
            row[3] += purchase.amount
            row[4] += purchase.amount_due
        return {code: (row[0], row[1], row[2], row[3], row[4]) for code, row in figures.items()}

    def referrals(self, start: dt.date, end: dt.date) -> dict[str, int]:
        members = self.rows.members
        referred = [r for r in self.rows.referrals if start <= members[r.referee].enrolled <= end]
        bonus_cards = defaultdict(set)  # purchase -> cards it paid a bonus to (standing purchases only)
        for entry in self.standing:
            if entry.kind == "bonus" and entry.purchase_id is not None:
                bonus_cards[entry.purchase_id].add(entry.card_id)
        rewarded = [r for r in referred if any(bonus_cards[p.id] >= {r.referee, r.referrer}
                                               for p in self.rows.by_card.get(r.referee, ()))]
        return {
            "referred": len(referred), "self-referrals": sum(r.self_referral for r in referred),
            "made a purchase": sum(1 for r in referred if self.rows.by_card.get(r.referee)),
            "bonuses paid": len(rewarded),
        }

    def tiers(self) -> dict[str, int]:
        """Members per tier now (by the lifetime spend their committed purchases add up to), and in none."""
        counts = Counter(
            tier_for_spend(sum(p.amount_due for p in self.rows.by_card.get(card, ())), self.rules["tiers"]) or NO_TIER
            for card in self.rows.members
        )
        return {tier["name"]: counts[tier["name"]] for tier in self.rules["tiers"]} | {NO_TIER: counts[NO_TIER]}

    def enrollments(self, start: dt.date, end: dt.date) -> dict[str, Any]:
        bucket = bucket_of(start, end)
        joined = [m for m in self.rows.members.values() if start <= m.enrolled <= end]
        by_channel = Counter((bucket_first_day(m.enrolled, bucket), m.channel) for m in joined)
        by_location = Counter((bucket_first_day(m.enrolled, bucket), m.location) for m in joined)
        return {
            "bucket starts": tuple(sorted({bucket_first_day(day, bucket) for day in days_of(start, end)})),
            "by channel": dict(by_channel), "by location": dict(by_location),
            "channels": tuple(channel for channel in CHANNELS if any(c == channel for _, c in by_channel)),
            "locations": {location for _, location in by_location},
        }

    def segments(self, segment_rules: dict[str, Any]) -> dict[str, int]:
        """docs/segments.md, member by member: lapsed if the day of the last committed purchase (or of joining)
        is on or before today - lapsed_days; else VIP in the VIP tier or above; else new if joined after
        today - new_days; else active. Only active cards count."""
        lapsed_days = segment_rules.get("lapsed_days", 90)
        new_days = segment_rules.get("new_days", 30)
        names = [tier["name"] for tier in sorted(self.rules["tiers"], key=lambda tier: tier["min_spend"])]
        vip = set(names[names.index(segment_rules["vip_tier"]):] if "vip_tier" in segment_rules else names[-1:])
        counts = dict.fromkeys(("lapsed", "vip", "new", "active"), 0)
        for member in self.rows.members.values():
            if not member.active:
                continue
            bought = self.rows.by_card.get(member.card_id)
            last_seen = bought[-1].day if bought else member.enrolled
            if last_seen <= self.today - dt.timedelta(days=lapsed_days):
                counts["lapsed"] += 1
            elif member.tier in vip:
                counts["vip"] += 1
            elif member.enrolled > self.today - dt.timedelta(days=new_days):
                counts["new"] += 1
            else:
                counts["active"] += 1
        return counts

    def glance(self) -> dict[str, int]:
        """All-time figures and those of the last 30 days including today."""
        recent = self.bought_in(self.today - dt.timedelta(days=29), self.today)
        ever = self.points(dt.date.min, self.today)
        return {
            "members": len(self.rows.members), "active members": len({p.card_id for p in recent}),
            "purchases": len(self.rows.committed), "purchases in 30 days": len(recent),
            "revenue": sum(p.amount_due for p in self.rows.committed),
            "revenue in 30 days": sum(p.amount_due for p in recent),
            "points issued": ever["issued"], "points redeemed": ever["redeemed"],
            "points outstanding": ever["outstanding"],
        }


# --- Comparing --------------------------------------------------------------------------------------------------


class Differences:
    """Every figure that differs, named with its range, so one run shows them all."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def check(self, where: str, figure: str, reported: object, expected: object,
              sides: tuple[str, str] = ("the report says", "the definition gives")) -> None:
        """Note `figure` if it differs; of a list or a dict, only the items that differ."""
        if reported == expected:
            return
        said, given = sides
        if isinstance(reported, list) and isinstance(expected, list) and len(reported) == len(expected):
            detail = "; ".join(f"#{i} {said} {r!r}, {given} {e!r}"
                               for i, (r, e) in enumerate(zip(reported, expected, strict=True)) if r != e)
        elif isinstance(reported, dict) and isinstance(expected, dict):
            keys = sorted(reported.keys() | expected.keys(), key=repr)
            detail = "; ".join(f"{k!r}: {said} {reported.get(k)!r}, {given} {expected.get(k)!r}"
                               for k in keys if reported.get(k) != expected.get(k))
        else:
            detail = f"{said} {reported!r}, {given} {expected!r}"
        self.found.append(f"{where}: {figure}: {detail}")

    def check_all(self, where: str, reported: dict[str, object], expected: dict[str, object]) -> None:
        assert reported.keys() == expected.keys()
        for figure in expected:
            self.check(where, figure, reported[figure], expected[figure])


def compare_range(diff: Differences, report: Report, truth: BruteForce, lapsed_days: int,
                  churn_at: Callable[[dt.date, int], a.Churn]) -> None:
    start, end = report.range.start, report.range.end
    where = f"range {start}..{end} ({report.range.days} days)"
    s, v, p, f = report.sales, report.visits, report.points, report.referrals
    diff.check(where, "chart bucket", report.range.bucket, bucket_of(start, end))
    diff.check_all(where, {
        "purchases": s.purchases, "basket": s.amount, "paid": s.amount_due, "discounts given": s.discount,
        "points earned": s.points_earned, "points redeemed": s.points_redeemed,
        "average check (paid)": s.average_paid, "average check before discounts": s.average_basket,
    }, truth.sales(start, end))
    diff.check(where, "sales per bucket", [(x.start, x.purchases, x.amount, x.amount_due) for x in report.sales_series],
               truth.sales_series(start, end))
    diff.check_all(where, {
        "purchases": v.purchases, "buyers": v.buyers, "new buyers": v.new_buyers,
        "returning buyers": v.returning_buyers, "purchase frequency": v.purchase_frequency,
        "repeat purchase rate": v.repeat_rate,
    }, truth.visits(start, end))
    diff.check(where, f"churn trend ({lapsed_days} days)",
               [(c.as_of, c.days, c.buyers_before, c.churned, c.rate) for c in report.churn],
               truth.churn_trend(start, end, lapsed_days))
    for days in (*OTHER_CHURN_DAYS, lapsed_days - 1, lapsed_days + 1):
        c = churn_at(end, days)
        diff.check(where, f"churn ({days} days) at {end}", (c.as_of, c.days, c.buyers_before, c.churned, c.rate),
                   truth.churn(end, days))
    cohorts = [(c.month, c.members, c.active, tuple(c.share(k) for k in range(len(c.active))))
               for c in report.cohorts]
    diff.check(where, "retention cohorts", cohorts, truth.cohorts(start, end))
    diff.check_all(where, {
        "issued": p.issued, "redeemed": p.redeemed, "expired or removed": p.removed, "outstanding": p.outstanding,
        "liability": p.liability, "redemption rate": p.redemption_rate,
    }, truth.points(start, end))
    diff.check(where, "coupon performance",
               {c.code: (c.label, c.uses, c.discount, c.amount, c.revenue) for c in report.coupons},
               truth.coupons(start, end))
    diff.check_all(where, {
        "referred": f.referred, "self-referrals": f.self_referrals, "made a purchase": f.purchased,
        "bonuses paid": f.rewarded,
    }, truth.referrals(start, end))
    e = report.enrollments
    diff.check_all(where, {
        "bucket starts": e.starts, "by channel": e.by_channel, "by location": e.by_location,
        "channels": e.channels, "locations": set(e.locations),
    }, truth.enrollments(start, end))


def ranges_to_check(rng: random.Random, history: History, rows: Rows, lapsed_days: int) -> list[a.DateRange]:
    first, today = history.first_day, history.today

    def ending_by_today(start: dt.date, days: int) -> a.DateRange:
        return a.DateRange(start, min(today, start + dt.timedelta(days=days - 1)))

    def ending_on(end: dt.date, days: int) -> a.DateRange:
        return a.DateRange(end - dt.timedelta(days=days - 1), end)

    busiest = Counter(p.day for p in rows.committed).most_common(1)[0][0]
    first_purchases = sorted({purchases[0].day for purchases in rows.by_card.values()})
    old_days = [p.day for p in rows.committed if p.day <= today - dt.timedelta(days=lapsed_days)]
    boundary = rng.choice(old_days)
    month = rng.choice([day for day in days_of(first, today - 31 * DAY) if day.day == 1])
    monday = rng.choice([day for day in days_of(first, today - 7 * DAY) if day.isoweekday() == 1])
    ranges = [
        a.DateRange(first, today),  # the whole history
        a.DateRange(first - 45 * DAY, today),  # from before the first member
        a.DateRange(busiest, busiest),  # a single day
        a.DateRange(today, today),
        ending_on(today, 90),  # the dashboard's default
        ending_on(today, 30),  # "at a glance"
        ending_by_today(rng.choice(first_purchases), rng.randint(1, 120)),  # from a member's first purchase day
        ending_by_today(first_purchases[0], 200),
        # Ending on the churn cutoff boundary: a purchase exactly on `to - N`, then one day inside the window.
        ending_on(boundary + dt.timedelta(days=lapsed_days), 40),
        ending_on(boundary + dt.timedelta(days=lapsed_days - 1), 40),
        # Around the chart bucket switches, and calendar months and weeks.
        ending_on(today - rng.randint(0, 90) * DAY, 62), ending_on(today - rng.randint(0, 90) * DAY, 63),
        ending_on(today - rng.randint(0, 90) * DAY, 182), ending_on(today - rng.randint(0, 90) * DAY, 183),
        a.DateRange(month, (month + 32 * DAY).replace(day=1) - DAY),
        a.DateRange(monday, monday + 6 * DAY),
    ]
    for _ in range(RANDOM_RANGES):
        days = rng.choice((rng.randint(1, 62), rng.randint(63, 182), rng.randint(183, HISTORY_DAYS)))
        ranges.append(ending_on(today - dt.timedelta(days=rng.randint(0, HISTORY_DAYS - days)), days))
    return ranges


ROLLUP_MODELS = (DailySales, DailyVisits, MonthlyCohorts, DailyPoints, DailyEnrollments, DailyCouponUses)


def rollup_snapshot(db_session: Session, program_id: int) -> dict[str, dict[tuple[Any, ...], tuple[int, ...]]]:
    """Each roll-up table's rows of the program, key -> counters, leaving out rows whose counters are all 0."""
    snapshot = {}
    for model in ROLLUP_MODELS:
        table = model.__table__
        keys = [column for column in table.primary_key.columns if column.name != "program_id"]
        counters = [column for column in table.columns if not column.primary_key]
        rows = db_session.execute(select(*keys, *counters).where(table.c.program_id == program_id)).tuples()
        snapshot[table.name] = {
            tuple(row[:len(keys)]): tuple(int(value) for value in row[len(keys):])
            for row in rows if any(row[len(keys):])
        }
    return snapshot


# --- The test -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "rule_changes", "revoked"), SCENARIOS)
def test_every_figure_matches_its_definition_over_a_random_history(
    app: Flask, db_session: Session, make_program: Callable[..., ProgramKit], seed: int,
    rule_changes: dict[str, Any], revoked: int,
) -> None:
    rules = {**BASE_RULES, **rule_changes}
    segment_rules: dict[str, Any] = rules.get("segments", {})
    kit = make_program(rules=rules)
    program = kit.program
    history = build_history(app, db_session, kit, seed, revoked)
    # The history exercised what the roll-ups must get right.
    assert history.refreshes >= 6, history
    assert history.voids_after_refresh and history.voids_before_refresh, history
    assert history.coupon_uses and history.redemptions and history.rewards and history.removals, history
    assert not refresh_rollups(db_session, program.id, history.now), "a second refresh found something to fold"

    rows = read_rows(db_session, program.id)
    truth = BruteForce(rows, rules, history.today)
    lapsed_days = segment_rules.get("lapsed_days", 90)
    diff = Differences()

    # The raw rows hold together as the docs assume before anything is summed.
    diff.check("purchases", "discount column = basket - paid",
               {p.id: rows.stored_discounts[p.id] for p in rows.committed},
               {p.id: p.amount - p.amount_due for p in rows.committed}, sides=("stored", "computed"))
    diff.check("cards", "tier = the tier of the committed purchases' lifetime spend",
               {m.card_id: m.tier for m in rows.members.values()},
               {card: tier_for_spend(sum(p.amount_due for p in rows.by_card.get(card, ())), rules["tiers"])
                for card in rows.members}, sides=("stored", "computed"))
    diff.check(f"today {history.today}", "points outstanding = the sum of the cards' balances",
               truth.points(history.first_day, history.today)["outstanding"],
               sum(m.points for m in rows.members.values()), sides=("the ledger gives", "the cards hold"))

    rng = random.Random(seed + 1)
    ranges = ranges_to_check(rng, history, rows, lapsed_days)
    first = build_report(db_session, program, ranges[0], history.now)
    g = first.glance
    diff.check_all(f"glance at {history.today}", {
        "members": g.members, "active members": g.active_members, "purchases": g.purchases,
        "purchases in 30 days": g.purchases_in_window, "revenue": g.revenue, "revenue in 30 days": g.revenue_in_window,
        "points issued": g.points_issued, "points redeemed": g.points_redeemed,
        "points outstanding": g.points_outstanding,
    }, truth.glance())
    diff.check("now", "tier distribution", {t.name: t.members for t in first.tiers}, truth.tiers())
    by_hand = truth.segments(segment_rules)
    diff.check(f"today {history.today}", "segments", first.segments.counts, by_hand)
    diff.check(f"today {history.today}", "segments (members_in_segment)", {
        name: db_session.scalar(select(func.count()).select_from(
            members_in_segment(db_session, program, name, history.now).subquery()))
        for name in by_hand
    }, by_hand)
    diff.check(f"today {history.today}", "segments add up to the members whose card is not revoked",
               first.segments.total, sum(1 for m in rows.members.values() if m.active))

    def churn_at(as_of: dt.date, days: int) -> a.Churn:
        return a.churn(db_session, program, as_of, days)

    for rng_range in ranges:
        compare_range(diff, build_report(db_session, program, rng_range, history.now), truth, lapsed_days, churn_at)

    # The roll-ups folded bit by bit over the history are what a rebuild from scratch computes.
    folded = rollup_snapshot(db_session, program.id)
    rebuild_rollups(db_session, program.id, history.now)
    rebuilt = rollup_snapshot(db_session, program.id)
    for table in folded:
        diff.check(f"roll-up table {table}", "rows folded incrementally = rows of a rebuild", folded[table],
                   rebuilt[table], sides=("folded", "rebuilt"))
    if diff.found:
        pytest.fail(f"seed {seed}, today {history.today}: {len(diff.found)} figures differ:\n"
                    + "\n".join(diff.found[:40]))
