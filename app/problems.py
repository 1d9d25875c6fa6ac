"""Where every refusal becomes an answer: RFC 9457 problem JSON under /api, an HTML page elsewhere."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from app.domain.errors import DomainError

PROBLEM_TYPE_BASE = "https://loyalty.invalid/problems/"
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
               429: "rate_limited"}


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> Response:
    body = {"type": PROBLEM_TYPE_BASE + code, "title": title, "status": status, "detail": detail, "code": code}
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    if status == 401:
        scheme = "ApplePass" if request.blueprint == "apple_wallet" else "Bearer"
        response.headers["WWW-Authenticate"] = f'{scheme} realm="api"'
    return response


def wants_json() -> bool:
    """API callers and the pages' own scripts get problem JSON; people get an HTML page."""
    return request.path.startswith(("/api/", "/cashier/api/")) or request.blueprint in JSON_BLUEPRINTS


# Blueprints whose every route answers JSON (the scan page's script calls them).
JSON_BLUEPRINTS: set[str] = {"cashier_api", "apple_wallet"}


def init_app(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def _domain_error(error: DomainError) -> Any:
        if wants_json():
            response = problem(error.status, error.code, error.title, error.detail, **error.extra)
        else:
            response = app.make_response(
                (render_template("error.html", title=error.title, detail=error.detail), error.status)
            )
        if "retry_after" in error.extra:
            response.headers["Retry-After"] = str(error.extra["retry_after"])
        return response

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Any:
        status = error.code or 500
        if wants_json():
            code = _HTTP_CODES.get(status, "http_error")
            response = problem(status, code, error.name, error.description or error.name)
            if isinstance(error, MethodNotAllowed) and error.valid_methods:
                response.headers["Allow"] = ", ".join(error.valid_methods)
            return response
        return render_template("error.html", title=error.name, detail=error.description), status

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Any:
        app.logger.exception("Unhandled error", exc_info=error)
        if wants_json():
            return problem(500, "internal_error", "Internal error",
                           "Something went wrong on our side; nothing was changed. Try again.")
        return render_template("error.html", title="Something went wrong",
                               detail="Nothing was changed. Please try again."), 500
