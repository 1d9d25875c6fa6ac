"""The customer's pages: the enrollment form and the card page behind its secret link."""

from __future__ import annotations

from flask import Blueprint, Response, abort, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.db import get_session, start_writing
from app.domain.cards import card_code, display_name
from app.domain.enrollment import (
    CONSENT_WORDING,
    EnrollmentRequest,
    enroll_customer,
    find_enrolled,
    parse_contact,
    parse_enrollment,
)
from app.domain.errors import AlreadyEnrolled, ValidationError
from app.domain.money import format_amount
from app.domain.programs import get_program
from app.domain.rotating_codes import DIGITS, device_slots, new_device_secret
from app.domain.rules import next_tier, rules_from_json
from app.keys import get_keys
from app.mail import send_card_link
from app.models import Card, Program, utcnow
from app.qr import qr_png, qr_svg
from app.views.apple_wallet import pkpass_response

bp = Blueprint("customer", __name__)


@bp.route("/join/<slug>", methods=["GET", "POST"])
def join(slug: str):  # type: ignore[no-untyped-def]
    """The enrollment form a customer fills in on their phone; on success, off to their new card."""
    session = get_session()
    program = get_program(session, slug)
    consent_text = CONSENT_WORDING.format(program=program.name)
    if request.method == "GET":
        return render_template("join.html", program=program, consent_text=consent_text, form={}, error=None)
    form = {
        "name": request.form.get("name", ""),
        "email": request.form.get("email", ""),
        "phone": request.form.get("phone", ""),
        "marketing_consent": request.form.get("marketing_consent") == "yes",
    }
    try:
        enrollment = parse_enrollment(form)
        card = enroll_and_commit(program, enrollment, channel="web")
    except AlreadyEnrolled as error:
        return render_template("join.html", program=program, consent_text=consent_text, form=form,
                               error=error, already_enrolled=True), 409
    except ValidationError as error:
        return render_template("join.html", program=program, consent_text=consent_text, form=form,
                               error=error), 422
    return redirect(url_for("customer.card_page", token=card.page_token, welcome=1), code=303)


def enroll_and_commit(
    program: Program, enrollment: EnrollmentRequest, *, channel: str, location_id: int | None = None
) -> Card:
    """Enroll a customer and commit, for the form and the API alike.

    Of two enrollments of one email or phone racing each other, the loser hits the unique constraint and is
    told the card exists, like any second enrollment.
    """
    session = get_session()
    start_writing(session)
    try:
        card = enroll_customer(session, program, enrollment, channel=channel, location_id=location_id)
        session.commit()
    except IntegrityError:
        session.rollback()
        if find_enrolled(session, program, enrollment) is None:
            raise
        raise AlreadyEnrolled(
            f"This email address or phone number already has a card with {program.name}."
        ) from None
    return card


@bp.post("/join/<slug>/resend")
def resend_link(slug: str) -> str:
    """Send an enrolled customer their card link again, to the email on file."""
    session = get_session()
    program = get_program(session, slug)
    try:
        contact = parse_contact(request.form.get("email"), request.form.get("phone"))
    except ValidationError as error:
        abort(422, error.detail)
    customer = find_enrolled(session, program, contact)
    if customer is not None and customer.email:
        card = session.scalar(select(Card).where(Card.customer_id == customer.id))
        assert card is not None
        send_card_link(customer.email, customer.name, program.name,
                       url_for("customer.card_page", token=card.page_token, _external=True))
    return render_template("resent.html", program=program)


def _card_by_token(token: str) -> Card:
    card = get_session().scalar(select(Card).where(Card.page_token == token))
    if card is None:
        abort(404, "This card link is not valid any more. If your card was replaced, use the new link.")
    return card


@bp.get("/c/<token>")
def card_page(token: str) -> Response:
    """The member's card: the QR to show at the till, balance and tier. Reached only by its secret link.

    For a program with live codes the page carries no QR of its own: its script draws the live one from this
    browser's secret (static/js/card-code.js), so there is no static code on it to screenshot.
    """
    session = get_session()
    card = _card_by_token(token)
    currency = card.program.currency
    upcoming = next_tier(card.lifetime_spend, rules_from_json(card.program.rules).tiers)
    live = card.status == "active" and card.program.rotating_codes
    html = render_template(
        "card.html",
        card=card,
        program=card.program,
        holder=display_name(card.customer.name),
        qr_svg=qr_svg(card_code(session, card, get_keys())) if card.status == "active" and not live else None,
        live_code=_live_code_settings(card) if live else None,
        lifetime_spend=format_amount(card.lifetime_spend, currency),
        next_tier=upcoming,
        to_next_tier=format_amount(upcoming.min_spend - card.lifetime_spend, currency) if upcoming else None,
        welcome=request.args.get("welcome") == "1",
    )
    response = Response(html)
    # The page holds a bearer credential: keep it out of shared caches and history.
    response.headers["Cache-Control"] = "no-store"
    return response


def _live_code_settings(card: Card) -> dict[str, object]:
    """What the card page's script needs to draw the live code, as the data-attributes it reads."""
    session = get_session()
    return {
        "card_code": card_code(session, card, get_keys()),
        "period": card.program.code_period_seconds,
        "device_url": url_for("customer.device_secret", token=card.page_token),
        "device_slots": ",".join(str(slot) for slot in device_slots(session, card)),
        # The server's clock, so a phone whose clock is far off can still show codes the till accepts.
        "server_time_ms": int(utcnow().timestamp() * 1000),
    }


@bp.post("/c/<token>/device")
def device_secret(token: str) -> Response:
    """A live-code secret for one more browser showing the card, as JSON: its slot, the secret (hex), the
    period and the signed card code. The card page's script asks once and keeps the answer in the browser."""
    session = get_session()
    card = _card_by_token(token)
    program = card.program
    if card.status == "revoked":
        abort(410, "This card has been revoked. Ask at the till for a new card.")
    if not program.rotating_codes:
        abort(409, f"{program.name} does not use live codes: the card page shows your card's QR code as it is.")
    device = new_device_secret(session, card, utcnow())
    body = {
        "slot": device.slot,
        "secret": device.secret.hex(),
        "period": program.code_period_seconds,
        "digits": DIGITS,
        "code": card_code(session, card, get_keys()),
    }
    session.commit()
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/c/<token>/card.pkpass")
def apple_pass(token: str) -> Response:
    """The card as an Apple Wallet pass: Safari on an iPhone offers to add it; it updates with the balance."""
    card = _card_by_token(token)
    if card.status == "revoked":
        abort(410, "This card has been revoked, so it cannot be added to Apple Wallet. Ask at the till for a new card.")
    if card.program.rotating_codes:
        abort(409, f"{card.program.name} uses live codes that change every few seconds, which Apple Wallet cannot "
                   "show. Use your card page, or Google Wallet, at the till.")
    return pkpass_response(card)


@bp.get("/c/<token>/qr.png")
def card_qr_png(token: str) -> Response:
    """The card's QR as a PNG to save or print."""
    card = _card_by_token(token)
    if card.status == "revoked":
        abort(410, "This card has been revoked, so its QR code is no longer valid. Ask at the till for a new card.")
    if card.program.rotating_codes:
        abort(409, f"{card.program.name} uses live codes that change every {card.program.code_period_seconds} "
                   "seconds, so there is no QR code to save or print: open your card page at the till instead.")
    png = qr_png(card_code(get_session(), card, get_keys()))
    return Response(png, mimetype="image/png", headers={
        "Cache-Control": "no-store",
        "Content-Disposition": f'attachment; filename="{card.program.slug}-card.png"',
    })
