"""What anyone may fetch: the home page, the published signing keys, program logos, a health check."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, render_template
from sqlalchemy import select, text

from app.db import get_session
from app.domain.programs import get_program
from app.domain.signing import jwks
from app.models import Program
from passes import square_logo_png

bp = Blueprint("public", __name__)


@bp.get("/")
def index() -> str:
    """The landing page: the programs a customer can join."""
    programs = get_session().scalars(select(Program).order_by(Program.name)).all()
    return render_template("index.html", programs=programs)


@bp.get("/.well-known/jwks.json")
def jwks_document():  # type: ignore[no-untyped-def]
    """The public keys that verify card codes (RFC 8037 OKP keys), for tills and partners offline."""
    response = jsonify(jwks(get_session()))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/healthz")
def health():  # type: ignore[no-untyped-def]
    """Liveness for a load balancer: the database answers."""
    get_session().execute(text("SELECT 1"))
    return jsonify(status="ok")


@bp.get("/p/<slug>/logo.png")
def program_logo(slug: str) -> Response:
    """The program's square logo, which Google Wallet fetches for the loyalty class (and anyone may see)."""
    program = get_program(get_session(), slug)
    png = square_logo_png(program.name, program.pass_background, program.pass_foreground, program.logo_png)
    response = Response(png, mimetype="image/png")
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
