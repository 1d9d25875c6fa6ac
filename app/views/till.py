"""What a till does, as JSON: shared by the API (API keys) and the cashier page's script (staff sessions).

Both audiences scan, quote, purchase and void through these helpers, so the two cannot drift apart: the
same validation, the same domain calls, the same answer on a retried purchase. The blueprints around them only
say who is acting and for which program.

A program with live codes (app/domain/rotating_codes.py) checks each code against the till that shows it:
the scan takes the code, and only that till may quote and buy with it. So those scans write (the replay
cache) and commit; a program with static codes pays nothing for any of this, not even a query.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Response, g, jsonify, request
from sqlalchemy.exc import IntegrityError

from app.auth import current_staff
from app.db import begin_reading, get_session, start_writing
from app.domain.cards import display_name, verify_card_code, verify_till_code
from app.domain.errors import DomainError, ValidationError
from app.domain.mechanics_facts import catalogue, offer_json, program_kind, reward_json, running_offers
from app.domain.money import format_amount
from app.domain.purchases import (
    Actor,
    PurchaseRequest,
    commit_purchase,
    find_replay,
    parse_purchase_request,
    purchase_json,
    quote_json,
    quote_purchase,
    validate_idempotency_key,
    void_purchase,
)
from app.domain.rotating_codes import static_part
from app.models import Card, Program, utcnow


class InvalidJson(DomainError):
    code = "invalid_json"
    status = 400
    title = "Malformed JSON"


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a problem saying the body must be one."""
    try:
        data = request.get_json(force=True, silent=True)
    except RecursionError:  # absurdly deep nesting; json.loads gives up before Flask's `silent` can catch it
        data = None
    if not isinstance(data, dict):
        raise InvalidJson("The request body must be a JSON object, e.g. {\"code\": \"...\"}.")
    return data


