"""Staff sign-in: passwords, roles, sessions, rate limits, and who may open which page."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.domain.programs import create_staff, set_staff_active
from app.models import Staff

PASSWORD = "correct horse battery"


def _csrf(client: FlaskClient, path: str = "/login") -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert match
    return match.group(1)


def _sign_in(client: FlaskClient, email: str, password: str = PASSWORD, **extra: str):  # type: ignore[no-untyped-def]
    return client.post("/login", data={"csrf_token": _csrf(client), "email": email, "password": password, **extra})


@pytest.fixture()
def staff_of(db_session: Session):  # type: ignore[no-untyped-def]
    """staff_of(kit, role) -> the email of a new member of staff of that program (password PASSWORD)."""
    def make(kit, role: str) -> str:  # type: ignore[no-untyped-def]
        email = f"{role}-{kit.program.slug}@example.com"
        create_staff(db_session, kit.program, email=email, role=role, password=PASSWORD)
        db_session.commit()
        return email
    return make


@pytest.mark.parametrize(("role", "home"), [("cashier", "/cashier"), ("manager", "/manager")])
def test_sign_in_lands_on_the_role_s_home(client: FlaskClient, make_program, staff_of, role: str, home: str) -> None:
    email = staff_of(make_program(), role)
    response = _sign_in(client, email.upper())  # email is case-insensitive
    assert response.status_code == 303
    assert response.headers["Location"] == home
    assert client.get(home).status_code == 200
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


def test_session_cookie_is_secure_over_https(client: FlaskClient, make_program, staff_of) -> None:
    email = staff_of(make_program(), "cashier")
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login", base_url="https://loyalty.test").text)
    assert token
    response = client.post("/login", base_url="https://loyalty.test",
                           data={"csrf_token": token.group(1), "email": email, "password": PASSWORD})
    assert response.status_code == 303
    assert "Secure" in response.headers["Set-Cookie"]
    assert "Strict-Transport-Security" in response.headers


def test_wrong_password_is_refused_and_says_so(client: FlaskClient, make_program, staff_of) -> None:
    email = staff_of(make_program(), "cashier")
    response = _sign_in(client, email, "not the password")
    assert response.status_code == 401
    assert "Wrong email or password." in response.text
    assert f'value="{email}"' in response.text  # the email is kept, the password is not
    assert client.get("/cashier").status_code == 302


def test_unknown_email_gets_the_same_answer(client: FlaskClient) -> None:
    response = _sign_in(client, "nobody@example.com")
    assert response.status_code == 401
    assert "Wrong email or password." in response.text


def test_sign_in_is_rate_limited_with_a_time_to_wait(client: FlaskClient, make_program, staff_of) -> None:
    email = staff_of(make_program(), "manager")
    for _ in range(5):
        assert _sign_in(client, email, "guess").status_code == 401
    limited = _sign_in(client, email, PASSWORD)  # even the right password waits now
    assert limited.status_code == 429
    assert re.search(r"Too many failed sign-ins for this account\. Try again in \d+ minutes?\.", limited.text)
    assert 0 < int(limited.headers["Retry-After"]) <= 900


def test_a_successful_sign_in_clears_the_failures(client: FlaskClient, make_program, staff_of) -> None:
    email = staff_of(make_program(), "manager")
    for _ in range(4):
        _sign_in(client, email, "guess")
    assert _sign_in(client, email).status_code == 303
    client.post("/logout", data={"csrf_token": _csrf(client, "/manager")})
    for _ in range(4):
        assert _sign_in(client, email, "guess").status_code == 401


def test_sign_in_without_csrf_token_is_refused(client: FlaskClient, make_program, staff_of) -> None:
    email = staff_of(make_program(), "cashier")
    response = client.post("/login", data={"email": email, "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/cashier").status_code == 302


def test_sign_out_ends_the_session(client: FlaskClient, make_program, staff_of) -> None:
    email = staff_of(make_program(), "cashier")
    _sign_in(client, email)
    assert client.get("/cashier").status_code == 200
    assert client.post("/logout", data={"csrf_token": _csrf(client, "/cashier")}).status_code == 303
    assert client.get("/cashier").status_code == 302


def test_disabling_an_account_ends_its_sessions(client: FlaskClient, make_program, staff_of,
                                                db_session: Session) -> None:
    email = staff_of(make_program(), "cashier")
    _sign_in(client, email)
    db_session.execute(update(Staff).where(Staff.email == email).values(active=False))
    db_session.commit()
    assert client.get("/cashier").status_code == 302
    refused = _sign_in(client, email)
    assert refused.status_code == 401
    assert "disabled" in refused.text


def test_next_only_follows_paths_on_this_site(client: FlaskClient, make_program, staff_of) -> None:
    email = staff_of(make_program(), "manager")
    assert client.get("/manager").headers["Location"] == "/login?next=/manager"
    response = _sign_in(client, email, next="https://evil.example/phish")
    assert response.headers["Location"] == "/manager"
    client.post("/logout", data={"csrf_token": _csrf(client, "/manager")})
    response = _sign_in(client, email, next="//evil.example/phish")
    assert response.headers["Location"] == "/manager"
    client.post("/logout", data={"csrf_token": _csrf(client, "/manager")})
    assert _sign_in(client, email, next="/cashier").headers["Location"] == "/cashier"


def test_a_cashier_cannot_open_manager_pages(client: FlaskClient, make_program, staff_of) -> None:
    _sign_in(client, staff_of(make_program(), "cashier"))
    response = client.get("/manager")
    assert response.status_code == 403
    assert "for managers" in response.text


def test_re_enabling_an_account_does_not_revive_old_sessions(client: FlaskClient, make_program, staff_of,
                                                             db_session: Session) -> None:
    kit = make_program()
    manager = db_session.scalar(select(Staff).where(Staff.email == staff_of(kit, "manager")))
    cashier_email = staff_of(kit, "cashier")
    _sign_in(client, cashier_email)
    cashier = db_session.scalar(select(Staff).where(Staff.email == cashier_email))
    set_staff_active(db_session, kit.program, cashier.id, active=False, by=manager)
    set_staff_active(db_session, kit.program, cashier.id, active=True, by=manager)
    db_session.commit()
    assert client.get("/cashier").status_code == 302  # the old cookie is dead
    assert _sign_in(client, cashier_email).status_code == 303  # signing in again works


def test_unknown_till_routes_answer_json(client: FlaskClient) -> None:
    response = client.get("/cashier/api/nope")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
