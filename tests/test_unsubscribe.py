"""The unsubscribe link: /u/<token> works with no sign-in, asks on GET and changes nothing, withdraws the
marketing consent on POST (the page's button, or a mail app's RFC 8058 one-click POST without the page's CSRF
token) and records it; a forged or cut-short link is a 404 that writes nothing."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.domain.consent import give_consent, unsubscribe, unsubscribe_key, unsubscribe_token
from app.domain.errors import ValidationError
from app.models import Card, ConsentChange, Customer
from app.unsubscribe_links import current_unsubscribe_key, unsubscribe_headers, unsubscribe_url
from tests.conftest import ProgramKit

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def _member(make_program: Callable[..., ProgramKit], enroll: Callable[..., dict[str, Any]], db_session: Session,
            *, consent: bool = True) -> tuple[ProgramKit, Customer]:
    kit = make_program()
    enrolled = enroll(kit, name="Amina Karimi", email="amina.karimi@example.com", marketing_consent=consent)
    card = db_session.scalar(select(Card).where(Card.serial == enrolled["serial"]))
    assert card is not None
    return kit, card.customer


def _path(app: Flask, customer_id: int) -> str:
    with app.app_context():
        url = unsubscribe_url(customer_id)
    assert url.startswith("http://loyalty.test/u/"), url
    return url.removeprefix("http://loyalty.test")


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def _reload(db_session: Session, customer: Customer) -> Customer:
    fresh = db_session.scalar(select(Customer).where(Customer.id == customer.id)
                              .execution_options(populate_existing=True))
    assert fresh is not None
    return fresh


def _changes(db_session: Session, customer: Customer) -> list[ConsentChange]:
    return list(db_session.scalars(select(ConsentChange).where(ConsentChange.customer_id == customer.id)
                                   .order_by(ConsentChange.id)))


def test_get_asks_and_changes_nothing(app: Flask, client: FlaskClient, make_program, enroll,
                                     db_session: Session) -> None:
    kit, customer = _member(make_program, enroll, db_session)
    recorded_at = customer.consent_recorded_at
    path = _path(app, customer.id)
    for _ in range(2):  # a mail scanner fetching the link, then the member opening it
        page = client.get(path)
        assert page.status_code == 200
        assert f"Stop emails from {kit.program.name}?" in page.text
        assert "a…@example.com" in page.text
        assert 'method="post"' in page.text
        assert page.headers["Cache-Control"] == "no-store"
    fresh = _reload(db_session, customer)
    assert fresh.marketing_consent is True
    assert fresh.consent_recorded_at == recorded_at
    assert _changes(db_session, customer) == []


def test_the_button_withdraws_consent_and_records_it(app: Flask, client: FlaskClient, make_program, enroll,
                                                     db_session: Session) -> None:
    kit, customer = _member(make_program, enroll, db_session)
    path = _path(app, customer.id)
    before = dt.datetime.now(dt.UTC)
    done = client.post(path, data={"csrf_token": _csrf(client.get(path).text)})
    assert done.status_code == 200
    assert "You will not get offers or reminders any more" in done.text
    assert "Service messages about your balance" in done.text and "not advertisements" in done.text
    fresh = _reload(db_session, customer)
    assert fresh.marketing_consent is False
    assert fresh.consent_recorded_at >= before
    [change] = _changes(db_session, customer)
    assert (change.consent, change.via, change.program_id) == (False, "unsubscribe_link", kit.program.id)
    assert change.at == fresh.consent_recorded_at
    # Opening the link again says so, and offers no button.
    again = client.get(path)
    assert "You are not on the list" in again.text and 'method="post"' not in again.text


def test_unsubscribing_twice_records_once(app: Flask, client: FlaskClient, make_program, enroll,
                                          db_session: Session) -> None:
    _, customer = _member(make_program, enroll, db_session)
    path = _path(app, customer.id)
    token = _csrf(client.get(path).text)
    first = client.post(path, data={"csrf_token": token})
    second = client.post(path, data={"csrf_token": token})
    third = client.post(path, data=ONE_CLICK)
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 200)
    assert "already unsubscribed" not in first.text
    assert "You had already unsubscribed" in second.text and "You had already unsubscribed" in third.text
    assert len(_changes(db_session, customer)) == 1


def test_one_click_post_works_without_the_page_or_a_session(app: Flask, make_program, enroll,
                                                             db_session: Session) -> None:
    _, customer = _member(make_program, enroll, db_session)
    with app.app_context():
        headers = unsubscribe_headers(customer.id)
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = headers["List-Unsubscribe"].strip("<>")
    mail_app = app.test_client()  # a mail provider's server: no cookie, no CSRF token
    done = mail_app.post(url.removeprefix("http://loyalty.test"), data=ONE_CLICK)
    assert done.status_code == 200
    assert _reload(db_session, customer).marketing_consent is False
    [change] = _changes(db_session, customer)
    assert (change.consent, change.via) == (False, "one_click")


@pytest.mark.parametrize("body", [{}, {"List-Unsubscribe": "one-click"}, {"List-Unsubscribe": "Yes"}])
def test_a_post_that_is_not_one_click_needs_the_page_token(app: Flask, make_program, enroll, db_session: Session,
                                                           body: dict[str, str]) -> None:
    _, customer = _member(make_program, enroll, db_session)
    refused = app.test_client().post(_path(app, customer.id), data=body)
    assert refused.status_code == 400
    assert "The form expired" in refused.text
    assert _reload(db_session, customer).marketing_consent is True
    assert _changes(db_session, customer) == []


def test_the_one_click_exemption_is_for_the_unsubscribe_link_only(client: FlaskClient, make_program) -> None:
    kit = make_program()
    refused = client.post(f"/join/{kit.program.slug}", data={**ONE_CLICK, "name": "Eve"})
    assert refused.status_code == 400


def _forged_tokens(customer_id: int, key: bytes) -> list[str]:
    good = unsubscribe_token(customer_id, key)
    mac = good.split(".")[1]
    other_mac = unsubscribe_token(customer_id + 1, key).split(".")[1]
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    return [
        f"{customer_id}.{flipped}",                                   # one character changed
        f"{customer_id}.{other_mac}",                                 # another customer's MAC
        f"{customer_id + 1}.{mac}",                                   # this MAC on another customer
        good[:-3],                                                    # cut short by a mail client
        str(customer_id),                                             # no MAC at all
        unsubscribe_token(customer_id, unsubscribe_key("another secret")),  # made with another key
        unsubscribe_token(987_654_321_012, key),                      # a valid MAC for no customer
        "0.AAAAAAAAAAAAAAAAAAAAAA",
        "9" * 30 + ".AAAAAAAAAAAAAAAAAAAAAA",                         # an id no column holds
        "not-a-token",
    ]


def test_forged_or_broken_links_are_404_and_write_nothing(app: Flask, client: FlaskClient, make_program, enroll,
                                                          db_session: Session) -> None:
    _, customer = _member(make_program, enroll, db_session)
    with app.app_context():
        key = current_unsubscribe_key()
    consents_before = db_session.scalar(select(func.count()).select_from(ConsentChange))
    for token in _forged_tokens(customer.id, key):
        for response in (client.get(f"/u/{token}"), app.test_client().post(f"/u/{token}", data=ONE_CLICK)):
            assert response.status_code == 404, token
            assert "This unsubscribe link is not one we made" in response.text, token
    assert _reload(db_session, customer).marketing_consent is True
    assert db_session.scalar(select(func.count()).select_from(ConsentChange)) == consents_before


def test_a_member_who_never_agreed_is_told_so_and_nothing_is_recorded(app: Flask, client: FlaskClient,
                                                                      make_program, enroll,
                                                                      db_session: Session) -> None:
    kit, customer = _member(make_program, enroll, db_session, consent=False)
    path = _path(app, customer.id)
    page = client.get(path)
    assert page.status_code == 200
    assert f"You will not get offers or reminders from {kit.program.name}" in page.text
    assert 'method="post"' not in page.text
    assert app.test_client().post(path, data=ONE_CLICK).status_code == 200
    assert _changes(db_session, customer) == []


def test_tokens_differ_per_customer_and_per_key() -> None:
    key = unsubscribe_key("test-secret-key")
    assert unsubscribe_key(b"test-secret-key") == key
    tokens = {unsubscribe_token(customer_id, key) for customer_id in range(1, 200)}
    assert len(tokens) == 199
    assert unsubscribe_token(7, key) == unsubscribe_token(7, key)
    assert unsubscribe_token(7, key) != unsubscribe_token(7, unsubscribe_key("test-secret-key2"))
    # The MAC part carries 128 bits: 22 base64url characters.
    assert re.fullmatch(r"7\.[A-Za-z0-9_-]{22}", unsubscribe_token(7, key))


def test_consent_changes_are_recorded_once_each_way(make_program, enroll, db_session: Session) -> None:
    _, customer = _member(make_program, enroll, db_session, consent=False)
    at = dt.datetime(2030, 5, 1, 12, 0, tzinfo=dt.UTC)
    assert give_consent(db_session, customer, via="enrollment", now=at) is True
    assert give_consent(db_session, customer, via="enrollment", now=at + dt.timedelta(hours=1)) is False
    assert customer.marketing_consent is True and customer.consent_recorded_at == at
    later = at + dt.timedelta(days=3)
    assert unsubscribe(db_session, customer, via="one_click", now=later) is True
    assert unsubscribe(db_session, customer, via="unsubscribe_link", now=later + dt.timedelta(days=1)) is False
    assert customer.marketing_consent is False and customer.consent_recorded_at == later
    assert [(c.consent, c.via, c.at) for c in _changes(db_session, customer)] == [
        (True, "enrollment", at), (False, "one_click", later)]
    with pytest.raises(ValidationError, match="not 'carrier pigeon'"):
        unsubscribe(db_session, customer, via="carrier pigeon", now=later)
