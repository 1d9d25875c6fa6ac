"""A program with live codes, in Debian's Chromium: the card page draws a QR that changes every period, holds
what the server expects from this browser's secret, reads back as that text, and scans at the till once.

The browser's clock is Playwright's (`page.clock.set_fixed_time`): the page sees a fixed moment until the test
moves it, so "one period later" is exact. The server keeps its real clock, which the codes are checked against.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.domain.rotating_codes import set_rotating_codes, step_at, totp
from app.models import Card, CardCodeSecret, Program
from app.qr import qr_svg
from tests.conftest import PHONE, LiveShop, RequestGuard, live_db

OpenPage = Callable[..., tuple[Any, RequestGuard]]
PERIOD = 30

# Reads the pixels of a screenshot (a PNG, base64) with the till's own jsQR decoder (static/js/decoders.js).
_READ_QR_FROM_PNG = """async (png) => {
  const { loadDecoder } = await import("/static/js/decoders.js");
  const decoder = await loadDecoder(["jsqr"]);
  const image = new Image();
  image.src = "data:image/png;base64," + png;
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  return decoder.detect(context.getImageData(0, 0, canvas.width, canvas.height));
}"""


def _live_shop(app: Flask, live_shop: Callable[..., LiveShop]) -> LiveShop:
    shop = live_shop(name="Corner Coffee")
    with live_db(app) as session:
        program = session.get(Program, shop.kit.program.id)
        assert program is not None
        set_rotating_codes(session, program, on=True, period=PERIOD)
        session.commit()
    return shop


def _secrets_of(app: Flask, serial: str) -> dict[int, bytes]:
    with live_db(app) as session:
        card = session.scalar(select(Card).where(Card.serial == serial))
        assert card is not None
        return {row.slot: row.secret
                for row in session.scalars(select(CardCodeSecret).where(CardCodeSecret.card_id == card.id))}


def _cashier(app: Flask, shop: LiveShop) -> tuple[FlaskClient, str]:
    """The cashier signed in on a till (a test client of the same app and database), with the page's CSRF token."""
    client = app.test_client()
    form = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert form
    signed_in = client.post("/login", data={"csrf_token": form[1], "email": shop.cashier.email,
                                            "password": shop.cashier.password})
    assert signed_in.status_code == 303
    meta = re.search(r'<meta name="csrf-token" content="([^"]+)">', client.get("/cashier").text)
    assert meta
    return client, meta[1]


def _shown(page: Any) -> dict[str, Any]:
    live = page.get_by_test_id("live-code")
    return {"code": live.get_attribute("data-code"), "slot": int(live.get_attribute("data-slot")),
            "step": int(live.get_attribute("data-step"))}


def _note_error(errors: list[str], message: Any) -> None:
    # The site has no favicon; Chromium's own request for one is not the page's doing.
    if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
        errors.append(f"{message.text} ({message.location.get('url')})")


def _read_qr(page: Any) -> str:
    png = page.get_by_test_id("live-qr").screenshot(animations="disabled")
    text: str = page.evaluate(_READ_QR_FROM_PNG, base64.b64encode(png).decode("ascii"))
    return text


