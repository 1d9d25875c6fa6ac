"""The cashier's till over HTTP: the scan page, and the JSON routes its script calls with the staff session.

Scan, quote, purchase and void go through /cashier/api with the page's CSRF token in a header; what the database
holds afterwards is checked directly. Refusals are problem JSON with the stable codes the API uses.
"""

from __future__ import annotations

import re
import uuid
from html.parser import HTMLParser
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.domain.cards import revoke_card
from app.domain.programs import create_staff
from app.models import Card, LedgerEntry, Purchase, Staff

PASSWORD = "correct horse battery"
API = "/cashier/api"


class Till:
    """A signed-in member of staff's browser: the session cookie, and the CSRF token the scan page carries."""

    def __init__(self, client: FlaskClient, staff: Staff) -> None:
        self.client = client
        self.staff = staff
        page = client.get("/cashier")
        assert page.status_code == 200, page.text
        match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
        assert match, "the scan page carries its CSRF token in a meta tag"
        self.csrf = match.group(1)

    def post(self, path: str, body: Any = None, *, key: str | None = None, csrf: str | None = "page",
             **kwargs: Any) -> Any:
        headers = {}
        if csrf is not None:
            headers["X-CSRF-Token"] = self.csrf if csrf == "page" else csrf
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.client.post(API + path, json=body, headers=headers, **kwargs)

    def get(self, path: str) -> Any:
        return self.client.get(API + path)


@pytest.fixture()
def till(client: FlaskClient, db_session: Session):  # type: ignore[no-untyped-def]
    """till(kit, role="cashier") -> a Till signed in as a new member of staff of that program."""
    def sign_in(kit, role: str = "cashier") -> Till:  # type: ignore[no-untyped-def]
        staff = create_staff(db_session, kit.program, email=f"{role}-{uuid.uuid4().hex[:8]}@example.com",
                             role=role, password=PASSWORD)
        db_session.commit()
        form = client.get("/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token
        response = client.post("/login", data={"csrf_token": token.group(1), "email": staff.email,
                                               "password": PASSWORD})
        assert response.status_code == 303, response.text
        return Till(client, staff)
    return sign_in


def _card(db_session: Session, serial: str) -> Card:
    card = db_session.scalar(select(Card).where(Card.serial == serial).execution_options(populate_existing=True))
    assert card is not None
    return card


def _purchases_of(db_session: Session, card: Card) -> list[Purchase]:
    return list(db_session.scalars(
        select(Purchase).where(Purchase.card_id == card.id).execution_options(populate_existing=True)
    ))


def _assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = response.json
    assert body["code"] == code and body["status"] == status
    assert body["detail"] and body["title"] and body["type"].endswith(code)
    return body


# ---- the page ----------------------------------------------------------------------------------------------------


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)


@pytest.mark.parametrize("role", ["cashier", "manager"])
def test_scan_page_loads_its_script_from_our_static_files_only(till, make_program, role: str) -> None:
    cashier = till(make_program(), role)
    page = cashier.client.get("/cashier")
    assert page.status_code == 200
    parser = _Scripts()
    parser.feed(page.text)
    assert parser.scripts, "the page loads its script"
    assert all((s.get("src") or "").startswith("/static/") for s in parser.scripts), parser.scripts
    assert {s.get("type") for s in parser.scripts} == {"module"}
    assert parser.inline == []
    assert 'id="wedge-input"' in page.text and "autofocus" in page.text
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page.text), "nothing loads from another origin"
    csp = page.headers["Content-Security-Policy"]
    script_src = next(part.split()[1:] for part in csp.split(";") if part.split()[0] == "script-src")
    # WebAssembly for the QR decoder may compile; no inline script and no other origin may run.
    assert script_src == ["'self'", "'wasm-unsafe-eval'"]
    assert "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp


def test_scan_page_needs_staff(client: FlaskClient) -> None:
    response = client.get("/cashier")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_vendor_files_the_page_needs_are_served_with_their_types(client: FlaskClient) -> None:
    for path, mimetype in [
        ("/static/js/cashier.js", "text/javascript"),
        ("/static/js/decoders.js", "text/javascript"),
        ("/static/vendor/barcode-detector/ponyfill.js", "text/javascript"),
        ("/static/vendor/barcode-detector/zxing-exported.js", "text/javascript"),
        ("/static/vendor/jsqr/jsQR.js", "text/javascript"),
        # instantiateStreaming refuses a .wasm served with any other type.
        ("/static/vendor/zxing-wasm/zxing_reader.wasm", "application/wasm"),
    ]:
        response = client.get(path)
        assert response.status_code == 200, f"{path} is missing: run `make install`"
        assert response.mimetype == mimetype, path
        response.close()


# ---- the round trip ----------------------------------------------------------------------------------------------


