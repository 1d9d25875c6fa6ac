"""The manager's dashboard (/manager), program settings and staff."""

from __future__ import annotations

from flask import Blueprint, render_template

from app.auth import staff_required

bp = Blueprint("manager", __name__, url_prefix="/manager")


@bp.get("")
@staff_required("manager")
def dashboard() -> str:
    """Enrollment and activity statistics for the manager's program."""
    return render_template("manager.html")
