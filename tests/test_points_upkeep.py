"""The daily upkeep: the birthday asked at enrollment, the birthday bonus, points expiry and its warning email.

The commands are run as an operator runs them (`flask --app wsgi points ...`, through the test CLI runner),
with --date to stand on a chosen day; warnings travel over real SMTP to a local aiosmtpd server.
"""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app import cli_points
from app.cli_points import points_cli
from app.domain.enrollment import parse_birthday
from app.domain.errors import ValidationError
from app.domain.pass_changes import take_changes
from app.domain.points_upkeep import expire_points, points_to_expire
from app.models import Card, Customer, LedgerEntry
from tests.conftest import TEST_RULES, ProgramKit

BIRTHDAY_RULES: dict[str, Any] = {**TEST_RULES, "birthday": {"bonus": 200}}
EXPIRY_RULES: dict[str, Any] = {**TEST_RULES, "expiry": {"months": 12, "warn_days": 14}}
UTC = dt.UTC


def _program(make_program, db_session: Session, rules: dict[str, Any], **kwargs: Any) -> ProgramKit:
    """A program with these rules as stored (create_program keeps only the pricing rules it knows)."""
    kit: ProgramKit = make_program(**kwargs)
    kit.program.rules = rules
    db_session.commit()
    return kit


def _points(runner: FlaskCliRunner, *args: str):  # type: ignore[no-untyped-def]
    result = runner.invoke(points_cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def _ledger_checks_out(runner: FlaskCliRunner, db_session: Session, *kits: ProgramKit) -> None:
    """`ledger check` finds every balance of these programs' cards equal to its ledger.

    Only these: the database is shared with tests that commit for real, and they answer for their own cards.
    """
    result = runner.invoke(args=["ledger", "check"])
    assert "Checked" in result.output, result.output
    serials = db_session.scalars(select(Card.serial).where(Card.program_id.in_([k.program.id for k in kits]))).all()
    assert serials
    mismatched = [serial for serial in serials if f"MISMATCH card {serial}:" in result.output]
    assert not mismatched, result.output


def _card(db_session: Session, serial: str) -> Card:
    card = db_session.scalar(select(Card).where(Card.serial == serial).execution_options(populate_existing=True))
    assert card is not None
    return card


def _ledger(db_session: Session, card: Card) -> list[LedgerEntry]:
    return list(db_session.scalars(select(LedgerEntry).where(LedgerEntry.card_id == card.id)
                                   .order_by(LedgerEntry.id)))


# --- The birthday, asked at enrollment --------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "parsed"), [
    ("07-14", (7, 14)),
    ("02-29", (2, 29)),  # a birthday, even if most years lack it
    ("12-31", (12, 31)),
    ("", None),
    (None, None),
])
def test_a_birthday_reads_as_month_and_day(value: str | None, parsed: tuple[int, int] | None) -> None:
    assert parse_birthday(value) == parsed


