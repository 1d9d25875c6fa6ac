"""Win-back reminders to lapsed members who agreed to marketing email (`flask --app wsgi reminders send|list`).

Run as an operator runs them (the test CLI runner, or `python -m flask` in a subprocess that is killed mid-run),
over real SMTP to a local aiosmtpd server whose received messages are what is checked: who got one, how many,
what it says, and that the unsubscribe link in it works and is obeyed by the next run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import cli_reminders
from app.domain.coupons import create_offer
from app.domain.mechanics import mechanics_from_json
from app.domain.reminders import balance_words
from app.models import Card, ConsentChange, Customer, Reminder, utcnow
from tests.conftest import TEST_RULES, ProgramKit

ROOT = Path(__file__).resolve().parent.parent
BASE = "http://loyalty.test"
DAY = dt.timedelta(days=1)


# --- Setting the scene --------------------------------------------------------------------------------------------


def _program(make_program: Callable[..., ProgramKit], db_session: Session,
             rules: dict[str, Any] | None = None) -> ProgramKit:
    kit = make_program()
    if rules is not None:
        kit.program.rules = rules  # as stored, with the parts create_program does not know (segments, stamps)
        db_session.commit()
    return kit


def _member(
    client: FlaskClient, db_session: Session, kit: ProgramKit, *, name: str = "Amina Karimi",
    email: str | None = "", consent: bool = True, enrolled: dt.datetime, bought: dt.datetime | None = None,
    amount: str | None = None,
) -> Card:
    """A member enrolled through the API (a purchase of `amount` too), then moved back in time: enrolled on
    `enrolled`, last purchase on `bought` (None: never bought)."""
    body: dict[str, Any] = {"name": name, "marketing_consent": consent}
    if email is None:
        body["phone"] = f"+4915{abs(hash(name)) % 10**9:09d}"
    else:
        body["email"] = email or f"{name.split()[0].lower()}.{os.urandom(3).hex()}@example.com"
    made = client.post("/api/v1/enrollments", json=body, headers=kit.headers)
    assert made.status_code == 201, made.json
    if amount is not None:
        bought_now = client.post("/api/v1/purchases", json={"code": made.json["code"], "amount": amount},
                                 headers=kit.purchase_headers())
        assert bought_now.status_code == 201, bought_now.json
    card = db_session.scalar(select(Card).where(Card.serial == made.json["serial"]))
    assert card is not None
    card.created_at = card.customer.created_at = enrolled
    card.last_purchase_at = bought
    db_session.commit()
    return card


def _send(runner: FlaskCliRunner, kit: ProgramKit, *args: str) -> Any:
    result = runner.invoke(args=["reminders", "send", "--program", kit.program.slug, *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def _reminders(db_session: Session, kit: ProgramKit) -> list[Reminder]:
    return list(db_session.scalars(select(Reminder).where(Reminder.program_id == kit.program.id)
                                   .order_by(Reminder.id).execution_options(populate_existing=True)))


def _to(messages: list[EmailMessage]) -> list[str]:
    return [str(message["To"]) for message in messages]


@pytest.fixture()
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> dt.datetime:
    """The command's clock, stopped at a known instant (mid-afternoon UTC), so day boundaries are exact."""
    now = dt.datetime.combine(utcnow().date(), dt.time(15, 30), dt.UTC)
    monkeypatch.setattr(cli_reminders, "utcnow", lambda: now)
    return now


# --- Who gets one ---------------------------------------------------------------------------------------------------


