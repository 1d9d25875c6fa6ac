"""Marketing consent: the unsubscribe link in every email, and the record of each change of mind.

A member who agreed to offers and news can take it back from any email we send them, with no account and no
sign-in: the link carries a token that names the customer and proves we made it. The token is an HMAC-SHA256 of
the customer's id under a key derived from the app's SECRET_KEY, rather than a random token stored on the
customer, because:

- nothing has to be stored or backfilled: every customer, old or new, has a working link the moment an email is
  written, and the link keeps working for as long as the email sits in an inbox;
- it cannot be forged or guessed without the key (128 bits of MAC), and it is checked in constant time;
- it opens one thing only (stopping marketing email), so the one cost, that rotating SECRET_KEY retires every
  link already sent, is acceptable: a member with a dead link still has the card page and the shop.

The id in the token is the customer's database id, not their name, email or card serial; it tells a reader no
more than that the customer exists. The key is derived under its own label, so the MAC can never stand in for a
session cookie or any other value signed with SECRET_KEY.

Every change of consent is written to `consent_changes` (what, how and when) beside the current answer in
`customers.marketing_consent`, so "when did I unsubscribe, and how?" always has an answer.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
from typing import Any, cast

from sqlalchemy import CursorResult, update
from sqlalchemy.orm import Session

from app.domain.errors import NotFound, ValidationError
from app.models import CONSENT_CHANNELS, ConsentChange, Customer

_KEY_LABEL = b"loyalty/unsubscribe-link/v1"
_MAC_BYTES = 16
# "<customer id>.<MAC, base64url without padding>": 22 characters of MAC.
_TOKEN = re.compile(r"([1-9][0-9]{0,17})\.([A-Za-z0-9_-]{22})")

UNKNOWN_LINK = ("This unsubscribe link is not one we made: it may have been cut short or mistyped. Open the link "
                "from the email again, or ask the shop to stop sending you offers.")


def unsubscribe_key(secret_key: str | bytes) -> bytes:
    """The key that signs unsubscribe links, derived from the app's SECRET_KEY under a label of its own."""
    secret = secret_key.encode() if isinstance(secret_key, str) else secret_key
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def unsubscribe_token(customer_id: int, key: bytes) -> str:
    """The token in a customer's unsubscribe link: their id and a MAC of it."""
    return f"{customer_id}.{_mac(customer_id, key)}"


def customer_for_token(session: Session, token: str, key: bytes) -> Customer:
    """The customer an unsubscribe token names; NotFound when the token is malformed, forged or names no one."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise NotFound(UNKNOWN_LINK)
    customer_id = int(match.group(1))
    if not hmac.compare_digest(match.group(2).encode(), _mac(customer_id, key).encode()):
        raise NotFound(UNKNOWN_LINK)
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise NotFound(UNKNOWN_LINK)
    return customer


def unsubscribe(session: Session, customer: Customer, *, via: str, now: dt.datetime) -> bool:
    """Withdraw the customer's marketing consent and record it; False if they had none to withdraw.

    Idempotent and safe against a double click or a mail client's one-click POST racing the member's own: the
    change is a conditional UPDATE, and only the request whose UPDATE changed the row records it.
    """
    return _set_consent(session, customer, consent=False, via=via, now=now)


def give_consent(session: Session, customer: Customer, *, via: str, now: dt.datetime) -> bool:
    """Record that the customer agreed to marketing email (at enrollment, say); False if they already had."""
    return _set_consent(session, customer, consent=True, via=via, now=now)


def _set_consent(session: Session, customer: Customer, *, consent: bool, via: str, now: dt.datetime) -> bool:
    if via not in CONSENT_CHANNELS:
        raise ValidationError(f"A consent change comes by one of {', '.join(CONSENT_CHANNELS)}, not {via!r}.",
                              field="via")
    result = cast(CursorResult[Any], session.execute(
        update(Customer)
        .where(Customer.id == customer.id, Customer.marketing_consent.is_(not consent))
        .values(marketing_consent=consent, consent_recorded_at=now)
        .execution_options(synchronize_session=False)
    ))
    session.refresh(customer, ["marketing_consent", "consent_recorded_at"])
    if result.rowcount == 0:
        return False
    session.add(ConsentChange(customer_id=customer.id, program_id=customer.program_id, consent=consent, via=via,
                              at=now))
    session.flush()
    return True


def _mac(customer_id: int, key: bytes) -> str:
    digest = hmac.new(key, f"customer:{customer_id}".encode(), hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

