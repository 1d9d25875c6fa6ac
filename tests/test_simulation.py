"""The Rules page's preview over the last 30 days: what proposed rules would have given on the program's real
purchases, next to the rules as they are; nothing saved.

The acceptance test makes purchases through the API under rules A, previews rules B over them, and checks the
figures against two independent computations: the engine's `quote` called on each purchase in turn (each member's
facts carried from one purchase to the next), and the same purchases replayed through the API on a fresh program
that runs rules B. A hand-computed case pins the arithmetic down to the cent.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.domain import mechanics
from app.domain.mechanics import (
    CashbackRules,
    HistoricPurchase,
    MechanicsRules,
    MemberFacts,
    SecondVisitRules,
    StampRules,
    mechanics_from_json,
)
from app.domain.mechanics_facts import effects_from_json
from app.domain.rules import ProgramRules, Tier
from app.domain.settings import mechanics_from_form
from app.domain.simulation import Moved, WindowPurchase, compare_rules
from app.models import Coupon, Program, Purchase, utcnow
from tests.test_settings_mechanics import post_settings, read_form, settings_form, sign_in_manager

# TEST_RULES (tests/conftest.py), the rules A every program here starts with.
RULES_A = MechanicsRules(base=ProgramRules(points_per_unit=Decimal(1), rounding="down",
                                           tiers=(Tier("Silver", 10_000, 500), Tier("Gold", 50_000, 1000)),
                                           welcome_bonus=50, point_value=1, redeem_max_percent=50))


@pytest.fixture()
def manager_of(client: FlaskClient, db_session: Session) -> Callable[[Any], FlaskClient]:
    """manager_of(kit) -> the test client, signed in as a new manager of that program."""
    return lambda kit: sign_in_manager(client, db_session, kit)


# --- reading the preview ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shown:
    before: dict[str, int]
    after: dict[str, int]
    members_affected: int


def preview(client: FlaskClient, form: dict[str, str]) -> Shown:
    response = post_settings(client, form, action="preview")
    assert response.status_code == 200, response.text
    assert "Nothing has been saved." in response.text
    rows = re.findall(r'data-figure="(\w+)" data-before="(-?\d+)" data-after="(-?\d+)" data-difference="(-?\d+)"',
                      response.text)
    assert rows, "the preview shows its figures"
    for _, before, after, difference in rows:
        assert int(after) - int(before) == int(difference)
    affected = re.search(r'data-kpi="members_affected" data-value="(\d+)"', response.text)
    assert affected
    return Shown({name: int(b) for name, b, _, _ in rows}, {name: int(a) for name, _, a, _ in rows},
                 int(affected.group(1)))


def buy(client: FlaskClient, kit: Any, member: dict[str, Any], amount: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/api/v1/purchases", json={"code": member["code"], "amount": amount, **extra},
                           headers=kit.purchase_headers())
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[no-any-return]


def purchases_of(db_session: Session, program: Program) -> list[Purchase]:
    db_session.expire_all()
    return list(db_session.scalars(select(Purchase).where(Purchase.program_id == program.id,
                                                          Purchase.status == "committed")
                                   .order_by(Purchase.created_at, Purchase.id)))


def rung_up(purchases: Sequence[Purchase]) -> dict[str, int]:
    """What the purchases really gave, from their rows."""
    effects = [effects_from_json(p.effects) if p.effects else None for p in purchases]
    return {
        "purchases": len(purchases),
        "basket": sum(p.amount for p in purchases),
        "discount_given": sum(p.discount for p in purchases),
        "amount_due": sum(p.amount_due for p in purchases),
        "points_issued": sum(p.points_earned for p in purchases),
        "points_spent": sum(p.points_redeemed + (e.reward_points if e else 0) for p, e in zip(purchases, effects,
                                                                                               strict=True)),
        "stamps_issued": sum(e.stamps_added for e in effects if e),
        "vouchers_issued": sum(e.vouchers_issued for e in effects if e),
        "cashback_issued": sum(e.cashback_earned for e in effects if e),
        "cashback_redeemed": sum(e.cashback_redeemed for e in effects if e),
        "members_discounted": len({p.card_id for p in purchases if p.discount}),
    }


# --- the engine, called on each purchase in turn ------------------------------------------------------------------

@dataclass(frozen=True)
class Bought:
    serial: str
    basket: int
    at: dt.datetime
    redeem_points: int = 0


def quote_each(rules: MechanicsRules, bought: Sequence[Bought], welcome: int) -> list[mechanics.Quote]:
    """Each purchase quoted by the engine on the member's facts, carried from their previous quote."""
    facts: dict[str, MemberFacts] = {}
    quotes = []
    for purchase in bought:
        member = facts.get(purchase.serial, MemberFacts(serial=purchase.serial, points=welcome))
        quote = mechanics.quote(rules, member, purchase.basket, now=purchase.at, currency="EUR",
                                redeem_points=purchase.redeem_points)
        facts[purchase.serial] = replace(
            member, points=quote.points_after, cashback=quote.cashback_after, stamps=quote.stamps_after,
            vouchers=quote.vouchers_after, lifetime_spend=quote.lifetime_spend_after,
            purchases_committed=member.purchases_committed + 1,
            first_purchase_at=member.first_purchase_at or purchase.at,
        )
        quotes.append(quote)
    return quotes


