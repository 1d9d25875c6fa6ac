"""The cashier's scan page and the manager's dashboard in Debian's Chromium, as the staff use them.

The scan page's contract with these tests: once the scanner is ready, `document.body.dataset.scannerReady` is
"camera" or "manual" and `document.body.dataset.decoder` is "native", "polyfill" or "jsqr"; `#wedge-input` takes a
keyboard-wedge scanner; `#card-summary` shows the card; `#amount`, `#quote-button`, `#quote`, `#confirm-button` and
`#receipt` (with the new balance) carry the sale. The dashboard draws enrollments per day as SVG bars with
`data-day`, `data-channel` and `data-count`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import secrets
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import expect
from sqlalchemy import select

from app.domain.enrollment import enroll_customer, parse_enrollment
from app.models import Card, Customer, Program, Purchase, Staff
from tests.conftest import LAPTOP, PHONE, LiveShop, RequestGuard, live_db, sign_in, write_qr_video

OpenPage = Callable[..., tuple[Any, RequestGuard]]

# The scan page's elements, as agreed with the page (see the module docstring).
WEDGE_INPUT = "#wedge-input"
CARD_SUMMARY = "#card-summary"
AMOUNT_INPUT = "#amount"
QUOTE_BUTTON = "#quote-button"
QUOTE = "#quote"
CONFIRM_BUTTON = "#confirm-button"
RECEIPT = "#receipt"

MEMBER_NAME, MASKED_NAME = "Amina Karimi", "Amina K."
# TEST_RULES: 1 point per whole unit, no tier below 100.00, a welcome bonus of 50.
AMOUNT, AMOUNT_MINOR, BALANCE_AFTER = "12.50", 1250, 62
# Camera scan to quote on screen, counting the page's own work (not the time a person takes to type).
SCAN_TO_QUOTE_BUDGET_MS = 1000


def _milestones_script(masked_name: str, amount: str) -> str:
    """Runs before the page's own scripts: notes (performance.now) when each step of a sale reaches the screen.

    "camera" is when getUserMedia answered: the fake camera shows the QR in every frame, so the QR is in view
    from then on.
    """
    script = """
(() => {
  const {masked, amount, summary, quote, quoteButton} = CONFIG;
  const marks = (window.__marks = {});
  const mark = (name) => { if (!(name in marks)) marks[name] = performance.now(); };
  const shows = (selector, text) => {
    const element = document.querySelector(selector);
    return !!element && element.getClientRects().length > 0 && element.textContent.includes(text);
  };
  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    navigator.mediaDevices.getUserMedia = async (...args) => {
      const stream = await getUserMedia(...args);
      mark("camera");
      return stream;
    };
  }
  document.addEventListener("click", (event) => {
    if (event.target instanceof Element && event.target.closest(quoteButton)) mark("quote-click");
  }, true);
  new MutationObserver(() => {
    if (document.body && document.body.dataset.scannerReady) mark("ready");
    if (shows(summary, masked)) mark("summary");
    if ("quote-click" in marks && shows(quote, amount)) mark("quote");
  }).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
})();
"""
    config = {"masked": masked_name, "amount": amount, "summary": CARD_SUMMARY, "quote": QUOTE,
              "quoteButton": QUOTE_BUTTON}
    return script.replace("CONFIG", json.dumps(config))


def _wait_until_ready(page: Any) -> tuple[str, str | None]:
    """The scanner's mode and, with the camera, its QR decoder, once the page has set them up."""
    # A selector, not wait_for_function: that evaluates a string in the page, which our CSP rightly refuses.
    page.wait_for_selector("body[data-scanner-ready]", state="attached")
    ready, decoder = page.evaluate("() => [document.body.dataset.scannerReady, document.body.dataset.decoder]")
    return ready, decoder


def _quote_and_confirm(page: Any, *, double_tap: bool = False) -> None:
    page.fill(AMOUNT_INPUT, AMOUNT)
    page.click(QUOTE_BUTTON)
    expect(page.locator(QUOTE)).to_contain_text(AMOUNT)
    if double_tap:
        page.dblclick(CONFIRM_BUTTON)
    else:
        page.click(CONFIRM_BUTTON)
    expect(page.locator(RECEIPT)).to_contain_text(str(BALANCE_AFTER))


def _purchases_of(app: Flask, serial: str) -> tuple[Card, list[Purchase]]:
    with live_db(app) as session:
        card = session.scalar(select(Card).where(Card.serial == serial))
        assert card is not None
        purchases = list(session.scalars(select(Purchase).where(Purchase.card_id == card.id)))
        return card, purchases


def _staff_id(app: Flask, email: str) -> int:
    with live_db(app) as session:
        staff_id = session.scalar(select(Staff.id).where(Staff.email == email))
        assert staff_id is not None
        return staff_id