def test_scan_quote_purchase_and_void_through_the_till(till, make_program, enroll, db_session) -> None:
    kit = make_program()
    cashier = till(kit)
    member = enroll(kit, name="Amina Karimi")

    scan = cashier.post("/scans", {"code": member["code"]})
    assert scan.status_code == 200
    assert scan.json == {"serial": member["serial"], "display_name": "Amina K.", "tier": None, "points": 50,
                         "offers": []}

    body = {"code": member["code"], "amount": "120.00", "redeem_points": 10}
    quote = cashier.post("/quotes", body)
    assert quote.status_code == 200
    assert quote.json["lines"] == [{"kind": "points_redemption", "label": "10 points redeemed", "amount": "0.10"}]
    assert (quote.json["amount"], quote.json["amount_due"]) == ("120.00", "119.90")
    assert (quote.json["points_earned"], quote.json["points_redeemed"]) == (119, 10)
    assert quote.json["card"]["points"] == 50
    assert _purchases_of(db_session, _card(db_session, member["serial"])) == []  # a quote writes nothing

    purchase = cashier.post("/purchases", body, key=str(uuid.uuid4()))
    assert purchase.status_code == 201
    assert purchase.json["amount_due"] == "119.90"
    assert purchase.json["points"] == 50 - 10 + 119
    assert purchase.json["tier"] == "Silver"
    card = _card(db_session, member["serial"])
    assert card.points == 159
    [row] = _purchases_of(db_session, card)
    assert (row.id, row.staff_id, row.api_key_id, row.location_id) == (purchase.json["id"], cashier.staff.id,
                                                                       None, None)
    ledger = db_session.scalars(select(LedgerEntry).where(LedgerEntry.purchase_id == row.id)).all()
    assert {(e.kind, e.points, e.staff_id) for e in ledger} == {("redeem", -10, cashier.staff.id),
                                                                ("earn", 119, cashier.staff.id)}

    recent = cashier.get("/purchases")
    assert recent.status_code == 200
    [listed] = recent.json["purchases"]
    assert listed["id"] == row.id and listed["status"] == "committed"
    assert listed["card"] == {"serial": member["serial"], "display_name": "Amina K."}
    assert listed["amount_due"] == "119.90" and listed["created_at"]

    void = cashier.post(f"/purchases/{row.id}/void", {})
    assert void.status_code == 200
    assert void.json == {"id": row.id, "status": "voided", "points": 50, "tier": None}
    assert _card(db_session, member["serial"]).points == 50
    assert cashier.get("/purchases").json["purchases"][0]["status"] == "voided"
    _assert_problem(cashier.post(f"/purchases/{row.id}/void", {}), 409, "already_voided")


def test_a_double_confirm_commits_once(till, make_program, enroll, db_session) -> None:
    kit = make_program()
    cashier = till(kit)
    member = enroll(kit)
    body, key = {"code": member["code"], "amount": "20.00"}, str(uuid.uuid4())

    first = cashier.post("/purchases", body, key=key)
    second = cashier.post("/purchases", body, key=key)
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json == first.json
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    card = _card(db_session, member["serial"])
    assert len(_purchases_of(db_session, card)) == 1
    assert card.points == 50 + 20

    # The same key for another basket is a bug in the till, not a retry: refused, and nothing changes.
    _assert_problem(cashier.post("/purchases", {**body, "amount": "21.00"}, key=key), 422, "idempotency_conflict")
    assert _card(db_session, member["serial"]).points == 70


def test_a_purchase_needs_an_idempotency_key(till, make_program, enroll, db_session) -> None:
    kit = make_program()
    member = enroll(kit)
    problem = _assert_problem(till(kit).post("/purchases", {"code": member["code"], "amount": "5.00"}),
                              422, "validation_error")
    assert problem["field"] == "Idempotency-Key"
    assert _purchases_of(db_session, _card(db_session, member["serial"])) == []


# ---- refusals ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("csrf", [None, "not-the-token", "ünïcode"])
def test_posts_without_the_page_s_csrf_token_are_refused(till, make_program, enroll, db_session,
                                                         csrf: str | None) -> None:
    kit = make_program()
    cashier = till(kit)
    member = enroll(kit)
    body = {"code": member["code"], "amount": "20.00"}
    problem = _assert_problem(cashier.post("/purchases", body, key=str(uuid.uuid4()), csrf=csrf), 400,
                              "bad_request")
    assert "Reload the page" in problem["detail"]
    _assert_problem(cashier.post("/scans", {"code": member["code"]}, csrf=csrf), 400, "bad_request")
    assert _purchases_of(db_session, _card(db_session, member["serial"])) == []