def totals(quotes: Sequence[mechanics.Quote]) -> dict[str, int]:
    return {
        "purchases": len(quotes),
        "basket": sum(q.amount for q in quotes),
        "discount_given": sum(q.discount_total for q in quotes),
        "amount_due": sum(q.amount_due for q in quotes),
        "points_issued": sum(q.points_earned for q in quotes),
        "points_spent": sum(q.points_redeemed + q.reward_points for q in quotes),
        "stamps_issued": sum(q.stamps_added for q in quotes),
        "vouchers_issued": sum(q.vouchers_issued for q in quotes),
        "cashback_issued": sum(q.cashback_earned for q in quotes),
        "cashback_redeemed": sum(q.cashback_redeemed for q in quotes),
        "members_discounted": len({q.member_serial for q in quotes if q.discount_total}),
    }


def outcome(q: mechanics.Quote) -> tuple[object, ...]:
    return (q.discount_total, q.points_earned, q.points_redeemed, q.stamps_added, q.vouchers_issued,
            q.cashback_earned)


# --- THE acceptance test ----------------------------------------------------------------------------------------

# Rules B: what the manager types over rules A, and what the engine should read from it.
RULES_B = {
    "new tiers and a second visit": (
        {"tier_min_spend_0": "50.00", "tier_discount_0": "8", "second_visit_percent": "15", "second_visit_days": "7"},
        replace(RULES_A, base=replace(RULES_A.base, tiers=(Tier("Silver", 5_000, 800), Tier("Gold", 50_000, 1000))),
                second_visit=SecondVisitRules(1500, 7)),
    ),
    "a stamp card instead of points": (
        {"program_kind": "stamps", "stamps_needed": "3", "stamps_min_basket": "15.00",
         "stamps_reward_label": "Free cake", "stamps_reward_value": "5.00"},
        replace(RULES_A, program_type="stamps", stamps=StampRules(3, 1500, "Free cake", 500)),
    ),
    "cashback instead of points": (
        {"program_kind": "cashback", "cashback_percent": "2"},
        replace(RULES_A, program_type="cashback", cashback=CashbackRules(200)),
    ),
}
# (member, amount, points to redeem), in the order they are rung up.
BASKETS = [(0, "120.00", 0), (1, "30.00", 0), (0, "20.00", 10), (2, "10.00", 0), (1, "30.00", 0), (0, "60.00", 0)]


