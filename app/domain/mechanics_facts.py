"""What the pure mechanics engine (app/domain/mechanics.py) is given, read from the database, and what it gives back
(a purchase's effects), stored with the purchase.

Each lookup is made only when the request or the card calls for it: coupons when codes are sent, offers when
offer ids are, the reward when one is chosen, the referral only on a member's first purchase in a program that
pays referral bonuses. So a program without mechanics and a basket with none of them costs no query here, and
the purchase path keeps the round trips docs/performance.md counts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from app.domain import mechanics
from app.domain.errors import ValidationError
from app.domain.money import format_amount
from app.domain.segments import SEGMENT_AUDIENCES, card_segment
from app.models import Card, Coupon, CouponUse, Offer, Program, Referral, Reward


def program_kind(program: Program) -> str:
    """What the program's cards collect ("points", "stamps", "cashback"), as `program_mechanics` reads it."""
    kind = program.rules.get("program_type")
    return kind if isinstance(kind, str) else program.kind


def program_mechanics(program: Program) -> mechanics.MechanicsRules:
    """The program's rules as the engine reads them. What a card collects is the stored rules' `program_type`
    (the settings page saves it there and on `Program.kind` alike); rules stored without one take `Program.kind`.

    Read once per distinct stored rules: every purchase prices with them, and reading (validating) the JSON
    costs more than the pricing. The key is the rules' text, so any change is a new entry.
    """
    return _mechanics_from_text(program.kind, repr(program.rules), program.rules)


_READ_RULES: dict[tuple[str, str], mechanics.MechanicsRules] = {}
_READ_RULES_KEPT = 256


def _mechanics_from_text(kind: str, text: str, rules: Mapping[str, Any]) -> mechanics.MechanicsRules:
    key = (kind, text)
    found = _READ_RULES.get(key)
    if found is None:
        found = mechanics.mechanics_from_json({"program_type": kind, **rules})
        if len(_READ_RULES) >= _READ_RULES_KEPT:
            _READ_RULES.clear()
        _READ_RULES[key] = found
    return found


def member_facts(card: Card) -> mechanics.MemberFacts:
    """The card before this purchase, as the engine needs it (read under the card's lock when committing)."""
    return mechanics.MemberFacts(
        serial=card.serial,
        points=card.points,
        cashback=card.cashback,
        lifetime_spend=card.lifetime_spend,
        purchases_committed=card.purchase_count,
        first_purchase_at=card.first_purchase_at,
        stamps=card.stamps,
        vouchers=card.vouchers,
    )


def card_balances(card: Card, serial: str | None = None) -> mechanics.Balances:
    """What a card holds now, for `mechanics.reverse`. `serial` is the one the purchase's effects name, which
    differs from the card's own after a reissue: the account is the same."""
    return mechanics.Balances(
        serial=serial or card.serial,
        points=card.points,
        cashback=card.cashback,
        stamps=card.stamps,
        vouchers=card.vouchers,
        lifetime_spend=card.lifetime_spend,
    )


# --- Coupons ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CouponFacts:
    """The coupons a purchase names, in the order named, with how often each was used; the codes not found."""

    found: tuple[tuple[mechanics.Coupon, mechanics.CouponUse], ...] = ()
    unknown: tuple[str, ...] = ()
    ids: Mapping[str, int] = field(default_factory=dict)  # code -> coupons.id, for the CouponUse rows


_USES = CouponUse.__table__
_USES_IN_ALL = (
    select(func.count()).select_from(_USES)
    .where(_USES.c.coupon_id == Coupon.id, _USES.c.voided_at.is_(None))
    .scalar_subquery()
)
_USES_BY_CARD = (
    select(func.count()).select_from(_USES)
    .where(_USES.c.coupon_id == Coupon.id, _USES.c.voided_at.is_(None), _USES.c.card_id == bindparam("card_id"))
    .scalar_subquery()
)
_COUPONS = (
    select(Coupon)
    .where(Coupon.program_id == bindparam("program_id"), Coupon.code.in_(bindparam("codes", expanding=True)),
           Coupon.active.is_(True))
    .order_by(Coupon.id)
)
# Counted after the coupons are locked, so a single-use code raced by two cards is spent once (PostgreSQL; on
# SQLite the write lock already serialises purchases).
_USE_COUNTS = (
    select(Coupon.id, _USES_IN_ALL, _USES_BY_CARD)
    .where(Coupon.id.in_(bindparam("ids", expanding=True)))
)