def test_only_lapsed_members_who_consented_and_have_an_email_get_one(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session, smtp_inbox,
) -> None:
    kit = _program(make_program, db_session)
    now = utcnow()
    long_ago = now - 200 * DAY
    lapsed = _member(client, db_session, kit, name="Amina Karimi", enrolled=long_ago, bought=now - 120 * DAY,
                     amount="20.00")
    never_bought = _member(client, db_session, kit, name="Bruno Costa", enrolled=now - 95 * DAY)
    _member(client, db_session, kit, name="Chen Wei", consent=False, enrolled=long_ago, bought=now - 120 * DAY)
    _member(client, db_session, kit, name="Dara Okafor", email=None, enrolled=long_ago, bought=now - 120 * DAY)
    withdrew = _member(client, db_session, kit, name="Eva Lind", enrolled=long_ago, bought=now - 120 * DAY)
    _member(client, db_session, kit, name="Femi Adeyemi", enrolled=long_ago, bought=now - 10 * DAY)  # active
    revoked = _member(client, db_session, kit, name="Gus Moreau", enrolled=long_ago, bought=now - 120 * DAY)
    revoked.status = "revoked"
    db_session.commit()
    # Eva takes her consent back through her unsubscribe link (no sign-in), as in any email of ours.
    with app.app_context():
        from app.unsubscribe_links import unsubscribe_url
        path = unsubscribe_url(withdrew.customer_id).removeprefix(BASE)
    assert app.test_client().post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200

    looked = _send(runner, kit, "--dry-run")
    assert "Dry run: 2 reminders would be sent" in looked.output
    listed = [line.split()[1] for line in looked.output.splitlines() if line.startswith(kit.program.slug)]
    assert sorted(listed) == sorted([lapsed.serial, never_bought.serial])

    result = _send(runner, kit)

    assert result.exit_code == 0, result.output
    assert "Sent 2 reminders.\n" in result.output and "no longer due" not in result.output
    assert sorted(_to(smtp_inbox.messages)) == sorted([lapsed.customer.email, never_bought.customer.email])
    assert {(r.card_id, r.status) for r in _reminders(db_session, kit)} == {(lapsed.id, "sent"),
                                                                            (never_bought.id, "sent")}


def test_what_the_reminder_says_and_carries(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session, smtp_inbox,
) -> None:
    kit = _program(make_program, db_session)
    now = utcnow()
    bought = now - 120 * DAY
    card = _member(client, db_session, kit, name="Amina Karimi", enrolled=now - 300 * DAY, bought=bought,
                   amount="20.00")  # 50 welcome + 20 earned

    assert _send(runner, kit).exit_code == 0
    [message] = smtp_inbox.messages
    assert message["To"] == card.customer.email
    assert message["Subject"] == f"{kit.program.name}: your 70 points are waiting for you"
    body = message.get_content().replace("\r\n", "\n")
    assert body.startswith("Hello Amina,\n")
    assert f"since your last visit at {kit.program.name}, on {bought.day} {bought:%B %Y}" in body
    assert "You have 70 points to spend." in body
    assert f"{BASE}/c/{card.page_token}\n" in body
    [unsubscribe] = re.findall(rf"{re.escape(BASE)}/u/\S+", body)
    assert message["List-Unsubscribe"] == f"<{unsubscribe}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Just for you" not in body  # no offer is running


def test_a_running_offer_for_lapsed_members_is_in_the_reminder(
    client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session, smtp_inbox,
) -> None:
    kit = _program(make_program, db_session)
    now = utcnow()
    terms = {"discount_type": "percent", "discount": "20", "ends": (now + 10 * DAY).date().isoformat()}
    for title, segment in (("Come back", "lapsed"), ("VIP night", "vip")):
        offer = create_offer(db_session, kit.program, {"title": title, **terms}, now=now)
        offer.segment = segment
    db_session.commit()
    _member(client, db_session, kit, enrolled=now - 300 * DAY, bought=now - 100 * DAY)

    assert _send(runner, kit).exit_code == 0
    body = smtp_inbox.messages[0].get_content().replace("\r\n", "\n")
    assert "Just for you: Come back, 20% off, until" in body
    assert "VIP night" not in body


