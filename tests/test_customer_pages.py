"""The customer's side in HTML: the enrollment form, the card page behind its secret link, the QR download."""

from __future__ import annotations

import datetime as dt
import io
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.domain.enrollment import CONSENT_WORDING_VERSION
from app.models import Card, Customer, Offer, Program, utcnow
from tests.conftest import live_db


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


# --- The birthday on the form -----------------------------------------------------------------------------------


def test_the_form_asks_for_the_birthday_with_its_purpose(client: FlaskClient, make_program) -> None:
    kit = make_program()
    page = client.get(f"/join/{kit.program.slug}")
    assert "For a birthday treat; leave empty if you prefer." in page.text
    assert '<select name="birthday_month"' in page.text and '<select name="birthday_day"' in page.text
    # Optional: nothing is chosen until the customer chooses.
    assert "selected" not in page.text


@pytest.mark.parametrize(("month", "day", "status", "stored", "message"), [
    ("7", "14", 303, (7, 14), None),
    ("2", "29", 303, (2, 29), None),
    ("12", "31", 303, (12, 31), None),
    ("", "", 303, None, None),
    ("2", "30", 422, None, "There is no 30 February"),
    ("2", "31", 422, None, "There is no 31 February"),
    ("4", "31", 422, None, "There is no 31 April"),
    ("7", "", 422, None, "choose both the month and the day"),
    ("", "14", 422, None, "choose both the month and the day"),
    ("13", "1", 422, None, "There is no month 13"),
    ("July", "14", 422, None, "from the lists"),
    ("٧", "14", 422, None, "from the lists"),
])
def test_the_birthday_on_the_form_is_checked(client: FlaskClient, make_program, db_session: Session,
                                             month: str, day: str, status: int, stored: tuple[int, int] | None,
                                             message: str | None) -> None:
    kit = make_program()
    response = _join(client, kit.program.slug, name="Bo Lind", email="bo@example.com", birthday_month=month,
                     birthday_day=day)
    assert response.status_code == status, response.text
    customer = db_session.scalar(select(Customer).where(Customer.email == "bo@example.com"))
    if status == 303:
        assert customer is not None
        birthday = (customer.birthday_month, customer.birthday_day)
        assert birthday == (stored if stored else (None, None))
        return
    assert customer is None
    assert message is not None and message in response.text
    assert '<select name="birthday_month" autocomplete="bday-month"\n          aria-invalid="true"' in response.text
    assert 'value="Bo Lind"' in response.text  # what was typed is kept
    if month.isascii() and month.isdigit() and 1 <= int(month) <= 12:
        assert f'<option value="{month}" selected>' in response.text


# --- What the card page shows -----------------------------------------------------------------------------------


def _stored_rules(kit, db_session: Session, **mechanics: Any) -> None:  # type: ignore[no-untyped-def]
    """Store mechanics beside the pricing rules (create_program keeps only the pricing rules it knows)."""
    kit.program.rules = {**kit.program.rules, **mechanics}
    db_session.commit()


def test_the_card_page_shows_the_referral_link_and_what_it_earns(client: FlaskClient, make_program, enroll,
                                                                 db_session: Session) -> None:
    kit = make_program(name="Corner Coffee")
    _stored_rules(kit, db_session, referral={"referrer_bonus": 100, "referee_bonus": 50})
    member = enroll(kit, name="Amina Karimi")
    page = client.get(member["card_url"])
    card = db_session.scalar(select(Card).where(Card.serial == member["serial"]))
    assert card is not None and card.referral_code
    link = f"http://loyalty.test/r/{card.referral_code}"
    assert re.search(rf'<input class="copy-field" type="url" readonly value="{re.escape(link)}"', page.text)
    assert "Invite a friend" in page.text
    assert "you get 100 points and they get 50 points" in page.text
    assert "mailto:?subject=Join%20me%20at%20Corner%20Coffee" in page.text
    assert "<script" not in page.text  # no inline script: the page's CSP would refuse it


def test_a_stamp_card_shows_its_stamps_and_vouchers(client: FlaskClient, make_program, enroll,
                                                    db_session: Session) -> None:
    kit = make_program()
    _stored_rules(kit, db_session, program_type="stamps",
                  stamps={"stamps_needed": 8, "reward_label": "Free coffee", "reward_value": 350})
    member = enroll(kit)
    db_session.execute(update(Card).where(Card.serial == member["serial"]).values(stamps=3, vouchers=1, points=0))
    db_session.commit()
    page = client.get(member["card_url"])
    stamps = re.search(r'<div class="stamp-card" data-testid="stamps">(.*?)</svg>', page.text, re.S)
    assert stamps, page.text
    circles = re.findall(r'<circle class="stamp( filled)?"', stamps.group(1))
    assert len(circles) == 8
    assert sum(1 for filled in circles if filled) == 3
    assert 'aria-label="3 of 8 stamps"' in page.text
    assert "5 more for your reward (Free coffee)" in page.text
    assert "1 reward\n      ready: Free coffee" in page.text
    assert "<dt>Points</dt>" not in page.text  # a stamp card with no points shows no points figure


