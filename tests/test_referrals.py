"""Referral links: each card's code, the invitation page, attribution on the form and over the API, and the
self-referral check (same email, phone or browser)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.domain.mechanics import is_self_referral
from app.domain.referrals import (
    REFERRAL_CODE_ALPHABET,
    canonical_email,
    new_referral_code,
    normalize_referral_code,
    phone_key,
    referral_party,
)
from app.models import Card, Customer, Referral
from app.views import customer as customer_views
from tests.conftest import ProgramKit

# --- Pure rules: tables, no fixtures ----------------------------------------------------------------------------


@pytest.mark.parametrize(("typed", "stored"), [
    ("K7QXM2PA", "K7QXM2PA"),
    ("k7qxm2pa", "K7QXM2PA"),
    ("K7QX-M2PA", "K7QXM2PA"),
    (" k7qx m2pa ", "K7QXM2PA"),
    ("O0IL1234", "00111234"),  # read as Crockford: O is 0, I and L are 1
    ("K7QXM2P", None),  # too short
    ("K7QXM2PAA", None),  # too long
    ("K7QXM2PU", None),  # U is not in the alphabet
    ("K7QXM2P!", None),
    ("", None),
])
def test_referral_codes_are_read_forgivingly(typed: str, stored: str | None) -> None:
    assert normalize_referral_code(typed) == stored


def test_a_new_code_is_eight_unambiguous_characters() -> None:
    codes = {new_referral_code() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert len(code) == 8 and set(code) <= set(REFERRAL_CODE_ALPHABET)
        assert not set(code) & set("ILOU")
    assert new_referral_code(lambda n: b"\x00" * n) == "00000000"
    assert new_referral_code(lambda n: b"\xff" * n) == "ZZZZZZZZ"


@pytest.mark.parametrize(("email", "canonical"), [
    ("amina@example.com", "amina@example.com"),
    ("Amina@Example.COM", "amina@example.com"),
    ("amina+friend@example.com", "amina@example.com"),
    ("a.mina@example.com", "a.mina@example.com"),  # dots matter outside Gmail
    ("a.mi.na+x@gmail.com", "amina@gmail.com"),
    ("amina@googlemail.com", "amina@gmail.com"),
    ("+tag@example.com", None),
    (None, None),
])
def test_canonical_email(email: str | None, canonical: str | None) -> None:
    assert canonical_email(email) == canonical


@pytest.mark.parametrize(("phone", "key"), [
    ("+33612345678", "612345678"),
    ("0612345678", "612345678"),
    ("+447700900123", "700900123"),
    ("1234567", "1234567"),
    (None, None),
])
def test_phone_key(phone: str | None, key: str | None) -> None:
    assert phone_key(phone) == key


@pytest.mark.parametrize(("referrer", "referee", "same_person"), [
    (("amina@example.com", None, "dev-a"), ("bo@example.com", None, "dev-b"), False),
    (("amina@example.com", None, None), ("amina+2@example.com", None, None), True),
    (("amina@gmail.com", None, None), ("a.mina@gmail.com", None, None), True),
    ((None, "+33612345678", None), (None, "0612345678", None), True),
    ((None, "+33612345678", None), (None, "+33612345679", None), False),
    (("amina@example.com", None, "dev-a"), ("bo@example.com", None, "dev-a"), True),
    (("amina@example.com", None, None), ("bo@example.com", None, None), False),  # no device on either: no match
])
def test_self_referral_on_canonical_forms(referrer: tuple[Any, Any, Any], referee: tuple[Any, Any, Any],
                                          same_person: bool) -> None:
    assert is_self_referral(referral_party(*referrer), referral_party(*referee)) is same_person


# --- Through the web form ---------------------------------------------------------------------------------------


def _form_token(page_text: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page_text)
    assert match, "the form carries a CSRF token"
    return match.group(1)


def _web_enroll(browser: FlaskClient, slug: str, **fields: str):  # type: ignore[no-untyped-def]
    page = browser.get(f"/join/{slug}")
    return browser.post(f"/join/{slug}", data={"csrf_token": _form_token(page.text), **fields})


def _accept_invitation(browser: FlaskClient, code: str, **fields: str):  # type: ignore[no-untyped-def]
    """Open a referral link and send its form as a visitor would, hidden field and all."""
    page = browser.get(f"/r/{code}")
    assert page.status_code == 200, page.text
    hidden = re.search(r'name="referral_code" value="([^"]+)"', page.text)
    assert hidden, "the invitation form carries the referral code"
    action = re.search(r'<form method="post" action="([^"]+)" class="stack"', page.text)
    assert action
    return browser.post(action.group(1), data={"csrf_token": _form_token(page.text),
                                               "referral_code": hidden.group(1), **fields})


def _device(browser: FlaskClient) -> str:
    """The browser's device id cookie (the test app's SERVER_NAME is loyalty.test)."""
    cookie = browser.get_cookie("device_id", domain="loyalty.test")
    assert cookie is not None, "the browser was given a device id"
    return cookie.value


def _card(db_session: Session, email: str) -> Card:
    card = db_session.scalar(select(Card).join(Customer).where(Customer.email == email))
    assert card is not None
    return card


def _referral_of(db_session: Session, card: Card) -> Referral | None:
    return db_session.scalar(select(Referral).where(Referral.referee_card_id == card.id))


def test_the_card_page_shows_a_link_that_invites_by_masked_name(client: FlaskClient, make_program,
                                                                enroll, app: Flask, db_session: Session) -> None:
    kit = make_program(name="Corner Coffee")
    amina = enroll(kit, name="Amina Karimi")
    page = client.get(amina["card_url"])
    card = db_session.scalar(select(Card).where(Card.serial == amina["serial"]))
    assert card is not None and card.referral_code
    link = f"http://loyalty.test/r/{card.referral_code}"
    assert f'value="{link}"' in page.text

    friend = app.test_client()
    invitation = friend.get(f"/r/{card.referral_code.lower()}")
    assert invitation.status_code == 200
    assert "Join Corner Coffee" in invitation.text
    assert "Invited by Amina K." in invitation.text
    assert "Karimi" not in invitation.text
    assert f'name="referral_code" value="{card.referral_code}"' in invitation.text


def test_enrolling_through_a_link_attributes_the_new_member(make_program, enroll, app: Flask,
                                                            db_session: Session) -> None:
    kit = make_program()
    amina = enroll(kit, name="Amina Karimi", email="amina@example.com")
    referrer = db_session.scalar(select(Card).where(Card.serial == amina["serial"]))
    assert referrer is not None and referrer.referral_code

    friend = app.test_client()
    response = _accept_invitation(friend, referrer.referral_code, name="Bo Lind", email="bo@example.com")
    assert response.status_code == 303
    bo = _card(db_session, "bo@example.com")
    assert bo.customer.channel == "referral"
    referral = _referral_of(db_session, bo)
    assert referral is not None
    assert referral.referrer_card_id == referrer.id
    assert referral.self_referral is False
    assert referral.bonus_purchase_id is None  # paid at Bo's first purchase, not now
    # Bo got a code of their own, and the browser's device id is on the card.
    assert bo.referral_code and bo.referral_code != referrer.referral_code
    assert bo.enrolled_device == _device(friend)


@pytest.mark.parametrize(("amina", "bo"), [
    pytest.param({"email": "amina@example.com"}, {"email": "amina+bo@example.com"}, id="same mailbox, +tag"),
    pytest.param({"email": "amina.karimi@gmail.com"}, {"email": "aminakarimi@gmail.com"}, id="Gmail dots"),
    pytest.param({"phone": "+33 6 12 34 56 78"}, {"phone": "06 12 34 56 78"}, id="same phone, national form"),
])
def test_a_self_referral_by_email_or_phone_is_attributed_but_flagged(
    make_program, enroll, app: Flask, db_session: Session, amina: dict[str, str], bo: dict[str, str]
) -> None:
    kit = make_program()
    member = enroll(kit, **({"email": None} | amina))
    referrer = db_session.scalar(select(Card).where(Card.serial == member["serial"]))
    assert referrer is not None and referrer.referral_code
    response = _accept_invitation(app.test_client(), referrer.referral_code, name="Bo Lind", **bo)
    assert response.status_code == 303, response.text
    new = db_session.scalar(select(Card).where(Card.program_id == kit.program.id, Card.id != referrer.id))
    assert new is not None
    referral = _referral_of(db_session, new)
    assert referral is not None and referral.referrer_card_id == referrer.id
    assert referral.self_referral is True


def test_a_self_referral_from_the_same_browser_is_flagged(make_program, app: Flask, db_session: Session) -> None:
    kit = make_program()
    phone = app.test_client()
    assert _web_enroll(phone, kit.program.slug, name="Amina Karimi", email="amina@example.com").status_code == 303
    amina = _card(db_session, "amina@example.com")
    assert amina.enrolled_device == _device(phone)
    assert amina.referral_code

    # The same phone follows Amina's own link and enrolls "someone else".
    response = _accept_invitation(phone, amina.referral_code, name="Totally Different", email="other@example.org")
    assert response.status_code == 303
    referral = _referral_of(db_session, _card(db_session, "other@example.org"))
    assert referral is not None and referral.self_referral is True

    # Another phone, another person: not flagged.
    response = _accept_invitation(app.test_client(), amina.referral_code, name="Bo Lind", email="bo@example.com")
    referral = _referral_of(db_session, _card(db_session, "bo@example.com"))
    assert referral is not None and referral.self_referral is False


def test_a_card_from_the_till_takes_the_browser_that_opens_its_page(client: FlaskClient, make_program, enroll,
                                                                    db_session: Session) -> None:
    kit = make_program()
    amina = enroll(kit, email="amina@example.com")  # at the till: no browser
    card = _card(db_session, "amina@example.com")
    assert card.enrolled_device is None
    client.get(amina["card_url"])
    db_session.refresh(card)
    assert card.enrolled_device == _device(client)
    assert card.referral_code
    response = _accept_invitation(client, card.referral_code, name="Second Me", email="second@example.com")
    assert response.status_code == 303
    referral = _referral_of(db_session, _card(db_session, "second@example.com"))
    assert referral is not None and referral.self_referral is True


def test_the_same_email_through_a_link_is_already_enrolled(make_program, enroll, app: Flask,
                                                           db_session: Session) -> None:
    kit = make_program()
    enroll(kit, email="amina@example.com")
    referrer = _card(db_session, "amina@example.com")
    assert referrer.referral_code
    response = _accept_invitation(app.test_client(), referrer.referral_code, name="Amina K", email="AMINA@example.com")
    assert response.status_code == 409
    assert "already has a card" in response.text
    assert db_session.scalar(select(func.count()).select_from(Referral)
                             .where(Referral.referrer_card_id == referrer.id)) == 0


def test_an_unknown_link_still_leads_to_joining(client: FlaskClient, make_program) -> None:
    make_program()
    make_program()
    response = client.get("/r/ZZZZZZZZ")
    assert response.status_code == 404
    assert "invitation link is not one we know" in response.text
    assert 'href="/"' in response.text  # the home page lists the programs to join
    assert client.get("/r/not-a-code!").status_code == 404


def test_an_unknown_link_on_a_one_shop_server_shows_its_form(client: FlaskClient, make_program,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    kit = make_program(name="Corner Coffee")
    # The test database holds other tests' programs; a shop's own install holds just its own.
    monkeypatch.setattr(customer_views, "_the_only_program", lambda: kit.program)
    response = client.get("/r/ZZZZZZZZ")
    assert response.status_code == 404
    assert "Join Corner Coffee" in response.text
    assert "invitation link is not one we know" in response.text and "You can still join here" in response.text
    assert 'name="referral_code"' not in response.text and "Invited by" not in response.text


def test_a_form_with_an_unknown_code_asks_again_without_it(client: FlaskClient, make_program,
                                                           db_session: Session) -> None:
    kit = make_program()
    other = make_program()
    other_member = client.post("/api/v1/enrollments", json={"name": "Ola Other", "email": "ola@example.com"},
                               headers=other.headers)
    assert other_member.status_code == 201
    other_code = _card(db_session, "ola@example.com").referral_code
    assert other_code
    page = client.get(f"/join/{kit.program.slug}")
    for code in ("ZZZZZZZZ", other_code):  # unknown, or a code of another program
        response = client.post(f"/join/{kit.program.slug}", data={
            "csrf_token": _form_token(page.text), "referral_code": code, "name": "Bo Lind", "email": "bo@example.com",
        })
        assert response.status_code == 422
        assert "invitation link is not one we know" in response.text
        assert 'name="referral_code"' not in response.text
        assert 'value="Bo Lind"' in response.text
        assert db_session.scalar(select(Customer).where(Customer.email == "bo@example.com")) is None
    # Sent again as the page now stands, it enrolls without an invitation.
    response = client.post(f"/join/{kit.program.slug}", data={
        "csrf_token": _form_token(page.text), "name": "Bo Lind", "email": "bo@example.com"})
    assert response.status_code == 303
    bo = _card(db_session, "bo@example.com")
    assert bo.customer.channel == "web" and _referral_of(db_session, bo) is None


def test_the_device_cookie_is_random_httponly_and_long_lived(app: Flask, make_program) -> None:
    kit = make_program()
    first, second = app.test_client(), app.test_client()
    response = first.get(f"/join/{kit.program.slug}")
    cookie = next(value for value in response.headers.getlist("Set-Cookie") if value.startswith("device_id="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    max_age = re.search(r"Max-Age=(\d+)", cookie)
    assert max_age and int(max_age.group(1)) >= 365 * 24 * 3600
    second.get(f"/join/{kit.program.slug}")
    assert _device(first) != _device(second) and len(_device(first)) >= 22
    # A browser that has one keeps it.
    again = first.get(f"/join/{kit.program.slug}")
    assert not any(value.startswith("device_id=") for value in again.headers.getlist("Set-Cookie"))


def test_a_card_enrolled_before_links_gets_its_code_on_its_page(client: FlaskClient, make_program, enroll,
                                                                db_session: Session) -> None:
    kit = make_program()
    amina = enroll(kit, email="amina@example.com")
    db_session.execute(update(Card).where(Card.serial == amina["serial"]).values(referral_code=None))
    db_session.commit()
    page = client.get(amina["card_url"])
    card = _card(db_session, "amina@example.com")
    db_session.refresh(card)
    assert card.referral_code and f"/r/{card.referral_code}" in page.text
    assert f"/r/{card.referral_code}" in client.get(amina["card_url"]).text  # the same code next time


# --- Over the API -----------------------------------------------------------------------------------------------


def _api_enroll(client: FlaskClient, kit: ProgramKit, **body: Any):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/enrollments", json={"name": "Bo Lind", **body}, headers=kit.headers)


def test_the_api_attributes_a_referral_code(client: FlaskClient, make_program, enroll, db_session: Session) -> None:
    kit = make_program()
    enroll(kit, email="amina@example.com")
    referrer = _card(db_session, "amina@example.com")
    code = referrer.referral_code
    assert code
    response = _api_enroll(client, kit, email="bo@example.com", referral_code=f"{code[:4].lower()}-{code[4:]}")
    assert response.status_code == 201, response.json
    bo = _card(db_session, "bo@example.com")
    assert bo.customer.channel == "api"
    referral = _referral_of(db_session, bo)
    assert referral is not None and referral.referrer_card_id == referrer.id and referral.self_referral is False


@pytest.mark.parametrize("code", ["ZZZZZZZZ", "nope", "another program's"])
def test_the_api_refuses_an_unknown_referral_code(client: FlaskClient, make_program, db_session: Session,
                                                  code: str) -> None:
    kit = make_program(name="Corner Coffee")
    if code == "another program's":
        other = make_program()
        assert _api_enroll(client, other, email="ola@example.com").status_code == 201
        code = _card(db_session, "ola@example.com").referral_code or ""
    response = _api_enroll(client, kit, email="bo@example.com", referral_code=code)
    assert response.status_code == 422
    problem = response.json
    assert problem["code"] == "validation_error" and problem["field"] == "referral_code"
    assert "is not a referral code of Corner Coffee" in problem["detail"]
    assert "leave referral_code out" in problem["detail"]
    assert db_session.scalar(select(Customer).where(Customer.email == "bo@example.com")) is None


@pytest.mark.parametrize(("amina", "bo"), [
    pytest.param({"email": "amina@example.com"}, {"email": "Amina+till@Example.com"}, id="email"),
    pytest.param({"phone": "+33612345678"}, {"phone": "06 12 34 56 78"}, id="phone"),
])
def test_the_api_flags_a_self_referral(client: FlaskClient, make_program, db_session: Session,
                                       amina: dict[str, str], bo: dict[str, str]) -> None:
    kit = make_program()
    first = _api_enroll(client, kit, **amina)
    assert first.status_code == 201
    referrer = db_session.scalar(select(Card).where(Card.serial == first.json["serial"]))
    assert referrer is not None
    response = _api_enroll(client, kit, referral_code=referrer.referral_code, **bo)
    assert response.status_code == 201, response.json
    new = db_session.scalar(select(Card).where(Card.serial == response.json["serial"]))
    assert new is not None
    referral = _referral_of(db_session, new)
    assert referral is not None and referral.self_referral is True