@pytest.mark.parametrize(("rules", "card_values", "subject_part", "sentence"), [
    ({"program_type": "stamps", "stamps": {"stamps_needed": 8, "reward_label": "Free coffee"}},
     {"stamps": 3, "vouchers": 1}, "your 3 of 8 stamps are waiting",
     "You have 3 of 8 stamps towards a Free coffee and 1 voucher for it to use."),
    ({"program_type": "cashback", "cashback": {"percent_bp": 500}}, {"cashback": 1250},
     "your 12.50 EUR cashback is waiting", "You have 12.50 EUR cashback to spend."),
    ({**TEST_RULES, "welcome_bonus": 0}, {"points": 0}, "we have not seen you for a while", None),
])
def test_the_reminder_speaks_the_programs_unit(
    client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session, smtp_inbox,
    rules: dict[str, Any], card_values: dict[str, int], subject_part: str, sentence: str | None,
) -> None:
    kit = _program(make_program, db_session, rules)
    now = utcnow()
    card = _member(client, db_session, kit, enrolled=now - 100 * DAY)
    for name, value in card_values.items():
        setattr(card, name, value)
    db_session.commit()

    assert _send(runner, kit).exit_code == 0
    [message] = smtp_inbox.messages
    assert message["Subject"] == f"{kit.program.name}: {subject_part}" + (" for you" if sentence else "")
    body = message.get_content().replace("\r\n", "\n")
    assert "since you joined" in body
    if sentence:
        assert sentence in body


@pytest.mark.parametrize(("rules", "values", "expected"), [
    (TEST_RULES, {"points": 1250, "tier": "Gold"},
     ("1,250 points", "You have 1,250 points to spend. Your tier is Gold.")),
    (TEST_RULES, {"points": 1}, ("1 point", "You have 1 point to spend.")),
    (TEST_RULES, {"points": 0, "tier": "Silver"}, ("", "Your tier is Silver.")),
    (TEST_RULES, {"points": 0}, ("", "")),
    ({"program_type": "stamps", "stamps": {"stamps_needed": 5, "reward_label": "Free bagel"}}, {"stamps": 0},
     ("", "")),
    ({"program_type": "stamps", "stamps": {"stamps_needed": 5, "reward_label": "Free bagel"}},
     {"stamps": 0, "vouchers": 2}, ("0 of 5 stamps", "You have 0 of 5 stamps towards a Free bagel and 2 vouchers "
                                    "for it to use.")),
    ({"program_type": "cashback", "cashback": {"percent_bp": 300}}, {"cashback": 5}, ("0.05 EUR cashback",
                                                                                      "You have 0.05 EUR cashback "
                                                                                      "to spend.")),
    ({"program_type": "cashback", "cashback": {"percent_bp": 300}}, {"cashback": 0, "points": 40}, ("", "")),
])
def test_balance_words(rules: dict[str, Any], values: dict[str, Any], expected: tuple[str, str]) -> None:
    facts = {"points": 0, "tier": None, "stamps": 0, "vouchers": 0, "cashback": 0, **values}
    assert balance_words(mechanics_from_json(rules), "EUR", **facts) == expected


