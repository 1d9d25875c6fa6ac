"""The manager's pages: the dashboard (/manager), the program's rules and their preview over the last 30 days
(/manager/settings), how its wallet cards look (/manager/wallet) and its staff.

Every page shows and changes only the signed-in manager's own program: the program always comes from the
session's staff record, never from the URL or the form.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from app.analytics import fresh_rollups
from app.auth import current_staff, staff_required
from app.db import get_session
from app.domain.analytics import default_range, parse_range
from app.domain.analytics_report import DATASETS, build_report, dataset_rows
from app.domain.dashboard import display_money, latest_enrollments
from app.domain.errors import Conflict, ValidationError
from app.domain.mechanics_facts import program_mechanics
from app.domain.pass_look import (
    COLOUR_FIELDS,
    LOGO_TOO_LARGE,
    MAX_LOGO_BYTES,
    MAX_LOGO_SIDE,
    READABLE_CONTRAST,
    contrast_ratio,
    pass_look_form_values,
    read_pass_look,
    save_pass_look,
)
from app.domain.programs import create_staff, list_staff, set_staff_active
from app.domain.rotating_codes import MAX_PERIOD_SECONDS, MIN_PERIOD_SECONDS
from app.domain.rules import rules_from_json
from app.domain.settings import (
    KIND_HINTS,
    KIND_LABELS,
    ROUNDING_LABELS,
    bonus_unit_label,
    engagement_form_values,
    kind_change_warning,
    mechanics_form_values,
    rules_form_values,
    rules_page_from_form,
    save_rules,
)
from app.domain.simulation import WINDOW_DAYS, RulesPreview, preview_rule_change
from app.models import Program, Staff, utcnow
from app.views.dashboard_page import csv_response, template_context

bp = Blueprint("manager", __name__, url_prefix="/manager")

# The Wallet form carries a logo, so a manager's post of it may be larger than the app's MAX_CONTENT_LENGTH: the
# logo's own limit plus room for the other fields and the multipart framing.
WALLET_FORM_LIMIT = MAX_LOGO_BYTES + 64 * 1024


def _manager() -> Staff:
    staff = current_staff()
    assert staff is not None  # staff_required let the request through
    return staff


@bp.get("")
@staff_required("manager")
def dashboard() -> tuple[str, int]:
    """The program's figures over a range of days (the last 90 by default): sales, enrollments, retention and
    churn, points, members by segment and tier, coupons, referrals, NPS, and the newest members."""
    session = get_session()  # a GET: read-only, so on SQLite the figures take no write lock
    program = _manager().program
    now = utcnow()
    error: ValidationError | None = None
    try:
        rng = parse_range(request.args.get("from"), request.args.get("to"), today=now.date())
    except ValidationError as refused:
        error, rng = refused, default_range(now.date())
    fresh_rollups(program.id, reader=session)
    report = build_report(session, program, rng, now)
    page = render_template(
        "manager.html",
        program=program,
        latest=latest_enrollments(session, program),
        error=error,
        form_from=request.args.get("from", rng.start.isoformat())[:10] if error else rng.start.isoformat(),
        form_to=request.args.get("to", rng.end.isoformat())[:10] if error else rng.end.isoformat(),
        join_url=url_for("customer.join", slug=program.slug, _external=True),
        **template_context(report),
    )
    return page, 400 if error else 200


@bp.get("/analytics/<name>.csv")
@staff_required("manager")
def analytics_csv(name: str) -> Response | tuple[str, int, dict[str, str]]:
    """One chart's or table's data over the range the dashboard showed, as a CSV download."""
    if name not in DATASETS:
        known = ", ".join(DATASETS)
        return f"There is no {name!r} download; there are: {known}.\n", 404, {"Content-Type": "text/plain"}
    session = get_session()
    program = _manager().program
    now = utcnow()
    try:
        rng = parse_range(request.args.get("from"), request.args.get("to"), today=now.date())
    except ValidationError as refused:
        return f"{refused}\n", 400, {"Content-Type": "text/plain; charset=utf-8"}
    fresh_rollups(program.id, reader=session)
    report = build_report(session, program, rng, now)
    filename = f"{program.slug}-{name}-{rng.start.isoformat()}-to-{rng.end.isoformat()}.csv"
    return csv_response(dataset_rows(report, name), filename)


@bp.route("/settings", methods=["GET", "POST"])
@staff_required("manager")
def settings() -> Response | str | tuple[str, int]:
    """The program's rules: what members collect (points, stamps or cashback), earning, tiers, bonuses,
    redemption, the mechanics (second visit, stamp card, cashback, referrals, birthday bonus, expiry), and the
    member segments and NPS question (who counts as new, lapsed or VIP; how often members are asked).

    "Save rules" stores them. "Preview" (action=preview) shows what the rules in the form would have given over
    the last 30 days of committed purchases, next to the rules as they are, and saves nothing. On an error
    nothing is saved and each bad field says why.
    """
    session = get_session()
    program = _manager().program
    if request.method == "GET":
        try:
            values, summary = mechanics_form_values(program_mechanics(program), program.currency), ""
        except ValidationError as error:  # rules stored by hand or by an older version, which a save replaces
            values = {**rules_form_values(rules_from_json(program.rules), program.currency),
                      "program_kind": program.kind}
            summary = f"The stored rules could not be read in full ({error.detail}) Saving this form replaces them."
        values |= engagement_form_values(program.rules, program.currency)
        return _settings_page(program, values, {}, summary=summary)
    previewing = request.form.get("action") == "preview"
    try:
        page = rules_page_from_form(request.form, program.currency, current_kind=program.kind, stored=program.rules)
        proposed = page.mechanics
        if previewing:
            preview = preview_rule_change(session, program, program_mechanics(program), proposed, now=utcnow())
            warning = kind_change_warning(session, program, proposed.program_type)
            return _settings_page(program, request.form.to_dict(), {}, preview=preview, kind_warning=warning)
        save_rules(session, program, proposed, kind_change_confirmed=bool(request.form.get("confirm_kind_change")),
                   engagement=page.engagement)
    except ValidationError as error:
        # The summary says what happened; each field's own message sits next to it.
        summary = error.detail.replace("Nothing was saved:", "Nothing to preview yet:") if previewing else error.detail
        return _settings_page(program, request.form.to_dict(), error.extra.get("errors", {}), summary=summary,
                              confirm_kind_change=bool(error.extra.get("confirm_kind_change"))), 422
    session.commit()
    flash("Rules saved. They apply from the next purchase.", "notice")
    return redirect(url_for("manager.settings"), code=303)


def _settings_page(program: Program, values: dict[str, str], errors: dict[str, str], summary: str = "", *,
                   preview: RulesPreview | None = None, kind_warning: str | None = None,
                   confirm_kind_change: bool = False) -> str:
    rows = sorted({int(key.rsplit("_", 1)[1]) for key in values if key.startswith("tier_name_")})
    # The VIP tier is chosen among the tiers as the form shows them.
    tier_names = [values[f"tier_name_{row}"].strip() for row in rows if values.get(f"tier_name_{row}", "").strip()]
    chosen = values.get("program_kind", "")
    kind = chosen if chosen in KIND_LABELS else program.kind  # the bonuses' unit follows the kind in the form
    return render_template(
        "manager_settings.html", program=program, values=values, errors=errors, summary=summary, tier_rows=rows,
        rounding_labels=ROUNDING_LABELS, kind_labels=KIND_LABELS, kind_hints=KIND_HINTS, tier_names=tier_names,
        bonus_unit=bonus_unit_label(kind, program.currency), preview=preview,
        window_days=WINDOW_DAYS, kind_warning=kind_warning,
        # Asked for when a save found balances the new kind does not earn, and offered with a preview's warning.
        ask_kind_confirmation=confirm_kind_change or bool(kind_warning),
        money=lambda minor: display_money(minor, program.currency),
    )


@bp.route("/wallet", methods=["GET", "POST"])
@staff_required("manager")
def wallet() -> Response | str | tuple[str, int]:
    """How the program's wallet cards look (colours, logo) and whether their code rotates. A change republishes
    every member's pass; nothing is saved on an error."""
    session = get_session()
    program = _manager().program
    if request.method == "GET":
        return _wallet_page(program, pass_look_form_values(program), {})
    upload = request.files.get("logo")
    # One byte over the limit is enough to know it is over.
    logo = upload.stream.read(MAX_LOGO_BYTES + 1) if upload is not None and upload.filename else None
    try:
        look = read_pass_look(request.form, logo)
    except ValidationError as error:
        errors: dict[str, str] = error.extra.get("errors", {})
        summary = error.detail
        if logo and "logo" not in errors:
            summary += " Your logo was fine, but browsers forget a chosen file: choose it again."
        sent = request.form.to_dict()
        values = {**pass_look_form_values(program), "rotating_codes": "", "remove_logo": "",
                  # A colour field shows a valid colour or none: a refused one is shown as the saved one.
                  **{name: value for name, value in sent.items() if not (name in COLOUR_FIELDS and name in errors)}}
        return _wallet_page(program, values, errors, summary=summary), 413 if error.extra.get("too_large") else 422
    changed = save_pass_look(session, program, look)
    session.commit()
    flash("Saved. Cards already in members' wallets update shortly." if changed else "Saved (nothing had changed).",
          "notice")
    return redirect(url_for("manager.wallet"), code=303)


