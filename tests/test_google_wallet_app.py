"""Google Wallet from the app's side: save links from the card, objects patched when the card changes, rotating
objects inserted over REST. Google is played by tests/google_wallet_server.py, which checks the OAuth token
request, the bearer token, the paths and every body against Google's discovery document.

Requests commit for real: the pass publisher works in its own sessions, as in production.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from app.domain.rotating_codes import rotating_code_at
from app.google_wallet import get_google_wallet
from app.models import Card, CardCodeSecret, GoogleWalletObject, Offer, Program
from app.wallet import PassUpdateWorker
from passes.google import SAVE_URL_PREFIX
from tests.conftest import ProgramKit
from tests.google_wallet_server import LocalWallet
from tests.wallet_schema import assert_valid


@pytest.fixture()
def google(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalWallet]:
    """Google's token endpoint and Wallet API on 127.0.0.1, for the app's (development) service account."""
    with app.app_context():
        account = get_google_wallet().account
    with LocalWallet(account) as server:
        monkeypatch.setitem(app.config, "GOOGLE_WALLET_API_URL", server.base_url)
        monkeypatch.setitem(app.config, "GOOGLE_OAUTH_TOKEN_URL", server.token_url)
        app.extensions.pop("google_wallet", None)
        try:
            yield server
        finally:
            with app.app_context():
                get_google_wallet().close()
            app.extensions.pop("google_wallet", None)


def _enroll(client: FlaskClient, shop: ProgramKit) -> dict[str, Any]:
    response = client.post("/api/v1/enrollments", headers=shop.headers,
                           json={"name": "Amina Karimi", "email": f"{secrets.token_hex(5)}@example.com"})
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[no-any-return]


def _save_jwt(app: Flask, client: FlaskClient, member: dict[str, Any]) -> dict[str, Any]:
    """Follow the member's google_save_url and verify the JWT with PyJWT against the service account's key."""
    response = client.get(urlsplit(member["google_save_url"]).path)
    assert response.status_code == 303, response.text
    location = response.headers["Location"]
    assert location.startswith(SAVE_URL_PREFIX)
    with app.app_context():
        public_key = get_google_wallet().account.public_key_pem()
    claims: dict[str, Any] = jwt.decode(location[len(SAVE_URL_PREFIX):], public_key, algorithms=["RS256"],
                                        audience="google")
    return claims


def _buy(client: FlaskClient, shop: ProgramKit, code: str) -> dict[str, Any]:
    response = client.post("/api/v1/purchases", headers=shop.purchase_headers(), json={"code": code, "amount": "9.00"})
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[no-any-return]


def _worker(app: Flask) -> PassUpdateWorker:
    worker: PassUpdateWorker = app.extensions["pass_updates"]
    return worker


def _object_row(app: Flask, serial: str) -> GoogleWalletObject | None:
    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            card = session.scalar(select(Card).where(Card.serial == serial))
            assert card is not None
            return session.get(GoogleWalletObject, card.id)
        finally:
            session.close()


def test_the_save_link_is_a_signed_jwt_that_googles_schema_accepts(
    app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit, google: LocalWallet
) -> None:
    member = _enroll(committed_client, committed_shop)
    claims = _save_jwt(app, committed_client, member)
    assert claims["iss"] == get_google_wallet_email(app)
    assert claims["typ"] == "savetowallet" and claims["origins"] == ["http://loyalty.test"]
    assert isinstance(claims["iat"], int)
    [loyalty_object] = claims["payload"]["loyaltyObjects"]
    [loyalty_class] = claims["payload"]["loyaltyClasses"]  # the class is not inserted yet, so it travels too
    assert_valid("LoyaltyObject", loyalty_object)
    assert_valid("LoyaltyClass", loyalty_class)
    assert loyalty_object["classId"] == loyalty_class["id"]
    assert loyalty_object["barcode"] == {"type": "QR_CODE", "value": member["code"],
                                         "alternateText": f"{member['serial'][:4]}-{member['serial'][4:8]}"}
    assert loyalty_object["loyaltyPoints"]["balance"]["int"] == member["points"]
    assert loyalty_object["accountId"] == member["serial"] and loyalty_object["state"] == "ACTIVE"
    assert loyalty_class["programName"] == committed_shop.program.name
    assert loyalty_class["programLogo"]["sourceUri"]["uri"] == \
        f"http://loyalty.test/p/{committed_shop.program.slug}/logo.png?v={committed_shop.program.pass_revision}"
    # The logo Google would fetch is there.
    logo = committed_client.get(f"/p/{committed_shop.program.slug}/logo.png")
    assert logo.status_code == 200 and logo.mimetype == "image/png"
    assert google.requests == []  # a static card's link needs no call to Google


def get_google_wallet_email(app: Flask) -> str:
    with app.app_context():
        return get_google_wallet().account.client_email


def test_a_purchase_sends_one_correct_patch(
    app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit, google: LocalWallet
) -> None:
    member = _enroll(committed_client, committed_shop)
    claims = _save_jwt(app, committed_client, member)
    # The member saves the card: Google now holds the object and the class from the JWT.
    saved = claims["payload"]["loyaltyObjects"][0]
    google.objects[saved["id"]] = saved
    google.classes[saved["classId"]] = claims["payload"]["loyaltyClasses"][0]

    bought = _buy(committed_client, committed_shop, member["code"])
    report = _worker(app).run_once()
    assert (report.google.owed, report.google.patched) == (1, 1)
    [patch] = google.api_requests("PATCH")
    assert patch.path.endswith(f"/loyaltyObject/{saved['id']}")
    assert_valid("LoyaltyObject", patch.json)
    assert patch.json["loyaltyPoints"]["balance"]["int"] == bought["points"]
    assert google.objects[saved["id"]]["loyaltyPoints"]["balance"]["int"] == bought["points"]
    assert patch.headers["authorization"].startswith("Bearer ") and google.token_requests == 1
    # Nothing changed since: the next rounds send nothing.
    assert _worker(app).run_once(sweep=True).google.patched == 0
    assert len(google.api_requests("PATCH")) == 1


def test_an_object_never_saved_is_left_alone_until_the_next_change(
    app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit, google: LocalWallet
) -> None:
    member = _enroll(committed_client, committed_shop)
    _save_jwt(app, committed_client, member)  # a link handed out, but never used
    _buy(committed_client, committed_shop, member["code"])
    assert _worker(app).run_once().google.absent == 1
    row = _object_row(app, member["serial"])
    assert row is not None and row.sync_status == "absent"
    assert _worker(app).run_once(sweep=True).google.owed == 0


def test_a_failed_patch_is_retried_with_backoff(
    app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit, google: LocalWallet
) -> None:
    member = _enroll(committed_client, committed_shop)
    saved = _save_jwt(app, committed_client, member)["payload"]["loyaltyObjects"][0]
    google.objects[saved["id"]] = saved
    google.fail_next(f"loyaltyObject/{saved['id']}", 503)
    _buy(committed_client, committed_shop, member["code"])
    start = dt.datetime.now(dt.UTC)
    assert _worker(app).run_once(now=lambda: start).google.retrying == 1
    assert _worker(app).run_once(now=lambda: start + dt.timedelta(seconds=10)).google.patched == 0
    assert _worker(app).run_once(now=lambda: start + dt.timedelta(seconds=31)).google.patched == 1
    assert [request.method for request in google.api_requests()] == ["PATCH", "PATCH"]


def test_a_reissued_card_retires_its_old_object(
    app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit, google: LocalWallet
) -> None:
    member = _enroll(committed_client, committed_shop)
    saved = _save_jwt(app, committed_client, member)["payload"]["loyaltyObjects"][0]
    google.objects[saved["id"]] = saved
    assert app.test_cli_runner().invoke(args=["cards", "reissue", member["serial"]]).exit_code == 0
    _worker(app).run_once()
    [patch] = google.api_requests("PATCH")
    assert patch.path.endswith(f"/loyaltyObject/{saved['id']}") and patch.json == {"state": "INACTIVE"}
    assert google.objects[saved["id"]]["state"] == "INACTIVE"
    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            assert session.scalar(select(GoogleWalletObject).where(GoogleWalletObject.object_id == saved["id"])) \
                is None
        finally:
            session.close()


def _turn_on_rotation(app: Flask, program: Program) -> None:
    with app.extensions["db"].engine.begin() as connection:
        connection.execute(update(Program).where(Program.id == program.id).values(rotating_codes=True))


def test_a_rotating_card_is_inserted_over_rest_and_its_secret_never_enters_the_jwt(
    app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit, google: LocalWallet
) -> None:
    member = _enroll(committed_client, committed_shop)
    _turn_on_rotation(app, committed_shop.program)
    claims = _save_jwt(app, committed_client, member)

    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in google.api_requests()] == [
        ("POST", "loyaltyClass"), ("POST", "loyaltyObject")]
    inserted = google.api_requests("POST")[1].json
    assert_valid("LoyaltyObject", inserted)
    rotating = inserted["rotatingBarcode"]
    assert rotating["valuePattern"] == f"{member['code']}.0.{{totp_value_0}}"
    assert rotating["totpDetails"]["algorithm"] == "TOTP_SHA1"
    assert rotating["totpDetails"]["periodMillis"] in ("30000", 30000)
    assert inserted["passConstraints"]["screenshotEligibility"] == "INELIGIBLE"
    assert "barcode" not in inserted  # a static fallback would be exactly what a screenshot replays
    # The JWT only refers to the inserted object: no secret, no class.
    assert claims["payload"] == {"loyaltyObjects": [{"id": inserted["id"], "classId": inserted["classId"]}]}
    assert "totp" not in str(claims).lower()

    # What Google's phone would show now (slot 0's TOTP) scans at the till, once.
    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            card = session.scalar(select(Card).where(Card.serial == member["serial"]))
            assert card is not None
            secret = session.get(CardCodeSecret, (card.id, 0))
            assert secret is not None
            assert bytes.fromhex(rotating["totpDetails"]["parameters"][0]["key"]) == secret.secret
            live = rotating_code_at(member["code"], 0, secret.secret, dt.datetime.now(dt.UTC), 30)
        finally:
            session.close()
    scan = committed_client.post("/api/v1/scans", headers=committed_shop.headers, json={"code": live})
    assert scan.status_code == 200, scan.json
    again = committed_client.post("/api/v1/scans", headers=committed_shop.headers, json={"code": live})
    assert again.status_code in (409, 422) and again.json["code"] == "code_already_used"


def test_google_unreachable_for_a_rotating_card_says_try_again_and_writes_nothing(
    app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit, google: LocalWallet
) -> None:
    member = _enroll(committed_client, committed_shop)
    _turn_on_rotation(app, committed_shop.program)
    google.fail_next("loyaltyClass", 503, 503)
    response = committed_client.get(urlsplit(member["google_save_url"]).path)
    assert response.status_code == 503
    assert "try again in a minute" in response.text
    assert _object_row(app, member["serial"]) is None


def test_a_revoked_card_offers_no_save_link(
    app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit, google: LocalWallet
) -> None:
    member = _enroll(committed_client, committed_shop)
    assert app.test_cli_runner().invoke(args=["cards", "revoke", member["serial"]]).exit_code == 0
    assert committed_client.get(urlsplit(member["google_save_url"]).path).status_code == 410
    assert committed_client.get("/c/not-a-card-link/google-wallet").status_code == 404


def test_with_a_real_key_the_class_is_inserted_once_and_links_carry_only_the_object(
    app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit, google: LocalWallet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A configured service account (not the development one) inserts the program's class over REST the first
    time, so every member's link holds just their object and stays under Google's length for links."""
    monkeypatch.setitem(app.config, "GOOGLE_SERVICE_ACCOUNT_FILE", app.config["GOOGLE_DEV_KEY_FILE"])
    monkeypatch.setitem(app.config, "PUBLIC_BASE_URL", "https://loyalty.test")  # Google fetches logos over https
    app.extensions.pop("google_wallet", None)
    first, second = _enroll(committed_client, committed_shop), _enroll(committed_client, committed_shop)
    for member in (first, second):
        response = committed_client.get(urlsplit(member["google_save_url"]).path)
        assert response.status_code == 303 and len(response.headers["Location"]) <= 1833
        claims = _save_jwt(app, committed_client, member)
        assert set(claims["payload"]) == {"loyaltyObjects"}
        assert_valid("LoyaltyObject", claims["payload"]["loyaltyObjects"][0])
    [insert] = google.api_requests("POST")
    assert insert.path.endswith("/loyaltyClass")
    assert_valid("LoyaltyClass", insert.json)