def test_lapsed_is_counted_in_utc_days_with_the_boundary_day_included(
    client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session, smtp_inbox,
    fixed_now: dt.datetime,
) -> None:
    kit = _program(make_program, db_session, {**TEST_RULES, "segments": {"lapsed_days": 60}})
    boundary = dt.datetime.combine(fixed_now.date() - 60 * DAY, dt.time(0, 0), dt.UTC)
    on_boundary_late = _member(client, db_session, kit, name="Late Boundary", enrolled=boundary - 30 * DAY,
                               bought=boundary + dt.timedelta(hours=23, minutes=59))
    on_boundary_early = _member(client, db_session, kit, name="Early Boundary", enrolled=boundary - 30 * DAY,
                                bought=boundary)
    _member(client, db_session, kit, name="Day After", enrolled=boundary - 30 * DAY, bought=boundary + DAY)
    _member(client, db_session, kit, name="Joined After", enrolled=boundary + DAY)

    result = _send(runner, kit, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Dry run: 2 reminders would be sent" in result.output
    assert "Late B." in result.output and "Early B." in result.output
    assert "Day A." not in result.output and "Joined A." not in result.output

    assert _send(runner, kit).exit_code == 0
    assert sorted(_to(smtp_inbox.messages)) == sorted([on_boundary_late.customer.email,
                                                       on_boundary_early.customer.email])


# --- Once per lapse -------------------------------------------------------------------------------------------------


def test_one_reminder_per_lapse_and_another_after_the_next_lapse(
    client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session, smtp_inbox,
) -> None:
    kit = _program(make_program, db_session)
    now = utcnow()
    card = _member(client, db_session, kit, enrolled=now - 400 * DAY, bought=now - 300 * DAY)

    assert "Sent 1 reminders." in _send(runner, kit).output
    assert "No reminders are due." in _send(runner, kit).output
    assert len(smtp_inbox.messages) == 1

    # Months on: the reminder went out 200 days ago; the member came back 150 days ago and has lapsed again.
    [first] = _reminders(db_session, kit)
    first.claimed_at, first.sent_at = now - 200 * DAY, now - 200 * DAY
    card.last_purchase_at = now - 150 * DAY
    db_session.commit()
    assert "Sent 1 reminders." in _send(runner, kit).output
    assert "No reminders are due." in _send(runner, kit).output
    assert len(smtp_inbox.messages) == 2
    assert [r.last_activity_at for r in _reminders(db_session, kit)] == [now - 300 * DAY, now - 150 * DAY]


def test_never_two_reminders_within_30_days(
    client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session, smtp_inbox,
) -> None:
    # A program that calls a week without a visit lapsed: lapses can follow each other quickly.
    kit = _program(make_program, db_session, {**TEST_RULES, "segments": {"new_days": 3, "lapsed_days": 7}})
    now = utcnow()
    recent = _member(client, db_session, kit, name="Recent Reminder", enrolled=now - 90 * DAY,
                     bought=now - 20 * DAY)
    older = _member(client, db_session, kit, name="Older Reminder", enrolled=now - 90 * DAY,
                    bought=now - 20 * DAY)
    # Each got a reminder for an earlier lapse (last purchase 60 days ago), then bought 20 days ago.
    for card, days in ((recent, 29), (older, 31)):
        db_session.add(Reminder(program_id=kit.program.id, card_id=card.id, last_activity_at=now - 60 * DAY,
                                status="sent", claimed_at=now - days * DAY, sent_at=now - days * DAY))
    db_session.commit()

    assert _send(runner, kit).exit_code == 0
    assert _to(smtp_inbox.messages) == [older.customer.email]


# --- Looking first --------------------------------------------------------------------------------------------------


def test_dry_run_lists_who_would_get_what_and_sends_and_writes_nothing(
    client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session, smtp_inbox,
) -> None:
    kit = _program(make_program, db_session)
    now = utcnow()
    card = _member(client, db_session, kit, name="Amina Karimi", enrolled=now - 300 * DAY,
                   bought=now - 120 * DAY)
    _member(client, db_session, kit, name="Bruno Costa", enrolled=now - 100 * DAY)
    consent_rows = db_session.scalar(select(func.count()).select_from(ConsentChange))

    result = _send(runner, kit, "--dry-run")

    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if card.serial in line)
    assert "Amina K." in line and card.customer.email in line and "lapsed" in line
    assert f"last purchase {(now - 120 * DAY):%Y-%m-%d}" in line
    assert "Bruno C." in result.output and "never bought" in result.output
    assert f'"{kit.program.name}: your 50 points are waiting for you"' in line
    assert "Dry run: 2 reminders would be sent; nothing was sent or written." in result.output
    assert smtp_inbox.messages == []
    assert _reminders(db_session, kit) == []
    assert db_session.scalar(select(func.count()).select_from(ConsentChange)) == consent_rows
    # The real run afterwards sends exactly what the dry run listed.
    assert _send(runner, kit).exit_code == 0
    assert len(smtp_inbox.messages) == 2


