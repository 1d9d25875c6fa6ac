"""The scan page's decoder choice and its vendored files, checked in Node (no browser, no camera).

Node is already required by `make install` (npm). The browser tests exercise the polyfill path for real; this
checks the fallback order for browsers we cannot run here, and that the .wasm we serve is the very one the
polyfill's JavaScript was built for.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "static" / "vendor"


def _node(script: str) -> Any:
    node = shutil.which("node")
    assert node, "Node.js is needed (it comes with the npm that `make install` uses)"
    done = subprocess.run([node, "--input-type=module", "-e", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(("env", "order"), [
    ({"nativeFormats": ["qr_code", "ean_13"], "webAssembly": True}, ["native", "polyfill", "jsqr"]),
    ({"nativeFormats": ["ean_13"], "webAssembly": True}, ["polyfill", "jsqr"]),  # native, but no QR
    ({"nativeFormats": [], "webAssembly": True}, ["polyfill", "jsqr"]),
    ({"nativeFormats": None, "webAssembly": True}, ["polyfill", "jsqr"]),  # Linux Chromium, Firefox
    ({"nativeFormats": ["qr_code"], "webAssembly": False}, ["native", "jsqr"]),
    ({"nativeFormats": None, "webAssembly": False}, ["jsqr"]),
])
def test_decoder_fallback_order(env: dict[str, Any], order: list[str]) -> None:
    answer = _node(
        "import { decoderCandidates, pickDecoder } from './static/js/decoders.js';"
        f"const env = {json.dumps(env)};"
        "console.log(JSON.stringify({order: decoderCandidates(env), first: pickDecoder(env)}));"
    )
    assert answer == {"order": order, "first": order[0]}


def test_a_decoder_that_fails_to_start_gives_way_to_the_next() -> None:
    answer = _node(
        "import { loadDecoder } from './static/js/decoders.js';"
        "console.warn = () => {};"
        "const loaders = {"
        "  native: async () => { throw new Error('no camera formats'); },"
        "  polyfill: async () => { throw new Error('wasm offline'); },"
        "  jsqr: async () => ({ kind: 'jsqr' }),"
        "};"
        "const chosen = await loadDecoder(['native', 'polyfill', 'jsqr'], loaders);"
        "let none = null;"
        "try { await loadDecoder(['polyfill'], loaders); } catch (error) { none = error.message; }"
        "console.log(JSON.stringify({chosen: chosen.kind, none}));"
    )
    assert answer == {"chosen": "jsqr", "none": "No QR decoder could start (polyfill: wasm offline)"}


def test_the_served_wasm_is_the_one_the_polyfill_was_built_for() -> None:
    wasm = VENDOR / "zxing-wasm" / "zxing_reader.wasm"
    assert wasm.exists(), "static/vendor is made by `make install`"
    answer = _node(
        "const m = await import('./static/vendor/barcode-detector/ponyfill.js');"
        "console.log(JSON.stringify({sha256: m.ZXING_WASM_SHA256, version: m.ZXING_WASM_VERSION,"
        " prepare: typeof m.prepareZXingModule, detector: typeof m.BarcodeDetector}));"
    )
    assert answer["sha256"] == hashlib.sha256(wasm.read_bytes()).hexdigest()
    assert answer["prepare"] == answer["detector"] == "function"
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/zxing-wasm"]["version"] == answer["version"]


def test_decoders_point_at_files_make_install_copies() -> None:
    source = (ROOT / "static" / "js" / "decoders.js").read_text()
    for relative in ("barcode-detector/ponyfill.js", "zxing-wasm/zxing_reader.wasm", "jsqr/jsQR.js"):
        assert f'"{relative}"' in source
        assert (VENDOR / relative).is_file(), f"static/vendor/{relative} is missing: run `make install`"
    # The polyfill's own default for the .wasm is a CDN; ours names no other origin at all.
    assert "://" not in source


def test_front_end_packages_are_pinned_exactly() -> None:
    manifest = json.loads((ROOT / "package.json").read_text())
    lock = json.loads((ROOT / "package-lock.json").read_text())
    for name, version in manifest["dependencies"].items():
        assert version[0].isdigit(), f"{name} is pinned to a range ({version}), not a version"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    resolved = [entry["resolved"] for entry in lock["packages"].values() if "resolved" in entry]
    assert all(url.startswith("https://registry.npmjs.org/") for url in resolved), resolved


# ---- The till's basket and quote (static/js/till-quote.js): pure helpers, so Node runs them without a page. ----

CARD_CODE = "MFRGGZDFMZTWQ2LKNNWG23TP"  # 24 characters of base32, as a wedge scanner types a static card code


def _till_quote(expression: str) -> Any:
    """The JSON value of `expression`, evaluated with every export of till-quote.js in scope as `t`."""
    return _node(f"import * as t from './static/js/till-quote.js'; console.log(JSON.stringify({expression}));")


@pytest.mark.parametrize(("form", "body"), [
    ({"amount": "12.50"}, {"code": "C", "amount": "12.50", "redeem_points": 0}),
    ({"amount": " 12,50 ", "redeemPoints": "150"}, {"code": "C", "amount": "12.50", "redeem_points": 150}),
    # Anything but digits goes as typed: the server's refusal says what is wrong with it.
    ({"amount": "12.50", "redeemPoints": "ten"}, {"code": "C", "amount": "12.50", "redeem_points": "ten"}),
    ({"amount": "40", "couponCodes": ["spring 10", "SPRING10", "WELCOME"]},
     {"code": "C", "amount": "40", "redeem_points": 0, "coupon_codes": ["SPRING10", "WELCOME"]}),
    ({"amount": "40", "offerIds": ["7", "3", "7", "x"]},
     {"code": "C", "amount": "40", "redeem_points": 0, "offer_ids": [7, 3]}),
    ({"amount": "40", "rewardId": "5"}, {"code": "C", "amount": "40", "redeem_points": 0, "reward_id": 5}),
    ({"amount": "40", "rewardId": ""}, {"code": "C", "amount": "40", "redeem_points": 0}),
    ({"amount": "40", "redeemCashback": "2,50"},
     {"code": "C", "amount": "40", "redeem_points": 0, "redeem_cashback": "2.50"}),
    ({"amount": "40", "redeemCashback": "0.00"}, {"code": "C", "amount": "40", "redeem_points": 0}),
    ({"amount": "40", "useVoucher": True}, {"code": "C", "amount": "40", "redeem_points": 0, "use_voucher": True}),
    ({"amount": "40", "useVoucher": False, "couponCodes": [], "offerIds": []},
     {"code": "C", "amount": "40", "redeem_points": 0}),
])
def test_the_quote_request_is_built_from_the_basket_form(form: dict[str, Any], body: dict[str, Any]) -> None:
    assert _till_quote(f"t.quoteRequestBody('C', {json.dumps(form)})") == body


@pytest.mark.parametrize(("codes", "typed", "answer"), [
    ([], "spring 10", {"codes": ["SPRING10"], "added": "SPRING10", "refused": None}),
    (["SPRING10"], "welcome", {"codes": ["SPRING10", "WELCOME"], "added": "WELCOME", "refused": None}),
    (["SPRING10"], "Spring10", {"codes": ["SPRING10"], "added": None, "refused": "duplicate"}),
    (["SPRING10"], "   ", {"codes": ["SPRING10"], "added": None, "refused": "empty"}),
    # The scanner typed the next card's code into the focused coupon field: not a coupon.
    ([], CARD_CODE, {"codes": [], "added": None, "refused": "card_code"}),
    ([], CARD_CODE + ".3.123456", {"codes": [], "added": None, "refused": "card_code"}),
    ([], "SUMMER-7K2QX-9MZ4P", {"codes": ["SUMMER-7K2QX-9MZ4P"], "added": "SUMMER-7K2QX-9MZ4P", "refused": None}),
])
def test_coupon_codes_become_chips_once_and_a_card_code_never_does(
    codes: list[str], typed: str, answer: dict[str, Any]
) -> None:
    assert _till_quote(f"t.addCoupon({json.dumps(codes)}, {json.dumps(typed)})") == answer


def test_a_chip_is_removed_by_its_code_and_card_codes_are_found_in_any_basket_field() -> None:
    answer = _till_quote(
        "{removed: t.removeCoupon(['A', 'B', 'C'], 'B'),"
        f" amount: t.fieldWithCardCode({{amount: '{CARD_CODE}', redeemPoints: ''}}),"
        f" points: t.fieldWithCardCode({{amount: '12.50', redeemPoints: '{CARD_CODE}'}}),"
        " none: t.fieldWithCardCode({amount: '12.50', redeemPoints: '100', redeemCashback: '2.00'})}"
    )
    assert answer == {"removed": ["A", "C"], "amount": "amount", "points": "redeemPoints", "none": None}


def _rows(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(row["kind"], row["label"], row["value"]) for row in rows]


def test_a_quote_becomes_its_lines_its_refusals_and_what_it_earns() -> None:
    quote = {
        "amount": "40.00", "amount_due": "24.70",
        "lines": [
            {"kind": "reward", "label": "Free coffee (150 points)", "amount": "3.00"},
            {"kind": "tier_discount", "label": "Silver member 5%", "amount": "1.85"},
            {"kind": "offer", "label": "Happy hour", "amount": "2.00"},
            {"kind": "second_visit", "label": "Second visit 15%", "amount": "4.97"},
            {"kind": "coupon", "label": "Coupon WELCOME 2.00", "amount": "2.00"},
            {"kind": "points_redemption", "label": "148 points redeemed", "amount": "1.48"},
        ],
        "coupon_refusals": [
            {"code": "SPRING10", "reason": "below_minimum", "shortfall": "2.50",
             "message": "SPRING10 needs a basket of at least 42.50; this one is 2.50 short."},
            {"code": "NOPE", "reason": "unknown", "message": "NOPE is not a coupon of this program."},
        ],
        "notices": [{"code": "points_lowered", "message": "148 points redeemed, not 500."}],
        "points_earned": 24, "points_redeemed": 148, "reward_points": 150,
        "bonuses": [{"kind": "referral_referee", "label": "Welcome, referred friend", "amount": 100,
                     "unit": "points"}],
    }
    rows = _till_quote(f"t.quoteRows({json.dumps(quote)}, {{currency: 'EUR', programType: 'points'}})")

    assert _rows(rows["lines"]) == [
        ("reward", "Free coffee (150 points)", "−3.00 EUR"),
        ("tier_discount", "Silver member 5%", "−1.85 EUR"),
        ("offer", "Happy hour", "−2.00 EUR"),
        ("second_visit", "Second visit 15%", "−4.97 EUR"),
        ("coupon", "Coupon WELCOME 2.00", "−2.00 EUR"),
        ("points_redemption", "148 points redeemed", "−1.48 EUR"),
    ]
    assert _rows(rows["notes"]) == [
        ("refusal", "SPRING10: below the minimum basket by 2.50 EUR", ""),
        ("refusal", "NOPE: unknown code", ""),
        ("notice", "148 points redeemed, not 500.", ""),
    ]
    assert rows["notes"][0]["detail"].startswith("SPRING10 needs a basket")
    assert {row["tone"] for row in rows["notes"][:2]} == {"warning"}
    assert _rows(rows["outcome"]) == [
        ("points_earned", "Points earned", "+24"),
        ("points_spent", "Points used", "−298"),
        ("bonus", "Welcome, referred friend", "+100 points"),
    ]


@pytest.mark.parametrize(("options", "quote", "outcome"), [
    # A stamp card: the stamp always has its row (even none), the voucher when one is issued; no points row.
    ({"programType": "stamps", "stampsNeeded": 5, "voucherLabel": "Free coffee"},
     {"amount": "4.00", "stamps_added": 1, "stamps_after": 0, "vouchers_issued": 1, "points_earned": 0,
      "cashback_earned": "0.00"},
     [("stamps_added", "Stamps added (0 of 5 on the card)", "+1"),
      ("voucher_issued", "Voucher issued: Free coffee", "+1")]),
    ({"programType": "stamps"}, {"amount": "1.00", "stamps_added": 0, "stamps_after": 3, "vouchers_issued": 0},
     [("stamps_added", "Stamps added (3 on the card)", "+0")]),
    # Cashback: earned has its row; a bonus paid in cashback is minor units on the wire.
    ({"programType": "cashback"},
     {"amount": "20.00", "cashback_earned": "0.90", "cashback_redeemed": "2.00",
      "bonuses": [{"label": "Welcome, referred friend", "amount": 250, "unit": "cashback"}]},
     [("cashback_earned", "Cashback earned", "+0.90 EUR"), ("bonus", "Welcome, referred friend", "+2.50 EUR")]),
    # An older server's quote: only the fields it always had.
    ({"programType": "points"}, {"amount": "12.50", "lines": [], "points_earned": 12, "points_redeemed": 0},
     [("points_earned", "Points earned", "+12")]),
])
def test_what_a_purchase_earns_is_shown_by_program_type(
    options: dict[str, Any], quote: dict[str, Any], outcome: list[tuple[str, str, str]]
) -> None:
    rows = _till_quote(f"t.quoteRows({json.dumps(quote)}, {json.dumps({'currency': 'EUR', **options})})")
    assert _rows(rows["outcome"]) == outcome
    assert rows["notes"] == []


@pytest.mark.parametrize(("refusal", "label"), [
    # Quote.to_json names the code `coupon`; a shortfall in minor units is formatted like the basket.
    ({"coupon": "SPRING10", "reason": "below_minimum", "shortfall": 250},
     "SPRING10: below the minimum basket by 2.50 EUR"),
    ({"code": "SPRING10", "reason": "below_minimum"}, "SPRING10: below the minimum basket"),
    ({"code": "OLD", "reason": "expired"}, "OLD: expired"),
    ({"code": "SOON", "reason": "not_yet_valid"}, "SOON: not valid yet"),
    ({"code": "ONCE", "reason": "already_used"}, "ONCE: already used"),
    ({"code": "HERS", "reason": "not_for_member"}, "HERS: not for this member"),
    ({"code": "SOLO", "reason": "not_stackable"}, "SOLO: cannot be combined with the other coupons"),
    ({"code": "ODD", "reason": "some_new_reason"}, "ODD: some new reason"),
])
def test_each_refused_coupon_says_why(refusal: dict[str, Any], label: str) -> None:
    rows = _till_quote(f"t.quoteRows({{amount: '40.00', refusals: [{json.dumps(refusal)}]}}, {{currency: 'EUR'}})")
    assert [(row["kind"], row["label"], row["tone"]) for row in rows["notes"]] == [("refusal", label, "warning")]


def test_the_receipt_shows_the_purchase_and_what_only_the_quote_said() -> None:
    quote = {"amount": "40.00", "lines": [{"kind": "coupon", "label": "Coupon A", "amount": "4.00"}],
             "coupon_refusals": [{"code": "B", "reason": "expired", "message": "B expired."}],
             "points_earned": 36, "bonuses": [{"label": "Welcome", "amount": 50, "unit": "points"}]}
    purchase = {"id": 9, "amount": "40.00", "amount_due": "36.00", "points_earned": 36, "points": 86,
                "lines": [{"kind": "coupon", "label": "Coupon A", "amount": "4.00"}], "tier": None}
    rows = _till_quote(f"t.receiptRows({json.dumps(purchase)}, {json.dumps(quote)}, {{currency: 'EUR'}})")
    assert _rows(rows["lines"]) == [("coupon", "Coupon A", "−4.00 EUR")]
    assert _rows(rows["notes"]) == [("refusal", "B: expired", "")]
    assert _rows(rows["outcome"]) == [("points_earned", "Points earned", "+36"), ("bonus", "Welcome", "+50 points")]


def test_the_member_panel_lists_balances_rewards_and_the_most_points_to_redeem() -> None:
    card = {"points": 200, "stamps": 3, "vouchers": 1, "cashback": "0.00",
            "rewards": [{"id": 1, "name": "Free coffee", "points_cost": 150},
                        {"id": 2, "name": "Tote bag", "points_cost": 900}]}
    answer = _till_quote(
        f"{{points: t.balanceFigures({json.dumps(card)}, {{currency: 'EUR', programType: 'points'}}),"
        f" stamps: t.balanceFigures({json.dumps(card)}, {{currency: 'EUR', programType: 'stamps', stampsNeeded: 8}}),"
        " cashback: t.balanceFigures({points: 0, cashback: '4.10'}, {currency: 'EUR', programType: 'cashback'}),"
        f" rewards: t.rewardOptions({json.dumps(card)}),"
        f" most: t.mostPointsToRedeem({json.dumps(card)}),"
        f" mostAfterReward: t.mostPointsToRedeem({json.dumps(card)}, {{rewardId: '1'}})}}"
    )
    # Stamps the card holds show in any program (as points do); a zero cashback balance shows only in its own.
    assert [f["text"] for f in answer["points"]] == ["200 points", "3 stamps", "1 voucher"]
    assert [f["text"] for f in answer["stamps"]] == ["200 points", "3 of 8 stamps", "1 voucher"]
    assert [f["text"] for f in answer["cashback"]] == ["4.10 EUR cashback"]
    assert answer["rewards"] == [
        {"value": "1", "text": "Free coffee — 150 points", "disabled": False},
        {"value": "2", "text": "Tote bag — 900 points", "disabled": True},
    ]
    assert (answer["most"], answer["mostAfterReward"]) == (200, 50)


def test_the_page_imports_the_helpers_and_keeps_no_inline_script_or_style() -> None:
    source = (ROOT / "static" / "js" / "cashier.js").read_text()
    assert 'from "./till-quote.js"' in source
    template = (ROOT / "templates" / "cashier.html").read_text()
    assert "<script>" not in template and "style=" not in template and " on" + "click=" not in template


@pytest.mark.parametrize(("quote", "rules", "points", "cashback"), [
    # 50% of what is left after the discounts (40.00 - 4.00), a point worth 1 cent: 1800 points, but 200 held.
    ({"amount": "40.00", "lines": [{"kind": "tier_discount", "amount": "4.00"}]},
     {"pointValue": 1, "maxPercent": 50}, 200, "5.00"),
    # A point worth 10 cents: 180 of the 200; the redemption already on the quote does not shrink its own cap.
    ({"amount": "40.00", "lines": [{"kind": "tier_discount", "amount": "4.00"},
                                   {"kind": "points_redemption", "amount": "18.00"}], "points_redeemed": 180},
     {"pointValue": 10, "maxPercent": 50}, 180, "0.00"),
    # A reward chosen: its cost is not there to redeem, and its line is a discount like the others.
    ({"amount": "10.00", "lines": [{"kind": "reward", "amount": "3.00"}], "reward_points": 150},
     {"pointValue": 1, "maxPercent": 100}, 50, "5.00"),
    # Without a quote: what the card holds.
    (None, {"pointValue": 1, "maxPercent": 50}, 200, "5.00"),
    # A currency without decimals.
    ({"amount": "1000", "lines": []}, {"pointValue": 1, "maxPercent": 10}, 100, "5"),
])
def test_max_fills_in_what_the_card_holds_up_to_the_redemption_cap(
    quote: dict[str, Any] | None, rules: dict[str, Any], points: int, cashback: str
) -> None:
    card = {"points": 200, "cashback": "5.00" if quote is None or "." in quote["amount"] else "5"}
    options = {"quote": quote, **rules}
    answer = _till_quote(
        f"[t.mostPointsToRedeem({json.dumps(card)}, {json.dumps(options)}),"
        f" t.mostCashbackToSpend({json.dumps(card)}, {json.dumps(options)})]"
    )
    assert answer == [points, cashback]


@pytest.mark.parametrize(("quote", "refused"), [
    ({"lines": [], "coupon_refusals": [{"code": "SPRING10", "reason": "expired"}]},
     {"coupons": ["SPRING10"], "offers": [], "any": True}),
    # The offer without a line of its title is the refused one; the other applied.
    ({"lines": [{"kind": "offer", "label": "Happy hour"}],
      "notices": [{"code": "offer_below_minimum", "message": "Big basket needs 50.00"}]},
     {"coupons": [], "offers": ["8"], "any": True}),
    # A notice that is not about an offer (a lowered redemption) does not stop the purchase.
    ({"lines": [{"kind": "offer", "label": "Happy hour"}], "notices": [{"code": "points_lowered", "message": "."}]},
     {"coupons": [], "offers": [], "any": False}),
])
def test_what_was_refused_must_come_off_before_confirming(quote: dict[str, Any], refused: dict[str, Any]) -> None:
    chosen = [{"id": "7", "title": "Happy hour"}, {"id": "8", "title": "Big basket"}]
    assert _till_quote(f"t.refusedChoices({json.dumps(quote)}, {json.dumps(chosen)})") == refused


def test_an_offer_is_listed_with_its_terms() -> None:
    offer = {"id": 4, "title": "Happy hour", "detail": "Weekdays 3-5 pm", "discount": "10%", "min_basket": "20.00"}
    bare = {"id": 5, "title": "Coffee day", "detail": "", "discount": "1.00", "min_basket": "0.00"}
    assert _till_quote(f"[t.offerChoice({json.dumps(offer)}, 'EUR'), t.offerChoice({json.dumps(bare)}, 'EUR')]") == [
        {"id": "4", "title": "Happy hour", "terms": "10% off · on 20.00 EUR or more · Weekdays 3-5 pm"},
        {"id": "5", "title": "Coffee day", "terms": "1.00 EUR off"},
    ]
