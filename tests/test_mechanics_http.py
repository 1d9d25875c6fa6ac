"""The loyalty mechanics at the till, over HTTP: coupons, offers, the second visit, referrals, stamp cards,
cashback and the rewards catalogue, quoted, committed and voided through /api/v1, and what the database holds
after each.

Programs are set up as a manager's settings leave them: rules in Program.rules (the keys of
app/domain/mechanics.py `mechanics_from_json`), the program's kind on Program.kind, and coupons, offers,
rewards and referrals as rows. The tills' clock is pinned (`clock`) where a day or a validity window matters.
Every test ends with `flask ledger check` clean.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from app.models import Card, Coupon, CouponUse, LedgerEntry, Offer, Program, Purchase, Referral, Reward
from app.views import till as till_views
from tests.conftest import TEST_RULES, ProgramKit, build_program

NOW = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)
WELCOME = TEST_RULES["welcome_bonus"]  # 50 points for every new member of a TEST_RULES program
# A points program without tiers, so amounts stay round: 1 point per euro, points worth a cent, 50% cap.
PLAIN_RULES: dict[str, Any] = {
    "earn": {"points_per_unit": "1", "rounding": "down"},
    "welcome_bonus": 50,
    "redeem": {"point_value": 1, "max_percent": 50},
}
REFERRAL_RULES: dict[str, Any] = {**PLAIN_RULES, "referral": {"referrer_bonus": 100, "referee_bonus": 40}}
STAMP_RULES: dict[str, Any] = {
    "welcome_bonus": 0,
    "stamps": {"stamps_needed": 3, "min_basket": 500, "reward_label": "Free coffee", "reward_value": 300},
}
CASHBACK_RULES: dict[str, Any] = {
    "welcome_bonus": 0,
    "redeem": {"point_value": 0, "max_percent": 50},
    "cashback": {"percent_bp": 500},
}
# Card columns that change with every write; the rest must come back exactly after a void.
VOLATILE_CARD_COLUMNS = {"updated_at"}


# --- the till and the database ---------------------------------------------------------------------------------


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[dt.datetime], None]:
    """clock(moment) pins the tills' clock (app/views/till.py passes it to the domain); it starts at NOW."""
    now = [NOW]
    monkeypatch.setattr(till_views, "utcnow", lambda: now[0])

    def set_to(moment: dt.datetime) -> None:
        now[0] = moment

    return set_to