def test_limit_sends_some_now_and_the_rest_next_time(
    client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session, smtp_inbox,
) -> None:
    kit = _program(make_program, db_session)
    now = utcnow()
    members = [_member(client, db_session, kit, name=f"Member {n}", enrolled=now - 100 * DAY) for n in range(3)]
    assert "Sent 2 reminders." in _send(runner, kit, "--limit", "2").output
    assert "Sent 1 reminders." in _send(runner, kit, "--limit", "2").output
    assert sorted(_to(smtp_inbox.messages)) == sorted(m.customer.email for m in members)
    bad = runner.invoke(args=["reminders", "send", "--program", kit.program.slug, "--limit", "0"])
    assert bad.exit_code == 2 and "0 is not in the range x>=1" in bad.output


def test_an_unknown_program_is_refused(runner: FlaskCliRunner, smtp_inbox) -> None:
    result = runner.invoke(args=["reminders", "send", "--program", "no-such-shop"])
    assert result.exit_code == 1
    assert "No program 'no-such-shop'." in result.output
    assert smtp_inbox.messages == []


def test_a_program_whose_segment_settings_do_not_read_is_skipped_with_why(
    client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session, smtp_inbox,
) -> None:
    kit = _program(make_program, db_session, {**TEST_RULES, "segments": {"lapsed_days": 0}})
    _member(client, db_session, kit, enrolled=utcnow() - 400 * DAY)
    result = _send(runner, kit)
    assert result.exit_code == 0
    assert f"Skipped {kit.program.slug}: its rules do not read (segments.lapsed_days is a whole number" in result.output
    assert smtp_inbox.messages == [] and _reminders(db_session, kit) == []


def test_without_a_mail_server_nothing_is_claimed(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kit = _program(make_program, db_session)
    _member(client, db_session, kit, enrolled=utcnow() - 100 * DAY)
    monkeypatch.setitem(app.config, "MAIL_SERVER", "")
    result = _send(runner, kit)
    assert result.exit_code == 1
    assert "MAIL_SERVER is not set, so no reminder can be sent" in result.output
    assert _reminders(db_session, kit) == []


# --- The unsubscribe link in the email ------------------------------------------------------------------------------


def test_the_unsubscribe_link_in_the_email_works_and_the_next_run_skips_the_member(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session, smtp_inbox,
) -> None:
    kit = _program(make_program, db_session)
    now = utcnow()
    card = _member(client, db_session, kit, enrolled=now - 400 * DAY, bought=now - 300 * DAY)
    assert _send(runner, kit).exit_code == 0
    body = smtp_inbox.messages[0].get_content().replace("\r\n", "\n")
    [link] = re.findall(rf"{re.escape(BASE)}(/u/\S+)", body)

    reader = app.test_client()  # the member's phone: never signed in to anything
    page = reader.get(link)
    assert page.status_code == 200 and f"Stop emails from {kit.program.name}?" in page.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    done = reader.post(link, data={"csrf_token": token.group(1)})
    assert done.status_code == 200 and "You will not get offers or reminders any more" in done.text
    [change] = db_session.scalars(select(ConsentChange).where(ConsentChange.customer_id == card.customer_id))
    assert (change.consent, change.via) == (False, "unsubscribe_link")

    # The member lapses anew, long after the first reminder: they would be due, but they said no.
    [first] = _reminders(db_session, kit)
    first.claimed_at = first.sent_at = now - 200 * DAY
    card.last_purchase_at = now - 150 * DAY
    db_session.commit()
    assert "Dry run: 0 reminders would be sent" in _send(runner, kit, "--dry-run").output
    assert "No reminders are due." in _send(runner, kit).output
    assert len(smtp_inbox.messages) == 1


def test_the_one_click_header_of_the_email_unsubscribes(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session, smtp_inbox,
) -> None:
    kit = _program(make_program, db_session)
    card = _member(client, db_session, kit, enrolled=utcnow() - 100 * DAY)
    assert _send(runner, kit).exit_code == 0
    message = smtp_inbox.messages[0]
    url = str(message["List-Unsubscribe"]).strip("<>")
    body = str(message["List-Unsubscribe-Post"])
    # What a mail provider does (RFC 8058): POST the header's body to the header's URL, no cookies.
    name, value = body.split("=", 1)
    assert app.test_client().post(url.removeprefix(BASE), data={name: value}).status_code == 200
    customer = db_session.scalar(select(Customer).where(Customer.id == card.customer_id)
                                 .execution_options(populate_existing=True))
    assert customer is not None and customer.marketing_consent is False
    [change] = db_session.scalars(select(ConsentChange).where(ConsentChange.customer_id == card.customer_id))
    assert change.via == "one_click"


# --- When the mail server fails -------------------------------------------------------------------------------------


class _FlakyInbox:
    """An SMTP handler that takes `accept` messages, then answers 421 (closing down) to every other."""

    def __init__(self, accept: int) -> None:
        self.accept = accept
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        if len(self.messages) >= self.accept:
            return "421 Service shutting down, closing transmission channel"
        self.messages.append(message_from_bytes(envelope.content, policy=default_policy))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture()
def smtp_server(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Any], int]]:
    """smtp_server(handler) -> the port of a real SMTP server on 127.0.0.1 with that handler; the app mails it."""
    from aiosmtpd.controller import Controller

    controllers: list[Any] = []

    def start(handler: Any) -> int:
        port = _free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        controllers.append(controller)
        monkeypatch.setitem(app.config, "MAIL_SERVER", "127.0.0.1")
        monkeypatch.setitem(app.config, "MAIL_PORT", port)
        return port

    try:
        yield start
    finally:
        for controller in controllers:
            controller.stop()


