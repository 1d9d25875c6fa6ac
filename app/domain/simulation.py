"""The Rules page's preview: what proposed rules would have given and issued over the last 30 days of real
purchases, next to what the rules as they are give, before the manager saves anything.

The program's committed purchases of the window (voided ones are left out: they did not happen) are read with
the facts the engine needs, and each is priced by the engine itself (`mechanics.quote`, through
`HistoricPurchase.quote`), once under each rule set; `mechanics.simulate` totals them. So the preview is, by
construction, what the rules do on those purchases at the till.

What each purchase is given, and how exact it is:

- exact: the basket, the time, the points redeemed, the cashback spent, whether a stamp-card voucher was used
  (all stored with the purchase), and the coupons used with how often each had been used before, by this member
  and by anyone (the coupon_uses rows, a use voided later still counting before its void);
- exact: the member's lifetime spend, purchase count and first purchase time before the purchase, summed from
  the card's earlier purchases that were committed at that moment (a purchase voided later still counts for
  the purchases rung up before its void, as it did at the till);
- exact: the points, cashback, stamps and vouchers the card held just before the purchase: what the purchase
  stored as the balance after it (`points_after`, and the receipt in its effects) less what it moved itself.
  Purchases made before the mechanics existed stored no effects; their cards held no cashback or stamps then;
- approximate: a member-only offer is stored as its line (title and amount), so it is matched to the program's
  offer of that title, or else taken as a fixed discount of the amount it gave; a catalogue reward is matched by
  name to today's catalogue, at the points it cost then;
- approximate: a referral is taken as it is now (who referred the member, self-referral or not); its bonus
  counts as already paid for a purchase after the one that paid it.

The rules as they are and the proposed rules are each replayed over the window, member by member in the order
the purchases were rung up: a member's spend and balances before a purchase are what they really were, moved
by how much more or less the member's earlier purchases of the window would have given under those rules. So a
switch to a stamp card fills cards over the month and issues its vouchers, and a tier reached later under a
new discount is reached later in the preview too. What is not replayed: bonuses paid to a referrer for someone
else's purchase under the other rules, and balance changes made outside purchases (birthday bonuses, expiry,
adjustments), which stay as they really happened. With the rules unchanged, "as they are" is what was rung up.

Times are compared in UTC, as the till compares them (calendar days for the second visit are UTC days).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.domain import mechanics
from app.domain.mechanics import HistoricPurchase, MechanicsRules, SimulatedPurchase, SimulationReport
from app.domain.mechanics_facts import effects_from_json, engine_coupon, receipt_from_json
from app.models import Card, Coupon, CouponUse, Offer, Program, Purchase, Referral, Reward

WINDOW_DAYS = 30

__all__ = [
    "WINDOW_DAYS",
    "Figure",
    "Moved",
    "RulesPreview",
    "WindowPurchase",
    "compare_rules",
    "load_window",
    "preview_rule_change",
    "replay",
]


@dataclass(frozen=True)
class Moved:
    """What a purchase did to its card: lifetime spend and balances (money in minor units)."""

    spend: int = 0
    points: int = 0
    cashback: int = 0
    stamps: int = 0
    vouchers: int = 0

    def plus(self, other: Moved) -> Moved:
        return Moved(self.spend + other.spend, self.points + other.points, self.cashback + other.cashback,
                     self.stamps + other.stamps, self.vouchers + other.vouchers)

    def minus(self, other: Moved) -> Moved:
        return Moved(self.spend - other.spend, self.points - other.points, self.cashback - other.cashback,
                     self.stamps - other.stamps, self.vouchers - other.vouchers)


@dataclass(frozen=True)
class WindowPurchase:
    """A committed purchase of the window as it was rung up (the member's facts then, what was asked for) and
    what it did to the member's card."""

    purchase: HistoricPurchase
    did: Moved


# --- The replay: pure ----------------------------------------------------------------------------------------------


def replay(
    rules: MechanicsRules, purchases: Sequence[WindowPurchase], *, currency: str
) -> tuple[HistoricPurchase, ...]:
    """The purchases with each member's facts as they would have been under `rules`, in the order given.

    A member's facts before a purchase are the real ones moved by the difference between what the member's
    earlier purchases (in `purchases`) would have done under `rules` and what they really did. Balances do not
    go below zero. Non-members (no serial) have no facts to carry.
    """
    drift: dict[str, Moved] = {}
    replayed = []
    for window_purchase in purchases:
        historic = window_purchase.purchase
        serial = historic.member.serial
        if serial is None:
            replayed.append(historic)
            continue
        facts = _moved_facts(historic.member, drift.get(serial, Moved()))
        moved_facts = replace(historic, member=facts)
        quote = moved_facts.quote(rules, currency)
        did = Moved(
            spend=quote.lifetime_spend_after - facts.lifetime_spend,
            points=quote.points_after - facts.points,
            cashback=quote.cashback_after - facts.cashback,
            stamps=quote.stamps_after - facts.stamps,
            vouchers=quote.vouchers_after - facts.vouchers,
        )
        drift[serial] = drift.get(serial, Moved()).plus(did.minus(window_purchase.did))
        replayed.append(moved_facts)
    return tuple(replayed)


def compare_rules(
    current: MechanicsRules, proposed: MechanicsRules, purchases: Sequence[WindowPurchase], *, currency: str
) -> SimulationReport:
    """The purchases priced under the rules as they are and as proposed, each replayed (`replay`), totalled by
    `mechanics.simulate`. A member is affected when any of their purchases comes out differently."""
    as_they_are = mechanics.simulate(current, current, replay(current, purchases, currency=currency),
                                     currency=currency)
    as_proposed = mechanics.simulate(proposed, proposed, replay(proposed, purchases, currency=currency),
                                     currency=currency)
    rows = tuple(
        SimulatedPurchase(after.purchase, before.before, after.after)
        for before, after in zip(as_they_are.rows, as_proposed.rows, strict=True)
    )
    changed = sorted({row.before.member_serial for row in rows if row.changed and row.before.member_serial})
    return SimulationReport(
        before=as_they_are.before,
        after=as_proposed.after,
        difference=as_proposed.after.minus(as_they_are.before),
        members_changed=tuple(changed),
        rows=rows,
    )


def _moved_facts(member: mechanics.MemberFacts, drift: Moved) -> mechanics.MemberFacts:
    if drift == Moved():
        return member
    return replace(
        member,
        lifetime_spend=max(0, member.lifetime_spend + drift.spend),
        points=max(0, member.points + drift.points),
        cashback=max(0, member.cashback + drift.cashback),
        stamps=max(0, member.stamps + drift.stamps),
        vouchers=max(0, member.vouchers + drift.vouchers),
    )


# --- What the page shows ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One line of the preview's table: a total under the rules as they are and as proposed."""

    name: str  # a SimulationTotals field
    label: str
    money: bool
    before: int
    after: int

    @property
    def difference(self) -> int:
        return self.after - self.before


_FIGURES = (
    ("purchases", "Purchases", False),
    ("basket", "Sales before discounts", True),
    ("discount_given", "Discount given", True),
    ("amount_due", "Paid by members", True),
    ("points_issued", "Points issued", False),
    ("points_spent", "Points spent", False),
    ("cashback_issued", "Cashback issued", True),
    ("cashback_redeemed", "Cashback spent", True),
    ("stamps_issued", "Stamps given", False),
    ("vouchers_issued", "Reward vouchers issued", False),
    ("members_discounted", "Members given a discount", False),
)
_ALWAYS_SHOWN = {"purchases", "basket", "discount_given", "amount_due", "points_issued", "members_discounted"}
_SHOWN_FOR_KIND = {"cashback": {"cashback_issued", "cashback_redeemed"}, "stamps": {"stamps_issued", "vouchers_issued"}}


@dataclass(frozen=True)
class RulesPreview:
    """The preview of a rule change over the window [since, until]."""

    since: dt.datetime
    until: dt.datetime
    members: int  # members with a committed purchase in the window
    report: SimulationReport
    kinds: tuple[str, ...]  # the program kinds of the two rule sets

    @property
    def purchases(self) -> int:
        return self.report.before.purchases

    @property
    def members_affected(self) -> int:
        return self.report.members_affected

    @property
    def figures(self) -> tuple[Figure, ...]:
        """The totals worth showing: the main ones, those of either rule set's kind, and any that is not zero."""
        shown = set(_ALWAYS_SHOWN).union(*(_SHOWN_FOR_KIND.get(kind, set()) for kind in self.kinds))
        figures = (Figure(name, label, money, getattr(self.report.before, name), getattr(self.report.after, name))
                   for name, label, money in _FIGURES)
        return tuple(f for f in figures if f.name in shown or f.before or f.after)


def preview_rule_change(
    session: Session,
    program: Program,
    current: MechanicsRules,
    proposed: MechanicsRules,
    *,
    now: dt.datetime,
    days: int = WINDOW_DAYS,
) -> RulesPreview:
    """For the manager: what `proposed` would have given over the program's committed purchases of the last
    `days` days, next to `current`. Reads only; nothing is written."""
    since = now - dt.timedelta(days=days)
    purchases = load_window(session, program, since=since, until=now)
    report = compare_rules(current, proposed, purchases, currency=program.currency)
    members = len({p.purchase.member.serial for p in purchases})
    return RulesPreview(since=since, until=now, members=members, report=report,
                        kinds=tuple(dict.fromkeys((current.program_type, proposed.program_type))))


# --- Reading the window: the facts each purchase was rung up with --------------------------------------------------


def load_window(
    session: Session, program: Program, *, since: dt.datetime, until: dt.datetime
) -> list[WindowPurchase]:
    """The program's committed purchases made in [since, until], oldest first, with the facts each was rung up
    with (see the module docstring for what is exact and what is approximated)."""
    in_window = (Purchase.program_id == program.id, Purchase.status == "committed",
                 Purchase.created_at >= since, Purchase.created_at <= until)
    window = session.execute(
        select(Purchase.id, Purchase.card_id, Purchase.created_at, Purchase.amount, Purchase.amount_due,
               Purchase.points_earned, Purchase.points_redeemed, Purchase.points_after, Purchase.lines,
               Purchase.effects)
        .where(*in_window)
        .order_by(Purchase.created_at, Purchase.id)
    ).all()
    if not window:
        return []
    window_cards = select(Purchase.card_id).where(*in_window).distinct().scalar_subquery()
    window_ids = select(Purchase.id).where(*in_window).scalar_subquery()

    serials = dict(session.execute(select(Card.id, Card.serial).where(Card.id.in_(window_cards))).tuples().all())
    # A card's purchases before the window come summed, except those voided since: they stood for some of the
    # window's purchases and not for others, so they come one by one with the window's own.
    standing: dict[int, _Standing] = {
        card_id: _Standing(int(spend), int(count), first)
        for card_id, spend, count, first in session.execute(
            select(Purchase.card_id, func.sum(Purchase.amount_due), func.count(), func.min(Purchase.created_at))
            .where(Purchase.card_id.in_(window_cards), Purchase.created_at < since, Purchase.status == "committed")
            .group_by(Purchase.card_id)
        ).tuples()
    }
    history: dict[int, list[_Earlier]] = defaultdict(list)
    for row in session.execute(
        select(Purchase.id, Purchase.card_id, Purchase.created_at, Purchase.amount_due, Purchase.status,
               Purchase.voided_at)
        .where(Purchase.card_id.in_(window_cards), Purchase.created_at <= until,
               or_(Purchase.created_at >= since, Purchase.voided_at > since))
        .order_by(Purchase.created_at, Purchase.id)
    ):
        history[row.card_id].append(_Earlier(row.id, row.created_at, row.amount_due, row.status, row.voided_at))
    coupons = _CouponHistory.load(session, window_ids, serials)
    referrals = _load_referrals(session, window_cards)
    catalogue = _Catalogue.load(session, program, window)

    purchases = []
    for row in window:
        key = (row.created_at, row.id)
        before_window = standing.get(row.card_id, _Standing())
        earlier = [e for e in history[row.card_id] if (e.created_at, e.id) < key and e.counted_at(row.created_at)]
        firsts = [moment for moment in (before_window.first, *(e.created_at for e in earlier[:1])) if moment]
        effects = effects_from_json(row.effects) if row.effects else None
        did = _did(row.points_earned, row.points_redeemed, row.amount_due, effects)
        receipt = receipt_from_json(row.effects)
        serial = serials[row.card_id]
        member = mechanics.MemberFacts(
            serial=serial,
            points=max(0, row.points_after - did.points),
            cashback=max(0, receipt.cashback - did.cashback) if effects else 0,
            lifetime_spend=before_window.spend + sum(e.amount_due for e in earlier),
            purchases_committed=before_window.count + len(earlier),
            first_purchase_at=min(firsts) if firsts else None,
            stamps=max(0, receipt.stamps - did.stamps) if effects else 0,
            vouchers=max(0, receipt.vouchers - did.vouchers) if effects else 0,
        )
        lines: list[dict[str, Any]] = row.lines or []
        referral = referrals.get(row.card_id)
        purchases.append(WindowPurchase(
            purchase=HistoricPurchase(
                member=member,
                basket=row.amount,
                at=row.created_at,
                coupons=coupons.used_by(row.id, row.card_id, row.created_at),
                offers=catalogue.offers(row.id, lines),
                reward=catalogue.reward(lines, effects),
                use_voucher=bool(effects.vouchers_used) if effects else _has_line(lines, "voucher"),
                redeem_points=row.points_redeemed,
                redeem_cashback=effects.cashback_redeemed if effects else _line_total(lines, "cashback_redemption"),
                referral=referral.as_of(key) if referral else None,
            ),
            did=did,
        ))
    return purchases


@dataclass(frozen=True)
class _Standing:
    """A card's purchases made before the window and never voided: their amount due, count and first time."""

    spend: int = 0
    count: int = 0
    first: dt.datetime | None = None


@dataclass(frozen=True)
class _Earlier:
    id: int
    created_at: dt.datetime
    amount_due: int
    status: str
    voided_at: dt.datetime | None

    def counted_at(self, moment: dt.datetime) -> bool:
        """Whether this purchase stood (committed, not yet voided) at `moment`."""
        return self.status == "committed" or (self.voided_at is not None and self.voided_at > moment)


def _did(
    points_earned: int, points_redeemed: int, amount_due: int, effects: mechanics.PurchaseEffects | None
) -> Moved:
    """What a purchase moved on its own card, from its stored effects (or, before effects, its points)."""
    if effects is None:
        return Moved(spend=amount_due, points=points_earned - points_redeemed)

    def own_bonus(unit: str) -> int:
        return sum(b.amount for b in effects.bonuses if b.serial == effects.serial and b.unit == unit)

    stamps_in = effects.stamps_added + own_bonus("stamps")
    return Moved(
        spend=effects.amount_due,
        points=effects.points_earned - effects.points_redeemed - effects.reward_points + own_bonus("points"),
        cashback=effects.cashback_earned - effects.cashback_redeemed + own_bonus("cashback"),
        stamps=stamps_in - effects.vouchers_issued * effects.stamps_needed,
        vouchers=effects.vouchers_issued - effects.vouchers_used,
    )


def _has_line(lines: Iterable[Mapping[str, Any]], kind: str) -> bool:
    return any(line.get("kind") == kind for line in lines)


def _line_total(lines: Iterable[Mapping[str, Any]], kind: str) -> int:
    return sum(int(line.get("amount", 0)) for line in lines if line.get("kind") == kind)


@dataclass(frozen=True)
class _CouponUseRow:
    coupon: mechanics.Coupon
    card_id: int | None
    purchase_id: int
    used_at: dt.datetime
    voided_at: dt.datetime | None


@dataclass(frozen=True)
class _CouponHistory:
    """Every use of the coupons the window's purchases used, to count the uses before each purchase."""

    by_purchase: Mapping[int, tuple[_CouponUseRow, ...]]
    by_coupon: Mapping[str, tuple[_CouponUseRow, ...]]

    @classmethod
    def load(cls, session: Session, window_ids: Any, serials: Mapping[int, str]) -> _CouponHistory:
        used_in_window = select(CouponUse.coupon_id).where(CouponUse.purchase_id.in_(window_ids)).distinct()
        by_purchase: dict[int, list[_CouponUseRow]] = defaultdict(list)
        by_coupon: dict[str, list[_CouponUseRow]] = defaultdict(list)
        engine_coupons: dict[int, mechanics.Coupon] = {}
        for use, coupon in session.execute(
            select(CouponUse, Coupon).join(Coupon, Coupon.id == CouponUse.coupon_id)
            .where(CouponUse.coupon_id.in_(used_in_window)).order_by(CouponUse.id)
        ).tuples():
            if coupon.id not in engine_coupons:
                engine_coupons[coupon.id] = engine_coupon(coupon, serials)
            row = _CouponUseRow(engine_coupons[coupon.id], use.card_id, use.purchase_id, use.used_at, use.voided_at)
            by_purchase[use.purchase_id].append(row)
            by_coupon[row.coupon.code].append(row)
        return cls({k: tuple(v) for k, v in by_purchase.items()}, {k: tuple(v) for k, v in by_coupon.items()})

    def used_by(
        self, purchase_id: int, card_id: int, at: dt.datetime
    ) -> tuple[tuple[mechanics.Coupon, mechanics.CouponUse], ...]:
        """The coupons this purchase used, in the order they were taken, with the uses that stood before it."""
        used = []
        for row in self.by_purchase.get(purchase_id, ()):
            before = [u for u in self.by_coupon[row.coupon.code]
                      if u.purchase_id != purchase_id and u.used_at < at and (u.voided_at is None or u.voided_at > at)]
            used.append((row.coupon, mechanics.CouponUse(by_member=sum(u.card_id == card_id for u in before),
                                                         total=len(before))))
        return tuple(used)


_REWARD_LABEL = re.compile(r"(?P<name>.+) \((?P<cost>[0-9]+) points\)")


@dataclass(frozen=True)
class _Catalogue:
    """The program's offers (by title) and rewards (by name), read only when a purchase of the window used one."""

    offers_by_title: Mapping[str, Offer]
    rewards_by_name: Mapping[str, Reward]

    @classmethod
    def load(cls, session: Session, program: Program, window: Sequence[Any]) -> _Catalogue:
        kinds = {line.get("kind") for row in window for line in (row.lines or [])}
        offers = rewards = {}
        if "offer" in kinds:  # the newest offer of a title, if a title was reused
            offers = {o.title: o for o in session.scalars(
                select(Offer).where(Offer.program_id == program.id).order_by(Offer.id))}
        if "reward" in kinds:
            rewards = {r.name: r for r in session.scalars(
                select(Reward).where(Reward.program_id == program.id).order_by(Reward.id))}
        return cls(offers, rewards)

    def offers(self, purchase_id: int, lines: Sequence[Mapping[str, Any]]) -> tuple[mechanics.Offer, ...]:
        chosen = []
        for index, line in enumerate(lines):
            if line.get("kind") != "offer":
                continue
            title, amount = str(line.get("label", "")), int(line.get("amount", 0))
            row = self.offers_by_title.get(title)
            if row is None:
                chosen.append(mechanics.Offer(id=f"purchase-{purchase_id}-{index}", title=title,
                                              discount=mechanics.Discount("fixed", amount)))
            else:
                chosen.append(mechanics.Offer(
                    id=str(row.id), title=row.title,
                    discount=mechanics.Discount(row.discount_type, row.discount_value),  # type: ignore[arg-type]
                    valid_from=row.starts_at, valid_until=row.ends_at, min_basket=row.min_basket,
                ))
        return tuple(chosen)

    def reward(
        self, lines: Sequence[Mapping[str, Any]], effects: mechanics.PurchaseEffects | None
    ) -> mechanics.Reward | None:
        line = next((line for line in lines if line.get("kind") == "reward"), None)
        if line is None:
            return None
        label, amount = str(line.get("label", "")), int(line.get("amount", 0))
        match = _REWARD_LABEL.fullmatch(label)
        name = match.group("name") if match else label
        cost = effects.reward_points if effects else int(match.group("cost")) if match else 0
        row = self.rewards_by_name.get(name)
        return mechanics.Reward(id=str(row.id) if row else f"reward-{name}", name=name, points_cost=cost,
                                value=row.value if row else amount)


@dataclass(frozen=True)
class _ReferralRow:
    referrer_serial: str
    self_referral: bool
    bonus_paid_by: tuple[dt.datetime, int] | None  # the key of the purchase that paid the bonuses

    def as_of(self, key: tuple[dt.datetime, int]) -> mechanics.Referral:
        paid = self.bonus_paid_by is not None and self.bonus_paid_by < key
        return mechanics.Referral(self.referrer_serial, self_referral=self.self_referral, bonus_paid=paid)


def _load_referrals(session: Session, window_cards: Any) -> dict[int, _ReferralRow]:
    bonus_purchase = select(Purchase.created_at).where(Purchase.id == Referral.bonus_purchase_id).scalar_subquery()
    rows = session.execute(
        select(Referral.referee_card_id, Card.serial, Referral.self_referral, Referral.bonus_purchase_id,
               bonus_purchase)
        .join(Card, Card.id == Referral.referrer_card_id)
        .where(Referral.referee_card_id.in_(window_cards))
    ).tuples()
    return {
        referee: _ReferralRow(serial, self_referral,
                              (paid_at, paid_by) if paid_by is not None and paid_at is not None else None)
        for referee, serial, self_referral, paid_by, paid_at in rows
    }
