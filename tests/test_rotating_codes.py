"""Rotating ("live") codes: the TOTP and the format as tables, then tills over HTTP (the API and the cashier's
JSON routes), the card page's device secrets, the operator command, and eight tills racing for one code.

The server's clock is pinned in the HTTP tests (`clock`), so "two periods old" and "one step ahead" are exact.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.domain.cards import revoke_card
from app.domain.errors import InvalidCardCode
from app.domain.programs import create_api_key, create_staff
from app.domain.rotating_codes import (
    MAX_DEVICES,
    RotatingCode,
    new_device_secret,
    parse_rotating_code,
    set_rotating_codes,
    slot0_secret,
    static_part,
    step_at,
    totp,
)
from app.models import Card, CardCodeSecret, UsedRotatingCode
from app.qr import qr_svg, qr_version
from app.views import till as till_views
from tests.conftest import ProgramKit, build_program

RFC_SECRET = b"12345678901234567890"  # RFC 4226 appendix D and RFC 6238 appendix B (SHA-1)
# The test vector of docs/card-code.md.
CODE = ("AGQ3EAAREIZUIVLGO4E2QNDJYULSARF3U775SJZCQKLDG52GNLXJX7L4PWAENTEPRG2JJGDG5NYG5Q5HJCMCT27AE4GRX2LBH6UQWLWQEPOC"
        "4G7AS7G2Y2YL")
PASSWORD = "correct horse battery"
NOW = dt.datetime(2026, 5, 4, 12, 0, 10, tzinfo=dt.UTC)  # 10 s into a 30-second step


# ---- the TOTP and the format: tables --------------------------------------------------------------------------


@pytest.mark.parametrize(("unix_time", "eight_digits"), [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
])
def test_totp_matches_rfc_6238(unix_time: int, eight_digits: str) -> None:
    step = unix_time // 30
    assert totp(RFC_SECRET, step, digits=8) == eight_digits
    assert totp(RFC_SECRET, step) == eight_digits[-6:]  # 6 digits: the same number mod 10^6
    # An independent implementation agrees: the `cryptography` package's TOTP.
    assert TOTP(RFC_SECRET, 8, SHA1(), 30, enforce_key_length=False).generate(unix_time).decode() == eight_digits


@pytest.mark.parametrize(("counter", "hotp"), list(enumerate([
    "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489",
])))
def test_totp_of_a_step_is_rfc_4226_hotp_of_it(counter: int, hotp: str) -> None:
    assert totp(RFC_SECRET, counter) == hotp


@pytest.mark.parametrize(("moment", "period", "step"), [
    (dt.datetime(1970, 1, 1, 0, 0, 59, tzinfo=dt.UTC), 30, 1),
    (dt.datetime(1970, 1, 1, 0, 1, 0, tzinfo=dt.UTC), 30, 2),
    (dt.datetime(1970, 1, 1, 0, 0, 59, 999999, tzinfo=dt.UTC), 60, 0),
    (dt.datetime(2033, 5, 18, 3, 33, 20, tzinfo=dt.UTC), 10, 200_000_000),
    (dt.datetime(2033, 5, 18, 5, 33, 20, tzinfo=dt.timezone(dt.timedelta(hours=2))), 10, 200_000_000),
])
def test_step_is_whole_periods_since_the_epoch(moment: dt.datetime, period: int, step: int) -> None:
    assert step_at(moment, period) == step


@pytest.mark.parametrize(("text", "parsed"), [
    (f"{CODE}.1.123456", RotatingCode(CODE, 1, "123456")),
    (f"{CODE}.0.000000", RotatingCode(CODE, 0, "000000")),
    (f"{CODE}.999999.987654", RotatingCode(CODE, 999_999, "987654")),
    (CODE, None),  # a static code
    ("", None),
    (None, None),
    (12, None),
])
def test_parse_rotating_code(text: object, parsed: RotatingCode | None) -> None:
    assert parse_rotating_code(text) == parsed


@pytest.mark.parametrize("text", [
    f"{CODE}.1",  # no TOTP
    f"{CODE}..123456",  # no slot
    f"{CODE}.01.123456",  # one spelling only: no leading zero
    f"{CODE}.1000000.123456",  # slots have at most 6 digits
    f"{CODE}.1.12345",  # 5 digits
    f"{CODE}.1.1234567",
    f"{CODE}.1.12345a",
    f"{CODE}.-1.123456",
    f"{CODE.lower()}.1.123456",
    f"{CODE[:-1]}.1.123456",
    f"{CODE}.1.123456\n",
    f" {CODE}.1.123456",
    f"{CODE}.1.123456.1",
    ".",
])
def test_a_dotted_string_that_is_not_a_live_code_is_refused(text: str) -> None:
    with pytest.raises(InvalidCardCode, match="live card code"):
        parse_rotating_code(text)
    assert static_part(text) == text  # left for the card-code check to name what is wrong


def test_static_part() -> None:
    assert static_part(f"{CODE}.12.654321") == CODE
    assert static_part(CODE) == CODE


@pytest.mark.parametrize("slot", [0, 1, 10, 999_999])
def test_a_live_code_fits_qr_version_6_at_level_m_in_alphanumeric_mode(slot: int) -> None:
    live = f"{CODE}.{slot}.123456"
    assert len(live) == 120 + 2 + len(str(slot)) + 6
    # 4 mode bits + 9 count bits + 11 per pair + 6 for an odd one: 723 bits for slot 1, 778 for slot 999999.
    # Version 5-M holds 688 bits, version 6-M 864 (108 codewords).
    assert qr_version(live) == 6
    assert qr_version(CODE) == 5  # a static code stays at version 5


# ---- over HTTP ------------------------------------------------------------------------------------------------


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dt.datetime], None]]:
    """clock(moment) pins the tills' clock; it starts at NOW."""
    now = [NOW]
    monkeypatch.setattr(till_views, "utcnow", lambda: now[0])

    def set_to(moment: dt.datetime) -> None:
        now[0] = moment

    yield set_to