def test_a_server_that_stops_taking_mail_leaves_the_rest_for_a_retry(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session, smtp_server,
) -> None:
    kit = _program(make_program, db_session)
    now = utcnow()
    members = [_member(client, db_session, kit, name=f"Member {n}", enrolled=now - 100 * DAY) for n in range(5)]
    flaky = _FlakyInbox(accept=2)
    smtp_server(flaky)

    failed = _send(runner, kit)
    assert failed.exit_code == 1
    assert "failed: 421 Service shutting down" in failed.output
    assert "2 reminders were sent in this run" in failed.output and "--retry-unsent" in failed.output
    assert [r.status for r in _reminders(db_session, kit)] == ["sent", "sent", "failed"]
    assert "421" in _reminders(db_session, kit)[2].error

    flaky.accept = 100  # the server is back
    rest = _send(runner, kit)
    assert rest.exit_code == 0, rest.output
    assert "Sent 2 reminders." in rest.output
    assert "1 reminders failed to send earlier; --retry-unsent sends them again." in rest.output
    retried = _send(runner, kit, "--retry-unsent")
    assert retried.exit_code == 0 and "Sent 1 reminders." in retried.output
    assert Counter(_to(flaky.messages)) == Counter({m.customer.email: 1 for m in members})
    assert [r.status for r in _reminders(db_session, kit)] == ["sent"] * 5
    assert "No reminders are due." in _send(runner, kit, "--retry-unsent").output


