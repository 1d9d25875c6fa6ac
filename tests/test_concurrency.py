"""The ledger never loses or doubles a point, with real commits from many threads at once.

These tests use the app on its real engine (no rolled-back outer transaction), so each request is its own
transaction racing the others, on SQLite (BEGIN IMMEDIATE) and on PostgreSQL (SELECT ... FOR UPDATE).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from app.domain.cards import check_ledger
from app.domain.rules import price_purchase, rules_from_json
from app.models import Card, LedgerEntry, Purchase
from tests.conftest import TEST_RULES, ProgramKit, build_program

pytestmark = pytest.mark.slow

THREADS = 8
PURCHASES_PER_THREAD = 200


def _committed_program(app: Flask) -> ProgramKit:
    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            return build_program(session, app)
        finally:
            session.close()


def _enroll(app: Flask, kit: ProgramKit) -> dict[str, Any]:
    response = app.test_client().post(
        "/api/v1/enrollments", json={"name": "Race Tester", "email": f"{uuid.uuid4().hex}@example.com"},
        headers=kit.headers,
    )
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[no-any-return]


def _in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(work, range(count)))


def _card_state(app: Flask, serial: str) -> tuple[int, int, int]:
    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            card = session.scalar(select(Card).where(Card.serial == serial))
            assert card is not None
            ledger = session.scalar(select(func.sum(LedgerEntry.points)).where(LedgerEntry.card_id == card.id))
            return card.points, int(ledger or 0), card.lifetime_spend
        finally:
            session.close()


def test_parallel_purchases_on_one_card_lose_and_double_nothing(committing_app: Flask) -> None:
    app = committing_app
    kit = _committed_program(app)
    member = _enroll(app, kit)
    amount = "7.35"

    def buy(_: int) -> list[int]:
        client = app.test_client()
        statuses = []
        for _ in range(PURCHASES_PER_THREAD):
            response = client.post("/api/v1/purchases", json={"code": member["code"], "amount": amount},
                                   headers=kit.purchase_headers())
            statuses.append(response.status_code)
        return statuses

    statuses = [s for per_thread in _in_threads(THREADS, buy) for s in per_thread]
    assert statuses == [201] * THREADS * PURCHASES_PER_THREAD

    # Every purchase has the same basket, so the expected balance does not depend on the order they landed in,
    # even though tier discounts start part-way through.
    rules = rules_from_json(TEST_RULES)
    points, spend = 50, 0
    for _ in range(THREADS * PURCHASES_PER_THREAD):
        quote = price_purchase(rules, amount=735, balance=points, lifetime_spend=spend, redeem_points=0, exponent=2)
        points, spend = quote.points_after, quote.lifetime_spend_after

    balance, ledger_sum, lifetime_spend = _card_state(app, member["serial"])
    assert balance == ledger_sum == points
    assert lifetime_spend == spend
    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            _, mismatches = check_ledger(session)
        finally:
            session.close()
    assert mismatches == []
    result = app.test_cli_runner().invoke(args=["ledger", "check"])
    assert result.exit_code == 0, result.output
    assert "0 mismatches" in result.output


def test_one_idempotency_key_from_eight_threads_makes_one_purchase(committing_app: Flask) -> None:
    app = committing_app
    kit = _committed_program(app)
    member = _enroll(app, kit)
    key = f"race-{uuid.uuid4()}"
    start = threading.Barrier(THREADS)

    def buy(_: int) -> tuple[int, dict[str, Any]]:
        client = app.test_client()
        start.wait()
        response = client.post("/api/v1/purchases", json={"code": member["code"], "amount": "25.00"},
                               headers=kit.purchase_headers(key))
        return response.status_code, response.json

    answers = _in_threads(THREADS, buy)
    assert {status for status, _ in answers} == {201}
    assert all(body == answers[0][1] for _, body in answers)
    assert answers[0][1]["points"] == 50 + 25

    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            purchases = session.scalar(
                select(func.count()).select_from(Purchase).where(Purchase.idempotency_key == key)
            )
        finally:
            session.close()
    assert purchases == 1
    balance, ledger_sum, _ = _card_state(app, member["serial"])
    assert balance == ledger_sum == 75


def test_one_key_with_two_bodies_at_once_commits_one_and_refuses_the_other(committing_app: Flask) -> None:
    app = committing_app
    kit = _committed_program(app)
    member = _enroll(app, kit)
    key = f"race-{uuid.uuid4()}"
    start = threading.Barrier(THREADS)

    def buy(i: int) -> tuple[str, int, dict[str, Any]]:
        amount = "10.00" if i % 2 else "20.00"
        client = app.test_client()
        start.wait()
        response = client.post("/api/v1/purchases", json={"code": member["code"], "amount": amount},
                               headers=kit.purchase_headers(key))
        return amount, response.status_code, response.json

    answers = _in_threads(THREADS, buy)
    winners = {amount for amount, status, _ in answers if status == 201}
    assert len(winners) == 1
    for amount, status, body in answers:
        if amount in winners:
            assert status == 201
        else:
            assert status == 422
            assert body["code"] == "idempotency_conflict"
    balance, ledger_sum, _ = _card_state(app, member["serial"])
    assert balance == ledger_sum == 50 + int(float(winners.pop()))


def test_one_email_enrolled_from_eight_threads_at_once_gets_one_card(committing_app: Flask) -> None:
    app = committing_app
    kit = _committed_program(app)
    email = f"{uuid.uuid4().hex}@example.com"
    start = threading.Barrier(THREADS)

    def enroll(_: int) -> tuple[int, dict[str, Any]]:
        client = app.test_client()
        start.wait()
        response = client.post("/api/v1/enrollments", json={"name": "Twin Enrollment", "email": email},
                               headers=kit.headers)
        return response.status_code, response.json

    answers = _in_threads(THREADS, enroll)
    assert sorted(status for status, _ in answers) == [201] + [409] * (THREADS - 1)
    for status, body in answers:
        if status == 409:
            assert body["code"] == "already_enrolled"
            assert body["recovery_url"].endswith(f"/join/{kit.program.slug}")