def test_a_card_of_another_program_is_refused_by_name(till, make_program, enroll, db_session) -> None:
    ours, theirs = make_program(name="Corner Coffee"), make_program(name="Bakery Bros")
    cashier = till(ours)
    stranger = enroll(theirs)
    for path, body, key in [
        ("/scans", {"code": stranger["code"]}, None),
        ("/quotes", {"code": stranger["code"], "amount": "5.00"}, None),
        ("/purchases", {"code": stranger["code"], "amount": "5.00"}, str(uuid.uuid4())),
    ]:
        problem = _assert_problem(cashier.post(path, body, key=key), 422, "wrong_program")
        assert problem["detail"] == "This is a card of Bakery Bros, not of Corner Coffee."
    assert _card(db_session, stranger["serial"]).points == 50


def test_a_revoked_card_is_refused_with_a_sentence(till, make_program, enroll, db_session, app) -> None:
    kit = make_program()
    cashier = till(kit)
    member = enroll(kit)
    with app.app_context():
        revoke_card(db_session, _card(db_session, member["serial"]))
        db_session.commit()
    problem = _assert_problem(cashier.post("/scans", {"code": member["code"]}), 422, "revoked_card")
    assert problem["detail"] == "This card has been revoked; ask the member for their new card."


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"code": "ABC"}, "invalid_code", None),
    ({}, "validation_error", "code"),
    ([1, 2], "invalid_json", None),
])
def test_bad_scans_say_what_is_wrong(till, make_program, body: Any, code: str, field: str | None) -> None:
    problem = _assert_problem(till(make_program()).post("/scans", body), 400 if code == "invalid_json" else 422,
                              code)
    assert problem.get("field") == field


def test_a_bad_amount_is_refused_before_anything_is_written(till, make_program, enroll, db_session) -> None:
    kit = make_program()
    member = enroll(kit)
    problem = _assert_problem(till(kit).post("/quotes", {"code": member["code"], "amount": "12.505"}),
                              422, "validation_error")
    assert problem["field"] == "amount" and "more decimals than EUR allows" in problem["detail"]


def test_a_purchase_of_another_program_cannot_be_voided(till, make_program, enroll, client, db_session) -> None:
    theirs = make_program()
    stranger = enroll(theirs)
    bought = client.post("/api/v1/purchases", json={"code": stranger["code"], "amount": "10.00"},
                         headers=theirs.purchase_headers())
    assert bought.status_code == 201
    cashier = till(make_program())
    _assert_problem(cashier.post(f"/purchases/{bought.json['id']}/void", {}), 404, "not_found")
    assert db_session.get(Purchase, bought.json["id"], populate_existing=True).status == "committed"
    assert cashier.get("/purchases").json == {"purchases": []}


def test_recent_purchases_are_this_staff_member_s_own(till, make_program, enroll, client) -> None:
    kit = make_program()
    member = enroll(kit)
    body = {"code": member["code"], "amount": "3.00"}
    assert client.post("/api/v1/purchases", json=body, headers=kit.purchase_headers()).status_code == 201
    first = till(kit)
    mine = first.post("/purchases", body, key=str(uuid.uuid4())).json["id"]
    assert [p["id"] for p in first.get("/purchases").json["purchases"]] == [mine]
    client.post("/logout", data={"csrf_token": first.csrf})
    second = till(kit)
    assert second.get("/purchases").json == {"purchases": []}


def test_anonymous_callers_get_problem_json(client: FlaskClient) -> None:
    _assert_problem(client.get(f"{API}/purchases"), 401, "unauthorized")
    # Without a session there is no CSRF token to match, so a POST is refused before it is looked at.
    _assert_problem(client.post(f"{API}/scans", json={"code": "X"}, headers={"X-CSRF-Token": "x"}), 400,
                    "bad_request")


def test_a_disabled_cashier_s_open_page_stops_working(till, make_program, enroll, db_session) -> None:
    kit = make_program()
    cashier = till(kit)
    member = enroll(kit)
    cashier.staff.active = False
    db_session.commit()
    _assert_problem(cashier.post("/scans", {"code": member["code"]}), 401, "unauthorized")


def test_the_api_and_the_till_answer_a_quote_alike(till, make_program, enroll, client) -> None:
    kit = make_program()
    member = enroll(kit)
    body = {"code": member["code"], "amount": "250.00", "redeem_points": 50}
    via_api = client.post("/api/v1/purchases/quote", json=body, headers=kit.headers)
    via_till = till(kit).post("/quotes", body)
    assert via_api.status_code == via_till.status_code == 200
    assert via_api.json == via_till.json


def test_the_till_s_purchases_keep_balance_and_ledger_equal(till, make_program, enroll, db_session) -> None:
    kit = make_program()
    member = enroll(kit)
    cashier = till(kit)
    for amount in ("10.00", "15.50"):
        assert cashier.post("/purchases", {"code": member["code"], "amount": amount}, key=str(uuid.uuid4())
                            ).status_code == 201
    card = _card(db_session, member["serial"])
    total = db_session.scalar(select(func.sum(LedgerEntry.points)).where(LedgerEntry.card_id == card.id))
    assert card.points == total == 50 + 10 + 15