@pytest.mark.parametrize("change", list(RULES_B))
def test_the_preview_is_what_the_rules_then_do_on_the_same_purchases(
    client: FlaskClient, make_program, enroll, manager_of, db_session: Session, change: str
) -> None:
    typed, rules_b = RULES_B[change]
    kit = make_program()
    members = [enroll(kit, name=name) for name in ("Amina Karimi", "Bruno Diaz", "Chloe Martin")]
    for who, amount, points in BASKETS:
        buy(client, kit, members[who], amount, redeem_points=points)
    manager = manager_of(kit)
    form = {**settings_form(manager), **typed}
    assert mechanics_from_form(form, "EUR", current_kind="points") == rules_b
    rules_before = dict(reload_program(db_session, kit.program).rules)

    shown = preview(manager, form)  # F

    program = reload_program(db_session, kit.program)
    assert (program.rules, program.kind) == (rules_before, "points")  # the preview saved nothing

    # 1. The engine's quote on each purchase, each member's facts carried from the last one.
    rows = purchases_of(db_session, kit.program)
    serial_of = {card_id: serial for card_id, serial in _serials(db_session, rows).items()}
    bought = [Bought(serial_of[p.card_id], p.amount, p.created_at, p.points_redeemed) for p in rows]
    under_a, under_b = quote_each(RULES_A, bought, welcome=50), quote_each(rules_b, bought, welcome=50)
    assert shown.after == {name: totals(under_b)[name] for name in shown.after}
    assert shown.before == {name: totals(under_a)[name] for name in shown.before}
    affected = {b.serial for b, qa, qb in zip(bought, under_a, under_b, strict=True) if outcome(qa) != outcome(qb)}
    assert shown.members_affected == len(affected)
    # With the rules as they are, the preview is what was rung up.
    assert shown.before == {name: rung_up(rows)[name] for name in shown.before}

    # 2. The same purchases through the API, on a fresh program that runs rules B.
    replayed = make_program()
    replayed.program.rules = rules_b.to_json()
    replayed.program.kind = rules_b.program_type
    db_session.commit()
    again = [enroll(replayed, name=name) for name in ("Amina Karimi", "Bruno Diaz", "Chloe Martin")]
    for who, amount, points in BASKETS:
        buy(client, replayed, again[who], amount, redeem_points=points)
    assert shown.after == {name: rung_up(purchases_of(db_session, replayed.program))[name] for name in shown.after}

    # The figures that matter for each change are on the page.
    assert {"purchases", "discount_given", "amount_due", "points_issued", "members_discounted"} <= set(shown.after)
    if rules_b.program_type == "stamps":
        assert shown.after["stamps_issued"] == 5 and shown.after["vouchers_issued"] == 1  # Amina's card filled
    if rules_b.program_type == "cashback":
        assert shown.after["cashback_issued"] == sum(q.amount_due * 200 // 10_000 for q in under_b)


def test_the_acceptance_figures_by_hand(client: FlaskClient, make_program, enroll, manager_of) -> None:
    # Rules B = Silver from 50.00 EUR at 8%, and 15% off a second visit within 7 days. Amina: 120.00 (no tier yet);
    # 20.00 as Silver: 8% = 1.60 -> 18.40, second visit 15% = 2.76 -> 15.64, 10 points = 0.10 -> 15.54 (15 points);
    # 60.00: 8% = 4.80 -> 55.20 (55 points). Bruno: 30.00; then 15% of 30.00 = 4.50 -> 25.50 (25 points). Chloe 10.00.
    # Under A (Silver from 100.00 at 5%): Amina 1.00 and 0.10 off the 20.00 (18 points), 3.00 off the 60.00.
    kit = make_program()
    members = [enroll(kit, name=name) for name in ("Amina Karimi", "Bruno Diaz", "Chloe Martin")]
    for who, amount, points in BASKETS:
        buy(client, kit, members[who], amount, redeem_points=points)
    manager = manager_of(kit)
    shown = preview(manager, {**settings_form(manager), **RULES_B["new tiers and a second visit"][0]})
    assert shown.before["discount_given"] == 100 + 10 + 300
    assert shown.after["discount_given"] == 160 + 276 + 10 + 480 + 450
    assert (shown.before["points_issued"], shown.after["points_issued"]) == (120 + 18 + 57 + 30 + 30 + 10,
                                                                             120 + 15 + 55 + 30 + 25 + 10)
    assert (shown.before["members_discounted"], shown.after["members_discounted"]) == (1, 2)
    assert shown.members_affected == 2  # Chloe's one purchase comes out the same


# --- a small case by hand: 15% on a second visit within 7 days ------------------------------------------------

def test_a_second_visit_discount_over_four_purchases_by_two_members(
    client: FlaskClient, make_program, enroll, manager_of, db_session: Session
) -> None:
    # One point per EUR, no tiers, no welcome bonus, no redemption: only the second visit changes anything.
    kit = make_program(rules={"earn": {"points_per_unit": "1", "rounding": "down"}})
    amina, bruno = enroll(kit, name="Amina Karimi"), enroll(kit, name="Bruno Diaz")
    now = utcnow()
    for member, amount, days_ago in ((amina, "40.00", 20), (amina, "20.00", 17), (bruno, "10.00", 12),
                                     (bruno, "33.33", 4)):
        made = buy(client, kit, member, amount)
        db_session.execute(update(Purchase).where(Purchase.id == made["id"])
                           .values(created_at=now - dt.timedelta(days=days_ago)))
    db_session.commit()
    manager = manager_of(kit)
    shown = preview(manager, {**settings_form(manager), "second_visit_percent": "15", "second_visit_days": "7"})
    # Amina's second purchase is 3 days after her first: 15% of 20.00 = 3.00 off, 17.00 paid, 17 points.
    # Bruno's is 8 days after his: nothing off.
    assert shown.before["discount_given"] == 0 and shown.after["discount_given"] == 300
    assert (shown.before["amount_due"], shown.after["amount_due"]) == (10_333, 10_033)
    assert (shown.before["points_issued"], shown.after["points_issued"]) == (40 + 20 + 10 + 33, 40 + 17 + 10 + 33)
    assert (shown.before["members_discounted"], shown.after["members_discounted"]) == (0, 1)
    assert shown.before["purchases"] == 4 and shown.members_affected == 1
    # Within 8 days, Bruno's 33.33 gets its 15% too: 4.9995 rounds half up to 5.00.
    wider = preview(manager, {**settings_form(manager), "second_visit_percent": "15", "second_visit_days": "8"})
    assert wider.after["discount_given"] == 300 + 500 and wider.members_affected == 2


# --- what is left out, what counts --------------------------------------------------------------------------------

def test_purchases_older_than_30_days_and_voided_ones_are_left_out_but_count_as_they_did(
    client: FlaskClient, make_program, enroll, manager_of, db_session: Session
) -> None:
    kit = make_program()
    amina, bruno = enroll(kit, name="Amina Karimi"), enroll(kit, name="Bruno Diaz")
    old = buy(client, kit, amina, "150.00")  # Amina reaches Silver: 5% off from her next purchase
    db_session.execute(update(Purchase).where(Purchase.id == old["id"])
                       .values(created_at=utcnow() - dt.timedelta(days=45)))
    db_session.commit()
    first = buy(client, kit, bruno, "120.00")  # Bruno reaches Silver, 40 days ago...
    db_session.execute(update(Purchase).where(Purchase.id == first["id"])
                       .values(created_at=utcnow() - dt.timedelta(days=40)))
    db_session.commit()
    second = buy(client, kit, bruno, "20.00")  # ...so this is 5% off: 1.00
    assert second["discount_total"] == "1.00"
    assert client.post(f"/api/v1/purchases/{first['id']}/void", headers=kit.headers).status_code == 200
    buy(client, kit, amina, "10.00")  # 5% off: 0.50

    manager = manager_of(kit)
    shown = preview(manager, settings_form(manager))  # the rules unchanged
    # In the window: Bruno's 20.00 (his 120.00, older and voided since, is left out, but it stood when the 20.00
    # was rung up, so the 20.00 was a Silver purchase) and Amina's 10.00 (Silver from her purchase 45 days ago).
    assert shown.before["purchases"] == 2 and shown.before["basket"] == 3_000
    assert shown.before["discount_given"] == 100 + 50
    assert shown.after == shown.before and shown.members_affected == 0
    assert shown.before == {name: rung_up(_in_window(purchases_of(db_session, kit.program)))[name]
                            for name in shown.before}


def test_coupons_are_priced_as_they_were_used(
    client: FlaskClient, make_program, enroll, manager_of, db_session: Session
) -> None:
    kit = make_program()
    db_session.add_all([
        Coupon(program_id=kit.program.id, code="SPRING10", kind="reusable", discount_type="percent",
               discount_value=1000, per_member_limit=1),
        Coupon(program_id=kit.program.id, code="WELCOME5", kind="single_use", discount_type="fixed",
               discount_value=500),
    ])
    db_session.commit()
    amina, bruno = enroll(kit, name="Amina Karimi"), enroll(kit, name="Bruno Diaz")
    made = [buy(client, kit, amina, "150.00", coupon_codes=["SPRING10"]),  # 10% = 15.00
            buy(client, kit, bruno, "40.00", coupon_codes=["SPRING10"]),  # once per member: 4.00
            buy(client, kit, amina, "40.00", coupon_codes=["WELCOME5"])]  # Silver 5% = 2.00, then 5.00
    assert [m["discount_total"] for m in made] == ["15.00", "4.00", "7.00"]
    manager = manager_of(kit)
    # Each coupon's uses are counted as they stood before each purchase, so each is accepted again.
    unchanged = preview(manager, settings_form(manager))
    assert unchanged.before == {name: rung_up(purchases_of(db_session, kit.program))[name]
                                for name in unchanged.before}
    assert unchanged.after == unchanged.before and unchanged.members_affected == 0
    # Silver at 20%: Amina's 40.00 is 8.00 off for the tier, then the coupon's 5.00.
    richer = preview(manager, {**settings_form(manager), "tier_discount_0": "20"})
    assert (richer.before["discount_given"], richer.after["discount_given"]) == (2_600, 1_500 + 400 + 1_300)
    assert richer.members_affected == 1


# --- the replay without the app: a table --------------------------------------------------------------------------

T0 = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)


