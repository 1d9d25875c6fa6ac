"""The NPS question: when the card page asks it, what an answer writes, the email that asks members who agreed to
marketing email (over a real SMTP server), and the figures for the dashboard.

Pure rules first (parametrised tables, no fixtures), then the card page over HTTP, then `flask nps send`, then the
dashboard's SQL and its partial. Purchases go through /api/v1 with the tills' clock pinned, so "N days later" is a
moment the test chooses.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask, render_template
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import cli_nps
from app.domain import nps
from app.domain.errors import ValidationError
from app.models import Card, NpsAsk, NpsEmail, NpsResponse, Program
from app.views import customer as customer_views
from app.views import till as till_views
from tests.conftest import ProgramKit

UTC = dt.UTC
NOW = dt.datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
DAY = dt.timedelta(days=1)


# --- Pure rules ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rules", "days"), [
    ({}, 90),
    ({"nps": {}}, 90),
    ({"nps": {"interval_days": 1}}, 1),
    ({"nps": {"interval_days": 3650}}, 3650),
    ({"nps": {"interval_days": 30}, "segments": {"new_days": 5}}, 30),
])
def test_nps_settings_read_the_interval(rules: dict[str, Any], days: int) -> None:
    assert nps.nps_settings(rules).interval_days == days


@pytest.mark.parametrize("stored", [0, -1, 3651, "90", 90.0, True, None, [90]])
def test_nps_settings_refuse_an_interval_outside_1_to_3650(stored: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        nps.nps_settings({"nps": {"interval_days": stored}})
    assert refused.value.field == "nps.interval_days"
    assert "from 1 to 3650" in refused.value.detail


def test_nps_settings_refuse_a_section_that_is_not_an_object() -> None:
    with pytest.raises(ValidationError):
        nps.nps_settings({"nps": [1, 2]})


T0 = dt.datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("last_purchase", "closed", "now", "due"), [
    (None, None, T0, False),                                   # never bought: nothing to ask about
    (T0, None, T0, True),                                      # bought, never asked
    (T0, T0 + DAY, T0 + 90 * DAY, False),                      # closed after the purchase: no purchase since
    (T0 + 5 * DAY, T0, T0 + 6 * DAY, False),                   # bought since, but closed 6 days ago
    (T0 + 5 * DAY, T0, T0 + 90 * DAY - dt.timedelta(seconds=1), False),  # a second short of 90 days
    (T0 + 5 * DAY, T0, T0 + 90 * DAY, True),                   # exactly 90 days after closing
    (T0 + 95 * DAY, T0, T0 + 200 * DAY, True),
    (T0, T0, T0 + 200 * DAY, False),                           # the purchase is not after the close
])
def test_question_due(last_purchase: dt.datetime | None, closed: dt.datetime | None, now: dt.datetime,
                      due: bool) -> None:
    assert nps.question_due(last_purchase_at=last_purchase, closed_at=closed, now=now, interval_days=90) is due


@pytest.mark.parametrize(("last_purchase", "closed", "emailed", "now", "due"), [
    (T0, None, None, T0 + DAY, True),
    (T0, None, T0 + DAY, T0 + 2 * DAY, False),                 # emailed since the purchase
    (T0 + 10 * DAY, None, T0, T0 + 11 * DAY, False),           # bought since, but emailed 11 days ago
    (T0 + 10 * DAY, None, T0, T0 + 90 * DAY, True),            # 90 days after the email, and bought since
    (T0 + 10 * DAY, T0 + 11 * DAY, T0, T0 + 90 * DAY, False),  # answered after the purchase
    (None, None, None, T0, False),
])
def test_email_due(last_purchase: dt.datetime | None, closed: dt.datetime | None, emailed: dt.datetime | None,
                   now: dt.datetime, due: bool) -> None:
    assert nps.email_due(last_purchase_at=last_purchase, closed_at=closed, emailed_at=emailed, now=now,
                         interval_days=90) is due


@pytest.mark.parametrize(("form", "score", "comment", "channel"), [
    ({"score": "0"}, 0, None, "card_page"),
    ({"score": "10", "comment": "  Friendly staff  ", "channel": "email"}, 10, "Friendly staff", "email"),
    ({"score": " 7 ", "comment": "line one\r\nline two"}, 7, "line one\nline two", "card_page"),
    ({"score": "9", "comment": "a\x00b\x07c"}, 9, "abc", "card_page"),
    ({"score": "5", "comment": "x" * 1000}, 5, "x" * 1000, "card_page"),
    ({"score": "5", "comment": "   "}, 5, None, "card_page"),
])
def test_read_nps_answer(form: dict[str, str], score: int, comment: str | None, channel: str) -> None:
    assert nps.read_nps_answer(form) == nps.NpsAnswer(score, comment, channel)


@pytest.mark.parametrize(("form", "field", "message"), [
    ({}, "score", "Choose a score from 0"),
    ({"score": ""}, "score", "Choose a score from 0"),
    ({"score": "11"}, "score", "whole number from 0"),
    ({"score": "-1"}, "score", "whole number from 0"),
    ({"score": "abc"}, "score", "whole number from 0"),
    ({"score": "7.5"}, "score", "whole number from 0"),
    ({"score": "٧"}, "score", "whole number from 0"),  # an Arabic-Indic seven is a digit to Python, not to us
    ({"score": "5", "comment": "x" * 1001}, "comment", "1,001 characters long"),
    ({"score": "5", "channel": "sms"}, "channel", "not sent from your card page"),
])
def test_read_nps_answer_refuses_bad_input(form: dict[str, str], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        nps.read_nps_answer(form)
    assert message in refused.value.extra["errors"][field]
    assert refused.value.detail.startswith("Your answer was not saved:")


@pytest.mark.parametrize(("value", "expected"), [
    ("0", 0), ("10", 10), (" 4 ", 4), ("11", None), ("", None), (None, None), ("x", None), ("04", None),
])
def test_read_preselected_score(value: str | None, expected: int | None) -> None:
    assert nps.read_preselected_score(value) == expected


@pytest.mark.parametrize(("promoters", "passives", "detractors", "score"), [
    (0, 0, 0, None),
    (5, 0, 0, 100),
    (0, 0, 5, -100),
    (0, 3, 0, 0),
    (1, 0, 1, 0),
    (3, 1, 1, 40),        # 60% - 20%
    (1, 7, 0, 13),        # 12.5 rounds away from zero
    (0, 7, 1, -13),       # -12.5 too
    (1, 2, 0, 33),        # 33.3
    (2, 1, 0, 67),        # 66.7
    (1, 1, 2, -25),
    (50, 30, 20, 30),     # the worked example in docs/nps.md
])
def test_nps_score(promoters: int, passives: int, detractors: int, score: int | None) -> None:
    assert nps.nps_score(promoters, passives, detractors) == score


@pytest.mark.parametrize(("start", "end", "months"), [
    (dt.date(2026, 3, 15), dt.date(2026, 3, 20), [dt.date(2026, 3, 1)]),
    (dt.date(2025, 11, 30), dt.date(2026, 2, 1),
     [dt.date(2025, 11, 1), dt.date(2025, 12, 1), dt.date(2026, 1, 1), dt.date(2026, 2, 1)]),
    (dt.date(2026, 1, 31), dt.date(2026, 3, 1), [dt.date(2026, 1, 1), dt.date(2026, 2, 1), dt.date(2026, 3, 1)]),
    (dt.date(2026, 3, 2), dt.date(2026, 3, 1), []),
])
def test_months_between(start: dt.date, end: dt.date, months: list[dt.date]) -> None:
    assert nps.months_between(start, end) == months


def test_nps_months_fills_the_range_and_the_overall_adds_counts_not_scores() -> None:
    counts = {dt.date(2026, 1, 1): (3, 1, 1), dt.date(2026, 3, 1): (0, 0, 2)}
    months = nps.nps_months(counts, dt.date(2026, 1, 5), dt.date(2026, 3, 31))
    assert [(m.month, m.responses, m.promoters, m.passives, m.detractors, m.nps) for m in months] == [
        (dt.date(2026, 1, 1), 5, 3, 1, 1, 40),
        (dt.date(2026, 2, 1), 0, 0, 0, 0, None),
        (dt.date(2026, 3, 1), 2, 0, 0, 2, -100),
    ]
    # 3 promoters and 3 detractors of 7: 0, not the average of 40 and -100.
    assert nps.nps_overall_of(months) == nps.NpsFigures(7, 3, 1, 3, 0)


def test_the_email_text_has_a_link_per_score_and_the_unsubscribe_link() -> None:
    links = [f"https://shop.test/c/tok?nps={score}#nps" for score in range(11)]
    subject, body = nps.nps_email_text(program_name="Corner Coffee", customer_name="Amina", score_links=links,
                                       unsubscribe_url="https://shop.test/u/1.abc")
    assert subject == "How likely are you to recommend Corner Coffee?"
    assert body.startswith("Hello Amina,\n")
    assert "0 - not at all likely: https://shop.test/c/tok?nps=0#nps" in body
    assert "5: https://shop.test/c/tok?nps=5#nps" in body
    assert "10 - extremely likely: https://shop.test/c/tok?nps=10#nps" in body
    assert "To stop these emails: https://shop.test/u/1.abc" in body
    with pytest.raises(ValueError, match="a link for each score"):
        nps.nps_email_text(program_name="X", customer_name="Y", score_links=links[:10], unsubscribe_url=None)


# --- The card page ------------------------------------------------------------------------------------------------


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[dt.datetime], None]:
    """clock(moment) pins the clock of the till, the card page and `flask nps`; it starts at NOW."""
    now = [NOW]
    for module in (till_views, customer_views, cli_nps):
        monkeypatch.setattr(module, "utcnow", lambda: now[0])

    def set_to(moment: dt.datetime) -> None:
        now[0] = moment

    return set_to


class Shop:
    def __init__(self, client: FlaskClient, session: Session, kit: ProgramKit,
                 enroll: Callable[..., dict[str, Any]]) -> None:
        self.client, self.session, self.kit, self._enroll = client, session, kit, enroll

    @property
    def program(self) -> Program:
        return self.kit.program

    def member(self, **fields: Any) -> dict[str, Any]:
        return self._enroll(self.kit, **fields)

    def buy(self, member: dict[str, Any], amount: str = "12.00") -> dict[str, Any]:
        response = self.client.post("/api/v1/purchases", json={"code": member["code"], "amount": amount},
                                    headers=self.kit.purchase_headers(str(uuid.uuid4())))
        assert response.status_code == 201, response.json
        return response.json  # type: ignore[no-any-return]

    def card(self, member: dict[str, Any]) -> Card:
        card = self.session.scalar(select(Card).where(Card.serial == member["serial"])
                                   .execution_options(populate_existing=True))
        assert card is not None
        return card

    def page_path(self, member: dict[str, Any]) -> str:
        return urlsplit(member["card_url"]).path

    def page(self, member: dict[str, Any], query: str = "") -> Any:
        response = self.client.get(self.page_path(member) + query)
        assert response.status_code == 200
        return response

    def answer(self, member: dict[str, Any], **form: str) -> Any:
        token = _csrf(self.client)
        return self.client.post(self.page_path(member) + "/nps", data={"csrf_token": token, **form})

    def responses(self, member: dict[str, Any]) -> list[tuple[int, str | None, str, int | None]]:
        card = self.card(member)
        return [tuple(row) for row in self.session.execute(  # type: ignore[misc]
            select(NpsResponse.score, NpsResponse.comment, NpsResponse.channel, NpsResponse.purchase_id)
            .where(NpsResponse.card_id == card.id).order_by(NpsResponse.id))]

    def ask(self, member: dict[str, Any]) -> NpsAsk | None:
        return self.session.scalar(select(NpsAsk).where(NpsAsk.card_id == self.card(member).id)
                                   .execution_options(populate_existing=True))


def _csrf(client: FlaskClient) -> str:
    """The session's CSRF token, as the card page's form carries it."""
    with client.session_transaction() as session:
        session.setdefault("csrf", "nps-test-csrf-token")
        return str(session["csrf"])


@pytest.fixture()
def shop(client: FlaskClient, db_session: Session, make_program: Callable[..., ProgramKit],
         enroll: Callable[..., dict[str, Any]], clock: Callable[[dt.datetime], None]) -> Callable[..., Shop]:
    def make(rules: dict[str, Any] | None = None, name: str | None = None) -> Shop:
        kit = make_program(name=name) if name else make_program()
        if rules is not None:
            kit.program.rules = {**kit.program.rules, **rules}
            db_session.commit()
        return Shop(client, db_session, kit, enroll)
    return make


def _asks(html: str) -> bool:
    return 'data-testid="nps"' in html


def _checked_score(html: str) -> str | None:
    match = re.search(r'<input type="radio" name="score" value="(\d+)" checked>', html)
    return match.group(1) if match else None


def test_the_card_page_asks_only_after_a_purchase(shop, clock) -> None:
    s = shop(name="Corner Coffee")
    amina = s.member()
    assert not _asks(s.page(amina).text)
    purchase = s.buy(amina)
    clock(NOW + dt.timedelta(hours=2))
    html = s.page(amina).text
    assert _asks(html)
    assert "How likely are you to recommend Corner Coffee?" in html
    assert "Not at all likely" in html and "Extremely likely" in html
    assert html.count('type="radio" name="score"') == 11
    assert _checked_score(html) is None
    assert 'name="channel" value="card_page"' in html
    # Opening the page again and again asks the same open question; nothing is written by looking.
    assert _asks(s.page(amina).text)
    assert s.ask(amina) is None and s.responses(amina) == []

    answered = s.answer(amina, score="9", comment="Quick service", channel="card_page", action="send")
    assert answered.status_code == 303
    assert "nps_done=answered" in answered.headers["Location"]
    assert s.responses(amina) == [(9, "Quick service", "card_page", purchase["id"])]
    after = s.client.get(answered.headers["Location"]).text
    assert "Thank you for your answer" in after
    assert not _asks(after)
    ask = s.ask(amina)
    assert ask is not None and ask.closed_at == NOW + dt.timedelta(hours=2) and ask.dismissed is False


def test_answering_twice_within_the_interval_records_once(shop, clock) -> None:
    s = shop()
    amina = s.member()
    s.buy(amina)
    s.page(amina)
    assert s.answer(amina, score="8", action="send").status_code == 303
    clock(NOW + 89 * DAY)
    s.buy(amina)  # a purchase since, but within 90 days of the answer
    again = s.answer(amina, score="3", action="send")
    assert again.status_code == 409
    assert "already answered this question recently" in again.text
    assert [score for score, *_ in s.responses(amina)] == [8]
    assert not _asks(s.page(amina).text)


def test_the_question_comes_back_after_the_interval_and_a_new_purchase(shop, clock) -> None:
    s = shop(rules={"nps": {"interval_days": 30}})
    amina = s.member()
    s.buy(amina)
    assert s.answer(amina, score="6", action="send").status_code == 303
    clock(NOW + 30 * DAY)
    assert not _asks(s.page(amina).text)  # 30 days on, but no purchase since the answer
    s.buy(amina)
    clock(NOW + 30 * DAY + dt.timedelta(minutes=5))
    assert _asks(s.page(amina).text)
    assert s.answer(amina, score="10", action="send").status_code == 303
    assert [score for score, *_ in s.responses(amina)] == [6, 10]


def test_not_now_closes_the_question_without_an_answer(shop, clock) -> None:
    s = shop(rules={"nps": {"interval_days": 7}})
    amina = s.member()
    s.buy(amina)
    dismissed = s.answer(amina, action="dismiss", score="", comment="")
    assert dismissed.status_code == 303
    after = s.client.get(dismissed.headers["Location"]).text
    assert "we will not ask again for a while" in after and not _asks(after)
    ask = s.ask(amina)
    assert ask is not None and ask.dismissed is True and ask.closed_at == NOW
    assert s.responses(amina) == []
    # Within the interval, a new purchase does not bring it back; after it, one does.
    clock(NOW + 6 * DAY)
    s.buy(amina)
    assert not _asks(s.page(amina).text)
    clock(NOW + 7 * DAY)
    assert _asks(s.page(amina).text)
    # A second "Not now" the moment after (a double tap) changes nothing more.
    assert s.answer(amina, action="dismiss").status_code == 303
    closed_at = s.ask(amina).closed_at  # type: ignore[union-attr]
    redirect = s.answer(amina, action="dismiss")
    assert redirect.status_code == 303 and "nps_done" not in redirect.headers["Location"]
    assert s.ask(amina).closed_at == closed_at  # type: ignore[union-attr]


@pytest.mark.parametrize(("form", "message"), [
    ({}, "Choose a score from 0 (not at all likely) to 10 (extremely likely)"),
    ({"score": "11"}, "The score is a whole number from 0"),
    ({"score": "ten"}, "The score is a whole number from 0"),
    ({"score": "-3"}, "The score is a whole number from 0"),
    ({"score": "4", "comment": "é" * 1001}, "Your comment is 1,001 characters long; please keep it to 1,000."),
    ({"score": "4", "channel": "carrier-pigeon"}, "not sent from your card page"),
])
def test_a_bad_answer_comes_back_with_the_reason_and_writes_nothing(shop, form: dict[str, str],
                                                                     message: str) -> None:
    s = shop()
    amina = s.member()
    s.buy(amina)
    response = s.answer(amina, action="send", **form)
    assert response.status_code == 422
    assert message in response.text.replace("&#39;", "'")
    assert 'role="alert"' in response.text
    assert _asks(response.text)  # the form is there to fix
    if "comment" in form:
        assert form["comment"] in response.text  # what was typed is kept
        assert _checked_score(response.text) == form["score"]
    assert s.responses(amina) == []
    assert s.ask(amina) is None
    # The question is still open: a good answer now is recorded.
    assert s.answer(amina, score="7", action="send").status_code == 303
    assert [score for score, *_ in s.responses(amina)] == [7]


def test_an_answer_without_a_purchase_or_the_csrf_token_is_refused(shop) -> None:
    s = shop()
    amina = s.member()
    refused = s.answer(amina, score="9", action="send")
    assert refused.status_code == 409
    assert "We ask after a purchase" in refused.text
    s.buy(amina)
    forged = s.client.post(s.page_path(amina) + "/nps", data={"score": "9", "action": "send"})
    assert forged.status_code == 400
    assert s.responses(amina) == [] and s.ask(amina) is None
    assert s.client.post("/c/not-a-card-token/nps", data={"csrf_token": _csrf(s.client), "score": "9"}
                         ).status_code == 404


def test_a_revoked_card_is_not_asked_and_cannot_answer(shop) -> None:
    s = shop()
    amina = s.member()
    s.buy(amina)
    s.session.execute(update(Card).where(Card.serial == amina["serial"]).values(status="revoked"))
    s.session.commit()
    assert not _asks(s.page(amina).text)
    refused = s.answer(amina, score="9", action="send")
    assert refused.status_code == 410
    assert s.responses(amina) == []


def test_an_email_link_preselects_the_score_and_records_nothing_until_send(shop, clock) -> None:
    s = shop()
    amina = s.member()
    s.buy(amina)
    html = s.page(amina, "?nps=7").text
    assert _asks(html)
    assert _checked_score(html) == "7"
    assert 'name="channel" value="email"' in html
    # Link scanners and previews fetch it too: nothing is recorded by a GET.
    s.page(amina, "?nps=7")
    assert s.responses(amina) == [] and s.ask(amina) is None
    # A score that is not 0-10 ticks nothing.
    assert _checked_score(s.page(amina, "?nps=12").text) is None
    assert s.answer(amina, score="7", channel="email", action="send").status_code == 303
    assert [(score, channel) for score, _, channel, _ in s.responses(amina)] == [(7, "email")]
    # Following the link again says it is done.
    again = s.page(amina, "?nps=3").text
    assert not _asks(again) and "you already answered this question recently" in again


def test_the_card_page_form_has_no_inline_script_or_style(shop) -> None:
    s = shop()
    amina = s.member()
    s.buy(amina)
    html = s.page(amina).text
    section = html[html.index('data-testid="nps"'):html.index("</section>", html.index('data-testid="nps"'))]
    assert "<script" not in section and "style=" not in section and " on" + "click" not in section


# --- The email --------------------------------------------------------------------------------------------------


@pytest.fixture()
def send(runner: FlaskCliRunner) -> Callable[..., Any]:
    def run(*args: str) -> Any:
        return runner.invoke(args=["nps", "send", *args])
    return run


def _links(body: str) -> dict[int, str]:
    return {int(score): link for score, link in re.findall(r"^(\d+)(?: - [a-z ]+)?: (\S+)$", body, re.M)}


def test_the_email_goes_to_members_with_consent_and_its_links_open_the_form(
    shop, send, smtp_inbox, clock, client: FlaskClient
) -> None:
    s = shop(name="Corner Coffee")
    amina = s.member(name="Amina Karimi", email="amina@example.com", marketing_consent=True)
    bob = s.member(name="Bob Stone", email="bob@example.com", marketing_consent=False)
    never = s.member(name="Nia Bought-Nothing", email="nia@example.com", marketing_consent=True)
    s.buy(amina)
    s.buy(bob)
    clock(NOW + DAY)

    result = send("--program", s.program.slug)
    assert result.exit_code == 0, result.output
    assert "Sent 1 NPS email." in result.output
    assert f"[{s.program.slug} 1/1] sent to card {amina['serial']}" in result.output
    assert [message["To"] for message in smtp_inbox.messages] == ["amina@example.com"]
    message = smtp_inbox.messages[0]
    assert message["Subject"] == "How likely are you to recommend Corner Coffee?"
    body = message.get_content().replace("\r\n", "\n")
    assert body.startswith("Hello Amina,")
    links = _links(body)
    assert sorted(links) == list(range(11))
    page_path = s.page_path(amina)
    assert all(urlsplit(link).path == page_path for link in links.values())
    unsubscribe = re.search(r"To stop these emails: (\S+)", body)
    assert unsubscribe is not None
    assert message["List-Unsubscribe"] == f"<{unsubscribe.group(1)}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert client.get(urlsplit(unsubscribe.group(1)).path).status_code == 200

    # The claim is on record: sent, with the purchase that prompted it.
    emails = s.session.execute(select(NpsEmail.card_id, NpsEmail.status, NpsEmail.sent_at)).all()
    assert emails == [(s.card(amina).id, "sent", NOW + DAY)]
    assert s.ask(bob) is None and s.ask(never) is None

    # The link for 9 opens the form with 9 ticked, from the email; Send records it as an email answer.
    link = urlsplit(links[9])
    html = s.client.get(f"{link.path}?{link.query}").text
    assert _checked_score(html) == "9" and 'name="channel" value="email"' in html
    assert s.responses(amina) == []
    assert s.answer(amina, score="9", channel="email", action="send").status_code == 303
    assert [(score, channel) for score, _, channel, _ in s.responses(amina)] == [(9, "email")]


def test_the_email_is_sent_at_most_once_per_interval(shop, send, smtp_inbox, clock) -> None:
    s = shop(rules={"nps": {"interval_days": 30}})
    amina = s.member(email="amina@example.com", marketing_consent=True)
    s.buy(amina)
    assert send("--program", s.program.slug).exit_code == 0
    assert len(smtp_inbox.messages) == 1
    # The next day, and after another purchase within 30 days: not again.
    clock(NOW + DAY)
    assert "Sent 0 NPS emails." in send("--program", s.program.slug).output
    clock(NOW + 10 * DAY)
    s.buy(amina)
    assert send("--program", s.program.slug).exit_code == 0
    assert len(smtp_inbox.messages) == 1
    # 30 days after the email, with a purchase since it and no answer: asked again.
    clock(NOW + 30 * DAY)
    assert "Sent 1 NPS email." in send("--program", s.program.slug).output
    assert len(smtp_inbox.messages) == 2
    # Answered on the card page: no email until the interval has passed since the answer and they bought again.
    assert s.answer(amina, score="10", action="send").status_code == 303
    clock(NOW + 61 * DAY)
    assert "Sent 0 NPS emails." in send("--program", s.program.slug).output
    s.buy(amina)
    clock(NOW + 62 * DAY)
    assert "Sent 1 NPS email." in send("--program", s.program.slug).output
    assert len(smtp_inbox.messages) == 3


def test_a_dry_run_lists_who_would_be_asked_and_sends_nothing(shop, send, smtp_inbox) -> None:
    s = shop()
    amina = s.member(name="Amina Karimi", email="amina@example.com", marketing_consent=True)
    bob = s.member(name="Bob Stone", email="bob@example.com", marketing_consent=False)
    s.buy(amina)
    s.buy(bob)
    result = send("--program", s.program.slug, "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"{amina['serial']}  Amina K." in result.output and "a…@example.com" in result.output
    assert bob["serial"] not in result.output
    assert "Dry run: 1 member would be asked; nothing was sent." in result.output
    assert smtp_inbox.messages == []
    assert s.session.scalar(select(func.count()).select_from(NpsEmail)
                            .where(NpsEmail.program_id == s.program.id)) == 0
    assert s.ask(amina) is None


def test_a_crash_after_the_claim_never_sends_that_email_twice(shop, send, smtp_inbox,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    s = shop()
    amina = s.member(email="amina@example.com", marketing_consent=True)
    s.buy(amina)

    def power_cut(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the process died while talking to the SMTP server")

    with monkeypatch.context() as patched:
        patched.setattr(cli_nps, "send_mail", power_cut)
        crashed = send("--program", s.program.slug)
    assert isinstance(crashed.exception, RuntimeError)
    # The claim was committed before sending; the next run does not know whether it went out, so it stays sent.
    assert s.session.scalar(select(NpsEmail.status).where(NpsEmail.card_id == s.card(amina).id)) == "claimed"
    assert "Sent 0 NPS emails." in send("--program", s.program.slug).output
    assert smtp_inbox.messages == []


def test_an_email_the_server_refuses_gives_its_claim_back(shop, send, smtp_inbox,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    s = shop()
    amina = s.member(email="amina@example.com", marketing_consent=True)
    s.buy(amina)
    with monkeypatch.context() as patched:
        patched.setitem(s.client.application.config, "MAIL_PORT", 1)  # nothing listens there
        refused = send("--program", s.program.slug)
    assert refused.exit_code == 1
    assert f"Sending the NPS email for card {amina['serial']} failed" in refused.output
    assert s.session.scalar(select(NpsEmail.status).where(NpsEmail.card_id == s.card(amina).id)) == "failed"
    # The server refused it, so nothing went out: the next run sends it.
    result = send("--program", s.program.slug)
    assert "Sent 1 NPS email." in result.output, result.output
    assert [message["To"] for message in smtp_inbox.messages] == ["amina@example.com"]


def test_an_unknown_program_is_a_clear_error(send) -> None:
    result = send("--program", "no-such-shop")
    assert result.exit_code == 1
    assert "No program 'no-such-shop'." in result.output


# --- The dashboard's figures -----------------------------------------------------------------------------------


def _respond(session: Session, card: Card, score: int, at: dt.datetime, comment: str | None = None) -> None:
    session.add(NpsResponse(program_id=card.program_id, card_id=card.id, score=score, comment=comment,
                            channel="card_page", created_at=at))
    session.flush()


@pytest.fixture()
def answered(shop) -> Iterator[Shop]:
    """Answers in January (3 promoters, 1 passive, 1 detractor), none in February, March (2 detractors), and
    one on 1 April 00:00 UTC, just outside a range that ends on 31 March."""
    s = shop()
    card = s.card(s.member(name="Amina Karimi", email="amina@example.com"))
    at = dt.datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    for score, comment in ((10, "Great coffee"), (9, None), (9, ""), (7, "Fine"), (2, "Slow at lunch")):
        _respond(s.session, card, score, at, comment or None)
        at += dt.timedelta(days=3)
    _respond(s.session, card, 0, dt.datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC), "Rude")
    _respond(s.session, card, 5, dt.datetime(2026, 3, 1, 0, 0, tzinfo=UTC))
    _respond(s.session, card, 10, dt.datetime(2026, 4, 1, 0, 0, tzinfo=UTC), "April")
    yield s


def test_nps_by_month_counts_each_calendar_month(answered: Shop) -> None:
    months = nps.nps_by_month(answered.session, answered.program, dt.date(2026, 1, 1), dt.date(2026, 3, 31))
    assert [(m.month, m.responses, m.promoters, m.passives, m.detractors, m.nps) for m in months] == [
        (dt.date(2026, 1, 1), 5, 3, 1, 1, 40),
        (dt.date(2026, 2, 1), 0, 0, 0, 0, None),
        (dt.date(2026, 3, 1), 2, 0, 0, 2, -100),
    ]
    overall = nps.nps_overall(answered.session, answered.program, dt.date(2026, 1, 1), dt.date(2026, 3, 31))
    assert overall == nps.NpsFigures(7, 3, 1, 3, 0)
    assert overall == nps.nps_overall_of(months)
    # The answer at 1 April 00:00 UTC is April's.
    april = nps.nps_overall(answered.session, answered.program, dt.date(2026, 4, 1), dt.date(2026, 4, 30))
    assert april == nps.NpsFigures(1, 1, 0, 0, 100)


def test_another_programs_answers_never_count(answered: Shop, shop) -> None:
    other = shop()
    _respond(other.session, other.card(other.member()), 0, dt.datetime(2026, 1, 5, tzinfo=UTC), "Elsewhere")
    start, end = dt.date(2026, 1, 1), dt.date(2026, 3, 31)
    assert nps.nps_overall(answered.session, answered.program, start, end) == nps.NpsFigures(7, 3, 1, 3, 0)
    assert "Elsewhere" not in [c.comment for c in nps.nps_comments(answered.session, answered.program, start, end)]
    assert nps.nps_overall(other.session, other.program, start, end) == nps.NpsFigures(1, 0, 0, 1, -100)


def test_nps_comments_are_newest_first_and_anonymous(answered: Shop) -> None:
    comments = nps.nps_comments(answered.session, answered.program, dt.date(2026, 1, 1), dt.date(2026, 3, 31))
    assert [(c.day, c.score, c.comment) for c in comments] == [
        (dt.date(2026, 3, 31), 0, "Rude"),
        (dt.date(2026, 1, 13), 2, "Slow at lunch"),
        (dt.date(2026, 1, 10), 7, "Fine"),
        (dt.date(2026, 1, 1), 10, "Great coffee"),
    ]
    assert len(nps.nps_comments(answered.session, answered.program, dt.date(2026, 1, 1), dt.date(2026, 3, 31),
                                limit=2)) == 2
    with pytest.raises(ValidationError, match="ends before it starts"):
        nps.nps_comments(answered.session, answered.program, dt.date(2026, 3, 1), dt.date(2026, 2, 1))


def test_the_nps_panel_renders_months_overall_and_comments(answered: Shop, app: Flask) -> None:
    start, end = dt.date(2026, 1, 1), dt.date(2026, 3, 31)
    with app.test_request_context():
        html = render_template(
            "_nps_panel.html",
            nps_months=nps.nps_by_month(answered.session, answered.program, start, end),
            nps_overall=nps.nps_overall(answered.session, answered.program, start, end),
            nps_comments=nps.nps_comments(answered.session, answered.program, start, end),
        )
    assert 'data-nps-overall="0"' in html
    assert re.search(r'<tr data-month="2026-01">\s*<th scope="row">Jan 2026</th>\s*<td>5</td>\s*<td>3</td>\s*'
                     r'<td>1</td>\s*<td>1</td>\s*<td>40</td>', html)
    assert re.search(r'<tr data-month="2026-02">.*?<td>–</td>', html, re.S)
    assert "Slow at lunch" in html and "Amina" not in html and "amina@example.com" not in html
    with app.test_request_context():
        empty = render_template("_nps_panel.html", nps_months=[], nps_overall=nps.nps_figures(0, 0, 0),
                                nps_comments=[])
    assert "No answers in this period" in empty and "No comments in this period" in empty


def test_the_response_row_refuses_a_score_outside_0_to_10(shop) -> None:
    s = shop()
    card = s.card(s.member())
    with pytest.raises(IntegrityError), s.session.begin_nested():
        _respond(s.session, card, 11, NOW)
    assert s.session.scalar(select(func.count()).select_from(NpsResponse).where(NpsResponse.card_id == card.id)) == 0