def test_a_cashback_card_shows_its_balance_in_money(client: FlaskClient, make_program, enroll,
                                                    db_session: Session) -> None:
    kit = make_program(currency="EUR")
    _stored_rules(kit, db_session, program_type="cashback", cashback={"percent_bp": 300})
    member = enroll(kit)
    db_session.execute(update(Card).where(Card.serial == member["serial"]).values(cashback=1250))
    db_session.commit()
    page = client.get(member["card_url"])
    assert re.search(r'<dt>Cashback</dt><dd class="cashback" data-testid="cashback">12.50 EUR</dd>', page.text)
    assert ">50<" in page.text  # the welcome bonus points it still holds


def test_the_card_page_lists_the_offers_running_now(client: FlaskClient, make_program, enroll,
                                                    db_session: Session) -> None:
    kit = make_program()
    other = make_program()
    now = utcnow()
    hour, day = dt.timedelta(hours=1), dt.timedelta(days=1)
    offers = [
        Offer(program_id=kit.program.id, title="Cake Tuesday", detail="Any slice of cake.", discount_type="percent",
              discount_value=2000, min_basket=500, starts_at=now - hour,
              ends_at=dt.datetime.combine((now + 3 * day).date(), dt.time(0), dt.UTC)),
        Offer(program_id=kit.program.id, title="Open-ended", discount_type="fixed", discount_value=150),
        Offer(program_id=kit.program.id, title="Not yet", discount_type="percent", discount_value=1000,
              starts_at=now + hour),
        Offer(program_id=kit.program.id, title="Over", discount_type="percent", discount_value=1000,
              starts_at=now - 2 * day, ends_at=now - hour),
        Offer(program_id=kit.program.id, title="Switched off", discount_type="percent", discount_value=1000,
              active=False),
        Offer(program_id=other.program.id, title="Somebody else's", discount_type="percent", discount_value=1000),
    ]
    db_session.add_all(offers)
    db_session.commit()
    member = enroll(kit)
    page = client.get(member["card_url"])
    section = re.search(r'<section class="member-section" data-testid="offers">(.*?)</section>', page.text, re.S)
    assert section, page.text
    shown = section.group(1)
    assert re.findall(r'<span class="offer-title">([^<]+)</span>', shown) == ["Cake Tuesday", "Open-ended"]
    assert "20% off" in shown and "1.50 EUR off" in shown
    assert "Any slice of cake." in shown
    assert "On a basket of 5.00 EUR or more." in shown
    last_day = (now + 2 * day).date()
    assert f"Until the end of {last_day.day} {last_day:%B %Y} (UTC)." in shown
    for hidden in ("Not yet", "Over", "Switched off", "Somebody else"):
        assert hidden not in page.text


def test_the_card_page_fits_a_phone(app: Flask, live_shop, open_page) -> None:  # type: ignore[no-untyped-def]
    """Everything the card page can show, on a 390-pixel phone: nothing wider than the screen, no CSP refusal."""
    shop = live_shop(name="Corner Coffee")
    member = shop.enroll(name="Amina Karimi")
    with live_db(app) as session:
        program = session.get(Program, shop.kit.program.id)
        assert program is not None
        program.rules = {**program.rules, "program_type": "stamps", "referral": {"referrer_bonus": 2},
                         "stamps": {"stamps_needed": 12, "reward_label": "Free coffee", "reward_value": 350}}
        session.add(Offer(program_id=program.id, title="Double stamps on a rainy Tuesday afternoon",
                          detail="Two stamps for every coffee bought between two and five.",
                          discount_type="percent", discount_value=1000, min_basket=500))
        session.execute(update(Card).where(Card.serial == member["serial"]).values(stamps=5, vouchers=2))
        session.commit()
    page, guard = open_page()
    response = page.goto(member["card_url"].replace("http://loyalty.test", ""))
    assert response is not None and response.status == 200
    assert page.get_by_text("5 of 12 stamps").is_visible()
    link = page.get_by_test_id("referral-url")
    assert link.is_visible() and re.fullmatch(rf"{re.escape(guard.origin)}/r/[0-9A-Z]{{8}}", link.input_value())
    assert page.get_by_text("Double stamps on a rainy Tuesday afternoon").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    for testid in ("stamps", "offers", "referral", "referral-url"):
        box = page.get_by_test_id(testid).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, (testid, box)
    guard.assert_same_origin()
    guard.assert_no_errors()
