"""The manager's data exports (/manager/export): the program's members, purchases and points ledger as CSV
downloads, purchases and ledger optionally for a range of days.

Like the other manager pages, an export holds only the signed-in manager's own program, taken from the session's
staff record, never from the URL. The download is streamed a page of rows at a time (app/domain/exports.py), so a
large program never sits in the server's memory. Bad days come back as the page (422) with a message next to the
day that was wrong, before a byte of CSV is sent.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Blueprint, Response, render_template, request, stream_with_context

from app.auth import current_staff, staff_required
from app.db import get_session
from app.domain.errors import ValidationError
from app.domain.exports import EXPORT_KINDS, export_csv, export_filename, parse_date_range
from app.models import Program, utcnow

bp = Blueprint("manager_exports", __name__, url_prefix="/manager")

_KINDS = ",".join(EXPORT_KINDS)


def _program() -> Program:
    staff = current_staff()
    assert staff is not None  # staff_required let the request through
    return staff.program


@bp.get("/export")
@staff_required("manager")
def export_page() -> str:
    """The three downloads (members; purchases and the ledger with an optional range of days) and what each holds."""
    return _export_page()


@bp.get(f"/export/<any({_KINDS}):kind>.csv")
@staff_required("manager")
def download(kind: str) -> Response | tuple[str, int]:
    """The program's `kind` export as a CSV attachment (program-kind-YYYY-MM-DD.csv), streamed as it is read."""
    program = _program()
    session = get_session()
    try:
        dates = parse_date_range(request.args.get("from"), request.args.get("to"))
        pieces = export_csv(session, program, kind, dates)
    except ValidationError as error:
        errors: dict[str, str] = error.extra.get("errors") or {error.field or "from": error.detail}
        return _export_page(kind=kind, values=request.args.to_dict(), errors=errors, summary=error.detail), 422
    filename = export_filename(program, kind, utcnow().date())
    return Response(
        stream_with_context(pieces),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


def _export_page(*, kind: str = "", values: Mapping[str, str] | None = None,
                 errors: Mapping[str, str] | None = None, summary: str = "") -> str:
    return render_template("manager_export.html", program=_program(), failed=kind, values=values or {},
                           errors=errors or {}, summary=summary)
