"""The cashier's scan page (/cashier) and the JSON routes its script calls."""

from __future__ import annotations

from flask import Blueprint, render_template

from app.auth import staff_required

bp = Blueprint("cashier", __name__, url_prefix="/cashier")


@bp.get("")
@staff_required("cashier", "manager")
def scan_page() -> str:
    """The till: scan a card, enter the basket, confirm."""
    return render_template("cashier.html")
