"""`flask --app wsgi synth`: synthetic members and purchases, checked as the app's own rows would be.

Each test runs the command at a small size (300 members, 3,000 purchases) in the rolled-back test transaction,
then checks what an operator and the manager would: the counts asked for, a clean `ledger check`, cards that
agree with their purchases, purchases priced exactly as `mechanics.quote` prices them, card codes that verify
(with the app and with PyNaCl against the published keys), and dashboard and stats API figures equal to direct
SQL aggregates over the base tables, which is what proves the roll-ups `rebuild_rollups` built.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import nacl.signing
import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import and_, distinct, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.bulk_load import DanglingReference, check_references, skip_row_reference_checks
from app.domain import mechanics
from app.domain.cards import card_code, verify_card_code
from app.domain.mechanics_facts import Receipt, effects_to_json, engine_coupon, program_mechanics
from app.domain.money import format_amount
from app.domain.referrals import normalize_referral_code
from app.domain.rules import rules_from_json, tier_for
from app.domain.segments import program_segment_settings
from app.keys import get_keys
from app.models import (
    ApiKey,
    Base,
    Card,
    Coupon,
    CouponUse,
    Customer,
    LedgerEntry,
    Location,
    Program,
    Purchase,
    Referral,
    Staff,
    utcnow,
)
from app.synthetic import REFERENCE_CHECKED, SynthOptions, synthesize
from tests.test_card_code import decode_code, doc_message, jwk_public_key, kid_of, published_key

MEMBERS, PURCHASES = 300, 3_000


@dataclass(frozen=True)
class SynthRun:
    """A run of the command: its program and the credentials it printed."""

    program: Program
    manager_email: str
    manager_password: str
    api_key: str
    output: str

    @property
    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def run_synth(runner: FlaskCliRunner, db_session: Session, *args: str) -> SynthRun:
    result = runner.invoke(args=["synth", *args])
    assert result.exit_code == 0, result.output
    slug = re.search(r"^Program (synthetic-\d+):", result.stdout, re.MULTILINE)
    manager = re.search(r"^  manager   (\S+) / (\S+)$", result.stdout, re.MULTILINE)
    api_key = re.search(r"^  API key   (lk_\S+)$", result.stdout, re.MULTILINE)
    assert slug and manager and api_key, result.stdout
    program = db_session.scalars(select(Program).where(Program.slug == slug.group(1))).one()
    return SynthRun(program, manager.group(1), manager.group(2), api_key.group(1), result.stdout)


@pytest.fixture()
def synth(runner: FlaskCliRunner, db_session: Session) -> SynthRun:
    return run_synth(runner, db_session, "--members", str(MEMBERS), "--purchases", str(PURCHASES), "--seed", "11")


def count(session: Session, model: Any, *where: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


# --- what was made ---------------------------------------------------------------------------------------------


def test_synth_makes_the_members_and_purchases_asked_for(synth: SynthRun, db_session: Session) -> None:
    program = synth.program
    assert count(db_session, Customer, Customer.program_id == program.id) == MEMBERS
    assert count(db_session, Card, Card.program_id == program.id) == MEMBERS
    assert count(db_session, Purchase, Purchase.program_id == program.id) == PURCHASES
    assert f"{MEMBERS:,} members and {PURCHASES:,} purchases" in synth.output
    for phase in ("members", "purchases", "cards", "roll-ups", "analyze", "total"):
        assert re.search(rf"^{phase} +[\d,]+ +\d+\.\d +[\d,]+$", synth.output, re.MULTILINE), phase
    # The set-up a merchant would have: tiers, locations, a manager, a cashier, an API key, coupons.
    assert [t.name for t in rules_from_json(program.rules).tiers] == ["Silver", "Gold"]
    assert count(db_session, Location, Location.program_id == program.id) >= 3
    assert {s.role for s in db_session.scalars(select(Staff).where(Staff.program_id == program.id))} == {
        "manager", "cashier"}
    assert count(db_session, ApiKey, ApiKey.program_id == program.id) == 1
    customers = db_session.scalars(select(Customer).where(Customer.program_id == program.id)).all()
    assert {c.channel for c in customers} == {"web", "till", "api", "referral"}
    assert 0.25 < sum(c.marketing_consent for c in customers) / MEMBERS < 0.55
    # Contact details that can never reach a person.
    assert all(c.email is None or re.fullmatch(r"[a-z]+\.[a-z]+\.\d{9}@example\.(com|net|org)", c.email)
               for c in customers)
    assert all(c.phone is None or re.fullmatch(r"\+999\d{9}", c.phone) for c in customers)
    assert all(c.email or c.phone for c in customers)


def test_purchases_look_like_a_shops(synth: SynthRun, db_session: Session) -> None:
    program_id = synth.program.id
    purchases = db_session.scalars(select(Purchase).where(Purchase.program_id == program_id)
                                   .order_by(Purchase.id)).all()
    enrolled = dict(db_session.execute(
        select(Card.id, Customer.created_at).join(Customer, Customer.id == Card.customer_id)
        .where(Card.program_id == program_id)
    ).tuples().all())
    # Ids follow time, as in a real database; every purchase is in opening hours, after its member enrolled.
    times = [p.created_at for p in purchases]
    assert times == sorted(times)
    assert all(8 <= p.created_at.hour < 21 for p in purchases)
    assert all(p.created_at >= enrolled[p.card_id] for p in purchases)
    assert max(times) <= utcnow() and min(times) >= utcnow() - dt.timedelta(days=730)
    # Skewed like real shops: many come once, a few come often; some redeem, a few are voided.
    per_card = Counter(p.card_id for p in purchases)
    assert sum(1 for n in per_card.values() if n == 1) > len(per_card) / 5
    assert max(per_card.values()) > 8 * PURCHASES / MEMBERS
    assert 0 < sum(p.status == "voided" for p in purchases) < PURCHASES / 50
    assert 0.01 < sum(p.points_redeemed > 0 for p in purchases) / PURCHASES < 0.08
    assert all(p.discount == p.amount - p.amount_due >= 0 for p in purchases)
    assert count(db_session, CouponUse, CouponUse.purchase_id.in_([p.id for p in purchases])) > 10
    assert any(p.tier_after == "Gold" for p in purchases)
    paid = db_session.scalars(select(Referral.bonus_purchase_id).join(Card, Card.id == Referral.referee_card_id)
                              .where(Card.program_id == program_id)).all()
    assert len(paid) > 10 and sum(1 for purchase_id in paid if purchase_id is not None) > 5


def test_the_ledger_is_clean_and_cards_match_their_purchases(
    runner: FlaskCliRunner, synth: SynthRun, db_session: Session
) -> None:
    check = runner.invoke(args=["ledger", "check"])
    assert check.exit_code == 0, check.output
    assert re.search(r"Checked \d+ cards: 0 mismatches", check.output)
    program = synth.program
    tiers = rules_from_json(program.rules).tiers
    committed = {
        card_id: (n, spend, first, last)
        for card_id, n, spend, first, last in db_session.execute(
            select(Purchase.card_id, func.count(), func.sum(Purchase.amount_due), func.min(Purchase.created_at),
                   func.max(Purchase.created_at))
            .where(Purchase.program_id == program.id, Purchase.status == "committed").group_by(Purchase.card_id)
        )
    }
    ledger = dict(db_session.execute(
        select(LedgerEntry.card_id, func.sum(LedgerEntry.points)).group_by(LedgerEntry.card_id)
    ).tuples().all())
    cards = db_session.scalars(select(Card).where(Card.program_id == program.id)).all()
    assert sum(1 for card in cards if card.purchase_count) > MEMBERS / 2
    for card in cards:
        n, spend, first, last = committed.get(card.id, (0, 0, None, None))
        assert (card.purchase_count, card.lifetime_spend) == (n, spend), card.serial
        assert (card.first_purchase_at, card.last_purchase_at) == (first, last), card.serial
        expected_tier = tier_for(spend, tiers)
        assert card.tier == (expected_tier.name if expected_tier else None), card.serial
        assert card.points == ledger[card.id] >= 0, card.serial


def test_every_purchase_is_what_the_rules_price(synth: SynthRun, db_session: Session) -> None:
    """Replays every purchase in order through `mechanics.quote`, with the member's card as it stood, and compares
    the stored lines, totals, balances, effects, ledger entries and coupon uses."""
    program = synth.program
    rules = program_mechanics(program)
    cards = {card.id: card for card in db_session.scalars(select(Card).where(Card.program_id == program.id))}
    by_serial = {card.serial: card.id for card in cards.values()}
    points = {card_id: rules.base.welcome_bonus for card_id in cards}
    spend: Counter[int] = Counter()
    bought: Counter[int] = Counter()
    coupons = {row.code: row for row in db_session.scalars(select(Coupon).where(Coupon.program_id == program.id))}
    coupon_uses: Counter[tuple[int, int]] = Counter()
    referrals = {r.referee_card_id: r for r in db_session.scalars(select(Referral).where(
        Referral.referee_card_id.in_(cards)))}
    entries: defaultdict[int, Counter[tuple[int, str, int]]] = defaultdict(Counter)
    for entry in db_session.scalars(select(LedgerEntry).where(LedgerEntry.card_id.in_(cards))):
        if entry.purchase_id is None:
            assert (entry.kind, entry.points, entry.note) == ("bonus", rules.base.welcome_bonus, "Welcome bonus")
        else:
            entries[entry.purchase_id][entry.card_id, entry.kind, entry.points] += 1
    uses = {use.purchase_id: use for use in db_session.scalars(select(CouponUse).where(CouponUse.card_id.in_(cards)))}
    purchases = db_session.scalars(select(Purchase).where(Purchase.program_id == program.id).order_by(Purchase.id))
    for purchase in purchases:
        card = cards[purchase.card_id]
        codes = purchase.effects.get("coupon_codes", []) if purchase.effects else []
        engine_coupons = [(engine_coupon(coupons[code], {}),
                           mechanics.CouponUse(by_member=coupon_uses[coupons[code].id, card.id])) for code in codes]
        referral = referrals.get(card.id)
        quote = mechanics.quote(
            rules,
            mechanics.MemberFacts(serial=card.serial, points=points[card.id], lifetime_spend=spend[card.id],
                                  purchases_committed=bought[card.id]),
            purchase.amount, now=purchase.created_at, currency=program.currency, coupons=engine_coupons,
            redeem_points=purchase.points_redeemed, strict_redemption=True,
            referral=mechanics.Referral(cards[referral.referrer_card_id].serial, referral.self_referral,
                                        bonus_paid=bought[card.id] > 0) if referral else None,
        )
        assert not quote.refusals
        assert purchase.lines == [{"kind": line.kind, "label": line.label, "amount": line.amount}
                                  for line in quote.lines], purchase.id
        assert (purchase.discount, purchase.amount_due, purchase.points_earned, purchase.points_after,
                purchase.tier_after) == (quote.discount_total, quote.amount_due, quote.points_earned,
                                         quote.points_after, quote.tier_after), purchase.id
        assert purchase.effects == effects_to_json(quote.effects(), Receipt(notices=quote.warnings)), purchase.id
        expected: Counter[tuple[int, str, int]] = Counter()
        for kind, change in (("redeem", -quote.points_redeemed), ("earn", quote.points_earned)):
            if change:
                expected[card.id, kind, change] += 1
        for bonus in quote.bonuses:
            expected[by_serial[bonus.serial], "bonus", bonus.amount] += 1
        if codes:
            assert uses[purchase.id].discount == next(line.amount for line in quote.lines if line.kind == "coupon")
        else:
            assert purchase.id not in uses
        if purchase.status == "voided":
            expected[card.id, "void", quote.points_redeemed - quote.points_earned] += 1
            assert purchase.voided_at is not None and not quote.bonuses
            if codes:
                assert uses[purchase.id].voided_at == purchase.voided_at
        else:
            points[card.id] = quote.points_after
            spend[card.id] += quote.amount_due
            bought[card.id] += 1
            for bonus in quote.bonuses:
                if bonus.serial != card.serial:
                    points[by_serial[bonus.serial]] += bonus.amount
            for code in codes:
                coupon_uses[coupons[code].id, card.id] += 1
        assert entries[purchase.id] == expected, purchase.id
    assert all(card.points == points[card.id] for card in cards.values())


def test_serials_tokens_and_card_codes_are_the_apps(
    app: Flask, client: FlaskClient, synth: SynthRun, db_session: Session
) -> None:
    cards = db_session.scalars(select(Card).where(Card.program_id == synth.program.id).order_by(Card.id)).all()
    for name, pattern in (("serial", r"[A-Z2-7]{13}"), ("page_token", r"[A-Za-z0-9_-]{22}"),
                          ("pass_auth_token", r"[A-Za-z0-9_-]{32}")):
        values = [getattr(card, name) for card in cards]
        assert all(re.fullmatch(pattern, value) for value in values), name
        assert len(set(values)) == len(values), name
    codes = [card.referral_code for card in cards]
    assert len(set(codes)) == len(codes) and all(normalize_referral_code(c or "") == c for c in codes)
    # Not sequential: consecutive serials share no long prefix.
    assert sum(a[:4] == b[:4] for a, b in zip(codes, codes[1:], strict=False)) < 3
    with app.app_context():
        for card in cards[::15]:
            code = card_code(db_session, card, get_keys())
            assert verify_card_code(db_session, synth.program, code).id == card.id
            # An independent verifier, against the keys the app publishes.
            payload, signature = decode_code(code)
            verify_key = nacl.signing.VerifyKey(jwk_public_key(published_key(client, kid_of(code))))
            message = doc_message(synth.program.slug, payload)
            assert verify_key.verify(message, signature) == message
            scanned = client.post("/api/v1/scans", json={"code": code}, headers=synth.api_headers)
            assert scanned.status_code == 200, scanned.json
            assert scanned.json is not None
            assert (scanned.json["serial"], scanned.json["points"]) == (card.serial, card.points)


# --- the analytics against the base tables ---------------------------------------------------------------------


def _instant(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), dt.UTC)


def expected_figures(session: Session, program: Program, start: dt.date, end: dt.date) -> dict[str, Any]:
    """The figures of docs/analytics.md for the days start..end, straight from the base tables."""
    since, until = _instant(start), _instant(end + dt.timedelta(days=1))
    committed = and_(Purchase.program_id == program.id, Purchase.status == "committed")
    in_range = and_(committed, Purchase.created_at >= since, Purchase.created_at < until)
    purchases, revenue, basket = (int(value) for value in session.execute(
        select(func.count(), func.coalesce(func.sum(Purchase.amount_due), 0),
               func.coalesce(func.sum(Purchase.amount), 0)).where(in_range)
    ).one())
    history = session.execute(select(Purchase.card_id, Purchase.created_at).where(committed)
                              .order_by(Purchase.card_id, Purchase.created_at, Purchase.id)).all()
    visits: defaultdict[int, list[dt.datetime]] = defaultdict(list)
    for card_id, at in history:
        visits[card_id].append(at)
    buyers = {card for card, times in visits.items() if any(since <= t < until for t in times)}
    new = {card for card in buyers if visits[card][0] >= since}
    repeated = {card for card in new if len(visits[card]) > 1 and visits[card][1] < until}
    lapsed = program_segment_settings(program).lapsed_days
    cutoff = _instant(end - dt.timedelta(days=lapsed - 1))
    churn_base = {card for card, times in visits.items() if times[0] < cutoff}
    churned = {card for card in churn_base if not any(cutoff <= t < until for t in visits[card])}
    voided = select(Purchase.id).where(Purchase.program_id == program.id, Purchase.status == "voided")
    standing = and_(LedgerEntry.kind != "void",
                    (LedgerEntry.purchase_id.is_(None)) | LedgerEntry.purchase_id.not_in(voided),
                    LedgerEntry.card_id.in_(select(Card.id).where(Card.program_id == program.id)))
    entries = session.execute(select(LedgerEntry.kind, LedgerEntry.points, LedgerEntry.created_at)
                              .where(standing)).all()
    issued = sum(p for kind, p, at in entries if p > 0 and since <= at < until)
    redeemed = -sum(p for kind, p, at in entries if kind == "redeem" and since <= at < until)
    outstanding = sum(p for kind, p, at in entries if at < until)
    enrolled = count(session, Customer, Customer.program_id == program.id, Customer.created_at >= since,
                     Customer.created_at < until)
    referral_rows = session.execute(
        select(Referral.self_referral, Referral.bonus_purchase_id, Card.purchase_count)
        .join(Card, Card.id == Referral.referee_card_id)
        .where(Card.program_id == program.id, Referral.created_at >= since, Referral.created_at < until)
    ).all()
    coupons = session.execute(
        select(Coupon.code, func.count(), func.sum(CouponUse.discount), func.sum(Purchase.amount_due))
        .join(CouponUse, CouponUse.coupon_id == Coupon.id).join(Purchase, Purchase.id == CouponUse.purchase_id)
        .where(in_range).group_by(Coupon.code)
    ).all()
    tiers = Counter(session.scalars(select(Card.tier).where(Card.program_id == program.id)).all())
    money = program.currency

    def share(part: int, whole: int) -> float | None:
        return round(float(Fraction(part, whole)), 4) if whole else None

    return {
        "purchases": purchases, "revenue": revenue, "discount": basket - revenue,
        "buyers": len(buyers), "new_buyers": len(new), "returning_buyers": len(buyers - new),
        "purchase_frequency": share(purchases, len(buyers)), "repeat_purchase_rate": share(len(repeated), len(new)),
        "churned": len(churned), "churn_rate": share(len(churned), len(churn_base)),
        "issued": issued, "redeemed": redeemed, "outstanding": outstanding, "enrollments": enrolled,
        "members": count(session, Customer, Customer.program_id == program.id),
        "tiers": {name or "No tier": n for name, n in tiers.items()},
        "referrals": {"referred": len(referral_rows), "purchased": sum(1 for r in referral_rows if r[2] > 0),
                      "rewarded": sum(1 for r in referral_rows if r[1] is not None)},
        "coupons": sorted((code, uses, format_amount(int(off), money), format_amount(int(paid), money))
                          for code, uses, off, paid in coupons),
    }


def assert_api_summary(client: FlaskClient, run: SynthRun, start: dt.date, end: dt.date,
                       session: Session) -> dict[str, Any]:
    expected = expected_figures(session, run.program, start, end)
    answer = client.get(f"/api/v1/stats/summary?from={start}&to={end}", headers=run.api_headers)
    assert answer.status_code == 200, answer.json
    got: dict[str, Any] = answer.json  # type: ignore[assignment]
    money = run.program.currency
    assert (got["from"], got["to"]) == (start.isoformat(), end.isoformat())
    assert {key: got[key] for key in ("purchases", "buyers", "new_buyers", "returning_buyers", "purchase_frequency",
                                      "repeat_purchase_rate", "enrollments", "members", "referrals")} == {
        key: expected[key] for key in ("purchases", "buyers", "new_buyers", "returning_buyers",
                                       "purchase_frequency", "repeat_purchase_rate", "enrollments", "members",
                                       "referrals")}
    assert (got["revenue"], got["discounts"]) == (format_amount(expected["revenue"], money),
                                                  format_amount(expected["discount"], money))
    assert (got["churn"]["churned"], got["churn"]["rate"]) == (expected["churned"], expected["churn_rate"])
    assert {key: got["points"][key] for key in ("issued", "redeemed", "outstanding")} == {
        key: expected[key] for key in ("issued", "redeemed", "outstanding")}
    assert {name: n for name, n in got["tiers"].items() if n} == expected["tiers"]
    assert sorted((c["code"], c["uses"], c["discount"], c["revenue"]) for c in got["coupons"]) == expected["coupons"]
    return expected


def sign_in(client: FlaskClient, email: str, password: str) -> None:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text
    signed_in = client.post("/login", data={"csrf_token": token.group(1), "email": email, "password": password})
    assert signed_in.status_code == 303 and signed_in.location.endswith("/manager"), signed_in.text


def dashboard_figures(client: FlaskClient, query: str = "") -> dict[str, int]:
    page = client.get(f"/manager{query}")
    assert page.status_code == 200, page.text
    return {name: int(value) for name, value in re.findall(r'data-kpi="(\w+)" data-value="(-?\d+)"', page.text)}


def test_dashboard_and_stats_api_equal_direct_sql(client: FlaskClient, synth: SynthRun, db_session: Session) -> None:
    today = utcnow().date()
    first = today - dt.timedelta(days=729)
    ranges = [(first, today), (today - dt.timedelta(days=89), today),
              (first + dt.timedelta(days=200), first + dt.timedelta(days=400))]
    sign_in(client, synth.manager_email, synth.manager_password)
    for start, end in ranges:
        expected = assert_api_summary(client, synth, start, end, db_session)
        shown = dashboard_figures(client, f"?from={start}&to={end}")
        assert {name: shown[name] for name in ("range_purchases", "range_revenue", "discounts", "buyers", "churned",
                                               "range_points_issued", "range_points_redeemed",
                                               "liability_points")} == {
            "range_purchases": expected["purchases"], "range_revenue": expected["revenue"],
            "discounts": expected["discount"], "buyers": expected["buyers"], "churned": expected["churned"],
            "range_points_issued": expected["issued"], "range_points_redeemed": expected["redeemed"],
            "liability_points": expected["outstanding"],
        }, (start, end)
    # The default range, and the all-time and last-30-days figures at a glance.
    shown = dashboard_figures(client)
    default = expected_figures(db_session, synth.program, today - dt.timedelta(days=89), today)
    everything = expected_figures(db_session, synth.program, first, today)
    month = expected_figures(db_session, synth.program, today - dt.timedelta(days=29), today)
    assert (shown["range_purchases"], shown["buyers"]) == (default["purchases"], default["buyers"])
    assert {name: shown[name] for name in ("members", "purchases", "revenue", "purchases_in_window",
                                           "revenue_in_window", "active_members", "points_outstanding")} == {
        "members": MEMBERS, "purchases": everything["purchases"], "revenue": everything["revenue"],
        "purchases_in_window": month["purchases"], "revenue_in_window": month["revenue"],
        "active_members": month["buyers"], "points_outstanding": everything["outstanding"],
    }
    assert everything["outstanding"] == db_session.scalar(
        select(func.sum(Card.points)).where(Card.program_id == synth.program.id))


@pytest.mark.parametrize("period", ["day", "week", "month"])
def test_enrollment_stats_equal_direct_sql(client: FlaskClient, synth: SynthRun, db_session: Session,
                                           period: str) -> None:
    rows = db_session.execute(
        select(Customer.created_at, Customer.channel, func.coalesce(Location.name, "online"))
        .outerjoin(Location, Location.id == Customer.location_id).where(Customer.program_id == synth.program.id)
    ).all()
    expected: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for at, channel, location in rows:
        day = at.date()
        start = {"day": day, "week": day - dt.timedelta(days=day.weekday()), "month": day.replace(day=1)}[period]
        expected[start.isoformat()].update({"count": 1, f"channel:{channel}": 1, f"location:{location}": 1})
    answer = client.get(f"/api/v1/stats/enrollments?period={period}", headers=synth.api_headers)
    assert answer.status_code == 200, answer.json
    assert answer.json is not None and answer.json["total"] == MEMBERS
    got = {
        entry["start"]: Counter({"count": entry["count"],
                                 **{f"channel:{k}": v for k, v in entry["by_channel"].items() if v},
                                 **{f"location:{k}": v for k, v in entry["by_location"].items() if v}})
        for entry in answer.json["series"] if entry["count"]
    }
    assert got == expected


# --- running again, running big, bad input ---------------------------------------------------------------------


def test_a_second_run_adds_to_the_same_program(
    runner: FlaskCliRunner, client: FlaskClient, synth: SynthRun, db_session: Session
) -> None:
    staff_before = count(db_session, Staff, Staff.program_id == synth.program.id)
    again = runner.invoke(args=["synth", "--program", synth.program.slug, "--members", "100", "--purchases", "700",
                                "--seed", "11"])
    assert again.exit_code == 0, again.output
    assert "credentials" not in again.stdout
    program = synth.program
    assert count(db_session, Customer, Customer.program_id == program.id) == MEMBERS + 100
    assert count(db_session, Purchase, Purchase.program_id == program.id) == PURCHASES + 700
    assert count(db_session, Staff, Staff.program_id == program.id) == staff_before
    assert count(db_session, Coupon, Coupon.program_id == program.id) == 4
    emails = db_session.scalars(select(Customer.email).where(Customer.program_id == program.id,
                                                             Customer.email.is_not(None))).all()
    assert len(set(emails)) == len(emails)
    check = runner.invoke(args=["ledger", "check"])
    assert check.exit_code == 0, check.output
    today = utcnow().date()
    assert_api_summary(client, synth, today - dt.timedelta(days=729), today, db_session)


def test_the_simulation_in_its_own_process_makes_the_same_kind_of_data(
    app: Flask, runner: FlaskCliRunner, db_session: Session
) -> None:
    with app.app_context():
        report = synthesize(db_session, get_keys(), SynthOptions(members=50, purchases=400, seed=3),
                            now=utcnow(), own_process=True)
        db_session.commit()
    assert (report.members, report.purchases) == (50, 400)
    assert count(db_session, Purchase, Purchase.program_id == report.program_id) == 400
    assert count(db_session, Card, Card.program_id == report.program_id, Card.purchase_count > 0) > 20
    check = runner.invoke(args=["ledger", "check"])
    assert check.exit_code == 0, check.output


def test_a_dangling_reference_is_caught_after_a_load(db_session: Session) -> None:
    """PostgreSQL loads skip the per-row foreign-key triggers when they may, and check every key afterwards; SQLite
    checks each row as it goes in. Either way a row that points at nothing does not get through."""
    connection = db_session.connection()
    orphan = insert(LedgerEntry.__table__).values(card_id=2**40, kind="adjust", points=1, note="", created_at=utcnow())
    if not skip_row_reference_checks(connection):
        with pytest.raises(IntegrityError, match="(?i)foreign key"):
            connection.execute(orphan)
        return
    connection.execute(orphan)
    with pytest.raises(DanglingReference, match=r"ledger_entries\.card_id = 1099511627776 names no cards row"):
        check_references(connection, [Base.metadata.tables[name] for name in REFERENCE_CHECKED])


def test_synth_has_help(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["synth", "--help"])
    assert result.exit_code == 0
    assert "--members" in result.output and "--purchases" in result.output and "--seed" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--members", "0"], "--members must be 1 or more"),
    (["--members", "-5", "--purchases", "10"], "Purchases need members"),
    (["--purchases", "100"], "Purchases need members"),
    ([], "--members must be 1 or more"),
    (["--members", "5", "--purchases", "-1"], "--purchases must be between 0 and"),
    (["--members", "5", "--days", "0"], "--days must be between 1 and"),
    (["--members", "5", "--program", "no-such-program"], "No program 'no-such-program'"),
    (["--members", "five"], "'five' is not a valid integer"),
])
def test_bad_input_is_refused_and_writes_nothing(
    runner: FlaskCliRunner, db_session: Session, args: list[str], message: str
) -> None:
    programs = count(db_session, Program)
    result = runner.invoke(args=["synth", *args])
    assert result.exit_code != 0
    assert message in result.output
    assert count(db_session, Program) == programs


def test_a_stamp_program_is_not_filled(runner: FlaskCliRunner, make_program: Any, db_session: Session) -> None:
    kit = make_program(rules={"program_type": "stamps", "stamps": {"stamps_needed": 8}})
    customers = count(db_session, Customer)
    result = runner.invoke(args=["synth", "--program", kit.program.slug, "--members", "5"])
    assert result.exit_code == 1
    assert "is a stamps program" in result.output and "Leave --program out" in result.output
    assert count(db_session, Customer) == customers


def test_contact_details_are_unique_across_runs(runner: FlaskCliRunner, db_session: Session) -> None:
    first = run_synth(runner, db_session, "--members", "40", "--seed", "5")
    result = runner.invoke(args=["synth", "--program", first.program.slug, "--members", "40", "--seed", "5"])
    assert result.exit_code == 0, result.output
    phones = db_session.scalars(select(Customer.phone).where(Customer.program_id == first.program.id,
                                                             Customer.phone.is_not(None))).all()
    names = db_session.scalars(select(distinct(Customer.name)).where(Customer.program_id == first.program.id)).all()
    assert len(phones) == len(set(phones)) > 10
    assert len(names) > 20
    assert json.dumps(sorted(phones))  # they are plain strings a CSV export can carry
