"""Quoting, committing and voiding purchases: the only code that moves points after enrollment.

A committed purchase is exactly its quote, priced again under the card's row lock. Balances change by
SQL-side increments in the same transaction as their ledger rows, and the card row is locked before any row
that references it is inserted (the other order deadlocks on PostgreSQL: the foreign-key check takes a share
lock on the card first). Every purchase carries an idempotency key; a retry returns the first answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session, joinedload

from app.domain.cards import check_code_signature, load_card, verify_card_code
from app.domain.errors import (
    AlreadyVoided,
    DomainError,
    IdempotencyConflict,
    NotFound,
    PointsAlreadySpent,
    ValidationError,
)
from app.domain.money import currency_exponent, format_amount, parse_amount
from app.domain.pass_changes import note_card_changed
from app.domain.rules import Quote, price_purchase, rules_from_json, tier_for
from app.models import Base, Card, LedgerEntry, Program, Purchase, utcnow

MAX_REDEEM_POINTS = 10**9
MAX_IDEMPOTENCY_KEY_LENGTH = 255


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
    coupon_codes: tuple[str, ...]
    redeem_points: int

    def fingerprint(self) -> str:
        canonical = json.dumps(
            {"code": self.code, "amount": self.amount, "coupon_codes": list(self.coupon_codes),
             "redeem_points": self.redeem_points},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def parse_purchase_request(data: Mapping[str, Any], currency: str) -> PurchaseRequest:
    """Validate a quote or purchase body; each refusal names the field and says what would be right."""
    code = data.get("code")
    if not isinstance(code, str) or not code:
        raise ValidationError("code is required: the card code the scanner read.", field="code")
    if "amount" not in data:
        raise ValidationError("amount is required, as a decimal string such as \"12.50\".", field="amount")
    amount = parse_amount(data["amount"], currency)
    coupons = data.get("coupon_codes", [])
    if not isinstance(coupons, list) or not all(isinstance(c, str) for c in coupons):
        raise ValidationError("coupon_codes must be a list of strings.", field="coupon_codes")
    if coupons:
        raise ValidationError(f"Unknown coupon code {coupons[0]!r}.", field="coupon_codes",
                              coupon=coupons[0])
    redeem = data.get("redeem_points", 0)
    if isinstance(redeem, bool) or not isinstance(redeem, int):
        raise ValidationError("redeem_points must be a whole number of points.", field="redeem_points")
    if not 0 <= redeem <= MAX_REDEEM_POINTS:
        raise ValidationError("redeem_points must be zero or more.", field="redeem_points")
    return PurchaseRequest(code=code, amount=amount, coupon_codes=tuple(coupons), redeem_points=redeem)


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


def quote_purchase(session: Session, program: Program, request: PurchaseRequest) -> tuple[Card, Quote]:
    """What the purchase would cost and earn; writes nothing."""
    card = verify_card_code(session, program, request.code)
    return card, _price(program, card, request)


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
    begin_writing: Callable[[], None] = _reads_only,
) -> PurchaseResult:
    """Commit the purchase once per idempotency key. A repeat with the same body gets the first result.

    A repeat is caught by the (program, idempotency key) constraint: its INSERT fails, and the caller rolls
    back and answers `find_replay`'s purchase. That keeps the replay check off the path every new purchase
    takes; a repeat that the card or its balance would now refuse is still answered as it first was.

    Everything before `begin_writing()` only reads (the code's signature), so a caller on SQLite, whose one
    write lock covers the whole database, can take that lock there and hold it only for the writes.
    """
    try:
        checked = check_code_signature(session, program, request.code)
        begin_writing()
        card = load_card(session, program, checked, lock=True)
        quote = _price(program, card, request)
    except DomainError:
        earlier = find_replay(session, program, idempotency_key, request.fingerprint())
        if earlier is not None:
            return PurchaseResult(earlier, replayed=True)
        raise
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
        "idempotency_key": idempotency_key,
        "request_fingerprint": request.fingerprint(),
        "status": "committed",
    }
    purchase_id: int = session.execute(_INSERT_PURCHASE, values).scalar_one()
    ledger_rows = [
        {"card_id": card.id, "kind": kind, "points": points, "purchase_id": purchase_id,
         "staff_id": actor.staff_id, "api_key_id": actor.api_key_id, "note": ""}
        for kind, points in (("redeem", -quote.points_redeemed), ("earn", quote.points_earned))
        if points
    ]
    if ledger_rows:
        session.execute(_INSERT_LEDGER, ledger_rows)
    session.execute(
        _UPDATE_CARD_BALANCE,
        {"card_id": card.id, "points_delta": quote.points_earned - quote.points_redeemed,
         "spend_delta": quote.amount_due, "tier": quote.tier_after, "now": utcnow()},
    )
    note_card_changed(session, card.id)
    purchase = Purchase(id=purchase_id, **values)
    return PurchaseResult(purchase, replayed=False)


_purchases = Base.metadata.tables["purchases"]
_cards = Base.metadata.tables["cards"]
_INSERT_PURCHASE = insert(_purchases).returning(_purchases.c.id)
_INSERT_LEDGER = insert(Base.metadata.tables["ledger_entries"])
_UPDATE_CARD_BALANCE = (
    update(_cards)
    .where(_cards.c.id == bindparam("card_id"))
    .values(
        points=_cards.c.points + bindparam("points_delta"),
        lifetime_spend=_cards.c.lifetime_spend + bindparam("spend_delta"),
        tier=bindparam("tier"),
        updated_at=bindparam("now"),
    )
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


def void_purchase(session: Session, program: Program, purchase_id: int, actor: Actor) -> Purchase:
    """Reverse a purchase's points and spend exactly, once."""
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
    delta = purchase.points_redeemed - purchase.points_earned
    if card.points + delta < 0:
        raise PointsAlreadySpent(
            f"The member has already spent points this purchase earned: the card has {card.points} points and "
            f"the void would take {-delta}. Void the later purchase first."
        )
    rules = rules_from_json(program.rules)
    new_tier = tier_for(card.lifetime_spend - purchase.amount_due, rules.tiers)
    session.add(LedgerEntry(card_id=card.id, kind="void", points=delta, purchase_id=purchase.id,
                            staff_id=actor.staff_id, api_key_id=actor.api_key_id,
                            note=f"Void of purchase {purchase.id}"))
    session.execute(
        update(Card)
        .where(Card.id == card.id)
        .values(
            points=Card.points + delta,
            lifetime_spend=Card.lifetime_spend - purchase.amount_due,
            tier=new_tier.name if new_tier else None,
            updated_at=utcnow(),
        )
    )
    purchase.status = "voided"
    purchase.voided_at = utcnow()
    note_card_changed(session, card.id)
    session.flush()
    session.refresh(card)
    return purchase


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
    return {
        "id": purchase.id,
        **_priced_json(purchase.amount, purchase.lines, purchase.points_earned, purchase.points_redeemed, currency),
        "points": purchase.points_after,
        "tier": purchase.tier_after,
    }


def quote_json(quote: Quote, currency: str) -> dict[str, Any]:
    """A quote as the API returns it: the same priced fields a committed purchase will carry."""
    lines = [{"kind": line.kind, "label": line.label, "amount": line.amount} for line in quote.lines]
    return {
        **_priced_json(quote.amount, lines, quote.points_earned, quote.points_redeemed, currency),
        "points_after": quote.points_after,
        "tier_after": quote.tier_after,
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


def _lock_card(session: Session, card_id: int) -> Card:
    card = session.scalar(
        select(Card).where(Card.id == card_id).with_for_update().execution_options(populate_existing=True)
    )
    assert card is not None
    return card


def _price(program: Program, card: Card, request: PurchaseRequest) -> Quote:
    return price_purchase(
        rules_from_json(program.rules),
        amount=request.amount,
        balance=card.points,
        lifetime_spend=card.lifetime_spend,
        redeem_points=request.redeem_points,
        exponent=currency_exponent(program.currency),
    )