def _as_rung_up(baskets: Sequence[int], days: Sequence[int]) -> list[WindowPurchase]:
    """One member's purchases under one point per EUR and nothing else: the facts each was rung up with."""
    window, spend, points = [], 0, 0
    for count, (basket, day) in enumerate(zip(baskets, days, strict=True)):
        member = MemberFacts(serial="AAAA", points=points, lifetime_spend=spend, purchases_committed=count,
                             first_purchase_at=T0 if count else None)
        window.append(WindowPurchase(HistoricPurchase(member, basket, T0 + dt.timedelta(days=day)),
                                     Moved(spend=basket, points=basket // 100)))
        spend, points = spend + basket, points + basket // 100
    return window


ONE_POINT = MechanicsRules(base=ProgramRules(points_per_unit=Decimal(1)))
REPLAYS = [
    # (proposed rules, baskets, days after the first, the totals that must come out)
    (replace(ONE_POINT, program_type="stamps", stamps=StampRules(2, 0, "Free tea", 300)), [1_000, 1_000, 1_000],
     [0, 1, 2], {"stamps_issued": 3, "vouchers_issued": 1, "points_issued": 0}),
    (replace(ONE_POINT, program_type="stamps", stamps=StampRules(3, 1_500, "Free tea", 300)), [2_000, 1_000, 4_000],
     [0, 1, 2], {"stamps_issued": 2, "vouchers_issued": 0}),
    (replace(ONE_POINT, second_visit=SecondVisitRules(1_000, 7)), [1_000, 2_000, 2_000], [0, 7, 8],
     {"discount_given": 200, "points_issued": 10 + 18 + 20, "members_discounted": 1}),
    (replace(ONE_POINT, second_visit=SecondVisitRules(1_000, 6)), [1_000, 2_000], [0, 7],
     {"discount_given": 0, "points_issued": 30, "members_discounted": 0}),
    # Silver from 30.00: reached after the second purchase as rung up (10.00 + 20.00); 5% off the third.
    (replace(ONE_POINT, base=replace(ONE_POINT.base, tiers=(Tier("Silver", 3_000, 500),))), [1_000, 2_000, 4_000],
     [0, 1, 2], {"discount_given": 200}),
    # ...but with 10% off the second visit too, the first two come to 28.00: the third is not a Silver purchase.
    (replace(ONE_POINT, base=replace(ONE_POINT.base, tiers=(Tier("Silver", 3_000, 500),)),
             second_visit=SecondVisitRules(1_000, 7)), [1_000, 2_000, 4_000], [0, 1, 2], {"discount_given": 200}),
    (replace(ONE_POINT, program_type="cashback", cashback=CashbackRules(250)), [1_000, 3_333], [0, 40],
     {"cashback_issued": 25 + 83, "points_issued": 0}),
]


@pytest.mark.parametrize(("proposed", "baskets", "days", "expected"), REPLAYS)
def test_the_replay_carries_each_members_facts(
    proposed: MechanicsRules, baskets: list[int], days: list[int], expected: dict[str, int]
) -> None:
    window = _as_rung_up(baskets, days)
    report = compare_rules(ONE_POINT, proposed, window, currency="EUR")
    assert {name: getattr(report.after, name) for name in expected} == expected
    # The rules as they are reproduce what was rung up, and nothing else moves.
    assert report.before.points_issued == sum(b // 100 for b in baskets) and report.before.discount_given == 0
    assert report.members_changed == (("AAAA",) if report.after != report.before else ())


# --- the page itself ----------------------------------------------------------------------------------------------

def test_no_purchases_yet_says_so(make_program, manager_of) -> None:
    client = manager_of(make_program())
    response = post_settings(client, {**settings_form(client), "second_visit_percent": "15",
                                      "second_visit_days": "7"}, action="preview")
    assert response.status_code == 200
    assert 'data-empty="preview"' in response.text
    assert "No purchases were committed in the last 30 days" in response.text
    assert read_form(response.text)["second_visit_percent"] == "15"  # the form keeps what was typed


def test_a_preview_saves_nothing(client: FlaskClient, make_program, enroll, manager_of,
                                 db_session: Session) -> None:
    kit = make_program()
    member = enroll(kit)
    buy(client, kit, member, "25.00")
    manager = manager_of(kit)
    program = reload_program(db_session, kit.program)
    before = (dict(program.rules), program.kind, program.pass_revision)
    form = {**settings_form(manager), "program_kind": "cashback", "cashback_percent": "3", "welcome_bonus": "0",
            "second_visit_percent": "10", "second_visit_days": "5"}
    response = post_settings(manager, form, action="preview")
    assert response.status_code == 200
    # Switching away from points while the card holds points: the preview says what a save would ask.
    assert 'data-warning="kind_change"' in response.text and 'name="confirm_kind_change"' in response.text
    assert read_form(response.text)["cashback_percent"] == "3"
    program = reload_program(db_session, kit.program)
    assert (program.rules, program.kind, program.pass_revision) == before
    assert mechanics_from_json(program.rules) == RULES_A
    assert "Rules saved" not in manager.get("/manager/settings").text


def test_a_preview_of_bad_rules_names_the_fields(make_program, manager_of, db_session: Session) -> None:
    kit = make_program()
    client = manager_of(kit)
    response = post_settings(client, {**settings_form(client), "second_visit_percent": "15"}, action="preview")
    assert response.status_code == 422
    assert "Nothing to preview yet: 1 field needs fixing." in response.text
    assert 'data-error-for="second_visit_days"' in response.text
    assert 'id="preview"' not in response.text


# --- helpers ----------------------------------------------------------------------------------------------------

def reload_program(db_session: Session, program: Program) -> Program:
    db_session.expire_all()
    found = db_session.get(Program, program.id)
    assert found is not None
    return found


def _serials(db_session: Session, rows: Sequence[Purchase]) -> dict[int, str]:
    return {p.card_id: p.card.serial for p in rows}


def _in_window(rows: Sequence[Purchase]) -> list[Purchase]:
    since = utcnow() - dt.timedelta(days=30)
    return [p for p in rows if p.created_at >= since]