def load_coupons(
    session: Session, program: Program, card: Card, codes: Sequence[str], *, lock: bool
) -> CouponFacts:
    """The program's active coupons for these normalised codes, with their committed, not voided, uses.

    With `lock` (a purchase being committed) the coupon rows are locked in id order, so two purchases racing
    for one single-use code take it once and two baskets naming the same coupons cannot deadlock.
    """
    if not codes:
        return CouponFacts()
    statement = _COUPONS.with_for_update() if lock else _COUPONS
    rows = {row.code: row for row in session.scalars(statement, {"program_id": program.id,
                                                                  "codes": sorted(set(codes))})}
    counts: dict[int, tuple[int, int]] = {}
    if rows:
        for coupon_id, total, by_card in session.execute(
            _USE_COUNTS, {"ids": [row.id for row in rows.values()], "card_id": card.id}
        ):
            counts[coupon_id] = (int(total), int(by_card))
    found: list[tuple[mechanics.Coupon, mechanics.CouponUse]] = []
    unknown: list[str] = []
    for code in codes:
        row = rows.get(code)
        if row is None:
            unknown.append(code)
            continue
        total, by_card = counts.get(row.id, (0, 0))
        found.append((engine_coupon(row, {card.id: card.serial}), mechanics.CouponUse(by_member=by_card, total=total)))
    return CouponFacts(found=tuple(found), unknown=tuple(unknown), ids={code: row.id for code, row in rows.items()})


def engine_coupon(row: Coupon, serials: Mapping[int, str]) -> mechanics.Coupon:
    """The coupon row as the engine takes it. The engine ties a coupon to a card by serial and only compares it
    with the member's: a coupon issued to a card not in `serials` gets a stand-in that can never equal a serial
    (serials are base32, no "#")."""
    assigned = None
    if row.assigned_card_id is not None:
        assigned = serials.get(row.assigned_card_id, f"#{row.assigned_card_id}")
    return mechanics.Coupon(
        code=row.code,
        discount=mechanics.Discount(row.discount_type, row.discount_value),  # type: ignore[arg-type]
        kind=row.kind,  # type: ignore[arg-type]
        min_basket=row.min_basket,
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        per_member_limit=row.per_member_limit,
        member_only=row.member_only,
        assigned_card=assigned,
        stackable=row.stackable,
        label=row.label,
    )


# --- Offers and rewards -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OfferFacts:
    """The offers chosen, in the order chosen (a repeat stays, for the engine to refuse), the ids that are
    not a current offer of this program (withdrawn, or never were), and the offers aimed at a segment the member
    is not in, as (title, segment)."""

    chosen: tuple[mechanics.Offer, ...] = ()
    unknown: tuple[int, ...] = ()
    outside_segment: tuple[tuple[str, str], ...] = ()

    def notices(self) -> tuple[mechanics.Notice, ...]:
        unknown = tuple(
            mechanics.Notice("offer_unknown", f"Offer {offer_id} is not an offer of this program, or it was "
                                              "withdrawn; scan the card again for the current offers.")
            for offer_id in self.unknown
        )
        return unknown + tuple(
            mechanics.Notice("offer_not_for_segment",
                             f"{title} is only for {SEGMENT_AUDIENCES[segment]}, and this member is not one.")
            for title, segment in self.outside_segment
        )


_OFFERS = select(Offer).where(
    Offer.program_id == bindparam("program_id"), Offer.id.in_(bindparam("ids", expanding=True)),
    Offer.active.is_(True),
)


