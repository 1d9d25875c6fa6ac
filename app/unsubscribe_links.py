"""The unsubscribe link every marketing email carries, as a URL and as List-Unsubscribe headers.

Any code that emails a member about offers, reminders or surveys calls `unsubscribe_headers(customer_id)` for
`app.mail.send_mail(..., headers=...)` and puts `unsubscribe_url(customer_id)` in the body. The token in the
link is made and checked by app/domain/consent.py; this module only supplies the key and the server's address.
"""

from __future__ import annotations

from typing import Any

from flask import current_app

from app.domain.consent import unsubscribe_key, unsubscribe_token
from app.google_wallet import public_base_url


def current_unsubscribe_key() -> bytes:
    """The key that signs this app's unsubscribe links (derived from SECRET_KEY)."""
    return unsubscribe_key(current_app.config["SECRET_KEY"])


def external_url(endpoint: str, **values: Any) -> str:
    """An absolute URL for an email: PUBLIC_BASE_URL (else the request's or SERVER_NAME's host) and the path.

    Works in a CLI command too, where `url_for(..., _external=True)` has no host to use.
    """
    path = current_app.url_map.bind("localhost").build(endpoint, values)
    return public_base_url() + path


def unsubscribe_url(customer_id: int) -> str:
    """The link that stops marketing email to this customer, with no sign-in."""
    return external_url("customer.unsubscribe", token=unsubscribe_token(customer_id, current_unsubscribe_key()))


def unsubscribe_headers(customer_id: int) -> dict[str, str]:
    """List-Unsubscribe (RFC 2369) and List-Unsubscribe-Post (RFC 8058), so mail apps show an unsubscribe
    button that works in one click: they POST "List-Unsubscribe=One-Click" to the link."""
    return {
        "List-Unsubscribe": f"<{unsubscribe_url(customer_id)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
