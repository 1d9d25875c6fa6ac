"""Quoting, committing and voiding purchases: the only code that moves points after enrollment.

A committed purchase is exactly its quote, priced again under the card's row lock by the pure mechanics engine
(app/domain/mechanics.py) on facts read here (app/domain/mechanics_facts.py). Balances change by SQL-side
increments in the same transaction as their ledger rows, and the card row is locked before any row that
references it is inserted (the other order deadlocks on PostgreSQL: the foreign-key check takes a share lock on
the card first). Locks are taken in one order everywhere: the member's card, the referrer's card (a referred
member's first purchase), then the coupons named (in id order). Every purchase carries an idempotency key; a
retry returns the first answer.

What a request asks for is handled in two ways:

- what spends the member's balance (points, cashback, a catalogue reward, a stamp-card voucher) must be there:
  asking for more than the card holds or the program allows is refused (422 validation_error naming the field)
  on the quote and on the purchase alike;
- what the member brings (coupon codes, offers chosen) is checked by the rules: a quote reports a refused coupon
  (`coupon_refusals`) or offer (`notices`) and prices the rest, and a purchase that still names one is refused
  (422 `coupon_refused` / `offer_refused`): the cashier saw the quote, and committing without the discount they
  saw would charge the customer more than they were told.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, bindparam, func, insert, select, update
from sqlalchemy.orm import Session, joinedload

from app.domain import mechanics
from app.domain.cards import check_code_signature, load_card, verify_card_code
from app.domain.errors import (
    AlreadyVoided,
    Conflict,
    DomainError,
    IdempotencyConflict,
    NotFound,
    PointsAlreadySpent,
    ValidationError,
)
from app.domain.mechanics_facts import (
    CouponFacts,
    OfferFacts,
    Receipt,
    ReferralFacts,
    card_balances,
    effects_from_json,
    effects_to_json,
    load_coupons,
    load_offers,
    load_referral,
    load_reward,
    member_facts,
    program_mechanics,
    receipt_from_json,
)
from app.domain.money import currency_exponent, format_amount, parse_amount
from app.domain.pass_changes import note_card_changed
from app.domain.rules import rules_from_json, tier_for
from app.models import ROLLUP_SETTLED, ROLLUP_VOIDED_COUNTED, ROLLUP_VOIDED_NEW, Base, Card, Program, Purchase
from app.models.base import UtcDateTime

MAX_REDEEM_POINTS = 10**9
MAX_IDEMPOTENCY_KEY_LENGTH = 255
# A basket names a handful of coupons and offers; more is a mistake or an attack, refused before any query.
MAX_COUPONS = 20
MAX_OFFERS = 20
MAX_COUPON_CODE_LENGTH = 64  # coupons.code
MAX_ROW_ID = 2**63 - 1  # BIGINT


class CouponRefused(DomainError):
    """A purchase names a coupon the rules refuse (its quote showed why); `refusals` lists each with its reason."""

    code = "coupon_refused"
    status = 422
    title = "Coupon refused"


class OfferRefused(DomainError):
    """A purchase names an offer that does not apply (ended, not started, below its minimum, unknown)."""

    code = "offer_refused"
    status = 422
    title = "Offer refused"


@dataclass(frozen=True)
class Actor:
    """Who is acting at the till: a member of staff or an API key, at a location. Written on every row."""

    staff_id: int | None = None
    api_key_id: int | None = None
    location_id: int | None = None


@dataclass(frozen=True)
class PurchaseRequest:
    code: str
    amount: int
    coupon_codes: tuple[str, ...]  # normalised (mechanics.normalize_code), in the order sent
    redeem_points: int
    offer_ids: tuple[int, ...] = ()
    reward_id: int | None = None
    redeem_cashback: int = 0  # minor units
    use_voucher: bool = False

    def fingerprint(self) -> str:
        canonical_fields: dict[str, Any] = {
            "code": self.code, "amount": self.amount, "coupon_codes": list(self.coupon_codes),
            "redeem_points": self.redeem_points,
        }
        # The newer fields count only when sent, so a purchase made before they existed keeps its fingerprint
        # and its retry is still recognised.
        if self.offer_ids:
            canonical_fields["offer_ids"] = list(self.offer_ids)
        if self.reward_id is not None:
            canonical_fields["reward_id"] = self.reward_id
        if self.redeem_cashback:
            canonical_fields["redeem_cashback"] = self.redeem_cashback
        if self.use_voucher:
            canonical_fields["use_voucher"] = True
        canonical = json.dumps(canonical_fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def parse_purchase_request(data: Mapping[str, Any], currency: str) -> PurchaseRequest:
    """Validate a quote or purchase body; each refusal names the field and says what would be right.

    Only the shape is checked here; whether a coupon, offer or reward exists and applies is the rules' answer.
    """
    code = data.get("code")
    if not isinstance(code, str) or not code:
        raise ValidationError("code is required: the card code the scanner read.", field="code")
    if "amount" not in data:
        raise ValidationError("amount is required, as a decimal string such as \"12.50\".", field="amount")
    amount = parse_amount(data["amount"], currency)
    redeem = data.get("redeem_points", 0)
    if isinstance(redeem, bool) or not isinstance(redeem, int):
        raise ValidationError("redeem_points must be a whole number of points.", field="redeem_points")
    if not 0 <= redeem <= MAX_REDEEM_POINTS:
        raise ValidationError("redeem_points must be zero or more.", field="redeem_points")
    use_voucher = data.get("use_voucher", False)
    if not isinstance(use_voucher, bool):
        raise ValidationError("use_voucher must be true or false.", field="use_voucher")
    return PurchaseRequest(
        code=code,
        amount=amount,
        coupon_codes=_coupon_codes(data.get("coupon_codes", [])),
        redeem_points=redeem,
        offer_ids=_offer_ids(data.get("offer_ids", [])),
        reward_id=_reward_id(data.get("reward_id")),
        redeem_cashback=_cashback_amount(data.get("redeem_cashback", "0"), currency),
        use_voucher=use_voucher,
    )


def _coupon_codes(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise ValidationError("coupon_codes must be a list of strings, such as [\"SPRING10\"].",
                              field="coupon_codes")
    if len(value) > MAX_COUPONS:
        raise ValidationError(f"coupon_codes may name at most {MAX_COUPONS} codes.", field="coupon_codes")
    codes = tuple(mechanics.normalize_code(c) for c in value)
    for sent, normal in zip(value, codes, strict=True):
        if not normal:
            raise ValidationError("coupon_codes holds an empty code; send the code as printed, or leave it out.",
                                  field="coupon_codes")
        if len(normal) > MAX_COUPON_CODE_LENGTH:
            raise ValidationError(f"No coupon code is longer than {MAX_COUPON_CODE_LENGTH} characters; "
                                  f"{sent[:20]!r}... is not one.", field="coupon_codes")
    return codes


def _offer_ids(value: object) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(_is_row_id(i) for i in value):
        raise ValidationError("offer_ids must be a list of offer ids (whole numbers from the scan's offers).",
                              field="offer_ids")
    if len(value) > MAX_OFFERS:
        raise ValidationError(f"offer_ids may name at most {MAX_OFFERS} offers.", field="offer_ids")
    return tuple(value)


def _reward_id(value: object) -> int | None:
    if value is None:
        return None
    if not _is_row_id(value):
        raise ValidationError("reward_id must be the id of a reward in the catalogue (a whole number), or null.",
                              field="reward_id")
    assert isinstance(value, int)
    return value


def _is_row_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ROW_ID


_ZERO = re.compile(r"0{1,12}(?:\.(?P<fraction>0+))?")


def _cashback_amount(value: object, currency: str) -> int:
    """Cashback to spend, a decimal string like `amount`, where zero ("0", "0.00") is allowed: spend none."""
    zero = _ZERO.fullmatch(value) if isinstance(value, str) else None
    if zero is not None and len(zero.group("fraction") or "") <= currency_exponent(currency):
        return 0
    return parse_amount(value, currency, field="redeem_cashback")


def validate_idempotency_key(key: str | None) -> str:
    if key is None or not key.strip():
        raise ValidationError(
            "Send an Idempotency-Key header (a fresh UUID per purchase) so a retry cannot charge twice.",
            field="Idempotency-Key",
        )
    key = key.strip()
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValidationError("Idempotency-Key is longer than 255 characters.", field="Idempotency-Key")
    return key


@dataclass(frozen=True)
class PricedPurchase:
    """A quote and the facts it was priced on, which committing it writes down (coupon ids, the referral)."""

    quote: mechanics.Quote
    coupons: CouponFacts
    offers: OfferFacts
    referral: ReferralFacts | None
    reward: mechanics.Reward | None

    @property
    def notices(self) -> tuple[mechanics.Notice, ...]:
        return self.offers.notices() + self.quote.warnings


def quote_purchase(
    session: Session, program: Program, request: PurchaseRequest, *, now: dt.datetime
) -> tuple[Card, PricedPurchase]:
    """What the purchase would cost and earn, with every coupon or offer refused and why; writes nothing."""
    card = verify_card_code(session, program, request.code)
    return card, _price(session, program, card, request, now=now, lock=False)


@dataclass(frozen=True)
class PurchaseResult:
    purchase: Purchase
    replayed: bool


def _reads_only() -> None:
    """The default `begin_writing`: reads and writes share one transaction."""


def commit_purchase(
    session: Session,
    program: Program,
    request: PurchaseRequest,
    actor: Actor,
    idempotency_key: str,
    *,
    now: dt.datetime,
    begin_writing: Callable[[], None] = _reads_only,
) -> PurchaseResult:
    """Commit the purchase once per idempotency key. A repeat with the same body gets the first result.

    A repeat is caught by the (program, idempotency key) constraint: its INSERT fails, and the caller rolls
    back and answers `find_replay`'s purchase. That keeps the replay check off the path every new purchase
    takes; a repeat that the card or its balance would now refuse (its single-use coupon now spent, say) is
    still answered as it first was.

    Everything before `begin_writing()` only reads (the code's signature), so a caller on SQLite, whose one
    write lock covers the whole database, can take that lock there and hold it only for the writes.
    """
    try:
        checked = check_code_signature(session, program, request.code)
        begin_writing()
        card = load_card(session, program, checked, lock=True)
        priced = _price(session, program, card, request, now=now, lock=True)
        _refuse_what_the_quote_refused(priced, program.currency)
    except DomainError:
        earlier = find_replay(session, program, idempotency_key, request.fingerprint())
        if earlier is not None:
            return PurchaseResult(earlier, replayed=True)
        raise
    quote = priced.quote
    receipt = Receipt(stamps=quote.stamps_after, vouchers=quote.vouchers_after, cashback=quote.cashback_after,
                      notices=priced.notices)
    # The writes are Core statements: the purchase path is the hot path, and the unit of work adds nothing here.
    values = {
        "program_id": program.id,
        "card_id": card.id,
        "location_id": actor.location_id,
        "staff_id": actor.staff_id,
        "api_key_id": actor.api_key_id,
        "amount": quote.amount,
        "discount": quote.discount_total,
        "amount_due": quote.amount_due,
        "points_earned": quote.points_earned,
        "points_redeemed": quote.points_redeemed,
        "lines": [{"kind": line.kind, "label": line.label, "amount": line.amount} for line in quote.lines],
        "points_after": quote.points_after,
        "tier_after": quote.tier_after,
        "effects": effects_to_json(quote.effects(), receipt),
        "idempotency_key": idempotency_key,
        "request_fingerprint": request.fingerprint(),
        "status": "committed",
        "created_at": now,
    }
    purchase_id: int = session.execute(_INSERT_PURCHASE, values).scalar_one()
    referrer = priced.referral.referrer if priced.referral else None
    ledger_rows = _purchase_ledger_rows(priced, card, referrer, purchase_id, actor, now)
    if ledger_rows:
        session.execute(_INSERT_LEDGER, ledger_rows)
    session.execute(_UPDATE_CARD_AFTER_PURCHASE, {
        "card_id": card.id,
        "points_delta": quote.points_after - card.points,
        "cashback_delta": quote.cashback_after - card.cashback,
        "stamps_delta": quote.stamps_after - card.stamps,
        "vouchers_delta": quote.vouchers_after - card.vouchers,
        "spend_delta": quote.amount_due,
        "tier": quote.tier_after,
        "now": now,
    })
    note_card_changed(session, card.id)
    if quote.bonuses:
        assert priced.referral is not None and referrer is not None, "only a referral pays a bonus"
        _pay_referral(session, priced.referral, quote, purchase_id, now)
    coupon_uses = _coupon_uses(priced, card, purchase_id, now)
    if coupon_uses:
        session.execute(_INSERT_COUPON_USE, coupon_uses)
    purchase = Purchase(id=purchase_id, **values)
    return PurchaseResult(purchase, replayed=False)


def _purchase_ledger_rows(
    priced: PricedPurchase, card: Card, referrer: Card | None, purchase_id: int, actor: Actor, now: dt.datetime
) -> list[dict[str, Any]]:
    """The purchase's ledger rows: points redeemed, the reward's cost, points earned, referral bonuses in points,
    all at the purchase's own time (the analytics count them on its day)."""
    quote = priced.quote
    reward_note = f"Reward: {priced.reward.name}"[:200] if priced.reward else ""
    entries: list[tuple[int, str, int, str]] = [
        (card.id, "redeem", -quote.points_redeemed, ""),
        (card.id, "redeem", -quote.reward_points, reward_note),
        (card.id, "earn", quote.points_earned, ""),
    ]
    for bonus in quote.bonuses:
        if bonus.unit == "points":
            to_card = card if bonus.serial == card.serial else referrer
            assert to_card is not None
            entries.append((to_card.id, "bonus", bonus.amount, bonus.label[:200]))
    return [
        {"card_id": card_id, "kind": kind, "points": points, "purchase_id": purchase_id,
         "staff_id": actor.staff_id, "api_key_id": actor.api_key_id, "note": note, "created_at": now}
        for card_id, kind, points, note in entries
        if points
    ]


def _pay_referral(
    session: Session, referral: ReferralFacts, quote: mechanics.Quote, purchase_id: int, now: dt.datetime
) -> None:
    """Mark the referral paid by this purchase, once, and credit the referrer's bonus (not in points: the
    ledger rows carry those) to their card."""
    marked = cast(CursorResult[Any], session.execute(
        _MARK_REFERRAL_PAID, {"referral_id": referral.referral_id, "paying_purchase_id": purchase_id}
    ))
    if marked.rowcount != 1:
        # The member's card lock makes this unreachable for their own purchases; it guards the bonus anyway.
        raise Conflict("The referral bonus was paid by another purchase a moment ago; nothing was committed. "
                       "Quote the purchase again.")
    referrer = referral.referrer
    theirs = [b for b in quote.bonuses if b.serial != quote.member_serial]
    if not theirs:
        return
    points = sum(b.amount for b in theirs if b.unit == "points")
    cashback = sum(b.amount for b in theirs if b.unit == "cashback")
    stamps_added = sum(b.amount for b in theirs if b.unit == "stamps")
    stamps_after, vouchers_issued = mechanics.add_stamps(referrer.stamps, stamps_added, quote.stamps_needed)
    session.execute(_ADJUST_CARD, {
        "card_id": referrer.id, "points_delta": points, "cashback_delta": cashback,
        "stamps_delta": stamps_after - referrer.stamps, "vouchers_delta": vouchers_issued, "now": now,
    })
    note_card_changed(session, referrer.id)


def _coupon_uses(priced: PricedPurchase, card: Card, purchase_id: int, now: dt.datetime) -> list[dict[str, Any]]:
    coupon_lines = [line for line in priced.quote.lines if line.kind == "coupon"]
    return [
        {"coupon_id": priced.coupons.ids[code], "card_id": card.id, "purchase_id": purchase_id,
         "discount": line.amount, "used_at": now, "voided_at": None}
        for code, line in zip(priced.quote.coupons_applied, coupon_lines, strict=True)
    ]


_purchases = Base.metadata.tables["purchases"]
_cards = Base.metadata.tables["cards"]
_referrals = Base.metadata.tables["referrals"]
_coupon_uses_table = Base.metadata.tables["coupon_uses"]
_INSERT_PURCHASE = insert(_purchases).returning(_purchases.c.id)
_INSERT_LEDGER = insert(Base.metadata.tables["ledger_entries"])
_INSERT_COUPON_USE = insert(_coupon_uses_table)
_NOW = bindparam("now", type_=UtcDateTime())
_UPDATE_CARD_AFTER_PURCHASE = (
    update(_cards)
    .where(_cards.c.id == bindparam("card_id"))
    .values(
        points=_cards.c.points + bindparam("points_delta"),
        cashback=_cards.c.cashback + bindparam("cashback_delta"),
        stamps=_cards.c.stamps + bindparam("stamps_delta"),
        vouchers=_cards.c.vouchers + bindparam("vouchers_delta"),
        lifetime_spend=_cards.c.lifetime_spend + bindparam("spend_delta"),
        tier=bindparam("tier"),
        purchase_count=_cards.c.purchase_count + 1,
        first_purchase_at=func.coalesce(_cards.c.first_purchase_at, _NOW),
        last_purchase_at=_NOW,
        updated_at=_NOW,
    )
)
# Another card's balances moved by a purchase or a void: a referrer's bonus, or taking it back.
_ADJUST_CARD = (
    update(_cards)
    .where(_cards.c.id == bindparam("card_id"))
    .values(
        points=_cards.c.points + bindparam("points_delta"),
        cashback=_cards.c.cashback + bindparam("cashback_delta"),
        stamps=_cards.c.stamps + bindparam("stamps_delta"),
        vouchers=_cards.c.vouchers + bindparam("vouchers_delta"),
        updated_at=_NOW,
    )
)
# Conditional, so however two first purchases of one member interleave, one of them pays the bonus.
_MARK_REFERRAL_PAID = (
    update(_referrals)
    .where(_referrals.c.id == bindparam("referral_id"), _referrals.c.bonus_purchase_id.is_(None))
    .values(bonus_purchase_id=bindparam("paying_purchase_id"))
)


_PURCHASE_BY_KEY = (
    select(Purchase)
    .where(Purchase.program_id == bindparam("program_id"), Purchase.idempotency_key == bindparam("key"))
    .execution_options(populate_existing=True)
)


def find_replay(session: Session, program: Program, idempotency_key: str, fingerprint: str) -> Purchase | None:
    """The purchase an earlier request with this key made, or None; the same key with another body is refused."""
    purchase = session.scalar(_PURCHASE_BY_KEY, {"program_id": program.id, "key": idempotency_key})
    if purchase is not None and purchase.request_fingerprint != fingerprint:
        raise IdempotencyConflict(
            "This Idempotency-Key was already used for a different purchase; make a new key for each purchase."
        )
    return purchase


def void_purchase(
    session: Session, program: Program, purchase_id: int, actor: Actor, *, now: dt.datetime
) -> Purchase:
    """Undo exactly what a purchase did, once: its points, cashback, stamps and vouchers, spend and tier, its
    coupon uses, and the referral bonuses if this purchase paid them (from both cards).

    Refused (PointsAlreadySpent) when the member, or the referrer, has since spent what would be taken back.
    The referral is then open again: the member's next purchase made while no other purchase of theirs stands
    (their "first" again) pays the bonuses, once. A purchase made before mechanics existed (no effects) is
    reversed by its points and spend, as it always was.
    """
    purchase = session.scalar(
        select(Purchase).where(Purchase.id == purchase_id, Purchase.program_id == program.id)
    )
    if purchase is None:
        raise NotFound(f"No purchase {purchase_id} in this program.")
    card = _lock_card(session, purchase.card_id)
    purchase = session.scalar(
        select(Purchase).where(Purchase.id == purchase_id).with_for_update()
        .execution_options(populate_existing=True)
    )
    assert purchase is not None
    if purchase.status == "voided":
        raise AlreadyVoided(f"Purchase {purchase_id} was already voided.")
    tiers = rules_from_json(program.rules).tiers
    if purchase.effects is None:
        member_change = mechanics.CardChange(card.serial, points=purchase.points_redeemed - purchase.points_earned,
                                             lifetime_spend=-purchase.amount_due)
        if card.points + member_change.points < 0:
            raise PointsAlreadySpent(
                f"The member has already spent points this purchase earned: the card has {card.points} points "
                f"and the void would take {-member_change.points}. Void the later purchase first."
            )
        new_tier = tier_for(card.lifetime_spend - purchase.amount_due, tiers)
        tier_after = new_tier.name if new_tier else None
        referrer_change, referral_id, referrer = None, None, None
    else:
        effects = effects_from_json(purchase.effects)
        referral_id, referrer = _referral_paid_by(session, purchase, effects)
        reversal = mechanics.reverse(
            effects,
            card_balances(card, effects.serial),
            referrer=card_balances(referrer, _referrer_serial(effects)) if referrer is not None else None,
            tiers=tiers,
        )
        member_change, *others = reversal.changes
        referrer_change = others[0] if others else None
        tier_after = reversal.tier_after
    purchase.status = "voided"
    purchase.voided_at = now
    # The analytics roll-ups take it back out if they had counted it (app/domain/analytics_rollups.py).
    purchase.rollup_state = ROLLUP_VOIDED_COUNTED if purchase.rollup_state == ROLLUP_SETTLED else ROLLUP_VOIDED_NEW
    session.flush()  # the purchase no longer counts in the card's purchase count and dates below
    note = f"Void of purchase {purchase.id}"
    session.execute(_INSERT_LEDGER, {"card_id": card.id, "kind": "void", "points": member_change.points,
                                  "purchase_id": purchase.id, "staff_id": actor.staff_id,
                                  "api_key_id": actor.api_key_id, "note": note, "created_at": now})
    session.execute(_UPDATE_CARD_AFTER_VOID, {
        "card_id": card.id, "points_delta": member_change.points, "cashback_delta": member_change.cashback,
        "stamps_delta": member_change.stamps, "vouchers_delta": member_change.vouchers,
        "spend_delta": member_change.lifetime_spend, "tier": tier_after, "now": now,
    })
    note_card_changed(session, card.id)
    if referrer is not None and referrer_change is not None:
        if referrer_change.points:
            session.execute(_INSERT_LEDGER, {"card_id": referrer.id, "kind": "void", "points": referrer_change.points,
                                          "purchase_id": purchase.id, "staff_id": actor.staff_id,
                                          "api_key_id": actor.api_key_id, "created_at": now,
                                          "note": f"{note}: the referral bonus it paid"})
        session.execute(_ADJUST_CARD, {
            "card_id": referrer.id, "points_delta": referrer_change.points,
            "cashback_delta": referrer_change.cashback, "stamps_delta": referrer_change.stamps,
            "vouchers_delta": referrer_change.vouchers, "now": now,
        })
        note_card_changed(session, referrer.id)
    if referral_id is not None:
        session.execute(_REOPEN_REFERRAL, {"referral_id": referral_id, "voided_purchase_id": purchase.id})
    session.execute(_RELEASE_COUPON_USES, {"voided_purchase_id": purchase.id, "now": now})
    session.refresh(card)
    if referrer is not None:
        session.refresh(referrer)
    return purchase


def _referral_paid_by(
    session: Session, purchase: Purchase, effects: mechanics.PurchaseEffects
) -> tuple[int | None, Card | None]:
    """The referral whose bonuses this purchase paid, and the referrer's card, locked after the member's (the
    order every two-card transaction takes; see mechanics_facts.load_referral). (None, None) if it paid none."""
    if not effects.bonuses:
        return None, None
    referral = session.execute(
        select(_referrals.c.id, _referrals.c.referrer_card_id)
        .where(_referrals.c.referee_card_id == purchase.card_id)
    ).first()
    if referral is None:
        raise Conflict(f"Purchase {purchase.id} paid a referral bonus, but the member's referral is no longer on "
                       "file; the bonus cannot be taken back automatically.")
    referrer = _lock_card(session, referral.referrer_card_id) if _referrer_serial(effects) else None
    return referral.id, referrer


def _referrer_serial(effects: mechanics.PurchaseEffects) -> str | None:
    return next((b.serial for b in effects.bonuses if b.serial != effects.serial), None)


_COMMITTED_OF_CARD = (_purchases.c.card_id == bindparam("card_id"), _purchases.c.status == "committed")
_UPDATE_CARD_AFTER_VOID = (
    update(_cards)
    .where(_cards.c.id == bindparam("card_id"))
    .values(
        points=_cards.c.points + bindparam("points_delta"),
        cashback=_cards.c.cashback + bindparam("cashback_delta"),
        stamps=_cards.c.stamps + bindparam("stamps_delta"),
        vouchers=_cards.c.vouchers + bindparam("vouchers_delta"),
        lifetime_spend=_cards.c.lifetime_spend + bindparam("spend_delta"),
        tier=bindparam("tier"),
        # What the purchases that still stand say, as migration 0006 first set them: the count goes down by one,
        # and the first and last purchase dates are those of the purchases left.
        purchase_count=select(func.count()).where(*_COMMITTED_OF_CARD).scalar_subquery(),
        first_purchase_at=select(func.min(_purchases.c.created_at)).where(*_COMMITTED_OF_CARD).scalar_subquery(),
        last_purchase_at=select(func.max(_purchases.c.created_at)).where(*_COMMITTED_OF_CARD).scalar_subquery(),
        updated_at=_NOW,
    )
)
_REOPEN_REFERRAL = (
    update(_referrals)
    .where(_referrals.c.id == bindparam("referral_id"),
           _referrals.c.bonus_purchase_id == bindparam("voided_purchase_id"))
    .values(bonus_purchase_id=None)
)
_RELEASE_COUPON_USES = (
    update(_coupon_uses_table)
    .where(_coupon_uses_table.c.purchase_id == bindparam("voided_purchase_id"),
           _coupon_uses_table.c.voided_at.is_(None))
    .values(voided_at=_NOW)
)


def recent_purchases(session: Session, program: Program, *, staff_id: int, limit: int = 10) -> list[Purchase]:
    """The latest purchases a member of staff rang up in this program, newest first: their till's void list."""
    return list(session.scalars(
        select(Purchase)
        .where(Purchase.program_id == program.id, Purchase.staff_id == staff_id)
        .order_by(Purchase.id.desc())
        .limit(limit)
        .options(joinedload(Purchase.card).joinedload(Card.customer))
    ))


def purchase_json(purchase: Purchase, currency: str) -> dict[str, Any]:
    """The committed purchase as the API returns it, the same on every replay."""
    if purchase.effects is not None:
        effects = effects_from_json(purchase.effects)
    else:  # made before mechanics existed: points only
        effects = mechanics.PurchaseEffects(serial="", amount_due=purchase.amount_due,
                                            points_earned=purchase.points_earned,
                                            points_redeemed=purchase.points_redeemed)
    receipt = receipt_from_json(purchase.effects)
    return {
        "id": purchase.id,
        **_priced_json(purchase.amount, purchase.lines, purchase.points_earned, purchase.points_redeemed, currency),
        "points": purchase.points_after,
        "tier": purchase.tier_after,
        **_mechanics_json(
            currency,
            balances_after="",
            refusals=(),
            notices=receipt.notices,
            reward_points=effects.reward_points,
            stamps_added=effects.stamps_added,
            stamps=receipt.stamps,
            vouchers_issued=effects.vouchers_issued,
            vouchers_used=effects.vouchers_used,
            vouchers=receipt.vouchers,
            cashback_earned=effects.cashback_earned,
            cashback_redeemed=effects.cashback_redeemed,
            cashback=receipt.cashback,
            bonuses=[b for b in effects.bonuses if b.serial == effects.serial],
        ),
    }


def quote_json(priced: PricedPurchase, currency: str) -> dict[str, Any]:
    """A quote as the API returns it: the same priced fields a committed purchase will carry, and what was
    refused and why."""
    quote = priced.quote
    lines = [{"kind": line.kind, "label": line.label, "amount": line.amount} for line in quote.lines]
    return {
        **_priced_json(quote.amount, lines, quote.points_earned, quote.points_redeemed, currency),
        "points_after": quote.points_after,
        "tier_after": quote.tier_after,
        **_mechanics_json(
            currency,
            balances_after="_after",
            refusals=quote.refusals,
            notices=priced.notices,
            reward_points=quote.reward_points,
            stamps_added=quote.stamps_added,
            stamps=quote.stamps_after,
            vouchers_issued=quote.vouchers_issued,
            vouchers_used=quote.vouchers_used,
            vouchers=quote.vouchers_after,
            cashback_earned=quote.cashback_earned,
            cashback_redeemed=quote.cashback_redeemed,
            cashback=quote.cashback_after,
            # Only the member's own: the till must not learn who referred them.
            bonuses=[b for b in quote.bonuses if b.serial == quote.member_serial],
        ),
    }


def _priced_json(
    amount: int, lines: list[dict[str, Any]], points_earned: int, points_redeemed: int, currency: str
) -> dict[str, Any]:
    discount = sum(line["amount"] for line in lines)
    return {
        "amount": format_amount(amount, currency),
        "lines": [{**line, "amount": format_amount(line["amount"], currency)} for line in lines],
        "discount_total": format_amount(discount, currency),
        "amount_due": format_amount(amount - discount, currency),
        "points_earned": points_earned,
        "points_redeemed": points_redeemed,
    }


def _mechanics_json(
    currency: str,
    *,
    balances_after: str,
    refusals: Sequence[mechanics.CouponRefusal],
    notices: Sequence[mechanics.Notice],
    reward_points: int,
    stamps_added: int,
    stamps: int,
    vouchers_issued: int,
    vouchers_used: int,
    vouchers: int,
    cashback_earned: int,
    cashback_redeemed: int,
    cashback: int,
    bonuses: Sequence[mechanics.Bonus],
) -> dict[str, Any]:
    """What the mechanics add to a quote or a purchase: refusals, notices, stamps, cashback, bonuses.

    The balances after the purchase are named as the points are: `stamps_after` on a quote (like
    `points_after`), `stamps` on a committed purchase (like `points`).
    """
    return {
        "coupon_refusals": [_refusal_json(r, currency) for r in refusals],
        "notices": [{"code": n.code, "message": n.message} for n in notices],
        "reward_points": reward_points,
        "stamps_added": stamps_added,
        f"stamps{balances_after}": stamps,
        "vouchers_issued": vouchers_issued,
        "vouchers_used": vouchers_used,
        f"vouchers{balances_after}": vouchers,
        "cashback_earned": format_amount(cashback_earned, currency),
        "cashback_redeemed": format_amount(cashback_redeemed, currency),
        f"cashback{balances_after}": format_amount(cashback, currency),
        "bonuses": [
            {"kind": b.kind, "label": b.label, "unit": b.unit,
             "amount": format_amount(b.amount, currency) if b.unit == "cashback" else b.amount}
            for b in bonuses
        ],
    }


def _refusal_json(refusal: mechanics.CouponRefusal, currency: str) -> dict[str, Any]:
    body: dict[str, Any] = {"code": refusal.code, "reason": refusal.reason, "message": refusal.message}
    if refusal.reason == "below_minimum":
        body["shortfall"] = format_amount(refusal.shortfall, currency)
    return body


def _lock_card(session: Session, card_id: int) -> Card:
    card = session.scalar(
        select(Card).where(Card.id == card_id).with_for_update().execution_options(populate_existing=True)
    )
    assert card is not None
    return card


def _price(
    session: Session, program: Program, card: Card, request: PurchaseRequest, *, now: dt.datetime, lock: bool
) -> PricedPurchase:
    """Price the request on the card's facts. Each lookup happens only when the request or card needs it (see
    app/domain/mechanics_facts.py); the referrer's card is locked before the coupons, the order stated above."""
    rules = program_mechanics(program)
    referral = load_referral(session, rules, card, lock=lock)
    coupons = load_coupons(session, program, card, request.coupon_codes, lock=lock)
    offers = load_offers(session, program, request.offer_ids, card=card, now=now)
    reward = load_reward(session, program, request.reward_id)
    quote = mechanics.quote(
        rules,
        member_facts(card),
        request.amount,
        now=now,
        currency=program.currency,
        coupons=coupons.found,
        unknown_codes=coupons.unknown,
        offers_chosen=offers.chosen,
        reward_chosen=reward,
        use_voucher=request.use_voucher,
        redeem_points=request.redeem_points,
        redeem_cashback=request.redeem_cashback,
        referral=referral.engine if referral else None,
        strict_redemption=True,
    )
    for notice in quote.warnings:
        # Like points, a reward or a voucher spends what the card holds: asking for one it cannot pay is refused.
        if notice.code in _REFUSED_NOTICES:
            raise ValidationError(notice.message, field=_REFUSED_NOTICES[notice.code])
    return PricedPurchase(quote=quote, coupons=coupons, offers=offers, referral=referral, reward=reward)


_REFUSED_NOTICES = {
    "not_enough_points": "reward_id",
    "reward_members_only": "reward_id",
    "no_voucher": "use_voucher",
}


def _refuse_what_the_quote_refused(priced: PricedPurchase, currency: str) -> None:
    """A purchase commits only what its quote showed applying: a coupon or an offer still refused stops it."""
    refusals = priced.quote.refusals
    if refusals:
        raise CouponRefused(
            f"Nothing was committed: {' '.join(r.message for r in refusals)} "
            "Take the coupon off the purchase, or quote again.",
            refusals=[_refusal_json(r, currency) for r in refusals],
        )
    offer_notices = [n for n in priced.notices if n.code.startswith("offer_")]
    if offer_notices:
        raise OfferRefused(
            f"Nothing was committed: {' '.join(n.message for n in offer_notices)} "
            "Take the offer off the purchase, or quote again.",
            refusals=[{"reason": n.code, "message": n.message} for n in offer_notices],
        )
