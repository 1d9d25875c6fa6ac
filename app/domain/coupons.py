"""The manager's side of coupons, member-only offers and the rewards catalogue: reading their forms, making them
(single-use codes in batches), listing them with how often they were used, switching them off, exporting a batch.

Pricing with them is app/domain/mechanics.py's job; the rows written here are the facts it is given.

The form readers (`read_coupon_form`, `read_batch_form`, `read_offer_form`, `read_reward_form`) are pure, like
app/domain/settings.py: the submitted fields in, a value out, or a ValidationError whose `extra["errors"]` holds a
message for every bad field at once, keyed by the form field's name. The command line builds the same mappings,
so a typo gets the same message on both.

Days are UTC calendar days. A coupon or offer runs from 00:00 UTC of its first day (inclusive) until 00:00 UTC of
the day after its last day (exclusive): "last day 31 March" keeps it good for all of 31 March, and the stored
`valid_until` / `ends_at` is 1 April 00:00 UTC, which is how the engine compares (from inclusive, until exclusive).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Literal, Protocol

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.domain.dashboard import display_money
from app.domain.errors import NotFound, ValidationError
from app.domain.mechanics import Discount, normalize_code, percent_text
from app.domain.money import currency_exponent, parse_amount
from app.domain.pass_changes import note_program_changed
from app.domain.segments import SEGMENT_AUDIENCES, SEGMENTS, program_segments
from app.models import Coupon, CouponBatch, CouponUse, Offer, Program, Reward

__all__ = [
    "BATCH_CODE_LENGTH",
    "CHUNK",
    "CODE_ALPHABET",
    "DISCOUNT_TYPES",
    "EXPORT_HEADER",
    "MAX_BATCH",
    "BatchRow",
    "CouponList",
    "CouponRow",
    "CouponTerms",
    "NewBatch",
    "NewCoupon",
    "NewOffer",
    "NewReward",
    "OfferList",
    "OfferRow",
    "batch_code",
    "batch_csv",
    "coupon_terms",
    "create_batch",
    "create_coupon",
    "create_offer",
    "create_reward",
    "discount_text",
    "end_offer",
    "find_coupon",
    "get_batch",
    "last_day",
    "list_coupons",
    "list_offers",
    "list_rewards",
    "offer_status",
    "offer_terms",
    "read_batch_form",
    "read_coupon_form",
    "read_offer_form",
    "read_reward_form",
    "set_batch_active",
    "set_coupon_active",
    "set_reward_active",
    "window_text",
]

Form = Mapping[str, str]
OfferStatus = Literal["running", "upcoming", "ended"]

MAX_BATCH = 100_000
# Crockford's base32: no I, L, O or U, so a code read off a flyer is typed right. 10 characters are 50 random bits.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
BATCH_CODE_LENGTH = 10
# Batches are checked against stored codes and inserted this many at a time (and the progress bar moves by it).
CHUNK = 1_000
CODE_MIN, CODE_MAX = 3, 32
LABEL_MAX = 200  # the short_text columns
DETAIL_MAX = 500  # Offer.detail
MAX_PER_MEMBER = 1_000
MAX_POINTS_COST = 10**9
DISCOUNT_TYPES = {"percent": "Percent off", "fixed": "Amount off"}

_CODE = re.compile(rf"[A-Z0-9]{{{CODE_MIN},{CODE_MAX}}}")
_PERCENT = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,2})?")
_WHOLE = re.compile(r"[0-9]{1,9}")
_DIGITS = re.compile(r"[0-9]+")
_ZERO = re.compile(r"0+(?:\.0*)?")
_AMOUNT = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_CHECKED = frozenset({"on", "1", "true", "yes"})


# --- What the forms say --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CouponTerms:
    """What a code gives and when: shared by a promo code and by every code of a batch."""

    discount: Discount
    min_basket: int = 0
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None  # exclusive: 00:00 UTC of the day after the last day
    per_member_limit: int | None = None
    member_only: bool = False
    stackable: bool = False
    label: str = ""

    def columns(self) -> dict[str, Any]:
        """The Coupon columns these terms set."""
        return {
            "discount_type": self.discount.kind,
            "discount_value": self.discount.value,
            "min_basket": self.min_basket,
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
            "per_member_limit": self.per_member_limit,
            "member_only": self.member_only,
            "stackable": self.stackable,
            "label": self.label,
        }


@dataclass(frozen=True)
class NewCoupon:
    """A reusable promo code (SPRING10), normalised as the till compares it."""

    code: str
    terms: CouponTerms


@dataclass(frozen=True)
class NewBatch:
    """`count` single-use codes made together, for a flyer or a mailing."""

    label: str
    count: int
    terms: CouponTerms


@dataclass(frozen=True)
class NewOffer:
    title: str
    detail: str
    discount: Discount
    min_basket: int
    starts_at: dt.datetime | None  # None: from now
    ends_at: dt.datetime  # exclusive, like a coupon's valid_until
    segment: str | None = None  # None: every member; else only that segment's (app/domain/segments.py)


@dataclass(frozen=True)
class NewReward:
    name: str
    points_cost: int
    value: int  # minor units: the item's price, what it takes off the basket


def read_coupon_form(
    form: Form, currency: str, *, today: dt.date, code_taken: Callable[[str], str | None] | None = None
) -> NewCoupon:
    """A reusable promo code from the manager's form: code, discount_type, discount, min_basket, valid_from,
    valid_until, per_member_limit, member_only, stackable, label.

    `code_taken(code)` answers why a well-formed code cannot be had (it is already a code of the program), or None;
    it lets the database's answer be reported with every other bad field.
    """
    errors: dict[str, str] = {}
    raw = _text(form, "code")
    code = normalize_code(raw)
    if not code:
        errors["code"] = "Give the code customers type or say at the till, such as SPRING10."
    elif not _CODE.fullmatch(code):
        if not (CODE_MIN <= len(code) <= CODE_MAX):
            errors["code"] = f"A code has {CODE_MIN} to {CODE_MAX} letters and digits; {raw!r} has {len(code)}."
        else:
            errors["code"] = ("A code is letters A-Z and digits only (no dashes, accents or symbols), "
                              "such as SPRING10.")
    elif code_taken is not None and (reason := code_taken(code)):
        errors["code"] = reason
    per_member = _text(form, "per_member_limit")
    limit: int | None = None
    if per_member:
        if not _WHOLE.fullmatch(per_member) or not 1 <= int(per_member) <= MAX_PER_MEMBER:
            errors["per_member_limit"] = (f"Uses per member is a whole number from 1 to {MAX_PER_MEMBER:,}; "
                                          "leave it blank for no limit.")
        else:
            limit = int(per_member)
    terms = _read_terms(form, currency, today, errors, per_member_limit=limit)
    _raise_if(errors)
    assert terms is not None
    return NewCoupon(code, terms)


def read_batch_form(form: Form, currency: str, *, today: dt.date) -> NewBatch:
    """A batch of single-use codes from the form: label, count, and the terms of `read_coupon_form` (no
    per-member limit: each code is good for one purchase)."""
    errors: dict[str, str] = {}
    label = _text(form, "label")
    if not label:
        errors["label"] = "Name the batch so you can find it again, such as \"Spring flyer\"."
    elif len(label) > LABEL_MAX:
        errors["label"] = f"A label has at most {LABEL_MAX} characters."
    count_text = _text(form, "count").replace(",", "").replace("_", "")
    count = 0
    if not count_text:
        errors["count"] = f"How many codes? From 1 to {MAX_BATCH:,}."
    elif not _DIGITS.fullmatch(count_text):
        errors["count"] = f"The number of codes is a whole number from 1 to {MAX_BATCH:,}, such as 500."
    elif not 1 <= int(count_text) <= MAX_BATCH:
        errors["count"] = (f"A batch holds from 1 to {MAX_BATCH:,} codes; for more, make several batches."
                           if int(count_text) else "A batch holds at least 1 code.")
    else:
        count = int(count_text)
    terms = _read_terms(form, currency, today, errors, label_key=None)
    _raise_if(errors)
    assert terms is not None
    # The batch's label names each code's line on the receipt ("Spring flyer" rather than the bare code).
    return NewBatch(label, count, replace(terms, label=label))


def read_offer_form(form: Form, currency: str, *, today: dt.date, segments: Sequence[str] = SEGMENTS) -> NewOffer:
    """A member-only offer: title, detail, discount_type, discount, min_basket, starts (optional, first day),
    ends (required, last day) and segment (blank: every member; else one of `segments`, the program's)."""
    errors: dict[str, str] = {}
    title = _text(form, "title")
    if not title:
        errors["title"] = "Give the offer a title members will see, such as \"Members' week: 15% off\"."
    elif len(title) > LABEL_MAX:
        errors["title"] = f"A title has at most {LABEL_MAX} characters."
    detail = _text(form, "detail")
    if len(detail) > DETAIL_MAX:
        errors["detail"] = f"The detail has at most {DETAIL_MAX} characters; it is shown on a phone."
    discount = _read_discount(form, currency, errors)
    min_basket = _amount(_text(form, "min_basket"), currency, "min_basket", "The minimum basket", errors,
                         zero_ok=True)
    starts_at, ends_at = _read_window(form, "starts", "ends", today, errors, end_required=True)
    segment = _text(form, "segment") or None
    if segment is not None and segment not in segments:
        if segment == "vip" and segment in SEGMENTS:
            errors["segment"] = "The program has no tiers, so it has no VIP members: choose another group."
        else:
            errors["segment"] = "Choose who gets the offer: everyone, or one group of members from the list."
    _raise_if(errors)
    assert discount is not None and min_basket is not None and ends_at is not None
    return NewOffer(title, detail, discount, min_basket, starts_at, ends_at, segment)


def read_reward_form(form: Form, currency: str) -> NewReward:
    """A catalogue reward: name, points_cost (whole, 1 or more) and value (the item's price, more than zero)."""
    errors: dict[str, str] = {}
    name = _text(form, "name")
    if not name:
        errors["name"] = "Name the reward, such as \"A free coffee\"."
    elif len(name) > LABEL_MAX:
        errors["name"] = f"A name has at most {LABEL_MAX} characters."
    cost_text = _text(form, "points_cost").replace(",", "")
    cost = 0
    if cost_text.startswith("-"):
        errors["points_cost"] = "The points it costs cannot be negative."
    elif not _WHOLE.fullmatch(cost_text) or not 1 <= int(cost_text) <= MAX_POINTS_COST:
        errors["points_cost"] = "The points it costs is a whole number, 1 or more, such as 150."
    else:
        cost = int(cost_text)
    value = _amount(_text(form, "value"), currency, "value", "The reward's value", errors, zero_ok=False)
    _raise_if(errors)
    assert value is not None
    return NewReward(name, cost, value)


# --- Making them ---------------------------------------------------------------------------------------------------


def create_coupon(session: Session, program: Program, form: Form, *, now: dt.datetime) -> Coupon:
    """A reusable promo code from the manager's form, or ValidationError naming every bad field (a code the
    program already has among them). Nothing is written on an error."""

    def taken(code: str) -> str | None:
        existing = session.scalar(select(Coupon).where(Coupon.program_id == program.id, Coupon.code == code))
        return _duplicate_message(existing) if existing is not None else None

    new = read_coupon_form(form, program.currency, today=now.date(), code_taken=taken)
    coupon = Coupon(program_id=program.id, code=new.code, kind="reusable", created_at=now, **new.terms.columns())
    try:
        # Two managers saving the same code at once: the unique constraint catches the second.
        with session.begin_nested():
            session.add(coupon)
            session.flush()
    except IntegrityError:
        message = f"{new.code} was just created by someone else; choose another code."
        raise ValidationError(f"Nothing was saved: {message}", field="code", errors={"code": message}) from None
    return coupon


def create_batch(
    session: Session,
    program: Program,
    form: Form,
    *,
    now: dt.datetime,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    progress: Callable[[int], None] | None = None,
) -> CouponBatch:
    """A batch of single-use codes from the form (label, count, terms): random, unguessable (50 bits each) and
    unique in the program, checked against every stored code. They are inserted CHUNK at a time, and
    `progress(n)` is told each time n more are in."""
    new = read_batch_form(form, program.currency, today=now.date())
    batch = CouponBatch(program_id=program.id, label=new.label, count=new.count, created_at=now)
    session.add(batch)
    session.flush()
    row = {"program_id": program.id, "kind": "single_use", "batch_id": batch.id, "assigned_card_id": None,
           "active": True, "created_at": now, **new.terms.columns()}
    made = 0
    while made < new.count:
        size = min(CHUNK, new.count - made)
        codes: set[str] = set()
        while len(codes) < size:
            codes.update(batch_code(random_bytes) for _ in range(size - len(codes)))
            # A clash is one in 2**50 per pair, but uniqueness is promised, not hoped for.
            codes -= set(session.scalars(
                select(Coupon.code).where(Coupon.program_id == program.id, Coupon.code.in_(codes))
            ))
        session.execute(insert(Coupon), [{**row, "code": code} for code in codes])
        made += size
        if progress is not None:
            progress(size)
    return batch


def batch_code(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """One single-use code: BATCH_CODE_LENGTH characters of CODE_ALPHABET from 50 random bits."""
    bits = int.from_bytes(random_bytes(7), "big") >> 6
    return "".join(CODE_ALPHABET[(bits >> shift) & 31] for shift in range(45, -1, -5))


def create_offer(session: Session, program: Program, form: Form, *, now: dt.datetime) -> Offer:
    """A member-only offer from the form. Every pass of the program shows it, so they are all republished."""
    new = read_offer_form(form, program.currency, today=now.date(), segments=program_segments(program))
    offer = Offer(program_id=program.id, title=new.title, detail=new.detail, discount_type=new.discount.kind,
                  discount_value=new.discount.value, min_basket=new.min_basket, starts_at=new.starts_at,
                  ends_at=new.ends_at, segment=new.segment, created_at=now)
    session.add(offer)
    _offers_changed(session, program)
    return offer


def create_reward(session: Session, program: Program, form: Form, *, now: dt.datetime) -> Reward:
    """A reward of the catalogue, bought with points at the till."""
    new = read_reward_form(form, program.currency)
    reward = Reward(program_id=program.id, name=new.name, points_cost=new.points_cost, value=new.value,
                    created_at=now)
    session.add(reward)
    session.flush()
    return reward


# --- Switching them off --------------------------------------------------------------------------------------------


def set_coupon_active(session: Session, program: Program, coupon_id: int, *, active: bool) -> Coupon:
    """Deactivate a code (the till then refuses it as unknown) or bring it back."""
    coupon = session.scalar(select(Coupon).where(Coupon.id == coupon_id, Coupon.program_id == program.id))
    if coupon is None:
        raise NotFound(f"{program.name} has no coupon {coupon_id}.")
    coupon.active = active
    session.flush()
    return coupon


def find_coupon(session: Session, program: Program, code: str) -> Coupon:
    """The program's coupon with this code, as a person types it ("spring 10" finds SPRING10)."""
    coupon = session.scalar(select(Coupon).where(Coupon.program_id == program.id,
                                                 Coupon.code == normalize_code(code)))
    if coupon is None:
        raise NotFound(f"{program.name} has no coupon {normalize_code(code)!r}.")
    return coupon


def get_batch(session: Session, program: Program, batch_id: int) -> CouponBatch:
    batch = session.scalar(select(CouponBatch).where(CouponBatch.id == batch_id,
                                                     CouponBatch.program_id == program.id))
    if batch is None:
        raise NotFound(f"{program.name} has no batch of codes {batch_id}.")
    return batch


def set_batch_active(session: Session, program: Program, batch_id: int, *, active: bool) -> CouponBatch:
    """Deactivate every code of a batch (a leaked flyer) or bring them all back."""
    batch = get_batch(session, program, batch_id)
    session.execute(update(Coupon).where(Coupon.batch_id == batch.id).values(active=active)
                    .execution_options(synchronize_session=False))
    session.flush()
    return batch


def end_offer(session: Session, program: Program, offer_id: int, *, now: dt.datetime) -> tuple[Offer, bool]:
    """End an offer now (an upcoming one never starts); True when it ended now, False when it had already."""
    offer = session.scalar(select(Offer).where(Offer.id == offer_id, Offer.program_id == program.id))
    if offer is None:
        raise NotFound(f"{program.name} has no offer {offer_id}.")
    if offer_status(offer, now) == "ended":
        return offer, False
    offer.active = False
    if offer.ends_at is None or offer.ends_at > now:
        offer.ends_at = now
    _offers_changed(session, program)
    return offer, True


def set_reward_active(session: Session, program: Program, reward_id: int, *, active: bool) -> Reward:
    """Take a reward out of the catalogue (the till no longer offers it) or put it back."""
    reward = session.scalar(select(Reward).where(Reward.id == reward_id, Reward.program_id == program.id))
    if reward is None:
        raise NotFound(f"{program.name} has no reward {reward_id}.")
    reward.active = active
    session.flush()
    return reward


def _offers_changed(session: Session, program: Program) -> None:
    # The passes show the running offers, so every pass of the program is republished.
    program.pass_revision += 1
    note_program_changed(session, program.id)
    session.flush()


# --- Listing them --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CouponRow:
    coupon: Coupon
    uses: int  # committed purchases that took it, voids not counted
    terms: str


@dataclass(frozen=True)
class BatchRow:
    batch: CouponBatch
    used: int  # codes taken by a committed purchase, voids not counted
    active: int  # codes still switched on
    terms: str


@dataclass(frozen=True)
class CouponList:
    codes: tuple[CouponRow, ...]
    batches: tuple[BatchRow, ...]


def list_coupons(session: Session, program: Program) -> CouponList:
    """The program's promo codes with their uses, newest first, and its batches with how many codes were used.

    Single-use codes issued to one member (stamp-card vouchers, birthday treats) are neither: they are the
    member's, not the manager's to list.
    """
    uses = (select(func.count(CouponUse.id))
            .where(CouponUse.coupon_id == Coupon.id, CouponUse.voided_at.is_(None))
            .correlate(Coupon).scalar_subquery())
    codes = tuple(
        CouponRow(coupon, count, coupon_terms(coupon, program.currency))
        for coupon, count in session.execute(
            select(Coupon, uses).where(Coupon.program_id == program.id, Coupon.kind == "reusable")
            .order_by(Coupon.created_at.desc(), Coupon.id.desc())
        ).tuples()
    )
    in_batch = (Coupon.program_id == program.id, Coupon.batch_id.is_not(None))
    used: dict[int | None, int] = dict(session.execute(
        select(Coupon.batch_id, func.count(func.distinct(CouponUse.coupon_id)))
        .join(CouponUse, CouponUse.coupon_id == Coupon.id)
        .where(*in_batch, CouponUse.voided_at.is_(None)).group_by(Coupon.batch_id)
    ).tuples().all())
    active: dict[int | None, int] = dict(session.execute(
        select(Coupon.batch_id, func.count(Coupon.id)).where(*in_batch, Coupon.active).group_by(Coupon.batch_id)
    ).tuples().all())
    # Every code of a batch has the same terms: the first one speaks for all.
    first = {coupon.batch_id: coupon for coupon in session.scalars(
        select(Coupon).where(Coupon.id.in_(select(func.min(Coupon.id)).where(*in_batch).group_by(Coupon.batch_id)))
    )}
    batches = tuple(
        BatchRow(batch, used.get(batch.id, 0), active.get(batch.id, 0),
                 coupon_terms(first[batch.id], program.currency) if batch.id in first else "")
        for batch in session.scalars(select(CouponBatch).where(CouponBatch.program_id == program.id)
                                     .order_by(CouponBatch.created_at.desc(), CouponBatch.id.desc()))
    )
    return CouponList(codes, batches)


@dataclass(frozen=True)
class OfferRow:
    offer: Offer
    status: OfferStatus
    terms: str


@dataclass(frozen=True)
class OfferList:
    running: tuple[OfferRow, ...]
    upcoming: tuple[OfferRow, ...]
    ended: tuple[OfferRow, ...]

    def __bool__(self) -> bool:
        return bool(self.running or self.upcoming or self.ended)


def offer_status(offer: Offer, now: dt.datetime) -> OfferStatus:
    """Ended (by the manager, or its last day is over), upcoming (its first day is still to come), or running."""
    if not offer.active or (offer.ends_at is not None and offer.ends_at <= now):
        return "ended"
    if offer.starts_at is not None and offer.starts_at > now:
        return "upcoming"
    return "running"


def list_offers(session: Session, program: Program, *, now: dt.datetime) -> OfferList:
    """The program's offers: running (ending soonest first), upcoming (starting soonest first), ended (latest
    first)."""
    rows = [OfferRow(offer, offer_status(offer, now), offer_terms(offer, program.currency))
            for offer in session.scalars(select(Offer).where(Offer.program_id == program.id)
                                         .order_by(Offer.id.desc()))]
    never = dt.datetime.max.replace(tzinfo=dt.UTC)
    return OfferList(
        running=tuple(sorted((r for r in rows if r.status == "running"), key=lambda r: r.offer.ends_at or never)),
        upcoming=tuple(sorted((r for r in rows if r.status == "upcoming"),
                              key=lambda r: r.offer.starts_at or never)),
        ended=tuple(sorted((r for r in rows if r.status == "ended"), key=lambda r: r.offer.ends_at or never,
                           reverse=True)),
    )


def list_rewards(session: Session, program: Program) -> list[Reward]:
    """The catalogue: active rewards first, cheapest first."""
    return list(session.scalars(select(Reward).where(Reward.program_id == program.id)
                                .order_by(Reward.active.desc(), Reward.points_cost, Reward.id)))


# --- Saying what they give -----------------------------------------------------------------------------------------


class CouponLike(Protocol):
    """A Coupon, or a row of its columns."""

    @property
    def discount_type(self) -> str: ...
    @property
    def discount_value(self) -> int: ...
    @property
    def min_basket(self) -> int: ...
    @property
    def valid_from(self) -> dt.datetime | None: ...
    @property
    def valid_until(self) -> dt.datetime | None: ...
    @property
    def per_member_limit(self) -> int | None: ...
    @property
    def member_only(self) -> bool: ...
    @property
    def stackable(self) -> bool: ...


def discount_text(kind: str, value: int, currency: str) -> str:
    """"10% off", "5.00 EUR off"."""
    return f"{percent_text(value) if kind == 'percent' else display_money(value, currency)} off"


def window_text(starts: dt.datetime | None, ends: dt.datetime | None) -> str:
    """The days of a validity window as people say them, the last day inclusive: "1 Mar 2025 to 31 Mar 2025"."""
    first = _day_text(starts.date()) if starts else None
    last = _day_text(last_day(ends)) if ends else None
    if first and last:
        return f"{first} to {last}" if first != last else f"on {first} only"
    if first:
        return f"from {first}"
    return f"until {last}" if last else ""


def last_day(until: dt.datetime) -> dt.date:
    """The last UTC day an exclusive end still covers: 1 April 00:00 -> 31 March."""
    return (until.astimezone(dt.UTC) - dt.timedelta(microseconds=1)).date()


def coupon_terms(coupon: CouponLike, currency: str) -> str:
    """A code's terms in one line: "10% off, baskets from 20.00 EUR, 1 Mar 2025 to 31 Mar 2025 (UTC), ..."."""
    parts = [discount_text(coupon.discount_type, coupon.discount_value, currency)]
    if coupon.min_basket:
        parts.append(f"baskets from {display_money(coupon.min_basket, currency)}")
    window = window_text(coupon.valid_from, coupon.valid_until)
    if window:
        parts.append(f"{window} (UTC)")
    if coupon.per_member_limit is not None:
        parts.append(f"{coupon.per_member_limit} per member")
    if coupon.member_only:
        parts.append("members only")
    parts.append("combines with other codes" if coupon.stackable else "not combined with other codes")
    return ", ".join(parts)


def offer_terms(offer: Offer, currency: str) -> str:
    parts = [discount_text(offer.discount_type, offer.discount_value, currency)]
    if offer.min_basket:
        parts.append(f"baskets from {display_money(offer.min_basket, currency)}")
    window = window_text(offer.starts_at, offer.ends_at)
    if window:
        parts.append(f"{window} (UTC)")
    if offer.segment is not None:
        parts.append(f"only for {SEGMENT_AUDIENCES[offer.segment]}")
    return ", ".join(parts)


# --- Exporting a batch ---------------------------------------------------------------------------------------------

EXPORT_HEADER = ("code", "terms", "discount", "min_basket", "first_day_utc", "last_day_utc", "member_only",
                 "stackable", "active", "used")


def batch_csv(session: Session, batch: CouponBatch, currency: str) -> Iterator[str]:
    """The batch's codes as CSV text, the header first and then CHUNK rows per piece, so a caller can stream
    100,000 codes without holding them. `used` is yes once a committed purchase (not voided) took the code."""
    yield _csv_text([EXPORT_HEADER])
    uses = (select(func.count(CouponUse.id))
            .where(CouponUse.coupon_id == Coupon.id, CouponUse.voided_at.is_(None))
            .correlate(Coupon).scalar_subquery().label("uses"))
    # Plain rows, not Coupon objects: 100,000 of those would pile up in the session's identity map.
    columns = [getattr(Coupon, name) for name in _TERM_COLUMNS]
    after = 0
    while True:
        chunk = session.execute(
            select(Coupon.id, Coupon.code, Coupon.active, uses, *columns)
            .where(Coupon.batch_id == batch.id, Coupon.id > after).order_by(Coupon.id).limit(CHUNK)
        ).all()
        if not chunk:
            return
        yield _csv_text([_export_row(row, currency) for row in chunk])
        after = chunk[-1].id


_TERM_COLUMNS = ("discount_type", "discount_value", "min_basket", "valid_from", "valid_until", "per_member_limit",
                 "member_only", "stackable")


def _export_row(coupon: Any, currency: str) -> tuple[str, ...]:
    exponent = currency_exponent(currency)
    discount = (str(Decimal(coupon.discount_value) / 100) + "%" if coupon.discount_type == "percent"
                else str(Decimal(coupon.discount_value).scaleb(-exponent)))
    return (
        coupon.code,
        coupon_terms(coupon, currency),
        discount,
        str(Decimal(coupon.min_basket).scaleb(-exponent)),
        coupon.valid_from.date().isoformat() if coupon.valid_from else "",
        last_day(coupon.valid_until).isoformat() if coupon.valid_until else "",
        _yes(coupon.member_only),
        _yes(coupon.stackable),
        _yes(coupon.active),
        _yes(coupon.uses > 0),
    )


def _csv_text(rows: list[tuple[str, ...]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# --- Reading fields ------------------------------------------------------------------------------------------------


def _text(form: Form, name: str) -> str:
    return (form.get(name) or "").strip()


def _flag(form: Form, name: str) -> bool:
    return _text(form, name).lower() in _CHECKED


def _raise_if(errors: dict[str, str]) -> None:
    if errors:
        count = len(errors)
        raise ValidationError(
            f"Nothing was saved: {count} field{'s' if count > 1 else ''} need{'' if count > 1 else 's'} fixing.",
            field=next(iter(errors)),
            errors=errors,
        )


def _read_terms(
    form: Form,
    currency: str,
    today: dt.date,
    errors: dict[str, str],
    *,
    per_member_limit: int | None = None,
    label_key: str | None = "label",
) -> CouponTerms | None:
    discount = _read_discount(form, currency, errors)
    min_basket = _amount(_text(form, "min_basket"), currency, "min_basket", "The minimum basket", errors,
                         zero_ok=True)
    valid_from, valid_until = _read_window(form, "valid_from", "valid_until", today, errors, end_required=False)
    label = _text(form, label_key) if label_key else ""
    if label_key and len(label) > LABEL_MAX:
        errors[label_key] = f"A label has at most {LABEL_MAX} characters."
    if discount is None or min_basket is None:
        return None
    return CouponTerms(discount=discount, min_basket=min_basket, valid_from=valid_from, valid_until=valid_until,
                       per_member_limit=per_member_limit, member_only=_flag(form, "member_only"),
                       stackable=_flag(form, "stackable"), label=label)


def _read_discount(form: Form, currency: str, errors: dict[str, str]) -> Discount | None:
    kind = _text(form, "discount_type")
    text = _text(form, "discount")
    if kind not in DISCOUNT_TYPES:
        errors["discount_type"] = "Choose a percent off or an amount off."
        return None
    if kind == "percent":
        basis_points = _percent(text, errors)
        return Discount("percent", basis_points) if basis_points is not None else None
    minor = _amount(text, currency, "discount", "The amount off", errors, zero_ok=False)
    return Discount("fixed", minor) if minor is not None else None


def _percent(text: str, errors: dict[str, str]) -> int | None:
    """A percentage from 0.01 to 100, such as "10" or "12.5", as basis points."""
    text = text.removesuffix("%").strip()
    if not text:
        errors["discount"] = "Give the percent off, such as 10."
    elif text.startswith("-"):
        errors["discount"] = "A percent off cannot be negative."
    elif not _PERCENT.fullmatch(text):
        errors["discount"] = "A percent off is a number such as 10 or 12.5 (at most 2 decimals)."
    elif (basis_points := int(Decimal(text) * 100)) == 0:
        errors["discount"] = "A percent off is more than 0: at least 0.01."
    elif basis_points > 10_000:
        errors["discount"] = "A percent off is at most 100."
    else:
        return basis_points
    return None


def _amount(text: str, currency: str, key: str, label: str, errors: dict[str, str], *, zero_ok: bool) -> int | None:
    """An amount in the program currency as minor units. Blank is zero where zero is allowed."""
    example = "5" if currency_exponent(currency) == 0 else "5." + "0" * currency_exponent(currency)
    if not text:
        if zero_ok:
            return 0
        errors[key] = f"Give {label.lower()} in {currency}, such as {example}."
    elif text.startswith("-"):
        errors[key] = f"{label} cannot be negative."
    elif _ZERO.fullmatch(text):
        if zero_ok:
            return 0
        errors[key] = f"{label} must be more than 0."
    elif not _AMOUNT.fullmatch(text):
        errors[key] = f"{label} is an amount in {currency} such as {example}."
    else:
        try:
            return parse_amount(text, currency, field=label)
        except ValidationError as error:  # too many decimals for the currency, or absurdly large
            errors[key] = error.detail
    return None


def _read_window(
    form: Form, first_key: str, last_key: str, today: dt.date, errors: dict[str, str], *, end_required: bool
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """First and last UTC day as [00:00 of the first day, 00:00 of the day after the last day)."""
    first = _day(_text(form, first_key), first_key, errors)
    last = _day(_text(form, last_key), last_key, errors)
    if last is None and end_required and last_key not in errors:
        errors[last_key] = "Give the last day: an offer is time-boxed."
    if first is not None and last is not None and last < first:
        errors[last_key] = f"The last day is before the first day ({first.isoformat()})."
    elif last is not None and last < today:
        errors[last_key] = (f"The last day ({last.isoformat()}) is already past (today is {today.isoformat()}, "
                            "UTC): give today or a later day.")
    starts = dt.datetime.combine(first, dt.time(), dt.UTC) if first else None
    ends = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC) if last else None
    return starts, ends


def _day(text: str, key: str, errors: dict[str, str]) -> dt.date | None:
    if not text:
        return None
    try:
        if not _DAY.fullmatch(text):
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        errors[key] = f"{text!r} is not a date: give one as YYYY-MM-DD, such as 2025-03-31."
        return None


def _day_text(day: dt.date) -> str:
    return f"{day.day} {day:%b %Y}"


def _duplicate_message(existing: Coupon) -> str:
    if existing.kind == "single_use":
        return f"{existing.code} is already a single-use code of this program; choose another code."
    if not existing.active:
        return (f"{existing.code} already exists, switched off: reactivate it in the list of codes, "
                "or choose another code.")
    return f"{existing.code} already exists in this program; choose another code, or use the one you have."

