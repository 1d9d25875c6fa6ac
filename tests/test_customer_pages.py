"""The customer's side in HTML: the enrollment form, the card page behind its secret link, the QR download."""

from __future__ import annotations

import io
import re

from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.domain.enrollment import CONSENT_WORDING_VERSION
from app.models import Card, Customer


def _csrf(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, "the form carries a CSRF token"
    return match.group(1)


def _join(client: FlaskClient, slug: str, **fields: str):  # type: ignore[no-untyped-def]
    token = _csrf(client, f"/join/{slug}")
    return client.post(f"/join/{slug}", data={"csrf_token": token, **fields})


def test_form_shows_consent_unticked_with_its_wording(client: FlaskClient, make_program) -> None:
    kit = make_program(name="Corner Coffee")
    page = client.get(f"/join/{kit.program.slug}")
    assert page.status_code == 200
    checkbox = re.search(r'<input type="checkbox" name="marketing_consent"[^>]*>', page.text)
    assert checkbox and "checked" not in checkbox.group(0)
    assert "Send me offers and news from Corner Coffee" in page.text


def test_enrolling_on_the_form_lands_on_the_card_page(client: FlaskClient, make_program, db_session: Session) -> None:
    kit = make_program()
    response = _join(client, kit.program.slug, name="Zoë  Ballard", email="Zoe@Example.com", phone="",
                     marketing_consent="yes")
    assert response.status_code == 303
    customer = db_session.scalar(select(Customer).where(Customer.email == "zoe@example.com"))
    assert customer is not None
    assert customer.name == "Zoë Ballard"
    assert customer.channel == "web"
    assert customer.marketing_consent is True
    assert customer.consent_wording_version == CONSENT_WORDING_VERSION
    card = db_session.scalar(select(Card).where(Card.customer_id == customer.id))
    assert card is not None
    assert response.headers["Location"].endswith(f"/c/{card.page_token}?welcome=1")

    page = client.get(response.headers["Location"])
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert "<svg" in page.text and "<script" not in page.text
    assert "Zoë B." in page.text
    assert ">50<" in page.text  # the welcome bonus
    assert "100.00 EUR more to reach Silver" in page.text
    # The secret link is neither the serial nor the code, and carries 128 bits.
    assert card.serial not in card.page_token
    assert len(card.page_token) >= 22


def test_consent_is_off_unless_ticked(client: FlaskClient, make_program, db_session: Session) -> None:
    kit = make_program()
    _join(client, kit.program.slug, name="No Consent", phone="+44 7700 900123")
    customer = db_session.scalar(select(Customer).where(Customer.phone == "+447700900123"))
    assert customer is not None and customer.marketing_consent is False


def test_form_errors_keep_what_was_typed_and_write_nothing(client: FlaskClient, make_program,
                                                          db_session: Session) -> None:
    kit = make_program()
    before = db_session.scalar(select(func.count()).select_from(Customer))
    response = _join(client, kit.program.slug, name="Lee", email="not-an-email")
    assert response.status_code == 422
    assert "is not an email address" in response.text
    assert 'value="Lee"' in response.text
    assert 'aria-invalid="true"' in response.text
    response = _join(client, kit.program.slug, name="", email="lee@example.com")
    assert response.status_code == 422
    assert "Please give a name" in response.text
    response = _join(client, kit.program.slug, name="Lee")
    assert "email address or a phone number" in response.text
    assert db_session.scalar(select(func.count()).select_from(Customer)) == before


def test_a_form_without_its_csrf_token_is_refused(client: FlaskClient, make_program, db_session: Session) -> None:
    kit = make_program()
    response = client.post(f"/join/{kit.program.slug}", data={"name": "Mallory", "email": "m@example.com"})
    assert response.status_code == 400
    assert "form expired" in response.text
    assert db_session.scalar(select(Customer).where(Customer.email == "m@example.com")) is None


def test_second_enrollment_offers_to_resend_the_link_by_real_smtp(
    client: FlaskClient, make_program, db_session: Session, smtp_inbox
) -> None:
    kit = make_program(name="Corner Coffee")
    _join(client, kit.program.slug, name="Ana Lima", email="ana@example.com")
    again = _join(client, kit.program.slug, name="Ana L", email="ANA@example.com")
    assert again.status_code == 409
    assert "already has a card" in again.text
    assert "Send me my card link again" in again.text
    assert db_session.scalar(select(func.count()).select_from(Customer).where(
        Customer.program_id == kit.program.id)) == 1

    token = re.search(r'name="csrf_token" value="([^"]+)"', again.text).group(1)  # type: ignore[union-attr]
    sent = client.post(f"/join/{kit.program.slug}/resend", data={"csrf_token": token, "email": "ana@example.com"})
    assert sent.status_code == 200
    assert "Check your inbox" in sent.text
    assert len(smtp_inbox.messages) == 1
    message = smtp_inbox.messages[0]
    assert message["To"] == "ana@example.com"
    assert message["Subject"] == "Your Corner Coffee card"
    card = db_session.scalar(select(Card).join(Customer).where(Customer.email == "ana@example.com"))
    assert f"/c/{card.page_token}" in message.get_content()

    # An address with no card gets the same page and no mail, so the form reveals nothing.
    nobody = client.post(f"/join/{kit.program.slug}/resend", data={"csrf_token": token, "email": "x@example.com"})
    assert "Check your inbox" in nobody.text
    assert len(smtp_inbox.messages) == 1


def test_qr_png_download(client: FlaskClient, make_program, enroll) -> None:
    kit = make_program()
    member = enroll(kit)
    token = member["card_url"].rsplit("/", 1)[1]
    response = client.get(f"/c/{token}/qr.png")
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert "attachment" in response.headers["Content-Disposition"]
    image = Image.open(io.BytesIO(response.data))
    # Version 5 is 37 modules, plus a 4-module quiet zone each side, 10 px a module.
    assert image.size == ((37 + 8) * 10, (37 + 8) * 10)


def test_card_page_is_not_reachable_by_serial_or_code(client: FlaskClient, make_program, enroll) -> None:
    kit = make_program()
    member = enroll(kit)
    for guess in (member["serial"], member["code"], "nope"):
        response = client.get(f"/c/{guess}")
        assert response.status_code == 404
        assert "not valid" in response.text


def test_every_page_sends_the_security_headers(client: FlaskClient, make_program, enroll) -> None:
    kit = make_program()
    member = enroll(kit)
    for path in ("/", f"/join/{kit.program.slug}", member["card_url"].replace("http://loyalty.test", ""),
                 "/.well-known/jwks.json", "/c/unknown"):
        response = client.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"


def test_unknown_program_form_is_a_clear_404(client: FlaskClient) -> None:
    response = client.get("/join/no-such-shop")
    assert response.status_code == 404
    assert "No program" in response.text and "no-such-shop" in response.text


def test_a_revoked_card_page_shows_no_qr(client: FlaskClient, make_program, enroll, runner) -> None:
    kit = make_program()
    member = enroll(kit)
    token = member["card_url"].rsplit("/", 1)[1]
    assert runner.invoke(args=["cards", "revoke", member["serial"]]).exit_code == 0
    page = client.get(f"/c/{token}")
    assert page.status_code == 200
    assert "<svg" not in page.text
    assert "This card has been revoked" in page.text
    png = client.get(f"/c/{token}/qr.png")
    assert png.status_code == 410
