"""Security headers on every response and CSRF tokens on every form."""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, Response, abort, request, session

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token() -> str:
    """The session's CSRF token, made on first use; templates put it in every form."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    token: str = session["csrf"]
    return token


def is_one_click_unsubscribe() -> bool:
    """Whether the request is a mail app's one-click unsubscribe (RFC 8058): a POST of "List-Unsubscribe=One-Click"."""
    return request.method == "POST" and request.form.get("List-Unsubscribe") == "One-Click"


def _check_csrf() -> None:
    # The JSON API and Apple's web service authenticate with tokens, not cookies, so they have nothing to forge.
    if request.method in _SAFE_METHODS or request.path.startswith(("/api/", "/wallet/")):
        return
    # A mail app's RFC 8058 one-click unsubscribe has no page and no session to carry a token; the secret in the
    # link it POSTs to is the credential, and all it can do is stop that one customer's marketing email.
    if request.endpoint == "customer.unsubscribe" and is_one_click_unsubscribe():
        return
    # Forms send the token as a field; the pages' scripts send it in a header, as fetch() has no form.
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
    expected = session.get("csrf", "")
    # As bytes: compare_digest raises TypeError on a str with non-ASCII characters, which anyone can send.
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(400, "The form expired or was sent from another site. Reload the page and try again.")


def _add_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
    return response


def init_app(app: Flask) -> None:
    app.before_request(_check_csrf)
    app.after_request(_add_headers)
    app.jinja_env.globals["csrf_token"] = csrf_token