@bp.url_value_preprocessor
def _allow_logo_uploads(endpoint: str | None, values: dict[str, object] | None) -> None:
    """Raise the request size limit for a manager posting the Wallet form, and for nothing else.

    It must happen before the app's CSRF check reads the form, and URL value preprocessors are the one hook that
    runs before every before_request function (Flask's `preprocess_request`).
    """
    if endpoint == "manager.wallet" and request.method == "POST":
        staff = current_staff()
        if staff is not None and staff.role == "manager":
            request.max_content_length = WALLET_FORM_LIMIT


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(error: RequestEntityTooLarge) -> tuple[str, int]:
    """A Wallet form over WALLET_FORM_LIMIT gets the form back with the logo's message; other pages the usual one."""
    staff = current_staff()
    if request.endpoint != "manager.wallet" or staff is None or staff.role != "manager":
        return render_template("error.html", title=error.name, detail=error.description), 413
    return _wallet_page(staff.program, pass_look_form_values(staff.program), {"logo": LOGO_TOO_LARGE},
                        summary="Nothing was saved: the logo file is too large."), 413


def _wallet_page(program: Program, values: dict[str, str], errors: dict[str, str], summary: str = "") -> str:
    return render_template(
        "manager_wallet.html", program=program, values=values, errors=errors, summary=summary,
        # The logo route is cached for an hour; the revision in the URL shows a new logo at once.
        logo_url=url_for("public.program_logo", slug=program.slug, v=program.pass_revision),
        low_contrast=contrast_ratio(program.pass_foreground, program.pass_background) < READABLE_CONTRAST,
        min_period=MIN_PERIOD_SECONDS, max_period=MAX_PERIOD_SECONDS, max_logo_kb=MAX_LOGO_BYTES // 1024,
        max_logo_side=MAX_LOGO_SIDE,
    )


