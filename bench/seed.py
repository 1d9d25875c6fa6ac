"""A fresh database for one benchmark run: migrated, with one program, one till's API key and its members.

Everything goes through the app's own migrations and domain functions, as `flask db upgrade` and the
enrollment API would, so the benchmark measures the schema and indexes that production has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, inspect

from app import create_app
from app.db import get_session
from app.demo import DEMO_RULES
from app.domain.cards import card_code
from app.domain.enrollment import enroll_customer, parse_enrollment
from app.domain.programs import create_api_key, create_location, create_program
from app.keys import get_keys
from app.migrate import upgrade


@dataclass(frozen=True)
class SeededCard:
    """A member's card as a till knows it: the row id (for the reference endpoint) and the signed code."""

    id: int
    code: str


@dataclass(frozen=True)
class Seed:
    """What the load generator needs: the till's API key and the cards to pick from."""

    api_key: str
    cards: tuple[SeededCard, ...]


class DatabaseNotEmpty(RuntimeError):
    """The benchmark writes thousands of rows, so it refuses any database that already holds tables."""


def require_empty(database_url: str) -> None:
    """Refuse to seed a database that has tables: the benchmark must never write into real data."""
    engine = create_engine(database_url)
    try:
        tables = inspect(engine).get_table_names()
    finally:
        engine.dispose()
    if tables:
        raise DatabaseNotEmpty(
            f"The benchmark needs an empty database, but this one has {len(tables)} tables "
            f"({', '.join(sorted(tables)[:5])}, ...). Point DATABASE_URL at a new, empty database."
        )


def seed_database(database_url: str, signing_keys_dir: Path, card_count: int) -> Seed:
    """Migrate an empty database and enroll `card_count` members of one program at one location."""
    require_empty(database_url)
    upgrade(database_url)
    app = create_app({"DATABASE_URL": database_url, "SIGNING_KEYS_DIR": str(signing_keys_dir)})
    try:
        with app.app_context():
            session = get_session()
            keys = get_keys()
            program = create_program(session, keys, name="Bench Coffee", currency="EUR", rules=DEMO_RULES)
            location = create_location(session, program, "Bench Street")
            _, api_secret = create_api_key(session, location, "bench till")
            cards = []
            for number in range(card_count):
                enrollment = parse_enrollment(
                    {"name": f"Bench Member {number}", "email": f"member{number}@bench.example"}
                )
                card = enroll_customer(session, program, enrollment, channel="api", location_id=location.id)
                cards.append(SeededCard(id=card.id, code=card_code(session, card, keys)))
            session.commit()
    finally:
        app.extensions["db"].dispose()
    return Seed(api_key=api_secret, cards=tuple(cards))
