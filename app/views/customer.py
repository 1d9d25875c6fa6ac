"""The customer's pages: the enrollment form, referral links to it, and the card page behind its secret link.

Each browser that opens the form or a card page gets a random `device_id` cookie. It names no one: it only
lets a referral from one phone to the same phone be recognised as one person (app/domain/referrals.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from flask import Blueprint, Response, abort, current_app, g, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response as BaseResponse

from app.db import get_session, start_writing
from app.domain import consent
from app.domain.cards import card_code, display_name
from app.domain.enrollment import (
    BIRTHDAY_PURPOSE,
    CONSENT_WORDING,
    MONTH_NAMES,
    EnrollmentRequest,
    birthday_from_form,
    enroll_customer,
    find_enrolled,
    parse_contact,
    parse_enrollment,
)
from app.domain.errors import AlreadyEnrolled, DomainError, ValidationError
from app.domain.member_card import member_card
from app.domain.money import format_amount
from app.domain.nps import NpsNotDue, NpsQuestion, dismiss_nps, nps_question, read_nps_answer, record_nps_answer
from app.domain.programs import get_program
from app.domain.referrals import (
    DEVICE_COOKIE,
    complete_referral_details,
    find_referrer,
    find_referrer_anywhere,
    new_device_id,
    parse_device_id,
    referral_details_missing,
)
from app.domain.rotating_codes import DIGITS, device_slots, new_device_secret
from app.domain.rules import next_tier, rules_from_json
from app.keys import get_keys
from app.mail import send_card_link
from app.models import Card, Program, utcnow
from app.qr import qr_png, qr_svg
from app.security import is_one_click_unsubscribe
from app.unsubscribe_links import current_unsubscribe_key
from app.views.apple_wallet import pkpass_response

bp = Blueprint("customer", __name__)

AnyResponse = TypeVar("AnyResponse", bound=BaseResponse)


# The device cookie outlives any one visit: a phone that enrolled stays recognisable when it follows a link later.
_DEVICE_COOKIE_MAX_AGE = 2 * 365 * 24 * 3600
_UNKNOWN_INVITATION = "This invitation link is not one we know: it may have been cut short or mistyped."
_JOIN_ANYWAY = " You can still join here; it just will not count as an invitation."
_JOIN_FROM_HOME = " You can still join from the home page; it just will not count as an invitation."


@bp.route("/join/<slug>", methods=["GET", "POST"])
def join(slug: str) -> BaseResponse:
    """The enrollment form a customer fills in on their phone; on success, off to their new card.

    A form that came by a referral link carries the code in a hidden field: the member is then attributed to
    the friend who invited them (channel "referral").
    """
    session = get_session()
    program = get_program(session, slug)
    if request.method == "GET":
        return _join_page(program, {})
    birthday_month = request.form.get("birthday_month", "")
    birthday_day = request.form.get("birthday_day", "")
    form = {
        "name": request.form.get("name", ""),
        "email": request.form.get("email", ""),
        "phone": request.form.get("phone", ""),
        "marketing_consent": request.form.get("marketing_consent") == "yes",
        "birthday_month": birthday_month,
        "birthday_day": birthday_day,
    }
    code = request.form.get("referral_code", "").strip()
    referrer = find_referrer(session, program, code) if code else None
    if code and referrer is None:
        return _join_page(program, form, note=_UNKNOWN_INVITATION + _JOIN_ANYWAY, status=422)
    try:
        enrollment = parse_enrollment({
            **form,
            "birthday": birthday_from_form(birthday_month, birthday_day),
            "referral_code": referrer.referral_code if referrer else None,
        })
        card = enroll_and_commit(program, enrollment, channel="referral" if referrer else "web",
                                 device=_device_id())
    except AlreadyEnrolled as error:
        return _join_page(program, form, referrer=referrer, error=error, already_enrolled=True, status=409)
    except ValidationError as error:
        return _join_page(program, form, referrer=referrer, error=error, status=422)
    return _with_device_cookie(redirect(url_for("customer.card_page", token=card.page_token, welcome=1), code=303))


@bp.get("/r/<code>")
def referral_link(code: str) -> Response:
    """A member's invitation link: their program's enrollment form, saying who invited the visitor.

    An unknown code still leads to joining, without the invitation: the form when there is one program to
    join, else the home page's list of programs (404 either way, so nobody mistakes the link for a good one).
    """
    session = get_session()
    referrer = find_referrer_anywhere(session, code)
    if referrer is not None:
        return _join_page(referrer.program, {}, referrer=referrer)
    program = _the_only_program()
    if program is not None:
        return _join_page(program, {}, note=_UNKNOWN_INVITATION + _JOIN_ANYWAY, status=404)
    abort(404, _UNKNOWN_INVITATION + _JOIN_FROM_HOME)


def _the_only_program() -> Program | None:
    """The program, when the server runs just one (a shop's own install): a lost visitor can only mean it."""
    programs = get_session().scalars(select(Program).order_by(Program.id).limit(2)).all()
    return programs[0] if len(programs) == 1 else None


def _join_page(
    program: Program,
    form: dict[str, Any],
    *,
    referrer: Card | None = None,
    error: DomainError | None = None,
    already_enrolled: bool = False,
    note: str | None = None,
    status: int = 200,
) -> Response:
    html = render_template(
        "join.html",
        program=program,
        consent_text=CONSENT_WORDING.format(program=program.name),
        birthday_purpose=BIRTHDAY_PURPOSE,
        month_names=MONTH_NAMES,
        form=form,
        referral={"code": referrer.referral_code, "by": display_name(referrer.customer.name)} if referrer else None,
        error=error,
        already_enrolled=already_enrolled,
        note=note,
    )
    return _with_device_cookie(Response(html, status=status))


def _device_id() -> str:
    """This browser's device id: the one its cookie carries, or a new one that the response will set."""
    if "device_id" not in g:
        sent = parse_device_id(request.cookies.get(DEVICE_COOKIE))
        g.device_id = sent or new_device_id()
        g.device_id_is_new = sent is None
    device: str = g.device_id
    return device


def _with_device_cookie(response: AnyResponse) -> AnyResponse:
    _device_id()
    if g.device_id_is_new:
        response.set_cookie(DEVICE_COOKIE, g.device_id, max_age=_DEVICE_COOKIE_MAX_AGE, httponly=True,
                            samesite="Lax", secure=current_app.config["SESSION_COOKIE_SECURE"])
    return response


def enroll_and_commit(
    program: Program,
    enrollment: EnrollmentRequest,
    *,
    channel: str,
    location_id: int | None = None,
    device: str | None = None,
) -> Card:
    """Enroll a customer and commit, for the form and the API alike.

    Of two enrollments of one email or phone racing each other, the loser hits the unique constraint and is
    told the card exists, like any second enrollment.
    """
    session = get_session()
    start_writing(session)
    try:
        card = enroll_customer(session, program, enrollment, channel=channel, location_id=location_id,
                               device=device)
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
    """The member's card: the QR to show at the till, balance and tier, the stamp card or cashback balance,
    the member-only offers running now, and their referral link to share. Reached only by its secret link.

    For a program with live codes the page carries no QR of its own: its script draws the live one from this
    browser's secret (static/js/card-code.js), so there is no static code on it to screenshot.

    After a purchase it also asks the NPS question (app/domain/nps.py); the email's links land here with a
    score ticked (`?nps=7`), which records nothing until the member presses Send.
    """
    session = get_session()
    card = _card_by_token(token)
    if card.status == "active" and referral_details_missing(card, _device_id()):
        # Once per card: cards enrolled before referral links, or at a till, get their code (and device) here.
        start_writing(session)
        complete_referral_details(session, card, _device_id())
        session.commit()
    preselect = request.args.get("nps")
    question = nps_question(session, card, utcnow(), preselect=preselect)
    note = None
    if request.args.get("nps_done") == "answered":
        note = "Thank you for your answer: it helps us do better."
    elif request.args.get("nps_done") == "dismissed":
        note = "No problem: we will not ask again for a while."
    elif preselect is not None and not question.due and question.closed_recently:
        note = "Thank you: you already answered this question recently, so there is nothing more to do."
    return _card_response(card, question, nps_note=note)


def _card_response(card: Card, question: NpsQuestion, *, nps_note: str | None = None,
                   nps_errors: Mapping[str, str] | None = None, nps_comment: str = "", status: int = 200) -> Response:
    session = get_session()
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
        member=member_card(session, card, utcnow()),
        referral_url=url_for("customer.referral_link", code=card.referral_code, _external=True)
        if card.status == "active" and card.referral_code else None,
        nps=question,
        nps_note=nps_note,
        nps_errors=nps_errors or {},
        nps_comment=nps_comment,
    )
    response = Response(html, status=status)
    # The page holds a bearer credential: keep it out of shared caches and history.
    response.headers["Cache-Control"] = "no-store"
    return _with_device_cookie(response)