def _live_program(make_program: Callable[..., ProgramKit], db_session: Session, period: int = 30) -> ProgramKit:
    kit = make_program()
    set_rotating_codes(db_session, kit.program, on=True, period=period)
    db_session.commit()
    return kit


def _card(db_session: Session, serial: str) -> Card:
    card = db_session.scalar(select(Card).where(Card.serial == serial).execution_options(populate_existing=True))
    assert card is not None
    return card


class Phone:
    """A browser that opened the card page: its slot and secret, and the live code it shows at a moment."""

    def __init__(self, member: dict[str, Any], device: CardCodeSecret, period: int) -> None:
        self.static_code = member["code"]
        self.slot = device.slot
        self.secret = device.secret
        self.period = period

    def code_at(self, moment: dt.datetime, steps: int = 0) -> str:
        return f"{self.static_code}.{self.slot}.{totp(self.secret, step_at(moment, self.period) + steps)}"


def _phone(db_session: Session, member: dict[str, Any], period: int = 30) -> Phone:
    device = new_device_secret(db_session, _card(db_session, member["serial"]), NOW)
    db_session.commit()
    return Phone(member, device, period)


class Till:
    """A signed-in member of staff at the cashier page: its JSON routes with the page's CSRF token."""

    def __init__(self, app: Flask, db_session: Session, kit: ProgramKit) -> None:
        self.staff = create_staff(db_session, kit.program, email=f"till-{uuid.uuid4().hex[:8]}@example.com",
                                  role="cashier", password=PASSWORD)
        db_session.commit()
        self.client = app.test_client()
        form = re.search(r'name="csrf_token" value="([^"]+)"', self.client.get("/login").text)
        assert form
        signed_in = self.client.post("/login", data={"csrf_token": form[1], "email": self.staff.email,
                                                     "password": PASSWORD})
        assert signed_in.status_code == 303
        meta = re.search(r'<meta name="csrf-token" content="([^"]+)">', self.client.get("/cashier").text)
        assert meta
        self.csrf = meta[1]

    def post(self, path: str, body: dict[str, Any], key: str | None = None) -> Any:
        headers = {"X-CSRF-Token": self.csrf, **({"Idempotency-Key": key} if key else {})}
        return self.client.post(f"/cashier/api{path}", json=body, headers=headers)

    def scan(self, code: str) -> Any:
        return self.post("/scans", {"code": code})

    def quote(self, code: str, amount: str = "20.00") -> Any:
        return self.post("/quotes", {"code": code, "amount": amount})

    def buy(self, code: str, amount: str = "20.00", key: str | None = None) -> Any:
        return self.post("/purchases", {"code": code, "amount": amount}, key or str(uuid.uuid4()))


