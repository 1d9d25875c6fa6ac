"""Member segments: the four named segments (lapsed, VIP, new, active) that offers and reminders aim at, and the
RFM scores (recency, frequency, money) that say how engaged a member is.

Pure first: `segment_settings` reads the program's rules, `segment_of` and `rfm_scores` judge one member from
their facts and today's date. Then SQL: `members_in_segment` is the same judgement as a query the database runs
over every card, and `segment_condition` its WHERE clause, for a caller that counts or joins.

Days are UTC calendar days and `today` is the UTC date of `now`. A member is in exactly one segment, checked in
this order (docs/segments.md):

1. lapsed: the day of their last committed purchase (or of enrollment, if they never bought) is on or before
   `today - lapsed_days`;
2. vip: their card's tier is the VIP tier or a higher one (a program without tiers has no VIP);
3. new: they enrolled on a day after `today - new_days`;
4. active: everyone else.

Only active cards are members here: a revoked card (lost, not yet replaced) is in no segment.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, false, func, not_, or_, select, true
from sqlalchemy.orm import Session

from app.domain.errors import ValidationError
from app.domain.rules import rules_from_json
from app.models import Card, Customer, Program
from app.models.mechanics import SEGMENTS

__all__ = [
    "DEFAULT_LAPSED_DAYS",
    "DEFAULT_NEW_DAYS",
    "MAX_SEGMENT_DAYS",
    "SEGMENTS",
    "SEGMENT_AUDIENCES",
    "SEGMENT_LABELS",
    "Rfm",
    "Segment",
    "SegmentFacts",
    "SegmentSettings",
    "card_segment",
    "members_in_segment",
    "program_segment_settings",
    "program_segments",
    "program_typical_basket",
    "rfm_scores",
    "segment_condition",
    "segment_descriptions",
    "segment_of",
    "segment_settings",
]

Segment = Literal["lapsed", "vip", "new", "active"]
SEGMENT_LABELS: Mapping[str, str] = {"lapsed": "Lapsed", "vip": "VIP", "new": "New", "active": "Active"}
# Who a segment's members are, as an offer's terms say it ("only for VIP members").
SEGMENT_AUDIENCES: Mapping[str, str] = {
    "lapsed": "members who have not bought for a while",
    "vip": "VIP members",
    "new": "new members",
    "active": "active members",
}

DEFAULT_NEW_DAYS = 30
DEFAULT_LAPSED_DAYS = 90
MAX_SEGMENT_DAYS = 3650

# Recency: days since the last purchase at most this many -> score. Frequency: at least this many purchases.
# Money: at least this many typical baskets of lifetime spend. The money steps are the frequency steps, so a
# member whose baskets are typical scores M = F; a higher M than F means bigger baskets than most.
RECENCY_STEPS = ((14, 5), (30, 4), (60, 3), (120, 2))
FREQUENCY_STEPS = ((20, 5), (10, 4), (5, 3), (2, 2), (1, 1))
MONEY_STEPS = FREQUENCY_STEPS


@dataclass(frozen=True)
class SegmentSettings:
    """A program's segment settings, checked. `vip_tiers` names the VIP tier and every tier above it (empty when
    the program has no tiers); `vip_tier` is what the rules name (None: the highest tier). `typical_basket` is in
    minor units; None means "the program's average purchase" (`program_typical_basket`)."""

    new_days: int = DEFAULT_NEW_DAYS
    lapsed_days: int = DEFAULT_LAPSED_DAYS
    vip_tier: str | None = None
    vip_tiers: tuple[str, ...] = ()
    typical_basket: int | None = None


def segment_settings(rules: Mapping[str, Any]) -> SegmentSettings:
    """The `segments` part of a program's stored rules, checked: 1 <= new_days < lapsed_days <= 3650, a VIP tier
    that is one of the program's tiers, a typical basket of at least 1 (minor units). Raises ValidationError
    naming the field (`segments.new_days`, ...)."""
    stored = rules.get("segments") or {}
    if not isinstance(stored, Mapping):
        raise ValidationError("segments must be an object of settings.", field="segments")
    new_days = _days(stored.get("new_days", DEFAULT_NEW_DAYS), "segments.new_days")
    lapsed_days = _days(stored.get("lapsed_days", DEFAULT_LAPSED_DAYS), "segments.lapsed_days")
    if new_days >= lapsed_days:
        raise ValidationError(
            f"segments.new_days ({new_days}) must be fewer than segments.lapsed_days ({lapsed_days}): a member "
            "cannot be new and lapsed at once.", field="segments.new_days")
    tier_names = [tier.name for tier in rules_from_json(rules).tiers]  # ordered by threshold, lowest first
    vip_tier = stored.get("vip_tier")
    if vip_tier is not None and (not isinstance(vip_tier, str) or vip_tier not in tier_names):
        known = ", ".join(tier_names) if tier_names else "none"
        raise ValidationError(f"segments.vip_tier {vip_tier!r} is not one of the program's tiers ({known}).",
                              field="segments.vip_tier")
    if tier_names:
        vip_tiers = tuple(tier_names[tier_names.index(vip_tier):]) if vip_tier else (tier_names[-1],)
    else:
        vip_tiers = ()
    typical = stored.get("typical_basket")
    if typical is not None and (isinstance(typical, bool) or not isinstance(typical, int) or typical < 1):
        raise ValidationError("segments.typical_basket is a whole number of minor units, 1 or more.",
                              field="segments.typical_basket")
    return SegmentSettings(new_days=new_days, lapsed_days=lapsed_days, vip_tier=vip_tier, vip_tiers=vip_tiers,
                           typical_basket=typical)


def _days(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SEGMENT_DAYS:
        raise ValidationError(f"{field} is a whole number of days from 1 to {MAX_SEGMENT_DAYS}.", field=field)
    return value


@dataclass(frozen=True)
class SegmentFacts:
    """What a member's segment is judged on: when they enrolled, their last committed purchase, their tier."""

    enrolled_at: dt.datetime
    last_purchase_at: dt.datetime | None
    tier: str | None