def load_offers(
    session: Session, program: Program, offer_ids: Sequence[int], *, card: Card, now: dt.datetime
) -> OfferFacts:
    """The offers `offer_ids` name, for `card`'s member at `now`: an offer aimed at a segment (app/domain/
    segments.py) the member is not in is set aside with the reason, not given to the engine."""
    if not offer_ids:
        return OfferFacts()
    rows = {row.id: row for row in session.scalars(_OFFERS, {"program_id": program.id,
                                                              "ids": sorted(set(offer_ids))})}
    # The member's segment is judged only when an offer chosen is aimed at one.
    member_segment = card_segment(card, now) if any(row.segment for row in rows.values()) else None
    outside = {i for i, row in rows.items() if row.segment is not None and row.segment != member_segment}
    return OfferFacts(
        chosen=tuple(_engine_offer(rows[i]) for i in offer_ids if i in rows and i not in outside),
        unknown=tuple(dict.fromkeys(i for i in offer_ids if i not in rows)),
        outside_segment=tuple(dict.fromkeys((rows[i].title, str(rows[i].segment)) for i in offer_ids
                                            if i in outside)),
    )


def _engine_offer(row: Offer) -> mechanics.Offer:
    return mechanics.Offer(
        id=str(row.id),
        title=row.title,
        discount=mechanics.Discount(row.discount_type, row.discount_value),  # type: ignore[arg-type]
        valid_from=row.starts_at,
        valid_until=row.ends_at,
        min_basket=row.min_basket,
    )


def running_offers(session: Session, program: Program, now: dt.datetime, *, card: Card) -> list[Offer]:
    """The program's offers `card`'s member may choose now (those for everyone and those aimed at the member's
    segment), soonest ending first: what the till shows after a scan."""
    segment = card_segment(card, now)
    return list(session.scalars(
        select(Offer)
        .where(Offer.program_id == program.id, Offer.active.is_(True),
               (Offer.starts_at.is_(None)) | (Offer.starts_at <= now),
               (Offer.ends_at.is_(None)) | (Offer.ends_at > now),
               (Offer.segment.is_(None)) | (Offer.segment == segment))
        .order_by(Offer.ends_at.is_(None), Offer.ends_at, Offer.id)
    ))


def offer_json(offer: Offer, currency: str) -> dict[str, Any]:
    """An offer as the till lists it; `id` is what a quote's `offer_ids` takes."""
    discount = mechanics.Discount(offer.discount_type, offer.discount_value)  # type: ignore[arg-type]
    return {
        "id": offer.id,
        "title": offer.title,
        "detail": offer.detail,
        "discount": discount.text(currency),
        "min_basket": format_amount(offer.min_basket, currency),
        "ends_at": offer.ends_at.isoformat() if offer.ends_at else None,
    }


def catalogue(session: Session, program: Program) -> list[Reward]:
    """The program's rewards a member may buy with points, cheapest first."""
    return list(session.scalars(
        select(Reward).where(Reward.program_id == program.id, Reward.active.is_(True))
        .order_by(Reward.points_cost, Reward.id)
    ))


def reward_json(reward: Reward, currency: str) -> dict[str, Any]:
    """A catalogue item as the till lists it; `id` is what a quote's `reward_id` takes."""
    return {"id": reward.id, "name": reward.name, "points_cost": reward.points_cost,
            "value": format_amount(reward.value, currency)}


_REWARD = select(Reward).where(
    Reward.id == bindparam("reward_id"), Reward.program_id == bindparam("program_id"), Reward.active.is_(True)
)


def load_reward(session: Session, program: Program, reward_id: int | None) -> mechanics.Reward | None:
    """The catalogue item chosen, or a refusal naming `reward_id` when the catalogue has no such item."""
    if reward_id is None:
        return None
    row = session.scalar(_REWARD, {"reward_id": reward_id, "program_id": program.id})
    if row is None:
        raise ValidationError(f"reward_id {reward_id} is not in this program's rewards catalogue.",
                              field="reward_id")
    return mechanics.Reward(id=str(row.id), name=row.name, points_cost=row.points_cost, value=row.value)


# --- Referrals ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferralFacts:
    """The referral behind a member, with the referrer's card (locked when committing)."""

    referral_id: int
    referrer: Card
    engine: mechanics.Referral


