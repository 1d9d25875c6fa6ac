"""The served OpenAPI document is valid OpenAPI 3.1, and real answers match the schemas it declares."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate


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
        "/stats/enrollments",
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