@bp.post("/c/<token>/nps")
def card_nps_answer(token: str) -> BaseResponse:
    """The member's answer to the NPS question from their card page: a score 0-10 and an optional comment
    (Send), or "Not now" (action=dismiss), which closes the question without a score. Either way it is not asked
    again for the program's interval. A bad answer comes back on the card page (422) with nothing saved; an
    answer when the question is closed is not recorded (409)."""
    session = get_session()
    card = _card_by_token(token)
    if card.status == "revoked":
        abort(410, "This card has been revoked, so it cannot answer. Ask at the till for a new card.")
    if request.form.get("action") == "dismiss":
        start_writing(session)
        closed = dismiss_nps(session, card, utcnow())
        session.commit()
        return redirect(url_for("customer.card_page", token=token, nps_done="dismissed" if closed else None),
                        code=303)
    comment = request.form.get("comment", "")
    try:
        answer = read_nps_answer(request.form)
        start_writing(session)
        record_nps_answer(session, card, answer, utcnow())
    except ValidationError as error:
        question = nps_question(session, card, utcnow(), preselect=request.form.get("score"),
                                channel=request.form.get("channel"))
        return _card_response(card, question, nps_errors=error.extra.get("errors", {}), nps_comment=comment,
                              status=422)
    except NpsNotDue as error:
        session.rollback()
        return _card_response(card, nps_question(session, card, utcnow()), nps_note=error.detail, status=409)
    session.commit()
    return redirect(url_for("customer.card_page", token=token, nps_done="answered", _anchor="nps"), code=303)


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