def utc_day(moment: dt.datetime) -> dt.date:
    return moment.astimezone(dt.UTC).date()


def segment_of(facts: SegmentFacts, settings: SegmentSettings, today: dt.date) -> Segment:
    """The member's one segment on `today` (a UTC date), by the rules in the module docstring."""
    last_seen = facts.last_purchase_at or facts.enrolled_at
    if utc_day(last_seen) <= today - dt.timedelta(days=settings.lapsed_days):
        return "lapsed"
    if facts.tier is not None and facts.tier in settings.vip_tiers:
        return "vip"
    if utc_day(facts.enrolled_at) > today - dt.timedelta(days=settings.new_days):
        return "new"
    return "active"


@dataclass(frozen=True)
class Rfm:
    """Recency, frequency and money, 1 (low) to 5 (high) each; all 0 for a member who never bought."""

    recency: int
    frequency: int
    money: int

    @property
    def code(self) -> str:
        """The three scores as marketers write them: "545"."""
        return f"{self.recency}{self.frequency}{self.money}"


def rfm_scores(
    *, last_purchase_at: dt.datetime | None, purchase_count: int, lifetime_spend: int, typical_basket: int,
    today: dt.date,
) -> Rfm:
    """A member's RFM scores on `today` (UTC date).

    R from the days since the last purchase's UTC day: at most 14 -> 5, 30 -> 4, 60 -> 3, 120 -> 2, else 1.
    F from committed purchases: at least 20 -> 5, 10 -> 4, 5 -> 3, 2 -> 2, 1 -> 1.
    M from lifetime spend in typical baskets (`typical_basket`, minor units, at least 1): at least 20 -> 5,
    10 -> 4, 5 -> 3, 2 -> 2, less -> 1. A member with no purchase scores 0 on all three.
    """
    if purchase_count <= 0 or last_purchase_at is None:
        return Rfm(0, 0, 0)
    days = (today - utc_day(last_purchase_at)).days
    recency = next((score for most, score in RECENCY_STEPS if days <= most), 1)
    frequency = next(score for least, score in FREQUENCY_STEPS if purchase_count >= least)
    basket = max(typical_basket, 1)
    money = next((score for least, score in MONEY_STEPS if lifetime_spend >= least * basket), 1)
    return Rfm(recency, frequency, money)


# --- The database's side -------------------------------------------------------------------------------------------


