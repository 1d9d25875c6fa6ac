"""A bare reference endpoint for bench/: the least work a purchase could possibly do.

Verify one Ed25519 signature, UPDATE one balance and INSERT one ledger row with SQLAlchemy Core, commit.
Registered only when BENCH_REFERENCE_ENDPOINT=1, so it never exists in a real deployment.

It lives under /api/ because the app's CSRF check refuses every POST outside /api/ that carries no form
token; like the API it takes JSON and no cookies, so there is nothing to forge. Being under /api/ also makes
its refusals JSON problems. It does not authenticate: the benchmark wants the floor, not a second API.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import insert, select, update

from app.db import get_db
from app.domain.card_code import parse_card_code, verify_signature
from app.domain.errors import InvalidCardCode, NotFound, ValidationError
from app.models import Base, Program, SigningKey

bp = Blueprint("bench_reference", __name__, url_prefix="/api/bench")

# The tables themselves, not the mapped classes: statements on them are plain Core, with no ORM step.
_CARDS = Base.metadata.tables["cards"]
_LEDGER = Base.metadata.tables["ledger_entries"]


def _public_key(kid: str) -> tuple[Ed25519PublicKey, str]:
    """The key `kid` and its program's slug, read once per app, so checking a signature is CPU work only."""
    cache: dict[str, tuple[Ed25519PublicKey, str]]
    cache = current_app.extensions.setdefault("bench_reference_keys", {})
    if kid not in cache:
        with get_db().engine.connect() as connection:
            row = connection.execute(
                select(SigningKey.public_key, Program.slug)
                .join(Program, Program.id == SigningKey.program_id)
                .where(SigningKey.kid == kid)
            ).one_or_none()
        if row is None:
            raise InvalidCardCode("This card code was signed by a key we do not know.")
        cache[kid] = (Ed25519PublicKey.from_public_bytes(row.public_key), row.slug)
    return cache[kid]


@bp.post("/reference")
def reference():  # type: ignore[no-untyped-def]
    """Reference work for one purchase, for bench/ only; body {"code": ..., "card_id": ...}."""
    data: Any = request.get_json(force=True, silent=True)
    card_id = data.get("card_id") if isinstance(data, dict) else None
    if isinstance(card_id, bool) or not isinstance(card_id, int):
        raise ValidationError("Send a JSON object with the card's code and its integer card_id.",
                              field="card_id")
    parsed = parse_card_code(data.get("code"))
    public_key, slug = _public_key(parsed.kid)
    verify_signature(parsed, slug, public_key)
    # The balance first, then the row that references it: the order app/domain/purchases.py keeps.
    with get_db().engine.begin() as connection:
        updated = connection.execute(
            update(_CARDS).where(_CARDS.c.id == card_id).values(points=_CARDS.c.points + 1)
        )
        if updated.rowcount != 1:
            raise NotFound(f"No card {card_id}.")
        connection.execute(insert(_LEDGER).values(card_id=card_id, kind="adjust", points=1))
    return jsonify(ok=True)