def test_a_cashier_on_a_phone_scans_a_card_with_the_camera_and_sells(
    app: Flask, live_server: str, live_shop: Callable[..., LiveShop], open_page: OpenPage,
    camera_browser: Callable[[Path], Any], tmp_path: Path, save_screenshot: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    shop = live_shop(name="Corner Coffee")
    member = shop.enroll(name=MEMBER_NAME)
    chromium = camera_browser(write_qr_video(member["code"], tmp_path / "card.y4m"))
    page, guard = open_page(PHONE, on=chromium, init_script=_milestones_script(MASKED_NAME, AMOUNT))
    page.context.grant_permissions(["camera"], origin=live_server)

    sign_in(page, live_server, shop.cashier.email, shop.cashier.password)
    assert page.url == f"{live_server}/cashier"
    # Linux Chromium has no native BarcodeDetector, so this is the zxing-wasm polyfill, served by us.
    assert _wait_until_ready(page) == ("camera", "polyfill")
    expect(page.locator(CARD_SUMMARY)).to_contain_text(MASKED_NAME)
    _quote_and_confirm(page)

    card, purchases = _purchases_of(app, member["serial"])
    assert [(p.amount, p.points_after, p.staff_id) for p in purchases] == [
        (AMOUNT_MINOR, BALANCE_AFTER, _staff_id(app, shop.cashier.email))
    ]
    assert card.points == BALANCE_AFTER
    marks = page.evaluate("window.__marks")
    assert {"camera", "ready", "summary", "quote-click", "quote"} <= marks.keys(), marks
    in_view_to_card = marks["summary"] - marks["camera"]
    quote_round_trip = marks["quote"] - marks["quote-click"]
    with capsys.disabled():
        print(f"\n  camera scan: QR in view -> card on screen {in_view_to_card:.0f} ms; "
              f"quote button -> quote on screen {quote_round_trip:.0f} ms; "
              f"page ready -> quote on screen {marks['quote'] - marks['ready']:.0f} ms (includes typing)")
    assert in_view_to_card + quote_round_trip < SCAN_TO_QUOTE_BUDGET_MS
    guard.assert_same_origin()
    guard.assert_scripts_only_from_self()
    guard.assert_no_errors()
    save_screenshot(page, "cashier-phone")


def test_a_keyboard_wedge_scan_sells_once_however_often_confirm_is_tapped(
    app: Flask, live_server: str, live_shop: Callable[..., LiveShop], open_page: OpenPage,
) -> None:
    shop = live_shop()
    member = shop.enroll(name=MEMBER_NAME)
    page, guard = open_page(PHONE)  # a Chromium with no camera at all

    sign_in(page, live_server, shop.cashier.email, shop.cashier.password)
    scanner, _decoder = _wait_until_ready(page)
    assert scanner == "manual"
    page.focus(WEDGE_INPUT)
    page.keyboard.type(member["code"])  # what a USB or Bluetooth scanner does: type the code, then Enter
    page.keyboard.press("Enter")
    expect(page.locator(CARD_SUMMARY)).to_contain_text(MASKED_NAME)
    _quote_and_confirm(page, double_tap=True)
    guard.wait_until_quiet(page)  # a second post, if the page sent one, has landed by now

    card, purchases = _purchases_of(app, member["serial"])
    assert len(purchases) == 1
    assert purchases[0].amount == AMOUNT_MINOR
    assert card.points == BALANCE_AFTER
    guard.assert_same_origin()
    guard.assert_no_errors()


def test_the_scanner_prefers_a_native_barcode_detector(
    live_server: str, live_shop: Callable[..., LiveShop], open_page: OpenPage,
    camera_browser: Callable[[Path], Any], tmp_path: Path,
) -> None:
    """Where the browser has BarcodeDetector (Chrome on Android, Safari), the page uses it, not the polyfill."""
    shop = live_shop()
    member = shop.enroll(name=MEMBER_NAME)
    native = """
window.BarcodeDetector = class BarcodeDetector {
  static async getSupportedFormats() { return ["qr_code"]; }
  async detect() {
    return [{rawValue: CODE, format: "qr_code", boundingBox: new DOMRectReadOnly(0, 0, 10, 10), cornerPoints: []}];
  }
};""".replace("CODE", json.dumps(member["code"]))
    chromium = camera_browser(write_qr_video(member["code"], tmp_path / "card.y4m"))
    page, guard = open_page(PHONE, on=chromium, init_script=native)

    sign_in(page, live_server, shop.cashier.email, shop.cashier.password)

    assert _wait_until_ready(page) == ("camera", "native")
    expect(page.locator(CARD_SUMMARY)).to_contain_text(MASKED_NAME)
    guard.assert_same_origin()


def test_the_scanner_falls_back_to_jsqr_when_the_polyfills_wasm_cannot_load(
    live_server: str, live_shop: Callable[..., LiveShop], open_page: OpenPage,
    camera_browser: Callable[[Path], Any], tmp_path: Path,
) -> None:
    shop = live_shop()
    member = shop.enroll(name=MEMBER_NAME)
    chromium = camera_browser(write_qr_video(member["code"], tmp_path / "card.y4m"))
    page, guard = open_page(PHONE, on=chromium)
    page.context.route("**/*.wasm", lambda route: route.abort())

    sign_in(page, live_server, shop.cashier.email, shop.cashier.password)

    assert _wait_until_ready(page) == ("camera", "jsqr")
    expect(page.locator(CARD_SUMMARY)).to_contain_text(MASKED_NAME)
    guard.assert_same_origin()


def _enroll_on(session: Any, program: Program, channel: str, days_ago: int, now: dt.datetime) -> None:
    request = parse_enrollment({"name": "Chart Member", "email": f"{channel}-{secrets.token_hex(5)}@example.com"})
    card = enroll_customer(session, program, request, channel=channel)
    card.customer.created_at = now - dt.timedelta(days=days_ago)


def test_the_manager_sees_the_enrollments_the_database_holds(
    app: Flask, live_server: str, live_shop: Callable[..., LiveShop], open_page: OpenPage,
    save_screenshot: Callable[..., Path],
) -> None:
    shop, other_shop = live_shop(name="Corner Coffee"), live_shop()
    now = dt.datetime.now(dt.UTC)
    with live_db(app) as session:
        program = session.get(Program, shop.kit.program.id)
        other = session.get(Program, other_shop.kit.program.id)
        assert program is not None and other is not None
        for channel, days_ago in [("web", 0), ("web", 1), ("web", 1), ("till", 1), ("api", 3), ("web", 6),
                                  ("referral", 6), ("till", 12), ("web", 20), ("api", 27)]:
            _enroll_on(session, program, channel, days_ago, now)
        _enroll_on(session, other, "web", 1, now)  # another program's member: not on this dashboard
        session.commit()
        expected = Counter(
            (created_at.date().isoformat(), channel) for created_at, channel in session.execute(
                select(Customer.created_at, Customer.channel).where(Customer.program_id == program.id)
            ).tuples()
        )
    page, guard = open_page(LAPTOP)

    sign_in(page, live_server, shop.manager.email, shop.manager.password)

    assert page.url == f"{live_server}/manager"
    # The default range (90 days) draws weeks; the manager picks the last 30 days, which draws days.
    today = now.date()
    page.fill("input[name=from]", (today - dt.timedelta(days=29)).isoformat())
    page.fill("input[name=to]", today.isoformat())
    page.click("form.range-form button[type=submit]")
    page.wait_for_load_state("load")
    assert f"from={(today - dt.timedelta(days=29)).isoformat()}" in page.url
    bars = page.eval_on_selector_all(
        "svg [data-day][data-channel][data-count]",
        """bars => bars.map(bar => [[...document.querySelectorAll("svg")].indexOf(bar.closest("svg")),
                                    bar.dataset.day, bar.dataset.channel, Number(bar.dataset.count)])""",
    )
    charts: dict[int, Counter[tuple[str, str]]] = defaultdict(Counter)
    for chart, day, channel, count in bars:
        charts[chart][day, channel] += count
    assert charts, "no enrollment chart with data-day, data-channel and data-count bars"
    for counts in charts.values():
        assert +counts == expected  # unary + drops the zero bars of quiet days
    # The chart's data downloads as CSV from the link beside it: the same counts, one row per day.
    with page.expect_download() as download_info:
        page.click("a[data-csv='enrollments-by-channel']")
    rows = list(csv.reader(io.StringIO(Path(download_info.value.path()).read_text())))
    header, *days = rows
    downloaded = Counter({(day, channel): int(count) for day, *counts in days
                          for channel, count in zip(header[1:-1], counts[:-1], strict=True) if int(count)})
    assert downloaded == expected and len(days) == 30
    guard.assert_same_origin()
    guard.assert_scripts_only_from_self()
    guard.assert_no_errors()
    save_screenshot(page, "manager-laptop")


def _settle(page: Any) -> None:
    """Wait until a page's scripts have fetched what they fetch (a page without scripts is done at load)."""
    if page.locator("script[src]").count():
        page.wait_for_load_state("networkidle")


def test_no_page_asks_another_origin_for_anything(
    live_server: str, live_shop: Callable[..., LiveShop], open_page: OpenPage,
) -> None:
    """Every page a customer, cashier or manager opens, and every link from the staff pages, stays on its origin."""
    shop = live_shop()
    member = shop.enroll(name=MEMBER_NAME)
    page, guard = open_page(LAPTOP)
    card_path = member["card_url"].removeprefix(live_server)
    for path in ["/", f"/join/{shop.kit.program.slug}", card_path, "/login"]:
        assert page.goto(path).status == 200, path
        _settle(page)

    sign_in(page, live_server, shop.manager.email, shop.manager.password)
    visited = set()
    for home in ["/cashier", "/manager"]:
        assert page.goto(home).status == 200, home
        _settle(page)
        links = page.eval_on_selector_all(
            "a[href^='/']:not([download])", "links => links.map(link => link.getAttribute('href'))"
        )
        for link in sorted(set(links) - visited - {home}):
            visited.add(link)
            assert page.goto(link).status == 200, link
            _settle(page)

    guard.assert_same_origin()
    guard.assert_scripts_only_from_self()
    guard.assert_no_errors()
