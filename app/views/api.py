"""The JSON API for tills and point-of-sale software, under /api/v1, authenticated by API keys.

Every view parses its input, calls one domain function and commits once; refusals are raised as domain
errors and become RFC 9457 problems in app/problems.py.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request, url_for
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.db import begin_reading, get_session, start_writing
from app.domain.cards import card_code, display_name, get_card, verify_card_code
from app.domain.enrollment import enroll_customer, find_enrolled, parse_enrollment
from app.domain.errors import AlreadyEnrolled, DomainError, ValidationError
from app.domain.money import format_amount
from app.domain.programs import authenticate_api_key
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
from app.domain.stats import PERIODS, enrollment_counts
from app.keys import get_keys
from app.models import ApiKey, Card, LedgerEntry, Program
from app.openapi import openapi_document

bp = Blueprint("api", __name__, url_prefix="/api/v1")

_PUBLIC_ENDPOINTS = {"api.openapi"}


class InvalidJson(DomainError):
    code = "invalid_json"
    status = 400
    title = "Malformed JSON"


@bp.before_request
def _authenticate() -> None:
    if request.endpoint in _PUBLIC_ENDPOINTS:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    session = get_session()
    begin_reading(session)  # views that write call start_writing (directly or through the domain) first
    api_key = authenticate_api_key(session, key.strip() if scheme.lower() == "bearer" else None)
    g.api_key = api_key
    g.program = api_key.program


def _actor() -> Actor:
    api_key: ApiKey = g.api_key
    return Actor(api_key_id=api_key.id, location_id=api_key.location_id)


def _json_body() -> dict[str, Any]:
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


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 description of this API."""
    return jsonify(openapi_document())


@bp.post("/enrollments")
def create_enrollment():  # type: ignore[no-untyped-def]
    """Enroll a customer at the till or from POS software; answers the card and its links."""
    session = get_session()
    program: Program = g.program
    enrollment = parse_enrollment(_json_body())
    start_writing(session)
    try:
        card = enroll_customer(session, program, enrollment, channel="api", location_id=g.api_key.location_id)
        code = card_code(session, card, get_keys())
        session.commit()
    except AlreadyEnrolled as error:
        error.extra["recovery_url"] = url_for("customer.join", slug=program.slug, _external=True)
        error.detail += " Ask the customer to open their card link, or resend it from the enrollment page."
        raise
    except IntegrityError:
        session.rollback()
        if find_enrolled(session, program, enrollment) is None:
            raise
        raise AlreadyEnrolled(
            "This email address or phone number already has a card.",
            recovery_url=url_for("customer.join", slug=program.slug, _external=True),
        ) from None
    body = {
        **card_summary(card),
        "code": code,
        "card_url": url_for("customer.card_page", token=card.page_token, _external=True),
        # Wallet passes arrive with their own issues; until a pass is configured these stay null.
        "apple_pass_url": None,
        "google_save_url": None,
    }
    return jsonify(body), 201


@bp.post("/scans")
def scan():  # type: ignore[no-untyped-def]
    """Check a scanned card code and answer the card's public summary, or why it was refused."""
    code = _json_body().get("code")
    if not isinstance(code, str) or not code:
        raise ValidationError("code is required: the card code the scanner read, as a string.", field="code")
    card = verify_card_code(get_session(), g.program, code)
    return jsonify(card_summary(card))


@bp.post("/purchases/quote")
def quote():  # type: ignore[no-untyped-def]
    """Price a purchase: discount lines, amount due, points to earn. Writes nothing."""
    program: Program = g.program
    purchase_request = parse_purchase_request(_json_body(), program.currency)
    card, priced = quote_purchase(get_session(), program, purchase_request)
    return jsonify({**quote_json(priced, program.currency), "card": card_summary(card)})


@bp.post("/purchases")
def create_purchase():  # type: ignore[no-untyped-def]
    """Commit a purchase once per Idempotency-Key; a retry gets the first answer and changes nothing."""
    session = get_session()
    program: Program = g.program
    key = validate_idempotency_key(request.headers.get("Idempotency-Key"))
    purchase_request = parse_purchase_request(_json_body(), program.currency)
    try:
        result = commit_purchase(session, program, purchase_request, _actor(), key,
                                 begin_writing=lambda: start_writing(session))
        body = purchase_json(result.purchase, program.currency)
        session.commit()
        replayed = result.replayed
    except IntegrityError:
        # This key was used before (a retry, or a twin request racing this one): answer what it got.
        session.rollback()
        earlier = find_replay(session, program, key, purchase_request.fingerprint())
        if earlier is None:
            raise
        body, replayed = purchase_json(earlier, program.currency), True
    response = jsonify(body)
    response.status_code = 201
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.post("/purchases/<id:purchase_id>/void")
def void(purchase_id: int):  # type: ignore[no-untyped-def]
    """Reverse a purchase's points and spend exactly; a second void is refused."""
    session = get_session()
    start_writing(session)
    purchase = void_purchase(session, g.program, purchase_id, _actor())
    card = purchase.card
    body = {"id": purchase.id, "status": purchase.status, "points": card.points, "tier": card.tier}
    session.commit()
    return jsonify(body)


@bp.get("/cards/<serial>")
def card_detail(serial: str):  # type: ignore[no-untyped-def]
    """A card's balance, tier, lifetime spend and ledger (newest first)."""
    session = get_session()
    program: Program = g.program
    card = get_card(session, program, serial)
    entries = session.scalars(
        select(LedgerEntry).where(LedgerEntry.card_id == card.id).order_by(LedgerEntry.id.desc()).limit(200)
    ).all()
    return jsonify({
        **card_summary(card),
        "status": card.status,
        "lifetime_spend": format_amount(card.lifetime_spend, program.currency),
        "ledger": [
            {"id": e.id, "kind": e.kind, "points": e.points, "purchase_id": e.purchase_id, "note": e.note,
             "created_at": e.created_at.isoformat()}
            for e in entries
        ],
    })


@bp.get("/stats/enrollments")
def enrollment_stats():  # type: ignore[no-untyped-def]
    """Enrollment counts per day, week or month, by channel and by location."""
    period = request.args.get("period", "day")
    if period not in PERIODS:
        raise ValidationError(f"period must be one of {', '.join(PERIODS)}.", field="period")
    return jsonify(enrollment_counts(get_session(), g.program, period))