class Shop:
    """A program at the till: quote, buy and void over the API, and read what the database holds."""

    def __init__(self, client: FlaskClient, session: Session, kit: ProgramKit,
                 enroll: Callable[..., dict[str, Any]]) -> None:
        self.client = client
        self.session = session
        self.kit = kit
        self._enroll = enroll
        self.serials: list[str] = []

    @property
    def program(self) -> Program:
        return self.kit.program

    def member(self, **fields: Any) -> dict[str, Any]:
        member = self._enroll(self.kit, **fields)
        self.serials.append(member["serial"])
        return member

    def quote(self, member: dict[str, Any], amount: str, **fields: Any) -> Any:
        return self.client.post("/api/v1/purchases/quote", json={"code": member["code"], "amount": amount, **fields},
                                headers=self.kit.headers)

    def buy(self, member: dict[str, Any], amount: str, *, key: str | None = None, **fields: Any) -> Any:
        return self.client.post("/api/v1/purchases", json={"code": member["code"], "amount": amount, **fields},
                                headers=self.kit.purchase_headers(key))

    def bought(self, member: dict[str, Any], amount: str, **fields: Any) -> dict[str, Any]:
        """A purchase that must commit; its answer."""
        response = self.buy(member, amount, **fields)
        assert response.status_code == 201, response.json
        return response.json  # type: ignore[no-any-return]

    def void(self, purchase: dict[str, Any]) -> Any:
        return self.client.post(f"/api/v1/purchases/{purchase['id']}/void", headers=self.kit.headers)

    def card(self, member: dict[str, Any]) -> Card:
        card = self.session.scalar(select(Card).where(Card.serial == member["serial"])
                                   .execution_options(populate_existing=True))
        assert card is not None
        return card

    def card_row(self, member: dict[str, Any]) -> dict[str, Any]:
        """Every column of the member's card but the ones every write touches."""
        card = self.card(member)
        return {c.key: getattr(card, c.key) for c in Card.__table__.columns if c.key not in VOLATILE_CARD_COLUMNS}

    def ledger(self, member: dict[str, Any]) -> list[tuple[str, int, str]]:
        card = self.card(member)
        return [(e.kind, e.points, e.note) for e in self.session.scalars(
            select(LedgerEntry).where(LedgerEntry.card_id == card.id).order_by(LedgerEntry.id))]

    def purchases(self) -> int:
        return int(self.session.scalar(
            select(func.count()).select_from(Purchase).where(Purchase.program_id == self.program.id)) or 0)

    def add(self, row: Any) -> Any:
        self.session.add(row)
        self.session.commit()
        return row

    def coupon(self, code: str, **terms: Any) -> Coupon:
        values: dict[str, Any] = {"kind": "reusable", "discount_type": "percent", "discount_value": 1000, **terms}
        return self.add(Coupon(program_id=self.program.id, code=code, **values))  # type: ignore[no-any-return]

    def offer(self, title: str, **terms: Any) -> Offer:
        values: dict[str, Any] = {"discount_type": "percent", "discount_value": 1000, **terms}
        return self.add(Offer(program_id=self.program.id, title=title, **values))  # type: ignore[no-any-return]

    def refer(self, referrer: dict[str, Any], referee: dict[str, Any], *, self_referral: bool = False) -> Referral:
        referral = Referral(referrer_card_id=self.card(referrer).id, referee_card_id=self.card(referee).id,
                            self_referral=self_referral)
        return self.add(referral)  # type: ignore[no-any-return]

    def referral(self, referee: dict[str, Any]) -> Referral:
        referral = self.session.scalar(select(Referral).where(Referral.referee_card_id == self.card(referee).id)
                                       .execution_options(populate_existing=True))
        assert referral is not None
        return referral

    def coupon_uses(self, coupon: Coupon) -> list[tuple[int | None, int, bool]]:
        return [(use.card_id, use.discount, use.voided_at is not None) for use in self.session.scalars(
            select(CouponUse).where(CouponUse.coupon_id == coupon.id).order_by(CouponUse.id)
            .execution_options(populate_existing=True))]

    def voids_back_to(self, purchase: dict[str, Any], *members_before: tuple[dict[str, Any], dict[str, Any]]) -> None:
        """Void the purchase; each (member, card row before the purchase) must read exactly as before."""
        response = self.void(purchase)
        assert response.status_code == 200, response.json
        for member, before in members_before:
            assert self.card_row(member) == before