def card_summary(
    card: Card, *, offers: list[dict[str, Any]] | None = None, rewards: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """What a till may show about a member: no email, no phone, a masked name, the balances the program keeps.

    Stamps and vouchers appear for a stamp card (or a card holding a voucher), cashback for a cashback program
    (or a card holding some); a points card answers what it always did. After a scan, `offers` are those the
    member may choose (their ids go in a quote's `offer_ids`) and `rewards` the catalogue (`reward_id`).
    """
    summary: dict[str, Any] = {
        "serial": card.serial,
        "display_name": display_name(card.customer.name),
        "tier": card.tier,
        "points": card.points,
        "offers": offers or [],
    }
    kind = program_kind(card.program)
    if kind == "stamps" or card.vouchers:
        summary["stamps"] = card.stamps
        summary["vouchers"] = card.vouchers
    if kind == "cashback" or card.cashback:
        summary["cashback"] = format_amount(card.cashback, card.program.currency)
    if rewards:
        summary["rewards"] = rewards
    return summary


def _scanned(program: Program, card: Card) -> dict[str, Any]:
    """The summary a scan answers: the card, the offers running now and the rewards catalogue."""
    session = get_session()
    offers = [offer_json(offer, program.currency) for offer in running_offers(session, program, utcnow(), card=card)]
    rewards = [reward_json(reward, program.currency) for reward in catalogue(session, program)]
    return card_summary(card, offers=offers, rewards=rewards)


def actor_label(actor: Actor) -> str:
    """Who is at the till, as the replay cache of live codes records it: "staff:12" or "api_key:3"."""
    if actor.staff_id is not None:
        return f"staff:{actor.staff_id}"
    if actor.api_key_id is not None:
        return f"api_key:{actor.api_key_id}"
    raise ValueError("an actor at the till is a member of staff or an API key")


def _request_actor() -> str:
    # The blueprints say who acts only where it is written down (purchases, voids); a scan or a quote of a
    # live code needs it too, and the request knows: an API key (api.py) or a signed-in member of staff.
    api_key = g.get("api_key")
    if api_key is not None:
        return actor_label(Actor(api_key_id=api_key.id))
    staff = current_staff()
    if staff is None:  # pragma: no cover - both blueprints authenticate before any till helper runs
        raise RuntimeError("a till request without an API key or a signed-in member of staff")
    return actor_label(Actor(staff_id=staff.id))


def scan_card(program: Program) -> dict[str, Any]:
    """The summary of the card the request's scanned code names, or the domain's reason to refuse it.

    With live codes, the scan takes the code (nobody may scan it again) and commits that.
    """
    code = json_body().get("code")
    if not isinstance(code, str) or not code:
        raise ValidationError("code is required: the card code the scanner read, as a string.", field="code")
    session = get_session()
    if not program.rotating_codes:
        return _scanned(program, verify_card_code(session, program, static_part(code)))
    start_writing(session)
    card = verify_till_code(session, program, code, actor=_request_actor(), now=utcnow(), consume=True)
    summary = _scanned(program, card)
    session.commit()
    return summary


def quote(program: Program) -> dict[str, Any]:
    """The priced quote for the request's card and basket, and the card it is for: every line, and every coupon
    or offer refused with its reason (a quote reports them; a purchase naming one is refused).

    It writes nothing, except that a live code nobody scanned yet is taken by this till.
    """
    sent = parse_purchase_request(json_body(), program.currency)
    if program.rotating_codes:
        _admit_live_code(program, sent.code, _request_actor())
    card, priced = quote_purchase(get_session(), program, _with_static_code(sent), now=utcnow())
    return {**quote_json(priced, program.currency), "card": card_summary(card)}


def _admit_live_code(program: Program, code: str, actor: str) -> None:
    """Check a quote's or purchase's code under the program's live codes, for this till; a code nobody scanned
    is taken here. Committed at once, so the till keeps it even if the pricing then refuses the basket."""
    session = get_session()
    start_writing(session)
    verify_till_code(session, program, code, actor=actor, now=utcnow(), consume=False)
    session.commit()
    begin_reading(session)  # the pricing only reads, as before; a purchase takes the write lock for its writes


def _with_static_code(purchase_request: PurchaseRequest) -> PurchaseRequest:
    """The request with a live code's signed card code in its place: what pricing checks, and what the purchase's
    fingerprint is made of, so a retry after a rescan (a new live code, the same card) is the same purchase."""
    static = static_part(purchase_request.code)
    return purchase_request if static is purchase_request.code else dataclasses.replace(purchase_request, code=static)


def record_purchase(program: Program, actor: Actor) -> Response:
    """Commit the request's purchase once per its Idempotency-Key header: 201 with the purchase.

    A retry with the same key, or a twin request racing this one, gets the first answer and changes nothing;
    its response says so in `Idempotent-Replayed: true`.
    """
    body, replayed = _commit_once(program, actor)
    response = jsonify(body)
    response.status_code = 201
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _commit_once(program: Program, actor: Actor) -> tuple[dict[str, Any], bool]:
    session = get_session()
    key = validate_idempotency_key(request.headers.get("Idempotency-Key"))
    sent = parse_purchase_request(json_body(), program.currency)
    purchase_request = _with_static_code(sent)
    if program.rotating_codes:
        try:
            _admit_live_code(program, sent.code, actor_label(actor))
        except DomainError:
            # A retry of a committed purchase is answered as it was, even once its live code has expired.
            earlier = find_replay(session, program, key, purchase_request.fingerprint())
            if earlier is None:
                raise
            return purchase_json(earlier, program.currency), True
    try:
        result = commit_purchase(session, program, purchase_request, actor, key, now=utcnow(),
                                 begin_writing=lambda: start_writing(session))
        body = purchase_json(result.purchase, program.currency)
        session.commit()
        return body, result.replayed
    except IntegrityError:
        # This key was used before (a retry, or a twin request racing this one): answer what it got.
        session.rollback()
        earlier = find_replay(session, program, key, purchase_request.fingerprint())
        if earlier is None:
            raise
        return purchase_json(earlier, program.currency), True


def void(program: Program, purchase_id: int, actor: Actor) -> dict[str, Any]:
    """Undo what a purchase of this program did; answers its new status and the card's balance and tier."""
    session = get_session()
    start_writing(session)
    purchase = void_purchase(session, program, purchase_id, actor, now=utcnow())
    card = purchase.card
    body = {"id": purchase.id, "status": purchase.status, "points": card.points, "tier": card.tier}
    session.commit()
    return body
