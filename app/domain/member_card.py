"""What a member's card page shows beyond the QR and the points: the stamp card, the cashback balance, the
member-only offers running now, and the invitation to share (the referral link and what it earns).

Read only: the card page's view makes sure the card has its referral code first (app/domain/referrals.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.domain.mechanics import MechanicsRules, mechanics_from_json, percent_text
from app.domain.money import format_amount
from app.domain.segments import card_segment
from app.models import Card, Offer, Program
from passes import Offer as PassOffer


@dataclass(frozen=True)
class StampCard:
    """A stamp card's row: `filled` of `needed` stamps towards the next reward, and the vouchers waiting."""

    needed: int
    filled: int
    vouchers: int
    reward_label: str


@dataclass(frozen=True)
class OfferShown:
    """A member-only offer as the card page lists it: what it gives, and its terms in words."""

    title: str
    detail: str
    benefit: str
    terms: tuple[str, ...]


@dataclass(frozen=True)
class MemberCard:
    program_type: str
    show_points: bool
    stamps: StampCard | None
    cashback: str | None  # the balance as "12.50 EUR"
    offers: tuple[OfferShown, ...]
    referral_rewards: str | None  # "you get 100 points and they get 50 points", when the program pays any


def member_card(session: Session, card: Card, now: dt.datetime) -> MemberCard:
    """The mechanics part of `card`'s page at `now`, by its program's rules."""
    program = card.program
    rules = mechanics_from_json(program.rules)
    stamps = None
    if rules.stamps is not None and rules.program_type == "stamps":
        stamps = StampCard(needed=rules.stamps.stamps_needed, filled=min(card.stamps, rules.stamps.stamps_needed),
                           vouchers=card.vouchers, reward_label=rules.stamps.reward_label)
    return MemberCard(
        program_type=rules.program_type,
        # A stamp or cashback card still shows points it holds (a welcome bonus), but not an empty points figure.
        show_points=rules.program_type == "points" or card.points > 0,
        stamps=stamps,
        cashback=_money(card.cashback, program.currency) if rules.program_type == "cashback" else None,
        offers=tuple(_shown(offer, program.currency)
                     for offer in running_offers(session, program, now, segment=card_segment(card, now))),
        referral_rewards=_referral_rewards(rules, program.currency),
    )


def running_offers(session: Session, program: Program, now: dt.datetime, *, segment: str | None = None
                   ) -> list[Offer]:
    """The program's active member-only offers that have started and not ended at `now` (end exclusive).

    With `segment` (a member's, app/domain/segments.py), only those for everyone and those aimed at it; without,
    every running offer, whoever it is aimed at (`Offer.segment` says).
    """
    aimed = [or_(Offer.segment.is_(None), Offer.segment == segment)] if segment is not None else []
    return list(session.scalars(
        select(Offer)
        .where(
            Offer.program_id == program.id,
            Offer.active.is_(True),
            or_(Offer.starts_at.is_(None), Offer.starts_at <= now),
            or_(Offer.ends_at.is_(None), Offer.ends_at > now),
            *aimed,
        )
        .order_by(Offer.ends_at.is_(None), Offer.ends_at, Offer.id)
    ))


def _shown(offer: Offer, currency: str) -> OfferShown:
    """The offer in words. One aimed at a segment says nothing of it: "for lapsed members" is no way to greet
    anyone, and only members of the segment see it."""
    if offer.discount_type == "percent":
        benefit = f"{percent_text(offer.discount_value)} off"
    else:
        benefit = f"{_money(offer.discount_value, currency)} off"
    terms = []
    if offer.min_basket:
        terms.append(f"On a basket of {_money(offer.min_basket, currency)} or more.")
    if offer.ends_at is not None:
        terms.append(f"Until {_moment(offer.ends_at)}.")
    terms.append("Ask for it at the till when you show your card.")
    return OfferShown(title=offer.title, detail=offer.detail, benefit=benefit, terms=tuple(terms))


def _referral_rewards(rules: MechanicsRules, currency: str) -> str | None:
    referral = rules.referral
    if referral is None or not (referral.referrer_bonus or referral.referee_bonus):
        return None
    unit = rules.bonus_unit
    parts = []
    if referral.referrer_bonus:
        parts.append(f"you get {bonus_text(referral.referrer_bonus, unit, currency)}")
    if referral.referee_bonus:
        parts.append(f"they get {bonus_text(referral.referee_bonus, unit, currency)}")
    return " and ".join(parts)


def bonus_text(amount: int, unit: str, currency: str) -> str:
    """A bonus in the program's unit, in words: "100 points", "1 stamp", "2.00 EUR cashback"."""
    if unit == "cashback":
        return f"{_money(amount, currency)} cashback"
    word = "stamp" if unit == "stamps" else "point"
    return f"{amount:,} {word}{'' if amount == 1 else 's'}"


def _money(minor: int, currency: str) -> str:
    return f"{format_amount(minor, currency)} {currency}"


def _moment(moment: dt.datetime) -> str:
    """An end time as a member reads it; offers end at midnight more often than not."""
    moment = moment.astimezone(dt.UTC)
    if moment.time() == dt.time(0, 0):
        last_day = moment.date() - dt.timedelta(days=1)
        return f"the end of {last_day.day} {last_day:%B %Y} (UTC)"
    return f"{moment.day} {moment:%B %Y}, {moment:%H:%M} UTC"


PASS_OFFERS_SHOWN = 10  # Google Wallet shows at most ten text modules; Apple's back has room, but keep them alike


def pass_offers(session: Session, card: Card, now: dt.datetime) -> tuple[PassOffer, ...]:
    """The running member-only offers `card`'s pass lists (those for everyone and for the member's segment at
    `now`): title and benefit, then the terms."""
    program = card.program
    shown = (_shown(offer, program.currency)
             for offer in running_offers(session, program, now, segment=card_segment(card, now)))
    return tuple(
        PassOffer(title=f"{offer.title}: {offer.benefit}", detail=" ".join(filter(None, (offer.detail, *offer.terms))))
        for offer, _ in zip(shown, range(PASS_OFFERS_SHOWN), strict=False)
    )
