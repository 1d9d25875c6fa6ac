"""A bare reference endpoint for bench/: the least work a purchase could possibly do.

Verify one Ed25519 signature, INSERT one ledger row, UPDATE one balance with SQLAlchemy Core, commit.
Registered only when BENCH_REFERENCE_ENDPOINT=1, so it never exists in a real deployment.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flask import Blueprint, jsonify, request
from sqlalchemy import insert, select, update

from app.db import get_db
from app.domain.card_code import parse_card_code, verify_signature
from app.models import Card, LedgerEntry, Program, SigningKey

bp = Blueprint("bench_reference", __name__, url_prefix="/bench")


@lru_cache(maxsize=64)
def _key(kid: str) -> tuple[Ed25519PublicKey, str]:
    with get_db().engine.connect() as connection:
        public_key, slug = connection.execute(
            select(SigningKey.public_key, Program.slug)
            .join(Program, Program.id == SigningKey.program_id)
            .where(SigningKey.kid == kid)
        ).one()
    return Ed25519PublicKey.from_public_bytes(public_key), slug


@bp.post("/reference")
def reference():  # type: ignore[no-untyped-def]
    """Reference work for one purchase; body {"code": ..., "card_id": ...}."""
    data = request.get_json(force=True)
    parsed = parse_card_code(data["code"])
    public_key, slug = _key(parsed.kid)
    verify_signature(parsed, slug, public_key)
    with get_db().engine.begin() as connection:
        connection.execute(insert(LedgerEntry.__table__).values(card_id=data["card_id"], kind="adjust", points=1))
        connection.execute(update(Card.__table__).where(Card.id == data["card_id"]).values(points=Card.points + 1))
    return jsonify(ok=True)