def test_the_card_page_shows_a_live_code_that_changes_every_period_and_scans_once(
    app: Flask, live_shop: Callable[..., LiveShop], open_page: OpenPage, save_screenshot: Callable[..., Path],
) -> None:
    shop = _live_shop(app, live_shop)
    member = shop.enroll()
    page, guard = open_page(PHONE)
    console_errors: list[str] = []
    page.on("console", lambda message: _note_error(console_errors, message))
    moment = dt.datetime.now(dt.UTC).replace(microsecond=0)
    page.clock.set_fixed_time(moment)

    page.goto(member["card_url"])
    live = page.get_by_test_id("live-code")
    page.wait_for_selector('[data-testid=live-code][data-state=live]')
    first = _shown(page)

    # What the QR holds: the card's signed code, this browser's slot, and the TOTP of its secret for this step.
    (slot, secret), = _secrets_of(app, member["serial"]).items()
    assert slot >= 1 and first["slot"] == slot
    assert first["step"] == step_at(moment, PERIOD)
    assert first["code"] == f"{member['code']}.{slot}.{totp(secret, first['step'])}"
    assert _read_qr(page) == first["code"]
    box = page.get_by_test_id("live-qr").bounding_box()
    assert box is not None and box["width"] >= 200 and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    # The countdown says when it changes; there is no static QR and nothing to download.
    left = PERIOD - int(moment.timestamp()) % PERIOD
    assert page.get_by_test_id("live-countdown-seconds").inner_text() == str(left)
    assert page.get_by_test_id("live-countdown").is_visible()
    assert qr_svg(member["code"]) not in page.content()
    assert page.get_by_text("Download QR as PNG").count() == 0
    assert live.locator("svg").count() == 1
    save_screenshot(page, "card-phone-live")

    # One period later the page shows the next code, by itself, and needs no network for it.
    page.context.set_offline(True)
    page.clock.set_fixed_time(moment + dt.timedelta(seconds=PERIOD))
    page.wait_for_selector(f'[data-testid=live-code][data-step="{first["step"] + 1}"]')
    page.context.set_offline(False)
    second = _shown(page)
    assert second["code"] != first["code"]
    assert second["code"] == f"{member['code']}.{slot}.{totp(secret, first['step'] + 1)}"
    assert _read_qr(page) == second["code"]
    assert page.get_by_test_id("live-countdown-seconds").inner_text() == str(left)

    # At the till: each code scans once; the second scan of one is refused.
    till, csrf = _cashier(app, shop)
    for code in (first["code"], second["code"]):
        scanned = till.post("/cashier/api/scans", json={"code": code}, headers={"X-CSRF-Token": csrf})
        assert scanned.status_code == 200, scanned.text
        assert scanned.json["serial"] == member["serial"]
    again = till.post("/cashier/api/scans", json={"code": second["code"]}, headers={"X-CSRF-Token": csrf})
    assert again.status_code == 422 and again.json["code"] == "code_already_used"

    # A reload keeps this browser's secret: no second device, the same code for the same moment. (Back to the
    # first moment: the page would take a clock 30 s ahead of the server's for a wrong one and correct it.)
    page.clock.set_fixed_time(moment)
    page.reload()
    page.wait_for_selector('[data-testid=live-code][data-state=live]')
    assert _shown(page) == first
    assert len(_secrets_of(app, member["serial"])) == 1

    guard.assert_same_origin()
    guard.assert_scripts_only_from_self()
    guard.assert_no_errors()
    assert console_errors == []


def test_a_phone_whose_clock_is_off_still_shows_a_code_the_till_takes(
    app: Flask, live_shop: Callable[..., LiveShop], open_page: OpenPage,
) -> None:
    """The page corrects a clock minutes off by the server's time it was served with."""
    shop = _live_shop(app, live_shop)
    member = shop.enroll()
    page, guard = open_page(PHONE)
    page.clock.set_fixed_time(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=7))

    page.goto(member["card_url"])
    page.wait_for_selector('[data-testid=live-code][data-state=live]')
    shown = _shown(page)

    assert abs(shown["step"] - step_at(dt.datetime.now(dt.UTC), PERIOD)) <= 1
    till, csrf = _cashier(app, shop)
    scanned = till.post("/cashier/api/scans", json={"code": shown["code"]}, headers={"X-CSRF-Token": csrf})
    assert scanned.status_code == 200, scanned.text
    guard.assert_same_origin()
    guard.assert_no_errors()


def test_a_browser_whose_secret_was_replaced_asks_for_a_new_one(
    app: Flask, live_shop: Callable[..., LiveShop], open_page: OpenPage,
) -> None:
    """A card keeps ten browsers; one whose slot the server dropped gets a new secret rather than dead codes."""
    shop = _live_shop(app, live_shop)
    member = shop.enroll()
    page, guard = open_page(PHONE)
    page.goto(member["card_url"])
    page.wait_for_selector('[data-testid=live-code][data-state=live]')
    token = member["card_url"].rsplit("/", 1)[1]
    stored = page.evaluate(f"() => JSON.parse(localStorage.getItem('loyalty-live-code:{token}'))")
    assert stored["slot"] == _shown(page)["slot"] and stored["code"] == member["code"]
    assert bytes.fromhex(stored["secret"]) == _secrets_of(app, member["serial"])[stored["slot"]]

    # As if the server had replaced this browser's slot: the page does not list it, so the script asks again.
    page.evaluate(f"""() => localStorage.setItem('loyalty-live-code:{token}',
        JSON.stringify({{slot: 77, secret: "00".repeat(20), code: "stale"}}))""")
    page.reload()
    page.wait_for_selector('[data-testid=live-code][data-state=live]')
    shown = _shown(page)
    assert shown["slot"] == stored["slot"] + 1
    assert set(_secrets_of(app, member["serial"])) == {stored["slot"], shown["slot"]}
    till, csrf = _cashier(app, shop)
    scanned = till.post("/cashier/api/scans", json={"code": shown["code"]}, headers={"X-CSRF-Token": csrf})
    assert scanned.status_code == 200, scanned.text
    guard.assert_same_origin()
    guard.assert_no_errors()
