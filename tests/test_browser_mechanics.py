"""The loyalty mechanics at the till, in Debian's Chromium: each one is seen in the cashier's quote (issue 6).

A cashier signs in, types the member's code as a keyboard-wedge scanner would, fills the basket form (coupon
chips, points to redeem, offers, a reward, the stamp-card voucher, cashback) and reads the quote. Each mechanic is
asserted from the visible text of the quote table and the receipt, and the committed purchase from the database.

The scan page's contract with these tests (static/js/cashier.js names every id): `#coupon-input` with
`#coupon-add` and `#coupon-chips`, `#redeem-input`, `#cashback-input` and `#cashback-max`, the `offer-choice`
checkboxes, `#reward-select`, `#use-voucher`; the quote's `#quote-lines`, `#quote-notes` and `#quote-outcome` hold
one `<tr data-kind>` a row, as do the receipt's `#receipt-lines`, `#receipt-notes` and `#receipt-outcome`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from flask import Flask
from playwright.sync_api import expect
from sqlalchemy import select, update

from app.domain.mechanics import mechanics_from_json
from app.models import Card, Coupon, LedgerEntry, Offer, Program, Purchase, Referral, Reward
from tests.conftest import LAPTOP, PHONE, TEST_RULES, LiveShop, RequestGuard, live_db, sign_in

OpenPage = Callable[..., tuple[Any, RequestGuard]]

WEDGE_INPUT = "#wedge-input"
AMOUNT_INPUT = "#amount"
COUPON_INPUT = "#coupon-input"
QUOTE_BUTTON = "#quote-button"
CONFIRM_BUTTON = "#confirm-button"


# ---- setting the shop up -------------------------------------------------------------------------------------


def _set_rules(app: Flask, shop: LiveShop, rules: dict[str, Any], kind: str) -> None:
    """Give the shop's program these mechanics (as the manager's settings save them) and this kind."""
    stored = mechanics_from_json({**rules, "program_type": kind}).to_json()
    with live_db(app) as session:
        program = session.get(Program, shop.kit.program.id)
        assert program is not None
        program.rules = stored
        program.kind = kind
        session.commit()


def _add_rows(app: Flask, *rows: Any) -> list[int]:
    with live_db(app) as session:
        session.add_all(rows)
        session.commit()
        return [row.id for row in rows]


def _set_card(app: Flask, serial: str, **values: Any) -> None:
    """Set a card's balances for a scenario; a points change is written to the ledger too, as an adjustment,
    so the ledger check over the whole database stays clean."""
    with live_db(app) as session:
        card = session.scalar(select(Card).where(Card.serial == serial))
        assert card is not None
        if "points" in values and values["points"] != card.points:
            session.add(LedgerEntry(card_id=card.id, kind="adjust", points=values["points"] - card.points,
                                    note="Test scenario balance"))
        session.execute(update(Card).where(Card.serial == serial).values(**values))
        session.commit()


def _card(app: Flask, serial: str) -> tuple[Card, list[Purchase]]:
    with live_db(app) as session:
        card = session.scalar(select(Card).where(Card.serial == serial))
        assert card is not None
        purchases = list(session.scalars(
            select(Purchase).where(Purchase.card_id == card.id, Purchase.status == "committed").order_by(Purchase.id)
        ))
        session.expunge_all()
        return card, purchases


def _api_purchase(shop: LiveShop, code: str, amount: str) -> None:
    response = shop.app.test_client().post("/api/v1/purchases", json={"code": code, "amount": amount},
                                           headers=shop.kit.purchase_headers())
    assert response.status_code == 201, response.json


# ---- driving the till ----------------------------------------------------------------------------------------


def _open_till(open_page: OpenPage, live_server: str, shop: LiveShop, device: dict[str, Any]) -> tuple[Any, Any]:
    page, guard = open_page(device)
    console_errors: list[str] = []
    page.on("console", lambda message: _note_error(console_errors, message))
    sign_in(page, live_server, shop.cashier.email, shop.cashier.password)
    assert page.url == f"{live_server}/cashier"
    page.wait_for_selector("body[data-scanner-ready]", state="attached")
    return page, (guard, console_errors)


def _note_error(errors: list[str], message: Any) -> None:
    # The site has no favicon; Chromium's own request for one is not the page's doing.
    if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
        errors.append(f"{message.text} ({message.location.get('url')})")


def _scan(page: Any, code: str, masked_name: str) -> None:
    """What a keyboard-wedge scanner does: type the code into the focused field and press Enter."""
    page.focus(WEDGE_INPUT)
    page.keyboard.type(code)
    page.keyboard.press("Enter")
    expect(page.locator("#card-summary")).to_contain_text(masked_name)


def _quote(page: Any) -> None:
    """Press Quote and wait until the quote is on screen (or fail with the page's message)."""
    page.click(QUOTE_BUTTON)
    _until_quoted(page)


def _until_quoted(page: Any) -> None:
    page.wait_for_selector("body:not([data-phase=quoting])", state="attached")
    phase = page.evaluate("() => document.body.dataset.phase")
    message = page.locator("#message")
    assert phase == "quoted", f"no quote ({phase}): {message.inner_text() if message.is_visible() else ''}"
    expect(page.locator("#quote")).to_be_visible()


def _rows(page: Any, tbody: str) -> list[tuple[str, str]]:
    """The rows of one part of the quote or receipt table, as the cashier reads them: (data-kind, visible text)."""
    rows = page.eval_on_selector_all(
        f"#{tbody} tr",
        "rows => rows.filter(r => r.getClientRects().length)"
        "            .map(r => [r.dataset.kind, r.innerText.replace(/\\s+/g, ' ').trim()])",
    )
    return [(kind, text) for kind, text in rows]


def _confirm(page: Any) -> None:
    expect(page.locator(CONFIRM_BUTTON)).to_be_enabled()
    page.click(CONFIRM_BUTTON)
    expect(page.locator("#receipt")).to_be_visible()


def _next_customer(page: Any) -> None:
    page.click("#next-button")
    page.wait_for_selector("body[data-phase=scanning]", state="attached")


def _assert_clean(guard: RequestGuard, console_errors: list[str]) -> None:
    guard.assert_same_origin()
    guard.assert_scripts_only_from_self()
    guard.assert_no_errors()
    assert console_errors == []


# ---- a points program: tier, coupons, offer, reward, redemption, second visit, referral --------------------------

POINTS_RULES = {
    **TEST_RULES,  # 1 point per unit, Silver 5% from 100.00, a welcome bonus of 50, a point pays 0.01 up to 50%
    "second_visit": {"percent_bp": 1500, "within_days": 7},
    "referral": {"referrer_bonus": 100, "referee_bonus": 25},
}


def test_a_cashier_sees_each_points_mechanic_line_by_line(
    app: Flask, live_server: str, live_shop: Callable[..., LiveShop], open_page: OpenPage,
) -> None:
    shop = live_shop(name="Corner Coffee")
    _set_rules(app, shop, POINTS_RULES, "points")
    program_id = shop.kit.program.id
    now = dt.datetime.now(dt.UTC)
    offer_id, _, _, reward_id = _add_rows(
        app,
        Offer(program_id=program_id, title="Happy hour", detail="Weekdays 3 to 5 pm", discount_type="percent",
              discount_value=1000, ends_at=now + dt.timedelta(days=7)),
        Coupon(program_id=program_id, code="SPRING10", kind="reusable", discount_type="percent", discount_value=1000,
               min_basket=5000),
        Coupon(program_id=program_id, code="WELCOME2", kind="reusable", discount_type="fixed", discount_value=200),
        Reward(program_id=program_id, name="Free coffee", points_cost=150, value=300),
    )
    silver = shop.enroll(name="Amina Karimi")
    _set_card(app, silver["serial"], lifetime_spend=10_000, tier="Silver", points=400)
    returning = shop.enroll(name="Bruno Costa")
    _api_purchase(shop, returning["code"], "10.00")  # the first visit, earlier today
    referred = shop.enroll(name="Chen Wei")
    _add_rows(app, Referral(referrer_card_id=_card(app, silver["serial"])[0].id,
                            referee_card_id=_card(app, referred["serial"])[0].id))
    page, (guard, console_errors) = _open_till(open_page, live_server, shop, PHONE)

    # A Silver member with 400 points: the panel lists the offer and the reward they can afford.
    _scan(page, silver["code"], "Amina K.")
    expect(page.locator("#card-balances")).to_contain_text("400 points")
    expect(page.get_by_test_id("offer-list")).to_contain_text("Happy hour")
    expect(page.locator("#reward-select")).to_contain_text("Free coffee — 150 points")
    # The scanner fires the next customer's card into the coupon field: it is not taken as a coupon.
    page.focus(COUPON_INPUT)
    page.keyboard.type(returning["code"])
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text("A card was scanned while serving Amina K.")
    expect(page.get_by_test_id("coupon-chip")).to_have_count(0)
    assert page.input_value(COUPON_INPUT) == ""

    page.fill(AMOUNT_INPUT, "47.50")
    page.fill(COUPON_INPUT, "spring10")
    page.press(COUPON_INPUT, "Enter")  # Enter in the coupon field adds the code; it does not quote
    page.fill(COUPON_INPUT, "welcome2")
    page.click("#coupon-add")
    expect(page.get_by_test_id("coupon-chip")).to_have_text(["SPRING10×", "WELCOME2×"])
    assert page.evaluate("() => document.body.dataset.phase") == "card"
    page.check(f"[data-testid=offer-choice][value='{offer_id}']")
    page.select_option("#reward-select", str(reward_id))
    page.fill("#redeem-input", "100")
    _quote(page)

    # Free coffee 3.00 off 47.50; Silver 5% of 44.50; Happy hour 10% of 42.27; WELCOME2 2.00; 100 points = 1.00.
    assert _rows(page, "quote-lines") == [
        ("reward", "Free coffee (150 points) −3.00 EUR"),
        ("tier_discount", "Silver member 5% −2.23 EUR"),
        ("offer", "Happy hour −4.23 EUR"),
        ("coupon", "Coupon WELCOME2 2.00 −2.00 EUR"),
        ("points_redemption", "100 points redeemed −1.00 EUR"),
    ]
    notes = _rows(page, "quote-notes")
    assert [kind for kind, _ in notes] == ["refusal"]
    assert notes[0][1].startswith("SPRING10: below the minimum basket by 2.50 EUR")
    expect(page.locator("#quote-amount-due")).to_have_text("35.04 EUR")
    assert _rows(page, "quote-outcome") == [
        ("points_earned", "Points earned +35"), ("points_spent", "Points used −250"),
    ]
    # A refused coupon must come off before the purchase can be confirmed.
    expect(page.locator(CONFIRM_BUTTON)).to_be_disabled()
    expect(page.get_by_test_id("coupon-chip").first).to_have_attribute("data-refused", "true")
    page.click("#requote-button")
    _until_quoted(page)
    assert _rows(page, "quote-notes") == []
    expect(page.get_by_test_id("coupon-chip")).to_have_text(["WELCOME2×"])
    _confirm(page)

    assert _rows(page, "receipt-lines") == [
        ("reward", "Free coffee (150 points) −3.00 EUR"),
        ("tier_discount", "Silver member 5% −2.23 EUR"),
        ("offer", "Happy hour −4.23 EUR"),
        ("coupon", "Coupon WELCOME2 2.00 −2.00 EUR"),
        ("points_redemption", "100 points redeemed −1.00 EUR"),
    ]
    expect(page.locator("#receipt-amount-due")).to_have_text("35.04 EUR")
    expect(page.locator("#receipt-balance")).to_have_text("185 points")  # 400 - 150 - 100 + 35
    card, purchases = _card(app, silver["serial"])
    assert [(p.amount, p.amount_due, [line["kind"] for line in p.lines]) for p in purchases] == [
        (4750, 3504, ["reward", "tier_discount", "offer", "coupon", "points_redemption"])
    ]
    assert card.points == 185
    _next_customer(page)

    # The second visit within the week.
    _scan(page, returning["code"], "Bruno C.")
    page.fill(AMOUNT_INPUT, "20.00")
    _quote(page)
    assert _rows(page, "quote-lines") == [("second_visit", "Second visit 15% −3.00 EUR")]
    expect(page.locator("#quote-amount-due")).to_have_text("17.00 EUR")
    page.click("#cancel-button")

    # A referred member's first purchase pays their bonus, shown on the quote and on the receipt.
    _scan(page, referred["code"], "Chen W.")
    page.fill(AMOUNT_INPUT, "10.00")
    _quote(page)
    assert ("bonus", "Welcome, referred friend +25 points") in _rows(page, "quote-outcome")
    _confirm(page)
    assert _rows(page, "receipt-outcome") == [
        ("points_earned", "Points earned +10"), ("bonus", "Welcome, referred friend +25 points"),
    ]
    expect(page.locator("#receipt-balance")).to_have_text("85 points")  # welcome 50 + 10 + 25
    assert _card(app, referred["serial"])[0].points == 85
    assert _card(app, silver["serial"])[0].points == 185 + 100  # the referrer's bonus
    _assert_clean(guard, console_errors)


# ---- a stamp card: a stamp, a voucher issued, the voucher used ------------------------------------------------------

STAMP_RULES = {"stamps": {"stamps_needed": 3, "min_basket": 500, "reward_label": "Free coffee", "reward_value": 300}}


def test_a_stamp_card_fills_issues_a_voucher_and_the_voucher_is_used_at_the_till(
    app: Flask, live_server: str, live_shop: Callable[..., LiveShop], open_page: OpenPage,
) -> None:
    shop = live_shop(name="Stamp Café")
    _set_rules(app, shop, STAMP_RULES, "stamps")
    member = shop.enroll(name="Dara Okafor")
    _set_card(app, member["serial"], stamps=2)
    page, (guard, console_errors) = _open_till(open_page, live_server, shop, LAPTOP)

    _scan(page, member["code"], "Dara O.")
    expect(page.locator("#card-balances")).to_have_text("2 of 3 stamps")
    expect(page.locator("#use-voucher")).to_be_hidden()
    expect(page.locator("#redeem-input")).to_be_hidden()  # points pay for nothing in this program
    page.fill(AMOUNT_INPUT, "6.00")
    _quote(page)
    assert _rows(page, "quote-lines") == []
    assert _rows(page, "quote-outcome") == [
        ("stamps_added", "Stamps added (0 of 3 on the card) +1"), ("voucher_issued", "Voucher issued: Free coffee +1"),
    ]
    _confirm(page)
    assert _rows(page, "receipt-outcome") == [
        ("stamps_added", "Stamps added (0 of 3 on the card) +1"), ("voucher_issued", "Voucher issued: Free coffee +1"),
    ]
    card, _ = _card(app, member["serial"])
    assert (card.stamps, card.vouchers) == (0, 1)
    _next_customer(page)

    # The next visit: the voucher is on the card, and using it takes the free coffee off.
    _scan(page, member["code"], "Dara O.")
    expect(page.locator("#card-balances")).to_contain_text("1 voucher")
    page.check("#use-voucher")
    page.fill(AMOUNT_INPUT, "6.00")
    _quote(page)
    assert _rows(page, "quote-lines") == [("voucher", "Stamp card: Free coffee −3.00 EUR")]
    assert _rows(page, "quote-outcome") == [("stamps_added", "Stamps added (0 of 3 on the card) +0")]
    _confirm(page)
    assert _rows(page, "receipt-lines") == [("voucher", "Stamp card: Free coffee −3.00 EUR")]
    card, purchases = _card(app, member["serial"])
    assert (card.stamps, card.vouchers, [p.amount_due for p in purchases]) == (0, 0, [600, 300])
    _assert_clean(guard, console_errors)


# ---- cashback: spent with "Max", earned on what is paid -------------------------------------------------------------

CASHBACK_RULES = {"cashback": {"percent_bp": 500}, "redeem": {"point_value": 0, "max_percent": 50}}


def test_cashback_is_spent_and_earned_at_the_till(
    app: Flask, live_server: str, live_shop: Callable[..., LiveShop], open_page: OpenPage,
) -> None:
    shop = live_shop(name="Back Again")
    _set_rules(app, shop, CASHBACK_RULES, "cashback")
    member = shop.enroll(name="Elena Rossi")
    _set_card(app, member["serial"], cashback=300)
    page, (guard, console_errors) = _open_till(open_page, live_server, shop, PHONE)

    _scan(page, member["code"], "Elena R.")
    expect(page.locator("#card-balances")).to_have_text("3.00 EUR cashback")
    page.fill(AMOUNT_INPUT, "20.00")
    page.click("#cashback-max")  # the whole balance: under half of the basket
    expect(page.locator("#cashback-input")).to_have_value("3.00")
    _until_quoted(page)
    assert _rows(page, "quote-lines") == [("cashback_redemption", "Cashback redeemed −3.00 EUR")]
    assert _rows(page, "quote-outcome") == [("cashback_earned", "Cashback earned +0.85 EUR")]
    _confirm(page)
    assert _rows(page, "receipt-lines") == [("cashback_redemption", "Cashback redeemed −3.00 EUR")]
    assert _rows(page, "receipt-outcome") == [("cashback_earned", "Cashback earned +0.85 EUR")]
    expect(page.locator("#receipt-balance")).to_have_text("0.85 EUR cashback")
    assert _card(app, member["serial"])[0].cashback == 85
    _assert_clean(guard, console_errors)
