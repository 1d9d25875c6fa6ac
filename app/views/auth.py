"""Staff sign-in and sign-out."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from app.auth import current_staff, sign_in, sign_out
from app.db import get_session
from app.domain.errors import RateLimited, Unauthorized
from app.domain.programs import authenticate_staff
from app.models import utcnow

bp = Blueprint("auth", __name__)


def _home_of(role: str) -> str:
    return url_for("manager.dashboard") if role == "manager" else url_for("cashier.scan_page")


def _safe_next(target: str | None) -> str | None:
    # Only a path on this site: never an absolute URL that would bounce a signed-in cashier elsewhere.
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return None


@bp.route("/login", methods=["GET", "POST"])
def sign_in_page() -> Response | str | tuple[str, int, dict[str, str]]:
    """The staff sign-in form; on success, off to the cashier or manager home (or where they were going)."""
    staff = current_staff()
    if request.method == "GET":
        if staff is not None:
            return redirect(_home_of(staff.role))
        return render_template("login.html", email="", error=None, next=request.args.get("next", ""))
    email = request.form.get("email", "")
    session = get_session()
    try:
        staff = authenticate_staff(session, email, request.form.get("password", ""),
                                   source=request.remote_addr or "unknown", now=utcnow())
    except (Unauthorized, RateLimited) as error:
        session.commit()  # the attempt counts, even though it failed
        page = render_template("login.html", email=email, error=error.detail, next=request.form.get("next", ""))
        headers = {"Retry-After": str(error.extra["retry_after"])} if "retry_after" in error.extra else {}
        return page, error.status, headers
    session.commit()
    sign_in(staff)
    return redirect(_safe_next(request.form.get("next")) or _home_of(staff.role), code=303)


@bp.post("/logout")
def sign_out_page() -> Response:
    """Sign out and return to the sign-in page."""
    sign_out()
    return redirect(url_for("auth.sign_in_page"), code=303)