def program_segment_settings(program: Program) -> SegmentSettings:
    return segment_settings(program.rules)


def program_typical_basket(session: Session, program: Program, settings: SegmentSettings | None = None) -> int:
    """The typical basket RFM's money score counts in: the setting when there is one, else the program's
    average committed purchase (lifetime spend over purchases, across its cards), else 1 with no purchases."""
    settings = settings or program_segment_settings(program)
    if settings.typical_basket is not None:
        return settings.typical_basket
    spend, purchases = session.execute(
        select(func.coalesce(func.sum(Card.lifetime_spend), 0), func.coalesce(func.sum(Card.purchase_count), 0))
        .where(Card.program_id == program.id)
    ).one()
    return max(int(spend) // int(purchases), 1) if purchases else 1


def card_segment(card: Card, now: dt.datetime, settings: SegmentSettings | None = None) -> Segment:
    """A loaded card's segment at `now` (its customer is loaded for the enrollment day)."""
    settings = settings or program_segment_settings(card.program)
    facts = SegmentFacts(enrolled_at=card.customer.created_at, last_purchase_at=card.last_purchase_at,
                         tier=card.tier)
    return segment_of(facts, settings, utc_day(now))


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)


def segment_condition(segment: str, settings: SegmentSettings, now: dt.datetime) -> ColumnElement[bool]:
    """The WHERE clause, over `cards` joined to `customers`, that holds for the members of `segment` at `now`.

    Days are compared as instants: "the UTC day of x is on or before D" is "x < D+1 at 00:00 UTC", so the
    columns stay bare (indexable, and the same on SQLite and PostgreSQL).
    """
    if segment not in SEGMENTS:
        raise ValidationError(f"{segment!r} is not a segment; use one of {', '.join(SEGMENTS)}.", field="segment")
    today = utc_day(now)
    lapsed_before = _midnight(today - dt.timedelta(days=settings.lapsed_days - 1))
    new_from = _midnight(today - dt.timedelta(days=settings.new_days - 1))
    last_seen = func.coalesce(Card.last_purchase_at, Customer.created_at)
    lapsed = last_seen < lapsed_before
    not_lapsed = last_seen >= lapsed_before
    vip = Card.tier.in_(settings.vip_tiers) if settings.vip_tiers else false()
    not_vip = or_(Card.tier.is_(None), Card.tier.not_in(settings.vip_tiers)) if settings.vip_tiers else true()
    new = Customer.created_at >= new_from
    conditions: dict[str, ColumnElement[bool]] = {
        "lapsed": lapsed,
        "vip": and_(not_lapsed, vip),
        "new": and_(not_lapsed, not_vip, new),
        "active": and_(not_lapsed, not_vip, not_(new)),
    }
    return conditions[segment]


def members_in_segment(session: Session, program: Program, segment: str, now: dt.datetime) -> Select[tuple[int]]:
    """The ids of the program's active cards whose member is in `segment` at `now`, as a query to run (or to use
    as a subquery). `session` is not queried; it is taken so every domain function reads alike."""
    settings = program_segment_settings(program)
    return (
        select(Card.id)
        .join(Customer, Customer.id == Card.customer_id)
        .where(Card.program_id == program.id, Card.status == "active", segment_condition(segment, settings, now))
    )


def segment_descriptions(settings: SegmentSettings) -> dict[str, str]:
    """Each segment in words for a manager choosing one, in the order a form lists them (VIP only with tiers)."""
    described = {
        "new": f"New members: joined in the last {settings.new_days} days",
        "active": f"Active members: the rest (bought or joined in the last {settings.lapsed_days} days, not new, "
                  "not VIP)",
        "lapsed": f"Lapsed members: no purchase for {settings.lapsed_days} days or more",
    }
    if settings.vip_tiers:
        higher = " or a higher tier" if len(settings.vip_tiers) > 1 else ""
        described["vip"] = f"VIP members: {settings.vip_tiers[0]}{higher}"
    return described


def program_segments(program: Program) -> tuple[str, ...]:
    """The segments the program's offers may aim at: all four, but no VIP in a program without tiers."""
    has_tiers = bool(rules_from_json(program.rules).tiers)
    return tuple(name for name in SEGMENTS if name != "vip" or has_tiers)