def test_smtp_down_exits_non_zero_and_the_reminder_is_retryable(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session, smtp_server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kit = _program(make_program, db_session)
    now = utcnow()
    first = _member(client, db_session, kit, name="First Member", enrolled=now - 100 * DAY)
    second = _member(client, db_session, kit, name="Second Member", enrolled=now - 100 * DAY)
    monkeypatch.setitem(app.config, "MAIL_SERVER", "127.0.0.1")
    monkeypatch.setitem(app.config, "MAIL_PORT", _free_port())  # nothing listens there

    down = _send(runner, kit)
    assert down.exit_code == 1
    assert "Connection refused" in down.output and "0 reminders were sent in this run" in down.output
    [row] = _reminders(db_session, kit)
    assert row.status == "failed" and "Connection refused" in row.error
    listed = runner.invoke(args=["reminders", "list", "--program", kit.program.slug]).output
    assert "failed" in listed and "Connection refused" in listed

    inbox = _FlakyInbox(accept=100)
    smtp_server(inbox)
    assert _send(runner, kit, "--retry-unsent").exit_code == 0
    assert sorted(_to(inbox.messages)) == sorted([first.customer.email, second.customer.email])


def test_a_retry_cancels_the_reminder_of_a_member_who_unsubscribed_meanwhile(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session, smtp_server,
) -> None:
    kit = _program(make_program, db_session)
    card = _member(client, db_session, kit, enrolled=utcnow() - 100 * DAY)
    inbox = _FlakyInbox(accept=0)
    smtp_server(inbox)
    assert _send(runner, kit).exit_code == 1
    with app.app_context():
        from app.unsubscribe_links import unsubscribe_url
        path = unsubscribe_url(card.customer_id).removeprefix(BASE)
    assert app.test_client().post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200

    inbox.accept = 100
    result = _send(runner, kit, "--retry-unsent")
    assert result.exit_code == 0, result.output
    assert "Sent 0 reminders. 1 were no longer due" in result.output
    assert inbox.messages == []
    [row] = _reminders(db_session, kit)
    assert (row.status, row.error) == ("cancelled", "The member withdrew their marketing consent.")


def test_a_refused_address_does_not_stop_the_others(
    client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session, smtp_server,
) -> None:
    class RefusesOne(_FlakyInbox):
        async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                              options: list[str]) -> str:
            if address.startswith("bounce"):
                return "550 No such user here"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    kit = _program(make_program, db_session)
    now = utcnow()
    _member(client, db_session, kit, name="Bounce Member", email="bounce@example.com", enrolled=now - 100 * DAY)
    fine = _member(client, db_session, kit, name="Fine Member", enrolled=now - 100 * DAY)
    inbox = RefusesOne(accept=100)
    smtp_server(inbox)

    result = _send(runner, kit)
    assert result.exit_code == 1
    assert "Refused by the mail server: bounce@example.com" in result.output and "550 No such user" in result.output
    assert "Sent 1 reminders." in result.output
    assert _to(inbox.messages) == [fine.customer.email]
    assert sorted(r.status for r in _reminders(db_session, kit)) == ["failed", "sent"]


def test_reminders_list_shows_the_log(
    client: FlaskClient, runner: FlaskCliRunner, make_program, db_session: Session, smtp_inbox,
) -> None:
    kit = _program(make_program, db_session)
    card = _member(client, db_session, kit, name="Amina Karimi", enrolled=utcnow() - 100 * DAY)
    assert _send(runner, kit).exit_code == 0
    listed = runner.invoke(args=["reminders", "list", "--program", kit.program.slug])
    assert listed.exit_code == 0
    [line] = [line for line in listed.output.splitlines() if card.serial in line]
    assert "sent" in line and "Amina K." in line and card.customer.email in line
    only_failed = runner.invoke(args=["reminders", "list", "--program", kit.program.slug, "--status", "failed"])
    assert card.serial not in only_failed.output and "0 reminders." in only_failed.output
    bad = runner.invoke(args=["reminders", "list", "--status", "lost"])
    assert bad.exit_code == 2 and "'lost' is not one of" in bad.output


# --- A sender killed mid-run, and two senders at once (real processes, real commits) --------------------------------


class _StallingInbox:
    """Takes `accept` messages; the next one it keeps (as delivered) but never confirms, so the sender hangs
    waiting for the reply until it is killed: the one case where a message went out and the sender cannot know."""

    def __init__(self, accept: int) -> None:
        self.accept = accept
        self.messages: list[EmailMessage] = []
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content, policy=default_policy))  # type: ignore[arg-type]
            stall = len(self.messages) == self.accept + 1
        if stall:
            self.stalled.set()
            while not self.release.is_set():
                await asyncio.sleep(0.02)
        return "250 Message accepted for delivery"


