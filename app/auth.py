"""Staff sessions: who is signed in, and the decorator that guards the cashier and manager pages.

The session cookie holds the staff id and a fingerprint of the password hash and the account's session epoch,
so changing a password or disabling the account ends every session of it, for good. Cookies are HttpOnly
and SameSite=Lax, and Secure whenever the request came over HTTPS (or SESSION_COOKIE_SECURE=1 says always).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, g, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from app.db import get_session
from app.domain.errors import Forbidden, Unauthorized
from app.models import Staff
from app.problems import wants_json

F = TypeVar("F", bound=Callable[..., Any])


class _SessionInterface(SecureCookieSessionInterface):
    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def _password_fingerprint(staff: Staff) -> str:
    # Changes with the password and with every disabling of the account, ending the sessions signed in before.
    return hashlib.sha256(f"{staff.session_epoch}:{staff.password_hash}".encode()).hexdigest()[:16]


def sign_in(staff: Staff) -> None:
    session.clear()  # a fresh session on sign-in: nothing from before carries over (session fixation)
    session["staff_id"] = staff.id
    session["staff_key"] = _password_fingerprint(staff)


def sign_out() -> None:
    session.clear()


def current_staff() -> Staff | None:
    """The signed-in, still active staff member of this request, or None."""
    if "current_staff" not in g:
        staff = None
        staff_id = session.get("staff_id")
        if isinstance(staff_id, int):
            staff = get_session().scalar(
                select(Staff).where(Staff.id == staff_id).options(joinedload(Staff.program))
            )
            if staff is None or not staff.active or session.get("staff_key") != _password_fingerprint(staff):
                staff = None
        g.current_staff = staff
    found: Staff | None = g.current_staff
    return found


def staff_required(*roles: str) -> Callable[[F], F]:
    """Only signed-in staff with one of `roles` (any role when none is named) get through.

    People who are not signed in are sent to the sign-in page (or get a 401 problem from JSON routes);
    signed-in staff of the wrong role get a 403.
    """

    def decorate(view: F) -> F:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            staff = current_staff()
            if staff is None:
                if wants_json():
                    raise Unauthorized("Your session has ended; sign in again.")
                return redirect(url_for("auth.sign_in_page", next=request.full_path.rstrip("?")))
            if roles and staff.role not in roles:
                raise Forbidden(f"This page is for {' and '.join(roles)}s; you are signed in as a {staff.role}.")
            return view(*args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorate


def init_app(app: Flask) -> None:
    app.session_interface = _SessionInterface()

    @app.context_processor
    def _staff() -> dict[str, Any]:
        return {"current_staff": current_staff()}
