"""The benchmark's reference endpoint does exactly its small job, and exists only when asked for."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from sqlalchemy import func, select

from app import create_app
from app.models import Card, LedgerEntry
from tests.conftest import build_program


def test_reference_endpoint(app: Flask, database_url: str, tmp_path: Path) -> None:
    assert app.test_client().post("/api/bench/reference", json={}).status_code == 404  # off by default
    bench_app = create_app({"DATABASE_URL": database_url, "SIGNING_KEYS_DIR": app.config["SIGNING_KEYS_DIR"],
                            "BENCH_REFERENCE_ENDPOINT": True})
    try:
        with bench_app.app_context():
            session = bench_app.extensions["db"].sessionmaker()
            kit = build_program(session, bench_app)
            session.close()
        client = bench_app.test_client()
        member = client.post("/api/v1/enrollments", json={"name": "Ref Erence", "email": "ref@example.com"},
                             headers=kit.headers).json
        sessionmaker = bench_app.extensions["db"].sessionmaker
        with sessionmaker() as session:  # closed before each request: SQLite has one write lock
            card_id = session.scalar(select(Card.id).where(Card.serial == member["serial"]))
        assert card_id is not None

        ok = client.post("/api/bench/reference", json={"code": member["code"], "card_id": card_id})
        assert ok.status_code == 200
        with sessionmaker() as session:
            assert session.scalar(select(Card.points).where(Card.id == card_id)) == member["points"] + 1
            assert session.scalar(select(func.count()).select_from(LedgerEntry).where(
                LedgerEntry.card_id == card_id, LedgerEntry.kind == "adjust")) == 1

        assert client.post("/api/bench/reference", json={"code": member["code"], "card_id": 10**9}).status_code == 404
        bad = client.post("/api/bench/reference", json={"code": "X" * 120, "card_id": card_id})
        assert bad.status_code == 422 and bad.json["code"] == "invalid_code"
    finally:
        bench_app.extensions["db"].dispose()
