"""The till's round trip over HTTP: enroll, scan, quote, purchase, retry, void, and what the ledger says after."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Card, LedgerEntry, Purchase


def _card(db_session: Session, serial: str) -> Card:
    card = db_session.scalar(select(Card).where(Card.serial == serial).execution_options(populate_existing=True))
    assert card is not None
    return card


def _ledger_sum(db_session: Session, card: Card) -> int:
    return int(db_session.scalar(select(func.sum(LedgerEntry.points)).where(LedgerEntry.card_id == card.id)) or 0)


def test_enroll_scan_quote_purchase_retry_void(client: FlaskClient, make_program, enroll, db_session) -> None:
    kit = make_program()
    member = enroll(kit, name="Amina Karimi")
    assert member["points"] == 50  # the welcome bonus
    assert member["card_url"].startswith("http://loyalty.test/c/")

    scan = client.post("/api/v1/scans", json={"code": member["code"]}, headers=kit.headers)
    assert scan.status_code == 200
    assert scan.json == {"serial": member["serial"], "display_name": "Amina K.", "tier": None, "points": 50,
                         "offers": []}

    body = {"code": member["code"], "amount": "120.00"}
    quote = client.post("/api/v1/purchases/quote", json=body, headers=kit.headers)
    assert quote.status_code == 200
    assert quote.json["amount_due"] == "120.00"
    assert quote.json["points_earned"] == 120
    assert quote.json["tier_after"] == "Silver"
    purchases_of_program = select(func.count()).select_from(Purchase).where(Purchase.program_id == kit.program.id)
    assert db_session.scalar(purchases_of_program) == 0  # a quote writes nothing

    headers = kit.purchase_headers("till-1-0001")
    first = client.post("/api/v1/purchases", json=body, headers=headers)
    assert first.status_code == 201
    committed = first.json
    # The committed purchase is exactly the quote.
    for key in ("amount", "lines", "discount_total", "amount_due", "points_earned", "points_redeemed"):
        assert committed[key] == quote.json[key]
    assert committed["points"] == 170
    assert committed["tier"] == "Silver"

    retry = client.post("/api/v1/purchases", json=body, headers=headers)
    assert retry.status_code == 201
    assert retry.json == committed
    assert retry.headers["Idempotent-Replayed"] == "true"
    card = _card(db_session, member["serial"])
    assert card.points == 170
    assert db_session.scalar(select(func.count()).select_from(Purchase).where(Purchase.card_id == card.id)) == 1

    # Now Silver: the next purchase carries a 5% line and earns on what is paid.
    second = client.post("/api/v1/purchases", json={"code": member["code"], "amount": "20.00"},
                         headers=kit.purchase_headers())
    assert second.json["lines"] == [{"kind": "tier_discount", "label": "Silver member 5%", "amount": "1.00"}]
    assert second.json["amount_due"] == "19.00"
    assert second.json["points"] == 170 + 19

    void = client.post(f"/api/v1/purchases/{second.json['id']}/void", headers=kit.headers)
    assert void.status_code == 200
    assert void.json == {"id": second.json["id"], "status": "voided", "points": 170, "tier": "Silver"}
    again = client.post(f"/api/v1/purchases/{second.json['id']}/void", headers=kit.headers)
    assert again.status_code == 409
    assert again.json["code"] == "already_voided"

    card = _card(db_session, member["serial"])
    assert card.points == _ledger_sum(db_session, card) == 170
    assert card.lifetime_spend == 12_000

    detail = client.get(f"/api/v1/cards/{member['serial']}", headers=kit.headers)
    assert detail.status_code == 200
    assert detail.json["points"] == 170
    assert detail.json["lifetime_spend"] == "120.00"
    assert [e["kind"] for e in detail.json["ledger"]] == ["void", "earn", "earn", "bonus"]
    assert detail.json["ledger"][0]["created_at"].endswith("+00:00")


def test_voiding_the_purchase_that_reached_a_tier_drops_the_tier(client, make_program, enroll, db_session) -> None:
    kit = make_program()
    member = enroll(kit)
    purchase = client.post("/api/v1/purchases", json={"code": member["code"], "amount": "100.00"},
                           headers=kit.purchase_headers()).json
    assert purchase["tier"] == "Silver"
    void = client.post(f"/api/v1/purchases/{purchase['id']}/void", headers=kit.headers)
    assert void.json["tier"] is None
    assert void.json["points"] == 50
    assert _card(db_session, member["serial"]).lifetime_spend == 0


def test_redeeming_points_is_reversed_exactly_by_a_void(client, make_program, enroll, db_session) -> None:
    kit = make_program()
    member = enroll(kit)
    body: dict[str, Any] = {"code": member["code"], "amount": "10.00", "redeem_points": 40}
    purchase = client.post("/api/v1/purchases", json=body, headers=kit.purchase_headers()).json
    assert purchase["lines"] == [{"kind": "points_redemption", "label": "40 points redeemed", "amount": "0.40"}]
    assert purchase["amount_due"] == "9.60"
    assert purchase["points"] == 50 - 40 + 9
    client.post(f"/api/v1/purchases/{purchase['id']}/void", headers=kit.headers)
    card = _card(db_session, member["serial"])
    assert card.points == _ledger_sum(db_session, card) == 50


def test_a_void_that_would_go_below_zero_is_refused_until_the_later_one_is_voided(
    client, make_program, enroll, db_session
) -> None:
    kit = make_program(rules={"welcome_bonus": 50, "redeem": {"point_value": 1, "max_percent": 100}})
    member = enroll(kit)
    earn = client.post("/api/v1/purchases", json={"code": member["code"], "amount": "80.00"},
                       headers=kit.purchase_headers()).json
    assert earn["points"] == 130
    spend = client.post("/api/v1/purchases", json={"code": member["code"], "amount": "5.00", "redeem_points": 130},
                        headers=kit.purchase_headers()).json
    assert spend["amount_due"] == "3.70"
    assert spend["points"] == 3

    refused = client.post(f"/api/v1/purchases/{earn['id']}/void", headers=kit.headers)
    assert refused.status_code == 409
    assert refused.json["code"] == "points_already_spent"
    assert _card(db_session, member["serial"]).points == 3

    assert client.post(f"/api/v1/purchases/{spend['id']}/void", headers=kit.headers).json["points"] == 130
    assert client.post(f"/api/v1/purchases/{earn['id']}/void", headers=kit.headers).json["points"] == 50
    card = _card(db_session, member["serial"])
    assert card.points == _ledger_sum(db_session, card) == 50


def test_a_retry_gets_its_first_answer_even_when_the_card_would_now_refuse_it(
    client: FlaskClient, make_program, enroll, runner
) -> None:
    kit = make_program()
    member = enroll(kit)
    body = {"code": member["code"], "amount": "1.00", "redeem_points": 50}  # every point the card has
    headers = kit.purchase_headers()
    first = client.post("/api/v1/purchases", json=body, headers=headers)
    assert first.status_code == 201
    # The balance no longer covers the redemption, and then the card is revoked: a retry still gets the receipt.
    again = client.post("/api/v1/purchases", json=body, headers=headers)
    assert (again.status_code, again.json) == (201, first.json)
    assert runner.invoke(args=["cards", "revoke", member["serial"]]).exit_code == 0
    after_revoke = client.post("/api/v1/purchases", json=body, headers=headers)
    assert (after_revoke.status_code, after_revoke.json) == (201, first.json)
    # A new purchase on the revoked card is refused.
    fresh = client.post("/api/v1/purchases", json=body, headers=kit.purchase_headers())
    assert fresh.json["code"] == "revoked_card"
