"""Apple's PassKit web service, for the Wallet app on members' iPhones, at the passes' webServiceURL.

Every endpoint of Apple's reference: register and unregister a device for a pass's updates, the serials of a
device's passes changed since a tag, the latest version of a pass (with Last-Modified, and 304 when unchanged),
and the log Wallet posts its errors to. Devices authenticate a pass with `Authorization: ApplePass <token>`, the
token inside that pass; the changed-serials call carries none, as in Apple's reference.
"""

from __future__ import annotations

from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, abort, current_app, jsonify, request, url_for

from app.db import get_session, start_writing
from app.domain.apple_wallet import (
    authenticated_card,
    card_pass,
    pass_last_modified,
    register_device,
    unregister_device,
    updated_serials,
)
from app.domain.cards import card_code
from app.domain.member_card import pass_offers
from app.keys import get_keys
from app.models import Card, utcnow
from app.views.till import json_body
from app.wallet import WEB_SERVICE_PATH, apple_pass_config, get_apple_wallet
from passes import PKPASS_MIME_TYPE, PassDescriptionError, build_pkpass

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment
    from werkzeug.datastructures import Headers

bp = Blueprint("apple_wallet", __name__, url_prefix=WEB_SERVICE_PATH)

LOG_LINES_KEPT = 50
LOG_LINE_LENGTH = 1000

_REGISTRATION = "/v1/devices/<device_id>/registrations/<pass_type>/<serial>"


@bp.post(_REGISTRATION)
def register(device_id: str, pass_type: str, serial: str) -> tuple[str, int]:
    """A device asks to hear about the pass's updates: 201 when new, 200 when it was registered already."""
    session = get_session()
    start_writing(session)
    card = _card(pass_type, serial)
    created = register_device(session, card, device_id, json_body().get("pushToken"), utcnow())
    session.commit()
    return "", 201 if created else 200


@bp.delete(_REGISTRATION)
def unregister(device_id: str, pass_type: str, serial: str) -> tuple[str, int]:
    """The pass was removed from the device, or its updates turned off."""
    session = get_session()
    start_writing(session)
    unregister_device(session, _card(pass_type, serial), device_id)
    session.commit()
    return "", 200


@bp.get("/v1/devices/<device_id>/registrations/<pass_type>")
def changed_serials(device_id: str, pass_type: str) -> Any:
    """Which of the device's passes changed since `passesUpdatedSince` (all when absent); 204 when none."""
    answer = updated_serials(get_session(), apple_pass_config(), device_id, pass_type,
                             request.args.get("passesUpdatedSince"))
    if answer is None:
        return "", 204
    return jsonify(serialNumbers=answer.serial_numbers, lastUpdated=answer.last_updated)


@bp.get("/v1/passes/<pass_type>/<serial>")
def latest_pass(pass_type: str, serial: str) -> Response:
    """The pass as it is now, always with Last-Modified; 304 when it has not changed since If-Modified-Since."""
    card = _card(pass_type, serial)
    last_modified = pass_last_modified(get_session(), card)
    since = request.if_modified_since
    if since is not None and last_modified <= since:
        response: Response = _NotModified(status=304)
    else:
        response = pkpass_response(card, attachment=False)
    response.headers["Last-Modified"] = format_datetime(last_modified, usegmt=True)
    return response


@bp.post("/v1/log")
def device_log() -> tuple[str, int]:
    """Wallet reports what went wrong with our passes (a bad signature, an unreachable service); we log it."""
    logs = json_body().get("logs")
    if not isinstance(logs, list):
        abort(400, 'The body must be {"logs": ["...", ...]}.')
    for line in logs[:LOG_LINES_KEPT]:
        current_app.logger.warning("Apple Wallet device log: %s", str(line)[:LOG_LINE_LENGTH])
    return "", 200


def pkpass_response(card: Card, *, attachment: bool = True) -> Response:
    """The card's signed .pkpass, built now from the card as it is."""
    session = get_session()
    page_url = url_for("customer.card_page", token=card.page_token, _external=True)
    description = card_pass(card, card_code(session, card, get_keys()), apple_pass_config(), page_url,
                            pass_offers(session, card, utcnow()))
    try:
        pkpass = build_pkpass(description, get_apple_wallet().certificates)
    except PassDescriptionError as error:
        current_app.logger.error("Cannot build Apple passes: %s", error)
        abort(503, f"Apple Wallet passes are not available on this server yet: {error} "
                   "(an administrator must fix the pass set-up; see the README).")
    response = Response(pkpass, mimetype=PKPASS_MIME_TYPE)
    response.headers["Cache-Control"] = "no-cache, private"
    if attachment:
        response.headers["Content-Disposition"] = f'attachment; filename="{card.program.slug}.pkpass"'
    return response


class _NotModified(Response):
    """A 304 that keeps its Last-Modified: Werkzeug strips it as an entity header, but Wallet keeps the date
    it is given, and RFC 9110 lets a 304 repeat it."""

    def get_wsgi_headers(self, environ: WSGIEnvironment) -> Headers:
        headers = super().get_wsgi_headers(environ)
        if "Last-Modified" in self.headers:
            headers["Last-Modified"] = self.headers["Last-Modified"]
        return headers


def _card(pass_type: str, serial: str) -> Card:
    return authenticated_card(get_session(), apple_pass_config(), pass_type, serial,
                              request.headers.get("Authorization"))