@bp.route("/u/<token>", methods=["GET", "POST"])
def unsubscribe(token: str) -> Response:
    """Stop a member's offers and reminders from the link in any email we send them: no sign-in, the token in
    the link is the credential (app/domain/consent.py).

    GET only asks, because mail scanners and link previews fetch links nobody clicked; the page's button, or a
    mail app's RFC 8058 one-click POST, withdraws the consent and records how. Doing it twice is harmless.
    """
    session = get_session()
    customer = consent.customer_for_token(session, token, current_unsubscribe_key())
    done = already = False
    if request.method == "POST":
        via = "one_click" if is_one_click_unsubscribe() else "unsubscribe_link"
        already = not consent.unsubscribe(session, customer, via=via, now=utcnow())
        session.commit()
        done = True
    html = render_template("unsubscribe.html", program=customer.program, email=_masked_email(customer.email),
                           subscribed=customer.marketing_consent, done=done, already=already)
    response = Response(html)
    response.headers["Cache-Control"] = "no-store"
    return response


def _masked_email(email: str | None) -> str:
    """Enough of the address for its owner to recognise it ("a…@example.com"), not enough to harvest it."""
    if not email or "@" not in email:
        return "your email address"
    local, domain = email.rsplit("@", 1)
    return f"{local[0]}…@{domain}"
