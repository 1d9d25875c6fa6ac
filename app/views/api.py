"""The JSON API for tills and point-of-sale software, under /api/v1, authenticated by API keys.

Every view parses its input, calls one domain function and commits once; refusals are raised as domain
errors and become RFC 9457 problems in app/problems.py.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request, url_for
from sqlalchemy import select

from app.analytics import fresh_rollups
from app.db import begin_reading, get_session
from app.domain.analytics import parse_range
from app.domain.analytics_report import build_report, summary_json
from app.domain.cards import card_code, get_card
from app.domain.enrollment import parse_enrollment
from app.domain.errors import AlreadyEnrolled, ValidationError
from app.domain.money import format_amount
from app.domain.programs import authenticate_api_key
from app.domain.purchases import Actor
from app.domain.stats import PERIODS, enrollment_counts
from app.keys import get_keys
from app.models import ApiKey, LedgerEntry, Program, utcnow
from app.openapi import openapi_document
from app.views import till
from app.views.customer import enroll_and_commit
from app.views.till import card_summary, json_body

bp = Blueprint("api", __name__, url_prefix="/api/v1")

_PUBLIC_ENDPOINTS = {"api.openapi"}


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


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 description of this API."""
    return jsonify(openapi_document())


@bp.post("/enrollments")
def create_enrollment():  # type: ignore[no-untyped-def]
    """Enroll a customer at the till or from POS software; answers the card and its links."""
    session = get_session()
    program: Program = g.program
    enrollment = parse_enrollment(json_body())
    try:
        card = enroll_and_commit(program, enrollment, channel="api", location_id=g.api_key.location_id)
    except AlreadyEnrolled as error:
        error.extra["recovery_url"] = url_for("customer.join", slug=program.slug, _external=True)
        error.detail += " Ask the customer to open their card link, or resend it from the enrollment page."
        raise
    code = card_code(session, card, get_keys())
    body = {
        **card_summary(card),
        "code": code,
        "card_url": url_for("customer.card_page", token=card.page_token, _external=True),
        # Apple Wallet cannot show a live code, so programs with rotating codes offer no Apple pass.
        "apple_pass_url": None if program.rotating_codes
        else url_for("customer.apple_pass", token=card.page_token, _external=True),
        "google_save_url": url_for("google_wallet.save_to_google_wallet", token=card.page_token, _external=True),
    }
    return jsonify(body), 201


@bp.post("/scans")
def scan():  # type: ignore[no-untyped-def]
    """Check a scanned card code and answer the card's public summary, or why it was refused."""
    return jsonify(till.scan_card(g.program))


@bp.post("/purchases/quote")
def quote():  # type: ignore[no-untyped-def]
    """Price a purchase: discount lines, refused coupons and offers, amount due, what it earns. Writes nothing."""
    return jsonify(till.quote(g.program))


@bp.post("/purchases")
def create_purchase():  # type: ignore[no-untyped-def]
    """Commit a purchase once per Idempotency-Key; a retry gets the first answer and changes nothing."""
    return till.record_purchase(g.program, _actor())


@bp.post("/purchases/<id:purchase_id>/void")
def void(purchase_id: int):  # type: ignore[no-untyped-def]
    """Undo exactly what a purchase did (points, cashback, stamps, coupon uses, referral bonuses); once."""
    return jsonify(till.void(g.program, purchase_id, _actor()))


@bp.get("/cards/<serial>")
def card_detail(serial: str):  # type: ignore[no-untyped-def]
    """A card's balances (points, stamps and vouchers, cashback), tier, lifetime spend and ledger (newest first)."""
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
        "stamps": card.stamps,
        "vouchers": card.vouchers,
        "cashback": format_amount(card.cashback, program.currency),
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
    session = get_session()
    fresh_rollups(g.program.id, reader=session)
    return jsonify(enrollment_counts(session, g.program, period, today=utcnow().date()))


@bp.get("/stats/summary")
def summary_stats():  # type: ignore[no-untyped-def]
    """The program's key figures over a range of days (`from`, `to`: YYYY-MM-DD; the last 90 days by default),
    as defined in docs/analytics.md."""
    now = utcnow()
    rng = parse_range(request.args.get("from"), request.args.get("to"), today=now.date())
    session = get_session()
    fresh_rollups(g.program.id, reader=session)
    return jsonify(summary_json(build_report(session, g.program, rng, now)))
