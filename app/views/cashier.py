"""The cashier's scan page (/cashier) and the JSON routes its script calls (/cashier/api).

The JSON routes do what the API's till routes do, through the same helpers (app/views/till.py), but for a
signed-in member of staff: the program is theirs, the purchases carry their staff id, and being cookie-
authenticated they need the page's CSRF token in an X-CSRF-Token header (app/security.py checks it).
Refusals are problem JSON (the blueprint is listed in app.problems.JSON_BLUEPRINTS).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, make_response, render_template

from app.auth import current_staff, staff_required
from app.db import begin_reading, get_session
from app.domain.cards import display_name
from app.domain.purchases import Actor, purchase_json, recent_purchases
from app.models import Purchase, Staff
from app.security import CONTENT_SECURITY_POLICY
from app.views import till

bp = Blueprint("cashier", __name__, url_prefix="/cashier")
api_bp = Blueprint("cashier_api", __name__, url_prefix="/cashier/api")

# The barcode polyfill decodes with WebAssembly, and Chromium compiles none unless script-src allows
# 'wasm-unsafe-eval' (which permits compiling WebAssembly only: JavaScript eval stays refused). Only this
# page gets it; every other page keeps the plain policy.
SCAN_PAGE_CSP = CONTENT_SECURITY_POLICY.replace("script-src 'self'", "script-src 'self' 'wasm-unsafe-eval'", 1)
RECENT_PURCHASES_SHOWN = 10


def _staff() -> Staff:
    staff = current_staff()
    assert staff is not None, "only reached behind staff_required"
    return staff


def _actor(staff: Staff) -> Actor:
    # Staff are not tied to a location, so a till purchase names who rang it up and no location.
    return Actor(staff_id=staff.id)


@bp.get("")
@staff_required("cashier", "manager")
def scan_page() -> Response:
    """The till for a cashier or manager: scan a card, enter the basket, confirm, void a mistake."""
    response = make_response(render_template("cashier.html", program=_staff().program))
    response.headers["Content-Security-Policy"] = SCAN_PAGE_CSP
    return response


@api_bp.before_request
def _read_until_writing() -> None:
    # As in the API: reads take no write lock on SQLite; purchases and voids take it only for their writes.
    begin_reading(get_session())


@api_bp.post("/scans")
@staff_required("cashier", "manager")
def scan() -> Response:
    """The masked name, tier and balance of the scanned card, or why this program refuses it."""
    return jsonify(till.scan_card(_staff().program))


@api_bp.post("/quotes")
@staff_required("cashier", "manager")
def quote() -> Response:
    """The quote's lines, amount due and points to earn for the scanned card and basket; writes nothing."""
    return jsonify(till.quote(_staff().program))


@api_bp.post("/purchases")
@staff_required("cashier", "manager")
def create_purchase() -> Response:
    """Commit the quoted purchase once per Idempotency-Key, attributed to the signed-in member of staff."""
    staff = _staff()
    return till.record_purchase(staff.program, _actor(staff))


@api_bp.post("/purchases/<id:purchase_id>/void")
@staff_required("cashier", "manager")
def void(purchase_id: int) -> Response:
    """Void a purchase of this program: its points and spend are reversed exactly, once."""
    staff = _staff()
    return jsonify(till.void(staff.program, purchase_id, _actor(staff)))


@api_bp.get("/purchases")
@staff_required("cashier", "manager")
def recent() -> Response:
    """The signed-in member of staff's latest purchases, newest first, for the till's void list."""
    staff = _staff()
    currency = staff.program.currency
    purchases = recent_purchases(get_session(), staff.program, staff_id=staff.id, limit=RECENT_PURCHASES_SHOWN)
    return jsonify({"purchases": [_recent_json(purchase, currency) for purchase in purchases]})


def _recent_json(purchase: Purchase, currency: str) -> dict[str, Any]:
    return {
        **purchase_json(purchase, currency),
        "status": purchase.status,
        "created_at": purchase.created_at.isoformat(),
        "card": {"serial": purchase.card.serial, "display_name": display_name(purchase.card.customer.name)},
    }
