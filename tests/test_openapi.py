"""The served OpenAPI document is valid OpenAPI 3.1, and real answers match the schemas it declares."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from sqlalchemy import select

from app.models import Card, Coupon, Offer, Referral, Reward


@pytest.fixture()
def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json  # type: ignore[no-any-return]


def _check(document: dict[str, Any], schema_name: str, instance: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(instance)]
    assert errors == []


def test_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    assert set(document["paths"]) == {
        "/enrollments", "/scans", "/purchases/quote", "/purchases", "/purchases/{id}/void", "/cards/{serial}",
        "/stats/enrollments", "/stats/summary",
    }


def test_answers_match_their_schemas(client: FlaskClient, document: dict[str, Any], make_program, enroll) -> None:
    kit = make_program()
    member = enroll(kit)
    _check(document, "Enrollment", member)
    scan = client.post("/api/v1/scans", json={"code": member["code"]}, headers=kit.headers)
    _check(document, "CardSummary", scan.json)
    body = {"code": member["code"], "amount": "150.00"}
    _check(document, "Quote", client.post("/api/v1/purchases/quote", json=body, headers=kit.headers).json)
    purchase = client.post("/api/v1/purchases", json=body, headers=kit.purchase_headers()).json
    _check(document, "Purchase", purchase)
    _check(document, "Void", client.post(f"/api/v1/purchases/{purchase['id']}/void", headers=kit.headers).json)
    _check(document, "CardDetail", client.get(f"/api/v1/cards/{member['serial']}", headers=kit.headers).json)
    _check(document, "EnrollmentStats", client.get("/api/v1/stats/enrollments", headers=kit.headers).json)
    _check(document, "StatsSummary", client.get("/api/v1/stats/summary", headers=kit.headers).json)
    refused = client.post("/api/v1/scans", json={"code": "NOPE"}, headers=kit.headers)
    _check(document, "Problem", refused.json)
    # The schema is strict enough to catch a wrong answer.
    with pytest.raises(AssertionError):
        _check(document, "Purchase", {**purchase, "amount": 12.5})


def test_stats_count_enrollments_by_channel_and_location(client: FlaskClient, make_program, enroll) -> None:
    kit = make_program()
    enroll(kit)
    enroll(kit)
    stats = client.get("/api/v1/stats/enrollments?period=month", headers=kit.headers)
    assert stats.status_code == 200
    assert stats.json["total"] == 2
    (only,) = stats.json["series"]
    assert only["start"].endswith("-01")
    assert only["by_channel"] == {"api": 2}
    assert only["by_location"] == {"High Street": 2}


def test_answers_with_the_mechanics_match_their_schemas(client: FlaskClient, document: dict[str, Any], make_program,
                                                        enroll, db_session) -> None:
    """Quotes and purchases that carry coupons, offers, rewards, vouchers and referral bonuses, and the problems
    a refused coupon or offer gives, are what the document says."""
    kit = make_program()
    program = kit.program
    program.kind = "stamps"
    program.rules = {"welcome_bonus": 200, "redeem": {"point_value": 1, "max_percent": 50},
                     "stamps": {"stamps_needed": 1, "reward_label": "Free coffee", "reward_value": 250},
                     "referral": {"referrer_bonus": 1, "referee_bonus": 1}}
    offer = Offer(program_id=program.id, title="Members' week", discount_type="percent", discount_value=1000)
    reward = Reward(program_id=program.id, name="Free cake", points_cost=100, value=300)
    db_session.add_all([offer, reward,
                        Coupon(program_id=program.id, code="SPRING10", kind="reusable", discount_type="percent",
                               discount_value=1000, min_basket=100_000)])
    db_session.commit()
    referrer, member = enroll(kit), enroll(kit)
    ids = {c.serial: c.id for c in db_session.scalars(select(Card).where(Card.program_id == program.id))}
    db_session.add(Referral(referrer_card_id=ids[referrer["serial"]], referee_card_id=ids[member["serial"]]))
    db_session.commit()

    scan = client.post("/api/v1/scans", json={"code": member["code"]}, headers=kit.headers).json
    _check(document, "CardSummary", scan)
    assert scan["offers"] and scan["rewards"] and "stamps" in scan
    body = {"code": member["code"], "amount": "20.00", "offer_ids": [offer.id], "reward_id": reward.id,
            "coupon_codes": ["SPRING10", "NOPE"], "redeem_points": 10}
    quote = client.post("/api/v1/purchases/quote", json=body, headers=kit.headers).json
    _check(document, "Quote", quote)
    assert len(quote["coupon_refusals"]) == 2 and quote["bonuses"]
    refused = client.post("/api/v1/purchases", json=body, headers=kit.purchase_headers())
    assert refused.status_code == 422
    _check(document, "Problem", refused.json)
    purchase = client.post("/api/v1/purchases", json={**body, "coupon_codes": []}, headers=kit.purchase_headers())
    assert purchase.status_code == 201, purchase.json
    _check(document, "Purchase", purchase.json)
    assert purchase.json["vouchers_issued"] == 2 and purchase.json["bonuses"]  # its stamp, and the bonus stamp
    with_voucher = client.post("/api/v1/purchases", json={"code": member["code"], "amount": "5.00",
                                                          "use_voucher": True}, headers=kit.purchase_headers())
    _check(document, "Purchase", with_voucher.json)
    offer_refused = client.post("/api/v1/purchases", json={"code": member["code"], "amount": "20.00",
                                                           "offer_ids": [offer.id + 99]},
                                headers=kit.purchase_headers())
    assert offer_refused.json["code"] == "offer_refused"
    _check(document, "Problem", offer_refused.json)
    _check(document, "CardDetail", client.get(f"/api/v1/cards/{member['serial']}", headers=kit.headers).json)