_REFERRAL = (
    select(Referral, Card)
    .join(Card, Card.id == Referral.referrer_card_id)
    .where(Referral.referee_card_id == bindparam("card_id"))
)
_REFERRAL_LOCKED = _REFERRAL.with_for_update(of=Card).execution_options(populate_existing=True)


def load_referral(
    session: Session, rules: mechanics.MechanicsRules, card: Card, *, lock: bool
) -> ReferralFacts | None:
    """The referral that may pay its bonuses on this purchase: only a first purchase, only in a program with
    referral bonuses, so every other purchase pays no query.

    With `lock`, the referrer's card is locked after the member's (already locked by the caller). Every
    transaction that locks two cards (a referred member's first purchase, and its void) takes the referred
    member's first, then the referrer's; a referrer enrolled before the member they referred, so that is one
    order (descending card id) everywhere, and two such transactions cannot deadlock.
    """
    if rules.referral is None or card.purchase_count != 0:
        return None
    row = session.execute(_REFERRAL_LOCKED if lock else _REFERRAL, {"card_id": card.id}).first()
    if row is None:
        return None
    referral, referrer = row
    return ReferralFacts(
        referral_id=referral.id,
        referrer=referrer,
        engine=mechanics.Referral(referrer_serial=referrer.serial, self_referral=referral.self_referral,
                                  bonus_paid=referral.bonus_purchase_id is not None),
    )


# --- A purchase's effects, stored -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    """What the committed purchase answered beyond its effects: the balances after it and its notices, so a
    retried request gets the same answer (Purchase.points_after does the same for points)."""

    stamps: int = 0
    vouchers: int = 0
    cashback: int = 0
    notices: tuple[mechanics.Notice, ...] = ()


def effects_to_json(effects: mechanics.PurchaseEffects, receipt: Receipt) -> dict[str, Any]:
    """The stored form of a purchase's effects (Purchase.effects): PurchaseEffects' fields, and the receipt.

    Field by field rather than `dataclasses.asdict`, whose deep copies cost a purchase more than the rest of
    this put together. Zeros and empty lists are left out (both readers take them as the defaults), so the
    common purchase, which only earns points, stores a few bytes: every purchase row carries this.
    """
    data: dict[str, Any] = {"serial": effects.serial, "amount_due": effects.amount_due}
    for name in _EFFECT_FIELDS:
        value = getattr(effects, name)
        if name not in data and value and name not in ("coupon_codes", "bonuses"):
            data[name] = value
    if effects.coupon_codes:
        data["coupon_codes"] = list(effects.coupon_codes)
    if effects.bonuses:
        data["bonuses"] = [{"kind": b.kind, "serial": b.serial, "amount": b.amount, "unit": b.unit,
                            "label": b.label} for b in effects.bonuses]
    balances = (("stamps", receipt.stamps), ("vouchers", receipt.vouchers), ("cashback", receipt.cashback))
    stored_receipt: dict[str, Any] = {name: value for name, value in balances if value}
    if receipt.notices:
        stored_receipt["notices"] = [{"code": n.code, "message": n.message} for n in receipt.notices]
    if stored_receipt:
        data["receipt"] = stored_receipt
    return data


_EFFECT_FIELDS = tuple(f.name for f in fields(mechanics.PurchaseEffects))


def effects_from_json(data: Mapping[str, Any]) -> mechanics.PurchaseEffects:
    """Purchase.effects back as the engine's PurchaseEffects (keys it does not know are left out)."""
    values = {name: data[name] for name in _EFFECT_FIELDS if name in data}
    values["coupon_codes"] = tuple(data.get("coupon_codes", ()))
    values["bonuses"] = tuple(mechanics.Bonus(**bonus) for bonus in data.get("bonuses", ()))
    return mechanics.PurchaseEffects(**values)


def receipt_from_json(data: Mapping[str, Any] | None) -> Receipt:
    """The receipt stored with the effects; an old purchase (no effects) gets the empty one."""
    stored = (data or {}).get("receipt") or {}
    return Receipt(
        stamps=stored.get("stamps", 0),
        vouchers=stored.get("vouchers", 0),
        cashback=stored.get("cashback", 0),
        notices=tuple(mechanics.Notice(**n) for n in stored.get("notices", ())),
    )