@pytest.fixture()
def shop(client: FlaskClient, db_session: Session, make_program: Callable[..., ProgramKit],
         enroll: Callable[..., dict[str, Any]], runner: FlaskCliRunner) -> Iterator[Callable[..., Shop]]:
    """shop(rules=..., kind="points") -> a Shop for a new program with those rules and kind.

    After the test, `flask ledger check` must find the balance of every card the test made equal to its ledger.
    (Only those: the check reads the whole database, where tests that commit for real leave their own cards.)
    """
    shops: list[Shop] = []

    def make(rules: dict[str, Any] | None = None, kind: str = "points") -> Shop:
        kit = make_program()
        # As the manager's settings store them (create_program keeps only the pricing rules it knows).
        kit.program.rules = {**(PLAIN_RULES if rules is None else rules), "program_type": kind}
        kit.program.kind = kind
        db_session.commit()
        shops.append(Shop(client, db_session, kit, enroll))
        return shops[-1]

    yield make
    result = runner.invoke(args=["ledger", "check"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Checked " in result.output
    ours = {serial for made in shops for serial in made.serials}
    assert ours, "the test made no member"
    assert [line for line in result.output.splitlines() if any(serial in line for serial in ours)] == []


def _refusal(response: Any) -> tuple[str, str]:
    (refusal,) = response.json["coupon_refusals"]
    return refusal["reason"], refusal["message"]


# --- coupons ---------------------------------------------------------------------------------------------------


def test_a_coupon_applies_on_the_quote_and_the_purchase_and_a_void_gives_the_use_back(shop, clock) -> None:
    s = shop()
    spring = s.coupon("SPRING10", min_basket=2000, label="Spring 10% off")
    member = s.member()
    before = s.card_row(member)

    quote = s.quote(member, "40.00", coupon_codes=["spring 10"])
    assert quote.status_code == 200, quote.json
    assert quote.json["lines"] == [{"kind": "coupon", "label": "Spring 10% off", "amount": "4.00"}]
    assert (quote.json["amount_due"], quote.json["points_earned"], quote.json["coupon_refusals"]) == ("36.00", 36, [])
    assert s.purchases() == 0

    purchase = s.bought(member, "40.00", coupon_codes=["spring 10"])
    for key in ("lines", "discount_total", "amount_due", "points_earned"):
        assert purchase[key] == quote.json[key]
    assert purchase["points"] == WELCOME + 36
    assert s.coupon_uses(spring) == [(s.card(member).id, 400, False)]
    stored = s.session.get(Purchase, purchase["id"])
    assert stored is not None and stored.effects is not None and stored.effects["coupon_codes"] == ["SPRING10"]

    s.voids_back_to(purchase, (member, before))
    assert s.coupon_uses(spring) == [(s.card(member).id, 400, True)]


@pytest.mark.parametrize(("terms", "amount", "reason", "message"), [
    pytest.param(None, "40.00", "unknown", "NOPE is not a coupon of this program; check the spelling.",
                 id="unknown"),
    pytest.param({"valid_until": NOW - dt.timedelta(minutes=1)}, "40.00", "expired", "NOPE expired at ",
                 id="expired"),
    pytest.param({"valid_from": NOW + dt.timedelta(days=1)}, "40.00", "not_yet_valid", "NOPE can be used from ",
                 id="not yet valid"),
    pytest.param({"min_basket": 2500}, "22.50", "below_minimum",
                 "NOPE needs a basket of at least 25.00; this one is 2.50 short.", id="below the minimum"),
    pytest.param({"active": False}, "40.00", "unknown", "NOPE is not a coupon", id="withdrawn"),
])
def test_a_refused_coupon_is_reported_by_the_quote_and_stops_the_purchase(
    shop, clock, terms: dict[str, Any] | None, amount: str, reason: str, message: str
) -> None:
    s = shop()
    if terms is not None:
        s.coupon("NOPE", **terms)
    member = s.member()
    before = s.card_row(member)

    quote = s.quote(member, amount, coupon_codes=["NOPE"])
    assert quote.status_code == 200, quote.json
    assert quote.json["lines"] == [] and quote.json["amount_due"] == amount
    got_reason, got_message = _refusal(quote)
    assert got_reason == reason and got_message.startswith(message), got_message
    if reason == "below_minimum":
        assert quote.json["coupon_refusals"][0]["shortfall"] == "2.50"
    else:
        assert "shortfall" not in quote.json["coupon_refusals"][0]

    refused = s.buy(member, amount, coupon_codes=["NOPE"])
    assert refused.status_code == 422, refused.json
    assert refused.json["code"] == "coupon_refused"
    assert [(r["code"], r["reason"]) for r in refused.json["refusals"]] == [("NOPE", reason)]
    assert got_message in refused.json["detail"]
    assert s.purchases() == 0 and s.card_row(member) == before


def test_a_coupon_at_exactly_its_minimum_applies(shop) -> None:
    s = shop()
    s.coupon("FIVEOFF", discount_type="fixed", discount_value=500, min_basket=2500)
    member = s.member()
    purchase = s.bought(member, "25.00", coupon_codes=["FIVEOFF"])
    assert purchase["lines"] == [{"kind": "coupon", "label": "Coupon FIVEOFF 5.00", "amount": "5.00"}]
    assert purchase["amount_due"] == "20.00"


def test_a_coupon_for_another_member_or_for_members_only_is_not_for_this_member(shop) -> None:
    s = shop()
    owner, other = s.member(), s.member()
    s.coupon("GIFT-OWNER", kind="single_use", assigned_card_id=s.card(owner).id)
    quote = s.quote(other, "10.00", coupon_codes=["gift-owner"])
    assert _refusal(quote) == ("not_for_member", "GIFT-OWNER was issued to another member's card.")
    assert s.buy(other, "10.00", coupon_codes=["GIFT-OWNER"]).json["code"] == "coupon_refused"
    assert s.bought(owner, "10.00", coupon_codes=["GIFT-OWNER"])["discount_total"] == "1.00"


def test_a_reusable_code_serves_each_member_up_to_its_limit_and_a_void_gives_a_use_back(shop) -> None:
    s = shop()
    twice = s.coupon("TWICE", per_member_limit=2, discount_type="fixed", discount_value=100)
    amina, bilal = s.member(), s.member()
    first = s.bought(amina, "10.00", coupon_codes=["TWICE"])
    s.bought(amina, "10.00", coupon_codes=["TWICE"])
    assert _refusal(s.quote(amina, "10.00", coupon_codes=["TWICE"])) == (
        "already_used", "TWICE can be used twice per member, and this member has used it twice.")
    assert s.buy(amina, "10.00", coupon_codes=["TWICE"]).json["code"] == "coupon_refused"
    assert s.bought(bilal, "10.00", coupon_codes=["TWICE"])["discount_total"] == "1.00"

    assert s.void(first).status_code == 200
    assert s.bought(amina, "10.00", coupon_codes=["TWICE"])["discount_total"] == "1.00"
    assert [voided for _, _, voided in s.coupon_uses(twice)] == [True, False, False, False]


def test_a_single_use_code_is_used_once_and_a_void_frees_it(shop) -> None:
    s = shop()
    s.coupon("ONCE-ABCDE", kind="single_use", discount_type="fixed", discount_value=300)
    amina, bilal = s.member(), s.member()
    used = s.bought(amina, "10.00", coupon_codes=["ONCE-ABCDE"])
    assert used["amount_due"] == "7.00"
    for member in (amina, bilal):
        assert _refusal(s.quote(member, "10.00", coupon_codes=["ONCE-ABCDE"])) == (
            "already_used", "ONCE-ABCDE has already been used; it was good for one purchase.")
        assert s.buy(member, "10.00", coupon_codes=["ONCE-ABCDE"]).json["code"] == "coupon_refused"
    assert s.void(used).status_code == 200
    assert s.bought(bilal, "10.00", coupon_codes=["ONCE-ABCDE"])["amount_due"] == "7.00"


def test_a_retried_purchase_with_a_single_use_code_is_answered_as_it_first_was(shop) -> None:
    s = shop()
    s.coupon("ONCE-RETRY", kind="single_use", discount_type="fixed", discount_value=300)
    member = s.member()
    first = s.buy(member, "10.00", key="till-7-0001", coupon_codes=["ONCE-RETRY"])
    again = s.buy(member, "10.00", key="till-7-0001", coupon_codes=["ONCE-RETRY"])
    assert first.status_code == again.status_code == 201
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert s.purchases() == 1


def test_two_coupons_stack_only_when_both_are_stackable(shop) -> None:
    s = shop()
    s.coupon("TENOFF", stackable=True)
    s.coupon("ONEEURO", stackable=True, discount_type="fixed", discount_value=100)
    s.coupon("ALONE")
    member = s.member()
    both = s.quote(member, "20.00", coupon_codes=["TENOFF", "ONEEURO"])
    assert [(line["kind"], line["amount"]) for line in both.json["lines"]] == [("coupon", "2.00"), ("coupon", "1.00")]
    alone = s.quote(member, "20.00", coupon_codes=["TENOFF", "ALONE"])
    assert _refusal(alone)[0] == "not_stackable"
    assert alone.json["amount_due"] == "18.00"


# --- second visit ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("days_later", "discounted"), [(7, True), (8, False), (0, True)])
def test_the_second_visit_discount_holds_through_day_n_and_not_on_day_n_plus_one(
    shop, clock, days_later: int, discounted: bool
) -> None:
    s = shop({**PLAIN_RULES, "second_visit": {"percent_bp": 1500, "within_days": 7}})
    member = s.member()
    clock(NOW.replace(hour=18))
    first = s.bought(member, "20.00")
    assert first["lines"] == []  # the first purchase is not a second visit
    clock((NOW + dt.timedelta(days=days_later)).replace(hour=23, minute=59))
    second = s.bought(member, "20.00")
    expected = [{"kind": "second_visit", "label": "Second visit 15%", "amount": "3.00"}] if discounted else []
    assert second["lines"] == expected
    assert s.bought(member, "20.00")["lines"] == []  # the third is not a second visit either
    card = s.card(member)
    assert card.purchase_count == 3 and card.first_purchase_at == NOW.replace(hour=18)


def test_voiding_the_first_purchase_makes_the_next_one_the_first_again(shop, clock) -> None:
    s = shop({**PLAIN_RULES, "second_visit": {"percent_bp": 1500, "within_days": 7}})
    member = s.member()
    before = s.card_row(member)
    first = s.bought(member, "20.00")
    assert s.card(member).last_purchase_at == NOW
    s.voids_back_to(first, (member, before))
    assert s.bought(member, "20.00")["lines"] == []  # a first purchase again: no second-visit discount


# --- referrals -------------------------------------------------------------------------------------------------


def test_a_referred_members_first_purchase_pays_both_bonuses_once(shop) -> None:
    s = shop(REFERRAL_RULES)
    referrer, referee = s.member(), s.member()
    referral = s.refer(referrer, referee)

    quote = s.quote(referee, "10.00")
    assert quote.json["bonuses"] == [{"kind": "referral_referee", "label": "Welcome, referred friend",
                                      "unit": "points", "amount": 40}]
    assert quote.json["points_after"] == WELCOME + 10 + 40
    assert referrer["serial"] not in quote.text  # the till is not told who referred the member
    assert s.card(referrer).points == WELCOME  # a quote pays nothing

    first = s.bought(referee, "10.00")
    assert first["bonuses"] == quote.json["bonuses"] and first["points"] == WELCOME + 10 + 40
    assert referrer["serial"] not in str(first)
    assert s.card(referrer).points == WELCOME + 100
    assert s.ledger(referrer)[-1] == ("bonus", 100, "Referral bonus: a friend's first purchase")
    assert s.ledger(referee)[-2:] == [("earn", 10, ""), ("bonus", 40, "Welcome, referred friend")]
    assert s.referral(referee).bonus_purchase_id == first["id"]

    second = s.bought(referee, "10.00")
    assert second["bonuses"] == [] and second["points"] == WELCOME + 50 + 10
    assert s.card(referrer).points == WELCOME + 100
    assert referral.id == s.referral(referee).id


def test_a_self_referral_pays_nothing_and_says_why(shop) -> None:
    s = shop(REFERRAL_RULES)
    referrer, referee = s.member(), s.member()
    s.refer(referrer, referee, self_referral=True)
    purchase = s.bought(referee, "10.00")
    assert purchase["bonuses"] == [] and purchase["points"] == WELCOME + 10
    assert [n["code"] for n in purchase["notices"]] == ["self_referral"]
    assert s.card(referrer).points == WELCOME
    assert s.referral(referee).bonus_purchase_id is None


def test_voiding_the_purchase_that_paid_the_referral_takes_both_bonuses_back(shop) -> None:
    s = shop(REFERRAL_RULES)
    referrer, referee = s.member(), s.member()
    s.refer(referrer, referee)
    referrer_before, referee_before = s.card_row(referrer), s.card_row(referee)
    first = s.bought(referee, "10.00")

    s.voids_back_to(first, (referee, referee_before), (referrer, referrer_before))
    assert s.referral(referee).bonus_purchase_id is None
    assert s.ledger(referrer)[-1] == ("void", -100, f"Void of purchase {first['id']}: the referral bonus it paid")
    assert s.ledger(referee)[-1] == ("void", -50, f"Void of purchase {first['id']}")

    # The referral is open again: the member's next first purchase pays the bonuses, once.
    again = s.bought(referee, "10.00")
    assert again["bonuses"] != [] and s.card(referrer).points == WELCOME + 100
    assert s.referral(referee).bonus_purchase_id == again["id"]


def test_a_referral_bonus_is_taken_back_after_both_cards_were_reissued(shop) -> None:
    """A reissue gives a card a new serial, not a new account: the void finds both cards by the referral."""
    from app.domain.cards import reissue_card

    s = shop(REFERRAL_RULES)
    referrer, referee = s.member(), s.member()
    s.refer(referrer, referee)
    referrer_points = s.card(referrer).points
    first = s.bought(referee, "10.00")
    for member in (referrer, referee):
        card = reissue_card(s.session, s.card(member))
        s.session.commit()
        s.serials.append(card.serial)
        member["serial"] = card.serial
    assert s.void(first).status_code == 200
    assert (s.card(referrer).points, s.card(referee).points) == (referrer_points, WELCOME)


def test_a_void_is_refused_when_the_referrer_already_spent_the_bonus(shop) -> None:
    s = shop({**REFERRAL_RULES, "redeem": {"point_value": 1, "max_percent": 100}})
    referrer, referee = s.member(), s.member()
    s.refer(referrer, referee)
    first = s.bought(referee, "10.00")
    spent = s.bought(referrer, "1.50", redeem_points=WELCOME + 100)  # the referrer spends every point
    assert spent["points"] == 0 + 0  # 1.50 - 1.50 leaves nothing to earn on
    referrer_row, referee_row = s.card_row(referrer), s.card_row(referee)

    refused = s.void(first)
    assert refused.status_code == 409, refused.json
    assert refused.json["code"] == "points_already_spent"
    assert "referrer" in refused.json["detail"]
    assert s.card_row(referrer) == referrer_row and s.card_row(referee) == referee_row
    assert s.referral(referee).bonus_purchase_id == first["id"]

    assert s.void(spent).status_code == 200
    assert s.void(first).status_code == 200


def test_a_purchase_made_before_the_mechanics_voids_by_its_points_as_it_always_did(shop) -> None:
    s = shop()
    member = s.member()
    before = s.card_row(member)
    old = s.buy(member, "30.00", key="till-old-1").json
    stored = s.session.get(Purchase, old["id"])
    assert stored is not None
    stored.effects = None  # as every purchase committed before migration 0006 is
    s.session.commit()
    replay = s.buy(member, "30.00", key="till-old-1")  # its answer, built from what it stored
    assert replay.status_code == 201 and replay.json["points"] == old["points"]
    assert (replay.json["stamps_added"], replay.json["cashback_earned"], replay.json["bonuses"]) == (0, "0.00", [])
    s.voids_back_to(old, (member, before))
    assert s.ledger(member)[-1] == ("void", -30, f"Void of purchase {old['id']}")


# --- stamp cards -----------------------------------------------------------------------------------------------


def test_stamps_fill_the_card_issue_a_voucher_and_the_voucher_pays_for_the_item(shop) -> None:
    s = shop(STAMP_RULES, kind="stamps")
    member = s.member()
    assert s.bought(member, "4.99")["stamps_added"] == 0  # below the minimum
    s.bought(member, "5.00")
    s.bought(member, "6.00")
    before_voucher = s.card_row(member)
    third = s.quote(member, "5.00")
    assert (third.json["stamps_added"], third.json["vouchers_issued"], third.json["stamps_after"],
            third.json["vouchers_after"]) == (1, 1, 0, 1)
    filled = s.bought(member, "5.00")
    assert (filled["stamps"], filled["vouchers"], filled["vouchers_issued"]) == (0, 1, 1)
    assert (s.card(member).stamps, s.card(member).vouchers) == (0, 1)

    scan = s.client.post("/api/v1/scans", json={"code": member["code"]}, headers=s.kit.headers)
    assert (scan.json["stamps"], scan.json["vouchers"]) == (0, 1)

    before_use = s.card_row(member)
    used = s.bought(member, "8.00", use_voucher=True)
    assert used["lines"] == [{"kind": "voucher", "label": "Stamp card: Free coffee", "amount": "3.00"}]
    assert (used["amount_due"], used["vouchers_used"], used["vouchers"], used["stamps"]) == ("5.00", 1, 0, 1)
    refused = s.quote(member, "8.00", use_voucher=True)
    assert refused.status_code == 422 and refused.json["field"] == "use_voucher"

    s.voids_back_to(used, (member, before_use))  # the voucher is back, the stamp gone
    s.voids_back_to(filled, (member, before_voucher))  # and then the voucher it issued is taken back


def test_a_void_is_refused_once_the_voucher_it_issued_was_used(shop) -> None:
    s = shop(STAMP_RULES, kind="stamps")
    member = s.member()
    s.bought(member, "5.00")
    s.bought(member, "5.00")
    filled = s.bought(member, "5.00")
    s.bought(member, "3.00", use_voucher=True)
    refused = s.void(filled)
    assert refused.status_code == 409 and refused.json["code"] == "points_already_spent"


# --- cashback --------------------------------------------------------------------------------------------------


def test_cashback_is_earned_and_spent_like_points_and_voids_restore_it(shop) -> None:
    s = shop(CASHBACK_RULES, kind="cashback")
    member = s.member()
    before = s.card_row(member)
    earned = s.bought(member, "100.00")
    assert (earned["cashback_earned"], earned["cashback"], earned["points_earned"]) == ("5.00", "5.00", 0)
    after_earning = s.card_row(member)

    too_much = s.quote(member, "20.00", redeem_cashback="5.01")
    assert too_much.status_code == 422 and too_much.json["field"] == "redeem_cashback"
    spent = s.bought(member, "20.00", redeem_cashback="5.00")
    assert spent["lines"] == [{"kind": "cashback_redemption", "label": "Cashback redeemed", "amount": "5.00"}]
    assert (spent["amount_due"], spent["cashback_redeemed"], spent["cashback_earned"], spent["cashback"]) == (
        "15.00", "5.00", "0.75", "0.75")
    assert s.card(member).cashback == 75

    refused = s.void(earned)
    assert refused.status_code == 409 and refused.json["code"] == "points_already_spent"
    s.voids_back_to(spent, (member, after_earning))
    s.voids_back_to(earned, (member, before))
    detail = s.client.get(f"/api/v1/cards/{member['serial']}", headers=s.kit.headers).json
    assert detail["cashback"] == "0.00"


# --- the rewards catalogue and offers --------------------------------------------------------------------------


def test_a_reward_needs_its_points_and_then_is_free_and_a_void_gives_the_points_back(shop) -> None:
    s = shop()
    coffee = s.add(Reward(program_id=s.program.id, name="Free coffee", points_cost=150, value=300))
    member = s.member()
    too_few = s.quote(member, "5.00", reward_id=coffee.id)
    assert too_few.status_code == 422, too_few.json
    assert (too_few.json["code"], too_few.json["field"]) == ("validation_error", "reward_id")
    assert too_few.json["detail"] == "Free coffee needs 150 points; the card has 50."
    assert s.buy(member, "5.00", reward_id=coffee.id).status_code == 422

    scan = s.client.post("/api/v1/scans", json={"code": member["code"]}, headers=s.kit.headers)
    assert scan.json["rewards"] == [{"id": coffee.id, "name": "Free coffee", "points_cost": 150, "value": "3.00"}]

    s.bought(member, "100.00")  # 150 points now
    before = s.card_row(member)
    with_reward = s.bought(member, "5.00", reward_id=coffee.id)
    assert with_reward["lines"] == [{"kind": "reward", "label": "Free coffee (150 points)", "amount": "3.00"}]
    assert (with_reward["amount_due"], with_reward["reward_points"], with_reward["points"]) == ("2.00", 150, 2)
    assert s.ledger(member)[-2:] == [("redeem", -150, "Reward: Free coffee"), ("earn", 2, "")]
    s.voids_back_to(with_reward, (member, before))


def test_an_offer_chosen_applies_and_an_ended_one_is_refused(shop, clock) -> None:
    s = shop()
    week = s.offer("Members' week", detail="10% off everything", ends_at=NOW + dt.timedelta(days=3))
    ended = s.offer("Last month", ends_at=NOW - dt.timedelta(seconds=1))
    later = s.offer("Next month", starts_at=NOW + dt.timedelta(days=30))
    member = s.member()

    scan = s.client.post("/api/v1/scans", json={"code": member["code"]}, headers=s.kit.headers)
    assert scan.json["offers"] == [{"id": week.id, "title": "Members' week", "detail": "10% off everything",
                                    "discount": "10%", "min_basket": "0.00",
                                    "ends_at": (NOW + dt.timedelta(days=3)).isoformat()}]

    before = s.card_row(member)
    chosen = s.bought(member, "30.00", offer_ids=[week.id])
    assert chosen["lines"] == [{"kind": "offer", "label": "Members' week", "amount": "3.00"}]
    s.voids_back_to(chosen, (member, before))

    for offer, code in ((ended, "offer_expired"), (later, "offer_not_yet_valid")):
        quote = s.quote(member, "30.00", offer_ids=[week.id, offer.id])
        assert quote.status_code == 200
        assert [line["kind"] for line in quote.json["lines"]] == ["offer"]
        assert [n["code"] for n in quote.json["notices"]] == [code]
        refused = s.buy(member, "30.00", offer_ids=[week.id, offer.id])
        assert refused.status_code == 422 and refused.json["code"] == "offer_refused"
        assert [r["reason"] for r in refused.json["refusals"]] == [code]
    assert s.purchases() == 1


def test_the_lines_come_in_the_stated_order(shop) -> None:
    """Tier, offer, coupon, points: each on what the one before left (app/domain/mechanics.py docstring)."""
    s = shop(TEST_RULES)
    week = s.offer("Members' week", discount_type="fixed", discount_value=500)
    s.coupon("TENOFF")
    member = s.member()
    s.bought(member, "100.00")  # Silver now, 150 points
    quote = s.quote(member, "105.00", offer_ids=[week.id], coupon_codes=["TENOFF"], redeem_points=40)
    assert [(line["kind"], line["amount"]) for line in quote.json["lines"]] == [
        ("tier_discount", "5.25"), ("offer", "5.00"), ("coupon", "9.48"), ("points_redemption", "0.40")]
    assert quote.json["amount_due"] == "84.87"


# --- the cashier's till goes through the same code -------------------------------------------------------------


def test_the_cashier_till_quotes_and_refuses_coupons_as_the_api_does(shop, client: FlaskClient) -> None:
    import re

    from app.domain.programs import create_staff

    s = shop()
    s.coupon("SPRING10", min_basket=2000)
    member = s.member()
    staff = create_staff(s.session, s.program, email=f"till-{uuid.uuid4().hex[:8]}@example.com", role="cashier",
                         password="correct horse battery")
    s.session.commit()
    form = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert form
    client.post("/login", data={"csrf_token": form[1], "email": staff.email, "password": "correct horse battery"})
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', client.get("/cashier").text)
    assert csrf
    headers = {"X-CSRF-Token": csrf[1]}
    body = {"code": member["code"], "amount": "15.00", "coupon_codes": ["SPRING10"]}
    quote = client.post("/cashier/api/quotes", json=body, headers=headers)
    assert quote.status_code == 200 and _refusal(quote)[0] == "below_minimum"
    refused = client.post("/cashier/api/purchases", json=body, headers={**headers, "Idempotency-Key": "k-1"})
    assert refused.status_code == 422 and refused.json["code"] == "coupon_refused"
    body["amount"] = "20.00"
    bought = client.post("/cashier/api/purchases", json=body, headers={**headers, "Idempotency-Key": "k-2"})
    assert bought.status_code == 201 and bought.json["discount_total"] == "2.00"


# --- the hot path ----------------------------------------------------------------------------------------------


def _statements_of(app: Flask, request: Callable[[], Any]) -> list[str]:
    """The SQL statements a request runs (savepoints, which only the tests' outer transaction makes, left out)."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK TO")):
            statements.append(" ".join(statement.split()[:3]))

    engine = app.extensions["db"].engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = request()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 201, response.json
    return statements


def test_a_plain_purchase_costs_no_query_for_the_mechanics(app: Flask, shop) -> None:
    """A program without mechanics, a basket without coupons, offers or a reward: the purchase path makes the
    round trips docs/performance.md counts, first purchase or not. A referral program pays one query (the
    referral) on a member's first purchase only."""
    plain = shop(TEST_RULES)
    plain.bought(plain.member(), "1.00")  # this process now knows the program's signing key (no query)
    member = plain.member()
    first = _statements_of(app, lambda: plain.buy(member, "12.50"))
    assert [s.split()[0] for s in first] == ["SELECT", "SELECT", "INSERT", "INSERT", "UPDATE"], first
    assert _statements_of(app, lambda: plain.buy(member, "12.50")) == first

    referring = shop(REFERRAL_RULES)
    referring.bought(referring.member(), "1.00")
    referred = referring.member()
    assert len(_statements_of(app, lambda: referring.buy(referred, "12.50"))) == len(first) + 1
    assert len(_statements_of(app, lambda: referring.buy(referred, "12.50"))) == len(first)


# --- racing first purchases ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_first_purchases_of_a_referred_member_at_once_pay_the_bonus_once(committing_app: Flask) -> None:
    app = committing_app
    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            kit = build_program(session, app)
            kit.program.rules = REFERRAL_RULES
            session.commit()
        finally:
            session.close()
    client = app.test_client()
    members = []
    for _ in range(2):
        response = client.post("/api/v1/enrollments", json={"name": "Race Tester",
                                                             "email": f"{uuid.uuid4().hex}@example.com"},
                               headers=kit.headers)
        assert response.status_code == 201, response.json
        members.append(response.json)
    referrer, referee = members
    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            ids = dict(session.execute(select(Card.serial, Card.id).where(Card.program_id == kit.program.id)).all())
            session.add(Referral(referrer_card_id=ids[referrer["serial"]], referee_card_id=ids[referee["serial"]]))
            session.commit()
        finally:
            session.close()

    racers = 6
    start = threading.Barrier(racers)

    def buy(_: int) -> tuple[int, dict[str, Any]]:
        start.wait()
        response = app.test_client().post("/api/v1/purchases", json={"code": referee["code"], "amount": "10.00"},
                                          headers=kit.purchase_headers())
        return response.status_code, response.json

    with ThreadPoolExecutor(max_workers=racers) as pool:
        answers = list(pool.map(buy, range(racers)))
    assert [status for status, _ in answers] == [201] * racers
    assert sum(1 for _, body in answers if body["bonuses"]) == 1

    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            cards = {c.serial: c for c in session.scalars(select(Card).where(Card.program_id == kit.program.id))}
            assert cards[referrer["serial"]].points == WELCOME + 100
            assert cards[referee["serial"]].points == WELCOME + 40 + 10 * racers
            assert cards[referee["serial"]].purchase_count == racers
            bonus_rows = session.scalar(select(func.count()).select_from(LedgerEntry).where(
                LedgerEntry.kind == "bonus", LedgerEntry.purchase_id.is_not(None),
                LedgerEntry.card_id.in_([c.id for c in cards.values()])))
            assert bonus_rows == 2
        finally:
            session.close()
    result = app.test_cli_runner().invoke(args=["ledger", "check"])
    assert "Checked " in result.output
    ours = (referrer["serial"], referee["serial"])
    assert [line for line in result.output.splitlines() if any(serial in line for serial in ours)] == []