def _refused(response: Any, code: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = response.json
    assert body["code"] == code and body["type"].endswith(code), body
    return body


@pytest.fixture()
def live(make_program, enroll, db_session: Session, clock) -> tuple[ProgramKit, dict[str, Any], Phone]:  # type: ignore[no-untyped-def]
    """A program with live codes, a member, and the phone showing their card."""
    kit = _live_program(make_program, db_session)
    member = enroll(kit)
    return kit, member, _phone(db_session, member)


def test_a_fresh_code_scans_and_is_recorded_against_the_till(client: FlaskClient, live, db_session: Session) -> None:
    kit, member, phone = live
    response = client.post("/api/v1/scans", json={"code": phone.code_at(NOW)}, headers=kit.headers)
    assert response.status_code == 200, response.text
    assert response.json["serial"] == member["serial"] and response.json["points"] == 50
    (used,) = db_session.scalars(select(UsedRotatingCode).execution_options(populate_existing=True)
                                 .where(UsedRotatingCode.card_id == _card(db_session, member["serial"]).id))
    assert (used.slot, used.step) == (phone.slot, step_at(NOW, 30))
    assert re.fullmatch(r"api_key:\d+", used.actor)


def test_the_same_code_scanned_twice_is_refused_the_second_time(client: FlaskClient, live) -> None:
    kit, _, phone = live
    code = phone.code_at(NOW)
    assert client.post("/api/v1/scans", json={"code": code}, headers=kit.headers).status_code == 200
    again = _refused(client.post("/api/v1/scans", json={"code": code}, headers=kit.headers), "code_already_used")
    assert again["reason"] == "already used"
    assert "already scanned" in again["detail"] and "live code on their phone" in again["detail"]


@pytest.mark.parametrize("steps", [-1, 0, 1])
def test_a_code_one_step_either_side_is_accepted(client: FlaskClient, live, steps: int) -> None:
    kit, _, phone = live
    response = client.post("/api/v1/scans", json={"code": phone.code_at(NOW, steps)}, headers=kit.headers)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("steps", [-2, -3, -20, 2])
def test_a_code_two_periods_away_is_an_expired_code(client: FlaskClient, live, steps: int) -> None:
    kit, _, phone = live
    refused = _refused(client.post("/api/v1/scans", json={"code": phone.code_at(NOW, steps)}, headers=kit.headers),
                       "expired_code")
    assert refused["reason"] == "expired code"
    assert "expired code" in refused["detail"]


def test_a_screenshot_expires_as_the_clock_moves_on(client: FlaskClient, live, clock) -> None:
    kit, _, phone = live
    screenshot = phone.code_at(NOW)
    clock(NOW + dt.timedelta(seconds=45))  # a step later: still fine, nobody used it
    clock(NOW + dt.timedelta(seconds=60))  # two steps later
    _refused(client.post("/api/v1/scans", json={"code": screenshot}, headers=kit.headers), "expired_code")


def test_a_wrong_value_is_an_expired_code(client: FlaskClient, live) -> None:
    kit, _, phone = live
    code = phone.code_at(NOW)
    wrong = code[:-6] + f"{(int(code[-6:]) + 1) % 1_000_000:06d}"
    _refused(client.post("/api/v1/scans", json={"code": wrong}, headers=kit.headers), "expired_code")


def test_scan_quote_and_purchase_by_the_same_till(app: Flask, live, db_session: Session, clock) -> None:
    kit, member, phone = live
    till, other = Till(app, db_session, kit), Till(app, db_session, kit)
    code = phone.code_at(NOW)
    assert till.scan(code).status_code == 200
    # While the code is live, another till (or the API) may not use it, and nobody may scan it again.
    _refused(other.quote(code), "code_already_used")
    _refused(other.buy(code), "code_already_used")
    _refused(app.test_client().post("/api/v1/purchases/quote", json={"code": code, "amount": "5.00"},
                                    headers=kit.headers), "code_already_used")
    _refused(till.scan(code), "code_already_used")
    clock(NOW + dt.timedelta(minutes=3))  # the cashier rang up a long basket: the code is long gone from the phone
    quote = till.quote(code)
    assert quote.status_code == 200, quote.text
    assert quote.json["points_earned"] == 20
    bought = till.buy(code)
    assert bought.status_code == 201, bought.text
    assert bought.json["points"] == 70
    assert _card(db_session, member["serial"]).points == 70
    # For everybody else it is just an old code now.
    _refused(other.buy(code), "expired_code")
    assert _card(db_session, member["serial"]).points == 70


def test_the_same_till_may_go_on_for_ten_minutes_only(app: Flask, live, db_session: Session, clock) -> None:
    kit, _, phone = live
    till = Till(app, db_session, kit)
    code = phone.code_at(NOW)
    assert till.scan(code).status_code == 200
    clock(NOW + dt.timedelta(minutes=9, seconds=50))
    assert till.quote(code).status_code == 200
    clock(NOW + dt.timedelta(minutes=10, seconds=30))
    _refused(till.quote(code), "expired_code")


def test_a_quote_or_purchase_without_a_scan_takes_the_code(client: FlaskClient, app: Flask, live,
                                                          db_session: Session) -> None:
    kit, _, phone = live
    code = phone.code_at(NOW)
    quote = client.post("/api/v1/purchases/quote", json={"code": code, "amount": "10.00"}, headers=kit.headers)
    assert quote.status_code == 200, quote.text
    bought = client.post("/api/v1/purchases", json={"code": code, "amount": "10.00"}, headers=kit.purchase_headers())
    assert bought.status_code == 201, bought.text
    _refused(Till(app, db_session, kit).scan(code), "code_already_used")
    # A purchase alone takes a fresh code too.
    fresh = phone.code_at(NOW, 1)
    alone = client.post("/api/v1/purchases", json={"code": fresh, "amount": "1.00"}, headers=kit.purchase_headers())
    assert alone.status_code == 201, alone.text
    _refused(client.post("/api/v1/scans", json={"code": fresh}, headers=kit.headers), "code_already_used")


def test_another_api_key_cannot_use_a_code_this_one_scanned(client: FlaskClient, live, db_session: Session) -> None:
    kit, _, phone = live
    _, other_key = create_api_key(db_session, kit.location, "second till")
    db_session.commit()
    other = {"Authorization": f"Bearer {other_key}"}
    code = phone.code_at(NOW)
    assert client.post("/api/v1/scans", json={"code": code}, headers=kit.headers).status_code == 200
    _refused(client.post("/api/v1/purchases", json={"code": code, "amount": "10.00"},
                         headers={**other, "Idempotency-Key": str(uuid.uuid4())}), "code_already_used")
    assert client.post("/api/v1/purchases", json={"code": code, "amount": "10.00"},
                       headers=kit.purchase_headers()).status_code == 201


def test_a_retried_purchase_is_answered_as_it_was_after_its_code_expired(client: FlaskClient, live, clock) -> None:
    kit, _, phone = live
    code = phone.code_at(NOW)
    headers = kit.purchase_headers()
    first = client.post("/api/v1/purchases", json={"code": code, "amount": "12.00"}, headers=headers)
    assert first.status_code == 201
    clock(NOW + dt.timedelta(hours=1))
    retry = client.post("/api/v1/purchases", json={"code": code, "amount": "12.00"}, headers=headers)
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json == first.json
    # The retry after a rescan (a new live code of the same card) is the same purchase too.
    clock(NOW + dt.timedelta(hours=1, minutes=1))
    rescanned = client.post("/api/v1/purchases", json={"code": phone.code_at(NOW + dt.timedelta(hours=1, minutes=1)),
                                                       "amount": "12.00"}, headers=headers)
    assert rescanned.status_code == 201 and rescanned.json == first.json


def test_a_static_code_is_refused_where_codes_are_live(client: FlaskClient, app: Flask, live,
                                                      db_session: Session) -> None:
    kit, member, _ = live
    static = member["code"]
    refused = _refused(client.post("/api/v1/scans", json={"code": static}, headers=kit.headers),
                       "rotating_code_required")
    assert refused["detail"] == ("This program uses live codes: scan the code on the member's phone, not a printout "
                                 "or screenshot.")
    _refused(client.post("/api/v1/purchases/quote", json={"code": static, "amount": "1.00"}, headers=kit.headers),
             "rotating_code_required")
    _refused(client.post("/api/v1/purchases", json={"code": static, "amount": "1.00"},
                         headers=kit.purchase_headers()), "rotating_code_required")
    _refused(Till(app, db_session, kit).scan(static), "rotating_code_required")
    # A forged or broken code is still "invalid", not "live code required".
    _refused(client.post("/api/v1/scans", json={"code": static[:-1] + ("A" if static[-1] != "A" else "B")},
                         headers=kit.headers), "invalid_code")
    assert _card(db_session, member["serial"]).points == 50


def test_unknown_slot_and_garbled_live_codes_are_invalid(client: FlaskClient, live) -> None:
    kit, member, phone = live
    unknown_slot = f"{member['code']}.{phone.slot + 5}.{totp(phone.secret, step_at(NOW, 30))}"
    body = _refused(client.post("/api/v1/scans", json={"code": unknown_slot}, headers=kit.headers), "invalid_code")
    assert "reload their card page" in body["detail"]
    garbled = _refused(client.post("/api/v1/scans", json={"code": phone.code_at(NOW)[:-1]}, headers=kit.headers),
                       "invalid_code")
    assert "live card code" in garbled["detail"]


def test_a_live_code_of_a_revoked_card_is_refused_as_revoked(client: FlaskClient, live, db_session: Session) -> None:
    kit, member, phone = live
    revoke_card(db_session, _card(db_session, member["serial"]))
    db_session.commit()
    _refused(client.post("/api/v1/scans", json={"code": phone.code_at(NOW)}, headers=kit.headers), "revoked_card")


def test_static_codes_are_unchanged_where_codes_are_not_live(client: FlaskClient, app: Flask, make_program, enroll,
                                                            db_session: Session, clock) -> None:
    kit = make_program()
    member = enroll(kit)
    for _ in range(2):
        assert client.post("/api/v1/scans", json={"code": member["code"]}, headers=kit.headers).status_code == 200
    till = Till(app, db_session, kit)
    assert till.scan(member["code"]).status_code == 200
    assert till.buy(member["code"]).status_code == 201
    assert db_session.scalar(select(func.count()).select_from(UsedRotatingCode)
                             .where(UsedRotatingCode.card_id == _card(db_session, member["serial"]).id)) == 0
    # A live code (say from a pass not yet updated after the program turned them off) scans by its signed code.
    card = _card(db_session, member["serial"])
    device = new_device_secret(db_session, card, NOW)
    db_session.commit()
    old_live = f"{member['code']}.{device.slot}.000000"
    assert client.post("/api/v1/scans", json={"code": old_live}, headers=kit.headers).status_code == 200
    assert client.post("/api/v1/purchases", json={"code": old_live, "amount": "3.00"},
                       headers=kit.purchase_headers()).status_code == 201


def test_turning_codes_off_lets_static_codes_scan_again(client: FlaskClient, live, db_session: Session) -> None:
    kit, member, _ = live
    _refused(client.post("/api/v1/scans", json={"code": member["code"]}, headers=kit.headers),
             "rotating_code_required")
    set_rotating_codes(db_session, kit.program, on=False)
    db_session.commit()
    assert client.post("/api/v1/scans", json={"code": member["code"]}, headers=kit.headers).status_code == 200


def test_old_replay_rows_go_when_the_card_is_scanned_again(client: FlaskClient, live, db_session: Session,
                                                          clock) -> None:
    kit, member, phone = live
    assert client.post("/api/v1/scans", json={"code": phone.code_at(NOW)}, headers=kit.headers).status_code == 200
    later = NOW + dt.timedelta(days=1, minutes=1)
    clock(later)
    assert client.post("/api/v1/scans", json={"code": phone.code_at(later)}, headers=kit.headers).status_code == 200
    steps = db_session.scalars(select(UsedRotatingCode.step).where(
        UsedRotatingCode.card_id == _card(db_session, member["serial"]).id))
    assert list(steps) == [step_at(later, 30)]


# ---- the card page and the device secrets -----------------------------------------------------------------------


def _page_csrf(client: FlaskClient, path: str) -> tuple[str, str]:
    page = client.get(path)
    assert page.status_code == 200
    meta = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert meta, "a live-code card page carries the CSRF token its script sends"
    return page.text, meta[1]


def test_the_card_page_of_a_live_program_has_no_static_qr(client: FlaskClient, make_program, enroll,
                                                         db_session: Session) -> None:
    kit = _live_program(make_program, db_session, period=20)
    member = enroll(kit)
    path = member["card_url"].replace("http://loyalty.test", "")
    text, _ = _page_csrf(client, path)
    assert qr_svg(member["code"]) not in text
    assert 'data-testid="live-code"' in text and 'data-period="20"' in text
    assert f'data-card-code="{member["code"]}"' in text and 'data-device-slots=""' in text
    assert '<script type="module" src="/static/js/card-code.js"></script>' in text
    assert "Download QR as PNG" not in text and "qr.png" not in text
    assert "Add to Apple Wallet" not in text
    png = client.get(f"{path}/qr.png")
    assert png.status_code == 409 and "live codes" in png.text
    # A program without live codes: the QR as before, and no script.
    plain = enroll(make_program())
    plain_text = client.get(plain["card_url"].replace("http://loyalty.test", "")).text
    assert qr_svg(plain["code"]) in plain_text
    assert "card-code.js" not in plain_text and "csrf-token" not in plain_text
    assert "Download QR as PNG" in plain_text and "Add to Apple Wallet" in plain_text


def test_each_browser_gets_its_own_secret(client: FlaskClient, live, db_session: Session) -> None:
    kit, member, phone = live
    path = member["card_url"].replace("http://loyalty.test", "")
    text, csrf = _page_csrf(client, path)
    assert f'data-device-slots="{phone.slot}"' in text
    answer = client.post(f"{path}/device", headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.json
    assert body["slot"] == phone.slot + 1 and body["period"] == 30 and body["digits"] == 6
    assert body["code"] == member["code"]
    assert re.fullmatch(r"[0-9a-f]{40}", body["secret"])
    stored = db_session.get(CardCodeSecret, (_card(db_session, member["serial"]).id, body["slot"]))
    assert stored is not None and stored.secret.hex() == body["secret"]
    # Its code scans.
    live_code = f"{body['code']}.{body['slot']}.{totp(bytes.fromhex(body['secret']), step_at(NOW, 30))}"
    assert client.post("/api/v1/scans", json={"code": live_code}, headers=kit.headers).status_code == 200
    # Without the page's CSRF token, nothing.
    assert client.post(f"{path}/device").status_code == 400


def test_a_card_keeps_ten_browsers_and_forgets_the_oldest(db_session: Session, live, client: FlaskClient) -> None:
    kit, member, first = live
    card = _card(db_session, member["serial"])
    for n in range(MAX_DEVICES):
        new_device_secret(db_session, card, NOW + dt.timedelta(seconds=n + 1))
    db_session.commit()
    slots = list(db_session.scalars(select(CardCodeSecret.slot).where(CardCodeSecret.card_id == card.id)
                                    .order_by(CardCodeSecret.slot)))
    assert slots == list(range(2, MAX_DEVICES + 2))  # the first browser (slot 1) was replaced
    _refused(client.post("/api/v1/scans", json={"code": first.code_at(NOW)}, headers=kit.headers), "invalid_code")


def test_device_secrets_only_for_live_active_cards(client: FlaskClient, make_program, enroll, live,
                                                  db_session: Session) -> None:
    plain = enroll(make_program())
    plain_path = plain["card_url"].replace("http://loyalty.test", "")
    _, csrf = _page_csrf(client, live[1]["card_url"].replace("http://loyalty.test", ""))
    assert client.post(f"{plain_path}/device", headers={"X-CSRF-Token": csrf}).status_code == 409
    assert client.post("/c/not-a-card/device", headers={"X-CSRF-Token": csrf}).status_code == 404
    _, member, _ = live
    revoke_card(db_session, _card(db_session, member["serial"]))
    db_session.commit()
    path = member["card_url"].replace("http://loyalty.test", "")
    assert client.post(f"{path}/device", headers={"X-CSRF-Token": csrf}).status_code == 410
    assert 'data-testid="live-code"' not in client.get(path).text


def test_google_wallet_slot_is_made_once(db_session: Session, live) -> None:
    _, member, _ = live
    card = _card(db_session, member["serial"])
    first = slot0_secret(db_session, card)
    assert first.slot == 0 and len(first.secret) == 20
    assert slot0_secret(db_session, card).secret == first.secret


def test_a_reissue_forgets_the_browsers(runner, db_session: Session, live) -> None:  # type: ignore[no-untyped-def]
    _, member, _ = live
    card = _card(db_session, member["serial"])
    google = slot0_secret(db_session, card)
    db_session.commit()
    assert runner.invoke(args=["cards", "reissue", member["serial"]]).exit_code == 0
    left = list(db_session.scalars(select(CardCodeSecret.slot).where(CardCodeSecret.card_id == card.id)
                                   .execution_options(populate_existing=True)))
    assert left == [google.slot]


# ---- the operator command ---------------------------------------------------------------------------------------


def test_turning_live_codes_on_and_off(runner, make_program, db_session: Session) -> None:  # type: ignore[no-untyped-def]
    kit = make_program()
    revision = kit.program.pass_revision
    on = runner.invoke(args=["programs", "rotating-codes", "--program", kit.program.slug, "--on", "--period", "45"])
    assert on.exit_code == 0, on.output
    assert "every 45 seconds" in on.output
    db_session.refresh(kit.program)
    assert kit.program.rotating_codes and kit.program.code_period_seconds == 45
    assert kit.program.pass_revision == revision + 1
    off = runner.invoke(args=["programs", "rotating-codes", "--program", kit.program.slug, "--off"])
    assert off.exit_code == 0, off.output
    db_session.refresh(kit.program)
    assert not kit.program.rotating_codes and kit.program.code_period_seconds == 45
    assert kit.program.pass_revision == revision + 2


@pytest.mark.parametrize(("args", "message"), [
    (["--on", "--period", "9"], "between 10 and 300 seconds"),
    (["--on", "--period", "301"], "between 10 and 300 seconds"),
    (["--on", "--period", "soon"], "'soon' is not a valid integer"),
    ([], "Say --on or --off"),
])
def test_bad_rotating_codes_arguments(runner, make_program, db_session: Session, args: list[str],  # type: ignore[no-untyped-def]
                                      message: str) -> None:
    kit = make_program()
    result = runner.invoke(args=["programs", "rotating-codes", "--program", kit.program.slug, *args])
    assert result.exit_code != 0
    assert message in result.output
    db_session.refresh(kit.program)
    assert not kit.program.rotating_codes and kit.program.code_period_seconds == 30


def test_the_command_has_help(runner) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(args=["programs", "rotating-codes", "--help"])
    assert result.exit_code == 0 and "--on / --off" in result.output and "--period" in result.output


# ---- eight tills, one code: real commits --------------------------------------------------------------------------

THREADS = 8


def _committed_live_member(app: Flask, keys: int = 1) -> tuple[dict[str, Any], list[dict[str, str]], Phone]:
    """A committed program with live codes and `keys` API keys, a member, and their phone."""
    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            kit = build_program(session, app)
            set_rotating_codes(session, kit.program, on=True, period=30)
            extra = [create_api_key(session, kit.location, f"till {n}")[1] for n in range(keys - 1)]
            session.commit()
        finally:
            session.close()
    response = app.test_client().post("/api/v1/enrollments", json={"name": "Race Tester",
                                      "email": f"{uuid.uuid4().hex}@example.com"}, headers=kit.headers)
    assert response.status_code == 201, response.json
    member = response.json
    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            card = session.scalar(select(Card).where(Card.serial == member["serial"]))
            assert card is not None
            phone = Phone(member, new_device_secret(session, card, dt.datetime.now(dt.UTC)), 30)
            session.commit()
        finally:
            session.close()
    headers = [kit.headers] + [{"Authorization": f"Bearer {key}"} for key in extra]
    return member, headers, phone


def _race(count: int, work: Callable[[int], Any]) -> list[Any]:
    start = threading.Barrier(count)

    def run(i: int) -> Any:
        start.wait()
        return work(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


@pytest.mark.slow
def test_eight_tills_scanning_one_fresh_code_one_wins(committing_app: Flask) -> None:
    app = committing_app
    _, headers, phone = _committed_live_member(app, keys=THREADS)
    code = phone.code_at(dt.datetime.now(dt.UTC))

    answers = _race(THREADS, lambda i: app.test_client().post("/api/v1/scans", json={"code": code},
                                                               headers=headers[i]))
    statuses = sorted(response.status_code for response in answers)
    assert statuses == [200] + [422] * (THREADS - 1), [response.json for response in answers]
    assert {response.json["code"] for response in answers if response.status_code == 422} == {"code_already_used"}


@pytest.mark.slow
def test_eight_purchases_with_one_unscanned_code_from_eight_tills_one_commits(committing_app: Flask) -> None:
    app = committing_app
    member, headers, phone = _committed_live_member(app, keys=THREADS)
    code = phone.code_at(dt.datetime.now(dt.UTC))

    answers = _race(THREADS, lambda i: app.test_client().post(
        "/api/v1/purchases", json={"code": code, "amount": "10.00"},
        headers={**headers[i], "Idempotency-Key": str(uuid.uuid4())}))
    assert sorted(response.status_code for response in answers) == [201] + [422] * (THREADS - 1)
    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            card = session.scalar(select(Card).where(Card.serial == member["serial"]))
        finally:
            session.close()
    assert card is not None and card.points == 50 + 10


def test_the_doc_states_the_format_and_its_test_vector() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "card-code.md").read_text(encoding="utf-8")
    secret = b"12345678901234567890"
    moment = dt.datetime.fromtimestamp(1111111109, dt.UTC)
    assert step_at(moment, 30) == 37037036 and totp(secret, 37037036) == "081804"
    for value in (secret.hex(), "step 37037036", f"live code = {CODE}.1.081804",
                  r"^[A-Z2-7]{120}\.(0|[1-9][0-9]{0,5})\.[0-9]{6}$", "**723 bits**", "version 6 (41 x 41 modules)",
                  "`expired_code`", "`code_already_used`", "`rotating_code_required`", "**10 minutes**"):
        assert value in text, f"docs/card-code.md no longer shows {value}"
    assert parse_rotating_code(f"{CODE}.1.081804") == RotatingCode(CODE, 1, "081804")


def test_a_live_code_program_offers_no_apple_pass(client: FlaskClient, live: tuple[ProgramKit, dict[str, Any], Phone],
                                                  enroll: Callable[..., dict[str, Any]]) -> None:
    """Apple Wallet cannot show a code that changes, and the till would refuse a fixed one: no Apple pass is
    offered (the answer's apple_pass_url is null), and the pass link says why instead of handing one out."""
    kit, member, _ = live
    newcomer = enroll(kit)
    assert newcomer["apple_pass_url"] is None and newcomer["google_save_url"]
    token = member["card_url"].rsplit("/", 1)[1]
    refused = client.get(f"/c/{token}/card.pkpass")
    assert refused.status_code == 409 and "Apple Wallet cannot show" in refused.text
    assert "Add to Apple Wallet" not in client.get(f"/c/{token}").text