@bp.get("/staff")
@staff_required("manager")
def staff() -> str:
    """The program's staff, with a form to add a cashier and buttons to disable or re-enable one."""
    return _staff_page({}, {})


@bp.post("/staff")
@staff_required("manager")
def add_cashier() -> Response | tuple[str, int]:
    """Add a cashier with an initial password; they sign in at /login and can change nothing but purchases."""
    session = get_session()
    email = request.form.get("email", "")
    try:
        cashier = create_staff(session, _manager().program, email=email, role="cashier",
                               password=request.form.get("password", ""))
    except (ValidationError, Conflict) as error:
        field = error.field if isinstance(error, ValidationError) and error.field else "email"
        return _staff_page({"email": email}, {field: error.detail}), error.status
    session.commit()
    flash(f"{cashier.email} can now sign in as a cashier.", "notice")
    return redirect(url_for("manager.staff"), code=303)


@bp.post("/staff/<id:staff_id>/disable")
@staff_required("manager")
def disable_staff(staff_id: int) -> Response:
    """Disable a member of staff: they cannot sign in, and their open sessions end."""
    return _set_active(staff_id, active=False)


@bp.post("/staff/<id:staff_id>/enable")
@staff_required("manager")
def enable_staff(staff_id: int) -> Response:
    """Let a disabled member of staff sign in again."""
    return _set_active(staff_id, active=True)


def _set_active(staff_id: int, *, active: bool) -> Response:
    session = get_session()
    manager = _manager()
    member = set_staff_active(session, manager.program, staff_id, active=active, by=manager)
    session.commit()
    flash(f"{member.email} {'can sign in again' if active else 'is disabled and signed out'}.", "notice")
    return redirect(url_for("manager.staff"), code=303)


def _staff_page(values: dict[str, str], errors: dict[str, str]) -> str:
    manager = _manager()
    return render_template("manager_staff.html", program=manager.program, me=manager,
                           members=list_staff(get_session(), manager.program), values=values, errors=errors)
