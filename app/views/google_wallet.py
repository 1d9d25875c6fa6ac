"""The card's "Add to Google Wallet" link, behind the card page's secret link like the card itself."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, redirect
from sqlalchemy import select
from werkzeug.wrappers import Response

from app.db import get_session, start_writing
from app.google_wallet import GoogleWalletUnavailable, save_link_for
from app.models import Card, utcnow
from passes.google import GooglePassError

bp = Blueprint("google_wallet", __name__)


@bp.get("/c/<token>/google-wallet")
def save_to_google_wallet(token: str) -> Response:
    """Hand the member's phone Google's save page for their card (a signed JWT link, made fresh each time).

    A rotating card's object, and one too long for a link, are inserted over Google's API first, so this may
    take a moment and, when Google cannot be reached, asks the member to try again.
    """
    session = get_session()
    start_writing(session)
    card = session.scalar(select(Card).where(Card.page_token == token))
    if card is None:
        abort(404, "This card link is not valid any more. If your card was replaced, use the new link.")
    if card.status == "revoked":
        abort(410, "This card has been revoked, so it cannot be added to Google Wallet. Ask at the till for a "
                   "new card.")
    try:
        link = save_link_for(session, card, utcnow())
    except GooglePassError as error:
        session.rollback()
        current_app.logger.error("Cannot build Google Wallet objects: %s", error)
        abort(503, f"Google Wallet is not available on this server yet: {error} (an administrator must fix the "
                   "Google Wallet set-up; see the README).")
    except GoogleWalletUnavailable as error:
        session.rollback()
        current_app.logger.warning("Google Wallet save link not made: %s", error)
        abort(503, error.for_member)
    session.commit()
    response = redirect(link, code=303)
    response.headers["Cache-Control"] = "no-store"
    return response
