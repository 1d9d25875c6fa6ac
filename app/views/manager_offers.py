"""The manager's pages for what members are given: coupons and promo codes (/manager/coupons), member-only offers
(/manager/offers) and the rewards catalogue (/manager/rewards).

Like the other manager pages, each shows and changes only the signed-in manager's own program, taken from the
session's staff record, never from the URL or the form. A bad form comes back with a message next to every bad
field (422) and nothing saved.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Blueprint, Response, flash, redirect, render_template, request, stream_with_context, url_for
from werkzeug.wrappers import Response as BaseResponse

from app.auth import current_staff, staff_required
from app.db import get_session
from app.domain.coupons import (
    DISCOUNT_TYPES,
    MAX_BATCH,
    batch_csv,
    create_batch,
    create_coupon,
    create_offer,
    create_reward,
    end_offer,
    get_batch,
    list_coupons,
    list_offers,
    list_rewards,
    set_batch_active,
    set_coupon_active,
    set_reward_active,
)
from app.domain.dashboard import display_money
from app.domain.errors import ValidationError
from app.domain.segments import SegmentSettings, program_segment_settings, segment_descriptions
from app.models import Program, utcnow

bp = Blueprint("manager_offers", __name__, url_prefix="/manager")

# The coupons page has two forms with the same fields; the batch form's are prefixed so ids stay unique.
BATCH = "batch_"


def _program() -> Program:
    staff = current_staff()
    assert staff is not None  # staff_required let the request through
    return staff.program


def _errors(error: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = error.extra.get("errors") or {error.field or "form": error.detail}
    return errors


# --- coupons -------------------------------------------------------------------------------------------------------


@bp.get("/coupons")
@staff_required("manager")
def coupons() -> str:
    """The program's promo codes with their uses, its batches of single-use codes with a CSV link each, and the
    forms to make either."""
    return _coupons_page()


@bp.post("/coupons")
@staff_required("manager")
def create_promo_code() -> BaseResponse | tuple[str, int]:
    """Create a reusable promo code such as SPRING10."""
    session = get_session()
    try:
        coupon = create_coupon(session, _program(), request.form, now=utcnow())
    except ValidationError as error:
        return _coupons_page(code_values=request.form.to_dict(), code_errors=_errors(error),
                             summary=error.detail), 422
    session.commit()
    flash(f"{coupon.code} is ready: customers can use it at the till.", "notice")
    return redirect(url_for("manager_offers.coupons"), code=303)


@bp.post("/coupons/batches")
@staff_required("manager")
def create_code_batch() -> BaseResponse | tuple[str, int]:
    """Make a batch of single-use codes (up to MAX_BATCH) to print or mail; download them as CSV from the list."""
    session = get_session()
    form = {name.removeprefix(BATCH): value for name, value in request.form.items() if name.startswith(BATCH)}
    try:
        batch = create_batch(session, _program(), form, now=utcnow())
    except ValidationError as error:
        return _coupons_page(batch_values=request.form.to_dict(),
                             batch_errors={BATCH + name: message for name, message in _errors(error).items()},
                             summary=error.detail), 422
    session.commit()
    flash(f"Made {batch.count:,} single-use codes for {batch.label}. Download them as CSV from the list.", "notice")
    return redirect(url_for("manager_offers.coupons", _anchor="batches"), code=303)


@bp.get("/coupons/batches/<id:batch_id>.csv")
@staff_required("manager")
def export_batch(batch_id: int) -> Response:
    """A batch's codes as CSV (code, terms, used yes/no, ...), streamed as it is read."""
    program = _program()
    batch = get_batch(get_session(), program, batch_id)  # a 404 before the first byte, not a broken download
    filename = f"{program.slug}-codes-{batch.id}.csv"
    return Response(
        stream_with_context(batch_csv(get_session(), batch, program.currency)),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


@bp.post("/coupons/<id:coupon_id>/deactivate")
@staff_required("manager")
def deactivate_coupon(coupon_id: int) -> BaseResponse:
    """Switch a promo code off: the till refuses it from now on."""
    return _set_coupon_active(coupon_id, active=False)


@bp.post("/coupons/<id:coupon_id>/reactivate")
@staff_required("manager")
def reactivate_coupon(coupon_id: int) -> BaseResponse:
    """Switch a promo code on again."""
    return _set_coupon_active(coupon_id, active=True)


def _set_coupon_active(coupon_id: int, *, active: bool) -> BaseResponse:
    session = get_session()
    coupon = set_coupon_active(session, _program(), coupon_id, active=active)
    session.commit()
    flash(f"{coupon.code} {'works again' if active else 'is switched off: the till refuses it'}.", "notice")
    return redirect(url_for("manager_offers.coupons"), code=303)


@bp.post("/coupons/batches/<id:batch_id>/deactivate")
@staff_required("manager")
def deactivate_batch(batch_id: int) -> BaseResponse:
    """Switch off every code of a batch (a leaked flyer): the till refuses them from now on."""
    return _set_batch_active(batch_id, active=False)


@bp.post("/coupons/batches/<id:batch_id>/reactivate")
@staff_required("manager")
def reactivate_batch(batch_id: int) -> BaseResponse:
    """Switch every code of a batch on again."""
    return _set_batch_active(batch_id, active=True)


def _set_batch_active(batch_id: int, *, active: bool) -> BaseResponse:
    session = get_session()
    batch = set_batch_active(session, _program(), batch_id, active=active)
    session.commit()
    flash(f"The codes of {batch.label} {'work again' if active else 'are switched off: the till refuses them'}.",
          "notice")
    return redirect(url_for("manager_offers.coupons", _anchor="batches"), code=303)


def _coupons_page(
    *,
    code_values: Mapping[str, str] | None = None,
    code_errors: Mapping[str, str] | None = None,
    batch_values: Mapping[str, str] | None = None,
    batch_errors: Mapping[str, str] | None = None,
    summary: str = "",
) -> str:
    program = _program()
    return render_template(
        "manager_coupons.html", program=program, listing=list_coupons(get_session(), program),
        code_values=code_values or {"discount_type": "percent"}, code_errors=code_errors or {},
        batch_values=batch_values or {BATCH + "discount_type": "percent"}, batch_errors=batch_errors or {},
        summary=summary, discount_types=DISCOUNT_TYPES, max_batch=MAX_BATCH,
    )


# --- offers --------------------------------------------------------------------------------------------------------


@bp.get("/offers")
@staff_required("manager")
def offers() -> str:
    """The program's member-only offers, running, upcoming and ended, and the form to add one."""
    return _offers_page()


@bp.post("/offers")
@staff_required("manager")
def create_member_offer() -> BaseResponse | tuple[str, int]:
    """Create a member-only offer; every member's card and pass shows it while it runs."""
    session = get_session()
    try:
        offer = create_offer(session, _program(), request.form, now=utcnow())
    except ValidationError as error:
        return _offers_page(request.form.to_dict(), _errors(error), summary=error.detail), 422
    session.commit()
    flash(f"{offer.title} is saved. Members' cards show it while it runs.", "notice")
    return redirect(url_for("manager_offers.offers"), code=303)


@bp.post("/offers/<id:offer_id>/end")
@staff_required("manager")
def end_member_offer(offer_id: int) -> BaseResponse:
    """End an offer now: it leaves the cards and the till (an upcoming one never starts)."""
    session = get_session()
    offer, ended = end_offer(session, _program(), offer_id, now=utcnow())
    session.commit()
    flash(f"{offer.title} has ended." if ended else f"{offer.title} had already ended.", "notice")
    return redirect(url_for("manager_offers.offers"), code=303)


def _offers_page(values: Mapping[str, str] | None = None, errors: Mapping[str, str] | None = None,
                 summary: str = "") -> str:
    program = _program()
    try:
        segment_settings = program_segment_settings(program)
    except ValidationError:  # segment settings stored by hand that cannot be read: describe the defaults
        segment_settings = SegmentSettings()
    return render_template(
        "manager_offers.html", program=program, listing=list_offers(get_session(), program, now=utcnow()),
        values=values or {"discount_type": "percent"}, errors=errors or {}, summary=summary,
        discount_types=DISCOUNT_TYPES, segments=segment_descriptions(segment_settings),
    )


# --- rewards -------------------------------------------------------------------------------------------------------


@bp.get("/rewards")
@staff_required("manager")
def rewards() -> str:
    """The rewards catalogue (what members can have for their points at the till) and the form to add one."""
    return _rewards_page()


@bp.post("/rewards")
@staff_required("manager")
def create_catalogue_reward() -> BaseResponse | tuple[str, int]:
    """Add a reward to the catalogue: the till offers it to members with enough points."""
    session = get_session()
    try:
        reward = create_reward(session, _program(), request.form, now=utcnow())
    except ValidationError as error:
        return _rewards_page(request.form.to_dict(), _errors(error), summary=error.detail), 422
    session.commit()
    flash(f"{reward.name} is in the catalogue for {reward.points_cost:,} points.", "notice")
    return redirect(url_for("manager_offers.rewards"), code=303)


@bp.post("/rewards/<id:reward_id>/deactivate")
@staff_required("manager")
def deactivate_reward(reward_id: int) -> BaseResponse:
    """Take a reward out of the catalogue; the till no longer offers it."""
    return _set_reward_active(reward_id, active=False)


@bp.post("/rewards/<id:reward_id>/reactivate")
@staff_required("manager")
def reactivate_reward(reward_id: int) -> BaseResponse:
    """Put a reward back in the catalogue."""
    return _set_reward_active(reward_id, active=True)


def _set_reward_active(reward_id: int, *, active: bool) -> BaseResponse:
    session = get_session()
    reward = set_reward_active(session, _program(), reward_id, active=active)
    session.commit()
    flash(f"{reward.name} is {'back in' if active else 'out of'} the catalogue.", "notice")
    return redirect(url_for("manager_offers.rewards"), code=303)


def _rewards_page(values: Mapping[str, str] | None = None, errors: Mapping[str, str] | None = None,
                  summary: str = "") -> str:
    program = _program()
    return render_template(
        "manager_rewards.html", program=program, rewards=list_rewards(get_session(), program),
        values=values or {}, errors=errors or {}, summary=summary,
        money=lambda minor: display_money(minor, program.currency),
    )
