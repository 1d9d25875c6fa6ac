"""The one conftest: the app on a migrated database, a per-test session that rolls back, and factories.

The database is SQLite in a temporary folder, or PostgreSQL when DATABASE_URL is set (as .ci/run does).
Either way the schema comes from the Alembic migrations, not create_all. Each test runs inside an outer
transaction that is rolled back afterwards; the app's own commits only release savepoints inside it. Tests
that need real commits from several threads use `committing_app` and make their own program.
"""

from __future__ import annotations

import os
import secrets
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

os.environ.setdefault("SECRET_KEY", "test-secret-key")

from app import create_app  # noqa: E402
from app.config import normalise_database_url  # noqa: E402
from app.db import Database  # noqa: E402
from app.domain.programs import create_api_key, create_location, create_program  # noqa: E402
from app.keys import get_keys  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.models import Location, Program  # noqa: E402

TEST_RULES: dict[str, Any] = {
    "earn": {"points_per_unit": "1", "rounding": "down"},
    "tiers": [
        {"name": "Silver", "min_spend": 10_000, "discount_bp": 500},
        {"name": "Gold", "min_spend": 50_000, "discount_bp": 1000},
    ],
    "welcome_bonus": 50,
    "redeem": {"point_value": 1, "max_percent": 50},
}


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        url = normalise_database_url(url)
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    app = create_app({
        "TESTING": True,
        "DATABASE_URL": database_url,
        "SIGNING_KEYS_DIR": str(tmp_path_factory.mktemp("signing-keys")),
        "SERVER_NAME": "loyalty.test",
    })
    yield app
    app.extensions["db"].dispose()


@pytest.fixture()
def db_session(app: Flask) -> Iterator[Session]:
    """A session joined to an outer transaction that is rolled back after the test, whatever it committed.

    Requests made during the test share this session, so their commits only release savepoints.
    """
    database: Database = app.extensions["db"]
    connection = database.engine.connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    database.pinned_session = session
    try:
        # No app context is held open here: each request pushes its own and tears it down, as in production.
        yield session
    finally:
        database.pinned_session = None
        session.close()
        outer.rollback()
        connection.close()


@pytest.fixture()
def client(app: Flask, db_session: Session) -> FlaskClient:
    return app.test_client()


@pytest.fixture()
def runner(app: Flask, db_session: Session) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture()
def committing_app(app: Flask) -> Flask:
    """The app on its real engine: commits are real, so several threads can race. Make a fresh program."""
    return app


@dataclass
class ProgramKit:
    """A program ready for the till: a location and an API key, with the headers to use it."""

    program: Program
    location: Location
    api_key: str
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.headers = {"Authorization": f"Bearer {self.api_key}"}

    def purchase_headers(self, idempotency_key: str | None = None) -> dict[str, str]:
        return {**self.headers, "Idempotency-Key": idempotency_key or str(uuid.uuid4())}


def build_program(session: Session, app: Flask, rules: dict[str, Any] | None = None,
                  currency: str = "EUR", name: str | None = None) -> ProgramKit:
    name = name or f"Shop {secrets.token_hex(4)}"
    program = create_program(session, get_keys(), name=name, currency=currency,
                             rules=TEST_RULES if rules is None else rules)
    location = create_location(session, program, "High Street")
    _, secret = create_api_key(session, location, "test till")
    session.commit()
    return ProgramKit(program, location, secret)


@pytest.fixture()
def make_program(app: Flask, db_session: Session) -> Callable[..., ProgramKit]:
    """make_program(rules=None, currency="EUR") -> a ProgramKit in the rolled-back test transaction."""
    def make(**kwargs: Any) -> ProgramKit:
        with app.app_context():
            return build_program(db_session, app, **kwargs)
    return make


@pytest.fixture()
def enroll(client: FlaskClient) -> Callable[..., dict[str, Any]]:
    """enroll(kit, name=..., email=...) -> the enrollment API's answer for a new member."""
    def do_enroll(kit: ProgramKit, **fields: Any) -> dict[str, Any]:
        body = {"name": "Amina Karimi", "email": f"{secrets.token_hex(5)}@example.com", **fields}
        response = client.post("/api/v1/enrollments", json=body, headers=kit.headers)
        assert response.status_code == 201, response.json
        return response.json  # type: ignore[no-any-return]
    return do_enroll


class _Inbox:
    """An aiosmtpd handler that keeps every message it is sent."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(message_from_bytes(envelope.content, policy=default_policy))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


@pytest.fixture()
def smtp_inbox(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Inbox]:
    """A real SMTP server on 127.0.0.1 that the app is pointed at; `.messages` holds what it received."""
    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setitem(app.config, "MAIL_SERVER", "127.0.0.1")
    monkeypatch.setitem(app.config, "MAIL_PORT", port)
    try:
        yield inbox
    finally:
        controller.stop()
