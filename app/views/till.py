"""What a till does, as JSON: shared by the API (API keys) and the cashier page's script (staff sessions).

Both audiences scan, quote, purchase and void through these helpers, so the two cannot drift apart: the
same validation, the same domain calls, the same answer on a retried purchase. The blueprints around them only
say who is acting and for which program.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request
from sqlalchemy.exc import IntegrityError

from app.db import get_session, start_writing
from app.domain.cards import display_name, verify_card_code
from app.domain.errors import DomainError, ValidationError
from app.domain.purchases import (
    Actor,
    commit_purchase,
    find_replay,
    parse_purchase_request,
    purchase_json,
    quote_json,
    quote_purchase,
    validate_idempotency_key,
    void_purchase,
)
from app.models import Card, Program


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


def card_summary(card: Card) -> dict[str, Any]:
    """What a till may show about a member: no email, no phone, a masked name."""
    return {
        "serial": card.serial,
        "display_name": display_name(card.customer.name),
        "tier": card.tier,
        "points": card.points,
        "offers": [],
    }


def scan_card(program: Program) -> dict[str, Any]:
    """The summary of the card the request's scanned code names, or the domain's reason to refuse it."""
    code = json_body().get("code")
    if not isinstance(code, str) or not code:
        raise ValidationError("code is required: the card code the scanner read, as a string.", field="code")
    return card_summary(verify_card_code(get_session(), program, code))


def quote(program: Program) -> dict[str, Any]:
    """The priced quote for the request's card and basket, and the card it is for; writes nothing."""
    purchase_request = parse_purchase_request(json_body(), program.currency)
    card, priced = quote_purchase(get_session(), program, purchase_request)
    return {**quote_json(priced, program.currency), "card": card_summary(card)}


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
    purchase_request = parse_purchase_request(json_body(), program.currency)
    try:
        result = commit_purchase(session, program, purchase_request, actor, key,
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
    """Reverse a purchase of this program; answers its new status and the card's balance and tier."""
    session = get_session()
    start_writing(session)
    purchase = void_purchase(session, program, purchase_id, actor)
    card = purchase.card
    body = {"id": purchase.id, "status": purchase.status, "points": card.points, "tier": card.tier}
    session.commit()
    return body