def test_with_the_development_key_a_live_code_card_says_google_wallet_is_not_set_up(
    app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit
) -> None:
    """Out of the box nothing can be stored at Google, which live-code cards need: the member is told plainly,
    and Google's real API is never called."""
    app.extensions.pop("google_wallet", None)
    member = _enroll(committed_client, committed_shop)
    _turn_on_rotation(app, committed_shop.program)
    response = committed_client.get(urlsplit(member["google_save_url"]).path)
    assert response.status_code == 503 and "not set up yet" in response.text
    assert _object_row(app, member["serial"]) is None


def test_the_object_lists_the_programs_running_offers(
    app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit, google: LocalWallet
) -> None:
    now = dt.datetime.now(dt.UTC)
    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            session.add(Offer(program_id=committed_shop.program.id, title="Pastry week", detail="Any pastry.",
                              discount_type="fixed", discount_value=150, min_basket=0, starts_at=None,
                              ends_at=now + dt.timedelta(days=3), active=True))
            session.commit()
        finally:
            session.close()
    member = _enroll(committed_client, committed_shop)
    [loyalty_object] = _save_jwt(app, committed_client, member)["payload"]["loyaltyObjects"]
    assert_valid("LoyaltyObject", loyalty_object)
    modules = loyalty_object["textModulesData"]
    assert modules[0]["header"].startswith("Pastry week: 1.50") and "Any pastry." in modules[0]["body"]