def _committed_members(app: Flask, kit: ProgramKit, count: int) -> list[str]:
    """`count` lapsed members with consent, and one without, committed for real; the emails of the former."""
    client = app.test_client()
    emails = []
    for n in range(count + 1):
        email = f"member{n}.{os.urandom(3).hex()}@example.com"
        made = client.post("/api/v1/enrollments", headers=kit.headers,
                           json={"name": f"Member {n}", "email": email, "marketing_consent": n < count})
        assert made.status_code == 201, made.json
        if n < count:
            emails.append(email)
    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            long_ago = utcnow() - 200 * DAY
            for card in session.scalars(select(Card).where(Card.program_id == kit.program.id)):
                card.created_at = card.customer.created_at = long_ago
            session.commit()
        finally:
            session.close()
    return emails


def _sender(app: Flask, database_url: str, port: int, slug: str, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": str(app.config["SECRET_KEY"]),
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(port),
        "PUBLIC_BASE_URL": BASE,
        "SIGNING_KEYS_DIR": app.config["SIGNING_KEYS_DIR"],
        "APPLE_DEV_CERTS_DIR": app.config["APPLE_DEV_CERTS_DIR"],
        "GOOGLE_DEV_KEY_FILE": app.config["GOOGLE_DEV_KEY_FILE"],
        "PASS_UPDATE_WORKER": "0",
    }
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "reminders", "send", "--program", slug,
                             *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _statuses(app: Flask, kit: ProgramKit) -> Counter[str]:
    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            return Counter(session.scalars(select(Reminder.status).where(Reminder.program_id == kit.program.id)))
        finally:
            session.close()


def test_a_sender_killed_mid_send_and_run_again_sends_each_reminder_once(
    app: Flask, committed_shop: ProgramKit, database_url: str,
) -> None:
    from aiosmtpd.controller import Controller

    emails = _committed_members(app, committed_shop, 6)
    inbox = _StallingInbox(accept=2)
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        killed = _sender(app, database_url, port, committed_shop.program.slug)
        try:
            assert inbox.stalled.wait(timeout=60), killed.communicate(timeout=5)
        finally:
            killed.send_signal(signal.SIGKILL)
            killed.communicate(timeout=30)
            inbox.release.set()
        assert killed.returncode == -signal.SIGKILL
        # Two confirmed, one claimed and never confirmed (it did reach the server), three never tried.
        assert _statuses(app, committed_shop) == Counter({"sent": 2, "claimed": 1})

        rerun = _sender(app, database_url, port, committed_shop.program.slug, "--retry-unsent")
        out, err = rerun.communicate(timeout=60)
        assert rerun.returncode == 0, err
        assert "Sent 3 reminders." in out
        assert "1 reminders were claimed by a run that stopped while sending them" in err
        again = _sender(app, database_url, port, committed_shop.program.slug, "--retry-unsent")
        out, err = again.communicate(timeout=60)
        assert again.returncode == 0 and "No reminders are due." in out, err
    finally:
        controller.stop()
    # Every eligible member exactly once; the one without consent never.
    assert Counter(_to(inbox.messages)) == Counter(dict.fromkeys(emails, 1))
    assert _statuses(app, committed_shop) == Counter({"sent": 5, "claimed": 1})


def test_two_senders_at_once_send_each_reminder_once(app: Flask, committed_shop: ProgramKit,
                                                     database_url: str) -> None:
    from aiosmtpd.controller import Controller

    emails = _committed_members(app, committed_shop, 8)
    inbox = _FlakyInbox(accept=1000)
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        senders = [_sender(app, database_url, port, committed_shop.program.slug) for _ in range(2)]
        outputs = [sender.communicate(timeout=120) for sender in senders]
    finally:
        controller.stop()
    assert [sender.returncode for sender in senders] == [0, 0], outputs
    # A sender that planned after the other had claimed everything finds nothing due.
    sent = [int(found.group(1)) if (found := re.search(r"Sent (\d+) reminders", out)) else 0
            for out, _ in outputs]
    assert all("Sent" in out or "No reminders are due." in out for out, _ in outputs), outputs
    assert sum(sent) == 8
    assert Counter(_to(inbox.messages)) == Counter(dict.fromkeys(emails, 1))
    assert _statuses(app, committed_shop) == Counter({"sent": 8})