@pytest.mark.parametrize(("value", "message"), [
    ("02-30", "There is no 30 February"),
    ("02-31", "There is no 31 February"),
    ("04-31", "There is no 31 April"),
    ("13-01", "There is no month 13"),
    ("00-10", "There is no month 0"),
    ("12-00", "There is no 0 December"),
    ("7-14", "is not a month and day such as"),
    ("07/14", "is not a month and day such as"),
    ("1990-07-14", "is not a month and day such as"),
    (714, "birthday must be a string"),
])
def test_a_wrong_birthday_is_refused_with_what_to_fix(value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as refused:
        parse_birthday(value)
    assert refused.value.field == "birthday"


def test_the_api_keeps_the_birthday(client: FlaskClient, make_program, db_session: Session) -> None:
    kit = make_program()
    response = client.post("/api/v1/enrollments", headers=kit.headers,
                           json={"name": "Amina Karimi", "email": "amina@example.com", "birthday": "02-29"})
    assert response.status_code == 201, response.json
    customer = db_session.scalar(select(Customer).where(Customer.email == "amina@example.com"))
    assert customer is not None and (customer.birthday_month, customer.birthday_day) == (2, 29)

    refused = client.post("/api/v1/enrollments", headers=kit.headers,
                          json={"name": "Bo Lind", "email": "bo@example.com", "birthday": "02-30"})
    assert refused.status_code == 422
    assert refused.json["field"] == "birthday" and "There is no 30 February" in refused.json["detail"]
    assert db_session.scalar(select(Customer).where(Customer.email == "bo@example.com")) is None


# --- The birthday bonus -----------------------------------------------------------------------------------------


def test_the_birthday_bonus_is_paid_once_a_year(runner: FlaskCliRunner, make_program, enroll,
                                                db_session: Session) -> None:
    kit = _program(make_program, db_session, BIRTHDAY_RULES)
    amina = enroll(kit, name="Amina Karimi", birthday="07-14")
    tomorrow = enroll(kit, birthday="07-15")
    no_birthday = enroll(kit)
    plain = make_program()  # no birthday rule: its members get nothing
    plain_member = enroll(plain, birthday="07-14")
    take_changes(db_session)

    result = _points(runner, "birthday", "--date", "2027-07-14")
    assert result.exit_code == 0, result.output
    card = _card(db_session, amina["serial"])
    assert card.points == 50 + 200
    assert card.birthday_bonus_year == 2027
    bonus = _ledger(db_session, card)[-1]
    assert (bonus.kind, bonus.points, bonus.note) == ("bonus", 200, "Birthday bonus 2027")
    assert card.id in take_changes(db_session)[0]  # its wallet passes are republished
    for other in (tomorrow, no_birthday, plain_member):
        assert _card(db_session, other["serial"]).points == 50

    # The same day again, and the next day: paid once.
    for day in ("2027-07-14", "2027-07-15"):
        assert _points(runner, "birthday", "--date", day).exit_code == 0
    card = _card(db_session, amina["serial"])
    assert card.points == 250 and len(_ledger(db_session, card)) == 2
    assert _card(db_session, tomorrow["serial"]).points == 250

    # Next year, again.
    assert _points(runner, "birthday", "--date", "2028-07-14").exit_code == 0
    assert _card(db_session, amina["serial"]).points == 450
    assert _card(db_session, amina["serial"]).birthday_bonus_year == 2028
    _ledger_checks_out(runner, db_session, kit)


@pytest.mark.parametrize(("days", "paid"), [
    (["2027-02-28"], 2027),  # no 29 February in 2027: the day before
    (["2027-02-28", "2027-03-01"], 2027),
    (["2028-02-28"], None),  # 2028 has one: wait for it
    (["2028-02-28", "2028-02-29"], 2028),
])
def test_a_29_february_birthday(runner: FlaskCliRunner, make_program, enroll, db_session: Session,
                                days: list[str], paid: int | None) -> None:
    kit = _program(make_program, db_session, BIRTHDAY_RULES)
    member = enroll(kit, birthday="02-29")
    for day in days:
        assert _points(runner, "birthday", "--date", day).exit_code == 0
    card = _card(db_session, member["serial"])
    assert card.birthday_bonus_year == paid
    assert card.points == 50 + (200 if paid else 0)


def test_a_missed_run_is_caught_up_within_the_grace_days(runner: FlaskCliRunner, make_program, enroll,
                                                         db_session: Session) -> None:
    kit = _program(make_program, db_session, {**TEST_RULES, "birthday": {"bonus": 200, "grace_days": 3}})
    on_time = enroll(kit, birthday="12-30")
    too_late = enroll(kit, birthday="12-27")
    assert _points(runner, "birthday", "--date", "2028-01-02").exit_code == 0
    assert _card(db_session, on_time["serial"]).birthday_bonus_year == 2027  # last year's birthday, paid now
    assert _card(db_session, too_late["serial"]).birthday_bonus_year is None


def test_a_birthday_dry_run_lists_and_changes_nothing(runner: FlaskCliRunner, make_program, enroll,
                                                      db_session: Session) -> None:
    kit = _program(make_program, db_session, BIRTHDAY_RULES)
    member = enroll(kit, name="Amina Karimi", birthday="07-14")
    result = _points(runner, "birthday", "--dry-run", "--date", "2027-07-14")
    assert result.exit_code == 0
    line = next(line for line in result.stdout.splitlines() if member["serial"] in line)
    assert "Amina K." in line and "Karimi" not in line and "200 points" in line and "14 July 2027" in line
    assert "nothing was changed" in result.stdout
    card = _card(db_session, member["serial"])
    assert card.points == 50 and card.birthday_bonus_year is None and len(_ledger(db_session, card)) == 1


def test_birthday_bonuses_in_cashback_and_stamps(runner: FlaskCliRunner, make_program, enroll,
                                                 db_session: Session) -> None:
    cashback = _program(make_program, db_session, {
        **TEST_RULES, "program_type": "cashback", "cashback": {"percent_bp": 500}, "birthday": {"bonus": 300},
    })
    stamps = _program(make_program, db_session, {
        **TEST_RULES, "program_type": "stamps", "birthday": {"bonus": 2},
        "stamps": {"stamps_needed": 5, "reward_label": "Free coffee", "reward_value": 350},
    })
    saver = enroll(cashback, birthday="07-14")
    collector = enroll(stamps, birthday="07-14")
    db_session.execute(update(Card).where(Card.serial == collector["serial"]).values(stamps=4))
    db_session.commit()
    assert _points(runner, "birthday", "--date", "2027-07-14").exit_code == 0
    saver_card = _card(db_session, saver["serial"])
    assert saver_card.cashback == 300 and saver_card.points == 50
    assert _ledger(db_session, saver_card)[-1].points == 0  # not points: the note tells it
    collector_card = _card(db_session, collector["serial"])
    assert (collector_card.stamps, collector_card.vouchers) == (1, 1)
    _ledger_checks_out(runner, db_session, cashback, stamps)


# --- Expiry -----------------------------------------------------------------------------------------------------


def _member(db_session: Session, enroll, kit: ProgramKit, *, points: int, last_purchase: dt.date | None,
            enrolled: dt.date = dt.date(2026, 1, 10), **fields: Any) -> dict[str, Any]:
    """A member holding `points` (on the ledger too), who last bought on `last_purchase` (None: never)."""
    member: dict[str, Any] = enroll(kit, **fields)
    card = _card(db_session, member["serial"])
    if points != card.points:
        db_session.add(LedgerEntry(card_id=card.id, kind="adjust", points=points - card.points, note="test set-up"))
    db_session.execute(update(Card).where(Card.id == card.id).values(
        points=points,
        created_at=dt.datetime.combine(enrolled, dt.time(9), UTC),
        last_purchase_at=dt.datetime.combine(last_purchase, dt.time(17, 30), UTC) if last_purchase else None,
        purchase_count=1 if last_purchase else 0,
    ))
    db_session.commit()
    return member


def test_an_expiry_dry_run_lists_who_would_lose_what_and_changes_nothing(
    runner: FlaskCliRunner, make_program, enroll, db_session: Session
) -> None:
    kit = _program(make_program, db_session, EXPIRY_RULES)
    lapsed = _member(db_session, enroll, kit, name="Amina Karimi", points=120, last_purchase=dt.date(2026, 6, 10))
    never = _member(db_session, enroll, kit, name="Bo Lind", points=50, last_purchase=None,
                    enrolled=dt.date(2026, 5, 1))
    active = _member(db_session, enroll, kit, points=300, last_purchase=dt.date(2027, 4, 1))
    result = _points(runner, "expire", "--dry-run", "--date", "2027-06-15")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    amina = next(line for line in lines if lapsed["serial"] in line)
    assert "Amina K." in amina and "Karimi" not in amina and "120 points" in amina
    assert "last purchase 2026-06-10" in amina
    bo = next(line for line in lines if never["serial"] in line)
    assert "Bo L." in bo and "50 points" in bo and "no purchase, enrolled 2026-05-01" in bo
    assert not any(active["serial"] in line for line in lines)
    assert "nothing was changed" in result.stdout
    for member, points in ((lapsed, 120), (never, 50), (active, 300)):
        card = _card(db_session, member["serial"])
        assert card.points == points
        assert not [e for e in _ledger(db_session, card) if e.note.startswith("Expired")]


def test_expiry_takes_the_points_to_zero_on_the_ledger(runner: FlaskCliRunner, make_program, enroll,
                                                       db_session: Session) -> None:
    kit = _program(make_program, db_session, EXPIRY_RULES)
    today = "2027-06-15"
    lapsed = _member(db_session, enroll, kit, points=120, last_purchase=dt.date(2026, 6, 10))
    never = _member(db_session, enroll, kit, points=50, last_purchase=None, enrolled=dt.date(2026, 5, 1))
    on_the_day = _member(db_session, enroll, kit, points=70, last_purchase=dt.date(2026, 6, 15))
    a_day_left = _member(db_session, enroll, kit, points=80, last_purchase=dt.date(2026, 6, 16))
    active = _member(db_session, enroll, kit, points=300, last_purchase=dt.date(2027, 4, 1))
    empty = _member(db_session, enroll, kit, points=0, last_purchase=dt.date(2025, 1, 1))
    other = _program(make_program, db_session, TEST_RULES)  # no expiry rule
    keeps = _member(db_session, enroll, other, points=90, last_purchase=dt.date(2024, 1, 1))
    take_changes(db_session)

    result = _points(runner, "expire", "--no-warn", "--date", today)
    assert result.exit_code == 0, result.output
    for member, points in ((lapsed, 0), (never, 0), (on_the_day, 0), (a_day_left, 80), (active, 300),
                           (empty, 0), (keeps, 90)):
        assert _card(db_session, member["serial"]).points == points, member
    card = _card(db_session, lapsed["serial"])
    expired = _ledger(db_session, card)[-1]
    assert (expired.kind, expired.points, expired.note) == ("adjust", -120,
                                                            "Expired after 12 months without a purchase")
    assert card.id in take_changes(db_session)[0]
    _ledger_checks_out(runner, db_session, kit)

    # Again: nothing left to expire, nothing written.
    rows = db_session.scalar(select(func.count()).select_from(LedgerEntry))
    assert _points(runner, "expire", "--no-warn", "--date", today).exit_code == 0
    assert db_session.scalar(select(func.count()).select_from(LedgerEntry)) == rows


def test_expiry_takes_what_is_there_and_spares_a_card_that_just_bought(make_program, enroll,
                                                                       db_session: Session) -> None:
    kit = _program(make_program, db_session, EXPIRY_RULES)
    topped_up = _member(db_session, enroll, kit, points=120, last_purchase=dt.date(2026, 6, 10))
    bought = _member(db_session, enroll, kit, points=60, last_purchase=dt.date(2026, 6, 10))
    plan = {item.serial: item for item in points_to_expire(db_session, dt.date(2027, 6, 15)).items}
    # After the plan: a bonus lands on one card, a purchase on the other.
    db_session.execute(update(Card).where(Card.serial == topped_up["serial"]).values(points=Card.points + 30))
    db_session.add(LedgerEntry(card_id=_card(db_session, topped_up["serial"]).id, kind="bonus", points=30))
    db_session.execute(update(Card).where(Card.serial == bought["serial"])
                       .values(last_purchase_at=dt.datetime(2027, 6, 15, 8, tzinfo=UTC)))
    assert expire_points(db_session, plan[topped_up["serial"]]) == 150
    assert expire_points(db_session, plan[bought["serial"]]) == 0
    assert _card(db_session, topped_up["serial"]).points == 0
    assert _card(db_session, bought["serial"]).points == 60


def test_a_large_run_shows_its_progress_on_stderr(runner: FlaskCliRunner, make_program, enroll,
                                                  db_session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_points, "_PROGRESS_FROM", 1)
    kit = _program(make_program, db_session, EXPIRY_RULES)
    _member(db_session, enroll, kit, points=120, last_purchase=dt.date(2026, 6, 10))
    result = _points(runner, "expire", "--no-warn", "--date", "2027-06-15")
    assert "Expiring points" in result.stderr
    assert "Expiring points" not in result.stdout


# --- The warning before expiry ----------------------------------------------------------------------------------


def test_members_are_warned_once_by_email_before_their_points_expire(
    runner: FlaskCliRunner, make_program, enroll, db_session: Session, smtp_inbox
) -> None:
    kit = _program(make_program, db_session, EXPIRY_RULES, name="Corner Coffee")
    amina = _member(db_session, enroll, kit, name="Amina Karimi", email="amina@example.com",
                    marketing_consent=False, points=120, last_purchase=dt.date(2026, 6, 20))
    # By phone only: there is no address to warn.
    _member(db_session, enroll, kit, email=None, phone="+33612345678", points=90, last_purchase=dt.date(2026, 6, 20))
    # Expiring later than the warning days.
    later = _member(db_session, enroll, kit, points=40, last_purchase=dt.date(2026, 7, 20))

    result = _points(runner, "warn-expiry", "--date", "2027-06-10")
    assert result.exit_code == 0, result.output
    assert len(smtp_inbox.messages) == 1
    message = smtp_inbox.messages[0]
    assert message["To"] == "amina@example.com"
    assert message["Subject"] == "Your 120 Corner Coffee points expire on 20 June 2027"
    body = message.get_content()
    assert "Hello Amina," in body
    assert "Your 120 points with Corner Coffee expire on 20 June 2027" in body
    assert "by 19 June 2027" in body
    card = _card(db_session, amina["serial"])
    assert f"http://loyalty.test/c/{card.page_token}" in body
    assert "not an advertisement" in body  # sent without marketing consent: it is about their balance
    assert card.expiry_warned_at is not None
    assert _card(db_session, later["serial"]).expiry_warned_at is None

    # Again the same day, the next day, and through `points expire`: not again.
    for day in ("2027-06-10", "2027-06-11"):
        assert _points(runner, "warn-expiry", "--date", day).exit_code == 0
    assert _points(runner, "expire", "--date", "2027-06-12").exit_code == 0
    assert [m["To"] for m in smtp_inbox.messages] == ["amina@example.com"]
    assert _card(db_session, amina["serial"]).points == 120  # warned, not expired

    # A purchase moves the expiry date a year on; that one is warned about in its turn.
    db_session.execute(update(Card).where(Card.serial == amina["serial"])
                       .values(last_purchase_at=dt.datetime(2027, 6, 14, 12, tzinfo=UTC)))
    db_session.commit()
    assert _points(runner, "warn-expiry", "--date", "2027-06-20").exit_code == 0
    assert len(smtp_inbox.messages) == 1
    assert _points(runner, "expire", "--date", "2028-06-05").exit_code == 0
    assert len(smtp_inbox.messages) == 2
    assert "expire on 14 June 2028" in smtp_inbox.messages[1]["Subject"]


def test_a_warning_dry_run_sends_nothing(runner: FlaskCliRunner, make_program, enroll, db_session: Session,
                                         smtp_inbox) -> None:
    kit = _program(make_program, db_session, EXPIRY_RULES)
    amina = _member(db_session, enroll, kit, name="Amina Karimi", points=120, last_purchase=dt.date(2026, 6, 20))
    result = _points(runner, "warn-expiry", "--dry-run", "--date", "2027-06-10")
    line = next(line for line in result.stdout.splitlines() if amina["serial"] in line)
    assert "Amina K." in line and "120 points" in line and "2027-06-20" in line
    assert smtp_inbox.messages == []
    assert _card(db_session, amina["serial"]).expiry_warned_at is None


def test_a_warning_that_cannot_be_sent_is_sent_next_run(runner: FlaskCliRunner, make_program, enroll,
                                                        db_session: Session, app: Flask,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    kit = _program(make_program, db_session, EXPIRY_RULES)
    amina = _member(db_session, enroll, kit, points=120, last_purchase=dt.date(2026, 6, 20))
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setitem(app.config, "MAIL_SERVER", "127.0.0.1")
    monkeypatch.setitem(app.config, "MAIL_PORT", port)
    result = runner.invoke(points_cli, ["warn-expiry", "--date", "2027-06-10"])
    assert result.exit_code == 1
    assert "run the command again" in result.output
    assert _card(db_session, amina["serial"]).expiry_warned_at is None
