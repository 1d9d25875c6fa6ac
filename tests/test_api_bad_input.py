"""Bad input on every API call: an RFC 9457 problem, the right 4xx, a stable `code`, and no row written.

The acceptance line this file covers: every API call answers malformed JSON, wrong types, missing fields, zero,
negative or absurd amounts (over 10^9 minor units), more decimals than the currency has, unknown, forged,
wrong-program or revoked codes, and missing or revoked API keys with a problem JSON, the right 4xx, a stable
`code`, and no row written.

Every refusal goes through `Scene.refused`, which checks the status, the media type, the problem members
(`type`, `title`, `status`, `detail`, `code`, and `field` for a validation error) and compares a snapshot of
every table (so every card's points and every purchase's status) taken before and after the request.

Every request goes through `Scene.send`, which runs it in an app context of its own as production does, so the
app's teardown (rolling back what a refused request left) runs after each request and not once per test.
An autouse fixture records every response this module's tests get and fails the test on any 5xx; another gives
each test a signing-key store of its own (see `own_signing_key_store`).
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask, Response, request, request_finished
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from app.domain.card_code import (
    CODE_LENGTH,
    VERSION,
    new_kid,
    new_serial,
    parse_card_code,
    sign_card_code,
    signed_message,
)
from app.domain.cards import reissue_card, revoke_card
from app.domain.programs import revoke_api_key
from app.domain.signing import KeyStore
from app.models import Base, Card, Offer, Reward
from tests.conftest import TEST_RULES, ProgramKit

PROBLEM_MEDIA_TYPE = "application/problem+json"
MAX_BODY_BYTES = 64 * 1024
BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
WELCOME_BONUS = TEST_RULES["welcome_bonus"]  # every new member's balance: 50 points

# Rules with redemption at up to 100% and no tiers, so a test can spend every point a purchase earned.
SPEND_ALL_RULES: dict[str, Any] = {
    "earn": {"points_per_unit": "1", "rounding": "down"},
    "welcome_bonus": 50,
    "redeem": {"point_value": 1, "max_percent": 100},
}
# Rules without redemption: points cannot pay for anything.
NO_REDEEM_RULES: dict[str, Any] = {k: v for k, v in TEST_RULES.items() if k != "redeem"}


# --- the problem answer and the database snapshot ---------------------------------------------------------------


def assert_problem(
    response: TestResponse, status: int, code: str, field: str | tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and code (and field); answer its body."""
    text = response.get_data(as_text=True)
    assert response.status_code == status, f"expected {status} {code}, got {response.status_code}: {text[:500]}"
    assert response.mimetype == PROBLEM_MEDIA_TYPE, f"not problem JSON ({response.content_type}): {text[:300]}"
    body = json.loads(text)
    assert isinstance(body, dict), body
    assert body.get("code") == code, body
    assert body.get("status") == status, body
    problem_type = body.get("type")
    assert isinstance(problem_type, str) and (
        problem_type == "about:blank" or urlparse(problem_type).scheme in ("http", "https")
    ), body
    title = body.get("title")
    assert isinstance(title, str) and title.strip(), body
    detail = body.get("detail")
    assert isinstance(detail, str) and _is_sentence(detail), f"detail is not a human sentence: {detail!r}"
    for leak in ("Traceback", "sqlalchemy", "psycopg", "sqlite3"):
        assert leak not in detail, detail
    if code == "validation_error":
        assert field is not None, "a validation_error test must say which field the problem names"
    if field is not None:
        allowed = (field,) if isinstance(field, str) else field
        assert body.get("field") in allowed, f"field {body.get('field')!r}, expected one of {allowed}: {body}"
    if status == 401:
        assert response.headers.get("WWW-Authenticate", "").startswith("Bearer"), response.headers
    return body


def _is_sentence(text: str) -> bool:
    stripped = text.strip()
    return len(stripped) >= 10 and " " in stripped and stripped.rstrip("\"')").endswith((".", "!", "?"))


@dataclass(frozen=True)
class Snapshot:
    """Every row of every table, with the row counts and card balances pulled out for readable failures."""

    counts: dict[str, int]
    points: dict[str, int]
    rows: dict[str, list[tuple[Any, ...]]]


def snapshot(session: Session) -> Snapshot:
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for table in Base.metadata.sorted_tables:
        result = session.execute(select(table).order_by(*table.primary_key.columns))
        rows[table.name] = [tuple(row) for row in result]
    points = {
        serial: balance for serial, balance in session.execute(select(Card.serial, Card.points).order_by(Card.id))
    }
    return Snapshot({name: len(table_rows) for name, table_rows in rows.items()}, points, rows)


def assert_nothing_written(before: Snapshot, after: Snapshot) -> None:
    assert after.counts == before.counts, "a refused request wrote rows"
    assert after.points == before.points, "a refused request moved points"
    for name, table_rows in before.rows.items():
        assert after.rows[name] == table_rows, f"a refused request changed rows of {name}"


# --- the scene: a program, a member, and a client that checks every answer --------------------------------------


class Absent(Enum):
    """A body member to leave out (as opposed to sending null)."""

    FIELD = "absent"


ABSENT = Absent.FIELD


@dataclass
class AnswerLog:
    """Every (method, path, status) the app answered during one test; 5xx that `Scene.send` already failed on."""

    answered: list[tuple[str, str, int]] = field(default_factory=list)
    reported: int = 0

    def server_errors(self) -> list[tuple[str, str, int]]:
        return [entry for entry in self.answered if entry[2] >= 500]


@dataclass
class Scene:
    app: Flask
    client: FlaskClient
    session: Session
    make_program: Callable[..., ProgramKit]
    enroll: Callable[..., dict[str, Any]]
    kit: ProgramKit
    member: dict[str, Any]
    log: AnswerLog

    @property
    def code(self) -> str:
        return str(self.member["code"])

    @property
    def serial(self) -> str:
        return str(self.member["serial"])

    def other(self, **program_args: Any) -> Scene:
        """Another program (same database, same client) with a member of its own."""
        kit = self.make_program(**program_args)
        return Scene(self.app, self.client, self.session, self.make_program, self.enroll, kit, self.enroll(kit),
                     self.log)

    def send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json_body: Any = ABSENT,
        data: bytes | str | None = None,
        content_type: str | None = None,
    ) -> TestResponse:
        """One request; `headers` default to the kit's API key."""
        kwargs: dict[str, Any] = {"method": method, "headers": dict(self.kit.headers if headers is None else headers)}
        if json_body is not ABSENT:
            kwargs["data"] = json.dumps(json_body)
            kwargs["content_type"] = "application/json"
        if data is not None:
            kwargs["data"] = data
            kwargs["content_type"] = content_type or "application/json"
        response = self.client.open(path, **kwargs)
        response.get_data()
        if response.status_code >= 500:
            self.log.reported += 1
        assert response.status_code < 500, (
            f"{method} {path} answered {response.status_code}: {response.get_data(as_text=True)[:500]}"
        )
        return response

    def refused(
        self,
        method: str,
        path: str,
        *,
        status: int,
        code: str,
        field: str | tuple[str, ...] | None = None,
        headers: Mapping[str, str] | None = None,
        json_body: Any = ABSENT,
        data: bytes | str | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """Send a request that must be refused; check the problem and that no row changed. Answer the problem."""
        before = snapshot(self.session)
        response = self.send(method, path, headers=headers, json_body=json_body, data=data,
                             content_type=content_type)
        problem = assert_problem(response, status, code, field)
        assert_nothing_written(before, snapshot(self.session))
        return problem

    def purchase(self, amount: str = "12.50", *, redeem_points: int = 0, code: str | None = None) -> dict[str, Any]:
        """Commit a purchase through the API (a precondition, not the thing under test)."""
        body = {"code": code or self.code, "amount": amount, "redeem_points": redeem_points}
        response = self.send("POST", "/api/v1/purchases", headers=self.kit.purchase_headers(), json_body=body)
        assert response.status_code == 201, response.get_json()
        result: dict[str, Any] = response.get_json()
        return result

    def reward(self, *, points_cost: int = 10, active: bool = True) -> int:
        """A reward in this program's catalogue; answers its id."""
        reward = Reward(program_id=self.kit.program.id, name="Free coffee", points_cost=points_cost, value=250,
                        active=active)
        self.session.add(reward)
        self.session.commit()
        return reward.id

    def card(self, serial: str | None = None) -> Card:
        card = self.session.scalar(
            select(Card).where(Card.serial == (serial or self.serial)).execution_options(populate_existing=True)
        )
        assert card is not None
        return card


@pytest.fixture(autouse=True)
def answer_log(app: Flask) -> Iterator[AnswerLog]:
    """Records every response to every request of this module's tests, fixtures' included: none may be a 5xx.

    A 5xx that `Scene.send` already failed the test on is not reported a second time here."""
    log = AnswerLog()

    def record(sender: Flask, response: Response, **extra: Any) -> None:
        log.answered.append((request.method, request.path, response.status_code))

    request_finished.connect(record, app)
    try:
        yield log
    finally:
        request_finished.disconnect(record, app)
    assert len(log.server_errors()) <= log.reported, f"server errors: {log.server_errors()}"


@pytest.fixture(autouse=True)
def own_signing_key_store(app: Flask, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A key store per test. Key ids have 16 bits, and the session-wide store keeps the PEM files of programs
    whose rows were rolled back, so after a few hundred programs a new key id meets a leftover file and
    KeyStore.save (O_EXCL) raises FileExistsError while the test is being set up."""
    monkeypatch.setitem(app.extensions, "keys", KeyStore(tmp_path / "signing-keys"))


@pytest.fixture()
def scene(
    app: Flask,
    client: FlaskClient,
    db_session: Session,
    make_program: Callable[..., ProgramKit],
    enroll: Callable[..., dict[str, Any]],
    answer_log: AnswerLog,
) -> Scene:
    kit = make_program()
    return Scene(app, client, db_session, make_program, enroll, kit, enroll(kit), answer_log)


# --- the seven calls, each as a request that is accepted with the right key -------------------------------------


@dataclass
class Call:
    method: str
    path: str
    json_body: Any = ABSENT
    extra_headers: dict[str, str] = field(default_factory=dict)
    ok_status: int = 200

    def headers(self, auth: Mapping[str, str]) -> dict[str, str]:
        return {**self.extra_headers, **auth}


def valid_call(scene: Scene, name: str) -> Call:
    if name == "enrollment":
        return Call("POST", "/api/v1/enrollments",
                    {"name": "Nadia Benali", "email": f"{secrets.token_hex(5)}@example.com"}, ok_status=201)
    if name == "scan":
        return Call("POST", "/api/v1/scans", {"code": scene.code})
    if name == "quote":
        return Call("POST", "/api/v1/purchases/quote", {"code": scene.code, "amount": "12.50"})
    if name == "purchase":
        return Call("POST", "/api/v1/purchases", {"code": scene.code, "amount": "12.50"},
                    {"Idempotency-Key": str(uuid.uuid4())}, ok_status=201)
    if name == "void":
        return Call("POST", f"/api/v1/purchases/{scene.purchase()['id']}/void")
    if name == "card":
        return Call("GET", f"/api/v1/cards/{scene.serial}")
    if name == "stats":
        return Call("GET", "/api/v1/stats/enrollments?period=week")
    raise AssertionError(name)


CALLS = ["enrollment", "scan", "quote", "purchase", "void", "card", "stats"]
BODY_CALLS = ["enrollment", "scan", "quote", "purchase"]
CODE_CALLS = ["scan", "quote", "purchase"]
PRICING_CALLS = ["quote", "purchase"]


def pricing_path_and_headers(scene: Scene, call: str) -> tuple[str, dict[str, str]]:
    if call == "quote":
        return "/api/v1/purchases/quote", dict(scene.kit.headers)
    return "/api/v1/purchases", scene.kit.purchase_headers()


def pricing_body(scene: Scene, **changes: Any) -> dict[str, Any]:
    """A valid quote/purchase body with some members changed, or left out when given ABSENT."""
    body: dict[str, Any] = {"code": scene.code, "amount": "12.50"}
    for name, value in changes.items():
        if value is ABSENT:
            body.pop(name, None)
        else:
            body[name] = value
    return body


def test_the_snapshot_sees_what_a_request_writes(scene: Scene) -> None:
    """The control for every "no row written" check: a purchase that is accepted does change the snapshot."""
    before = snapshot(scene.session)
    scene.purchase("20.00")
    after = snapshot(scene.session)
    assert after.counts["purchases"] == before.counts["purchases"] + 1
    assert after.counts["ledger_entries"] == before.counts["ledger_entries"] + 1
    assert after.points[scene.serial] == before.points[scene.serial] + 20
    with pytest.raises(AssertionError):
        assert_nothing_written(before, after)


@pytest.mark.parametrize("call", CALLS)
def test_the_valid_request_is_accepted(scene: Scene, call: str) -> None:
    """The control for the tables below: with the right key and body each call succeeds."""
    request_ = valid_call(scene, call)
    response = scene.send(request_.method, request_.path, headers=request_.headers(scene.kit.headers),
                          json_body=request_.json_body)
    assert response.status_code == request_.ok_status, response.get_json()
    assert response.mimetype == "application/json"


# --- API keys ----------------------------------------------------------------------------------------------------


def _key_parts(kit: ProgramKit) -> tuple[str, str]:
    prefix, key_id, secret = kit.api_key.split("_", 2)
    assert prefix == "lk"
    return key_id, secret


def _revoked(scene: Scene) -> dict[str, str]:
    revoke_api_key(scene.session, _key_parts(scene.kit)[0])
    scene.session.commit()
    return dict(scene.kit.headers)


BAD_CREDENTIALS: list[Any] = [
    pytest.param(lambda s: {}, id="no Authorization header"),
    pytest.param(lambda s: {"Authorization": ""}, id="empty header"),
    pytest.param(lambda s: {"Authorization": "Bearer"}, id="Bearer without key"),
    pytest.param(lambda s: {"Authorization": "Bearer "}, id="Bearer with empty key"),
    pytest.param(lambda s: {"Authorization": "Basic xyz"}, id="Basic xyz"),
    pytest.param(lambda s: {"Authorization": f"Basic {s.kit.api_key}"}, id="the key under Basic"),
    pytest.param(lambda s: {"Authorization": s.kit.api_key}, id="the key without a scheme"),
    pytest.param(lambda s: {"X-API-Key": s.kit.api_key}, id="the key in another header"),
    pytest.param(lambda s: {"Authorization": "Bearer garbage"}, id="Bearer garbage"),
    pytest.param(lambda s: {"Authorization": "Bearer lk__"}, id="empty id and secret"),
    pytest.param(lambda s: {"Authorization": f"Bearer lk_{_key_parts(s.kit)[0]}_{'A' * 43}"}, id="wrong secret"),
    pytest.param(lambda s: {"Authorization": f"Bearer lk_{_key_parts(s.kit)[0]}_"}, id="missing secret"),
    pytest.param(lambda s: {"Authorization": f"Bearer lk_{secrets.token_hex(6)}_{_key_parts(s.kit)[1]}"},
                 id="unknown key id"),
    pytest.param(lambda s: {"Authorization": "Bearer xx" + s.kit.api_key[2:]}, id="wrong prefix"),
    pytest.param(lambda s: {"Authorization": f"Bearer {s.kit.api_key}x"}, id="key with a byte more"),
    pytest.param(lambda s: {"Authorization": f"Bearer {s.kit.api_key[:-1]}"}, id="key with a byte less"),
    pytest.param(lambda s: {"Authorization": f"Bearer {'A' * 4000}"}, id="absurdly long key"),
    pytest.param(_revoked, id="revoked key"),
]


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS)
@pytest.mark.parametrize("call", CALLS)
def test_missing_garbled_unknown_or_revoked_key_is_unauthorized(
    scene: Scene, call: str, credentials: Callable[[Scene], dict[str, str]]
) -> None:
    request_ = valid_call(scene, call)  # a body that the right key would get accepted
    auth = credentials(scene)
    problem = scene.refused(request_.method, request_.path, status=401, code="unauthorized",
                            headers=request_.headers(auth), json_body=request_.json_body)
    _, secret = _key_parts(scene.kit)
    assert secret not in json.dumps(problem), "the problem echoes the key's secret"


@pytest.mark.parametrize("call", BODY_CALLS)
def test_the_key_is_checked_before_the_body(scene: Scene, call: str) -> None:
    """Without a key, a malformed body answers 401, not 400: nothing about the API is told to strangers."""
    request_ = valid_call(scene, call)
    scene.refused(request_.method, request_.path, headers=request_.extra_headers, data=b"{",
                  status=401, code="unauthorized")


def test_a_revoked_key_of_one_till_leaves_the_others_working(scene: Scene) -> None:
    second = scene.make_program()
    _revoked(scene)
    response = scene.send("POST", "/api/v1/scans", headers=second.headers, json_body={"code": scene.code})
    assert_problem(response, 422, "wrong_program")


def test_another_programs_key_does_not_reach_this_programs_purchase(scene: Scene) -> None:
    purchase = scene.purchase()
    stranger = scene.other()
    scene.refused("POST", f"/api/v1/purchases/{purchase['id']}/void", headers=stranger.kit.headers,
                  status=404, code="not_found")
    # The purchase is still there for its own program.
    response = scene.send("POST", f"/api/v1/purchases/{purchase['id']}/void")
    assert response.status_code == 200, response.get_json()


def test_another_programs_key_does_not_reach_this_programs_card(scene: Scene) -> None:
    stranger = scene.other()
    problem = scene.refused("GET", f"/api/v1/cards/{scene.serial}", headers=stranger.kit.headers,
                            status=404, code="not_found")
    assert "points" not in problem and "ledger" not in problem


# --- malformed JSON ------------------------------------------------------------------------------------------------


MALFORMED_BODIES: list[Any] = [
    pytest.param(b"", "application/json", id="empty body"),
    pytest.param(b"{", "application/json", id="unterminated object"),
    pytest.param(b'{"code": }', "application/json", id="missing value"),
    pytest.param(b'{"code": "x",}', "application/json", id="trailing comma"),
    pytest.param(b"{'code': 'x'}", "application/json", id="single quotes"),
    pytest.param(b"not json", "application/json", id="plain text"),
    pytest.param(b"\xff\xfe\x00{", "application/json", id="invalid UTF-8"),
    pytest.param(b"[]", "application/json", id="array"),
    pytest.param(b'[{"code": "x"}]', "application/json", id="array of objects"),
    pytest.param(b'"a string"', "application/json", id="string"),
    pytest.param(b"42", "application/json", id="number"),
    pytest.param(b"true", "application/json", id="boolean"),
    pytest.param(b"null", "application/json", id="null"),
    pytest.param(b"[" * 50_000, "application/json", id="50000 nested arrays"),
    pytest.param(b'{"a":' * 10_000, "application/json", id="10000 nested objects"),
    pytest.param(b"name=Amina&email=a%40example.com", "application/x-www-form-urlencoded", id="a form"),
    pytest.param(b"name=Amina", "text/plain", id="text/plain"),
]


@pytest.mark.parametrize(("raw", "content_type"), MALFORMED_BODIES)
@pytest.mark.parametrize("call", BODY_CALLS)
def test_malformed_json_or_non_object_body_is_invalid_json(
    scene: Scene, call: str, raw: bytes, content_type: str
) -> None:
    request_ = valid_call(scene, call)
    scene.refused(request_.method, request_.path, status=400, code="invalid_json",
                  headers=request_.headers(scene.kit.headers), data=raw, content_type=content_type)


# --- quote and purchase: wrong types, missing fields, amounts, points, coupons ---------------------------------


WRONG_PRICING_FIELDS: list[Any] = [
    pytest.param({"code": ABSENT}, "code", id="code missing"),
    pytest.param({"code": None}, "code", id="code null"),
    pytest.param({"code": ""}, "code", id="code empty"),
    pytest.param({"code": 12345}, "code", id="code a number"),
    pytest.param({"code": ["X"]}, "code", id="code a list"),
    pytest.param({"code": {"value": "X"}}, "code", id="code an object"),
    pytest.param({"code": True}, "code", id="code a boolean"),
    pytest.param({"amount": ABSENT}, "amount", id="amount missing"),
    pytest.param({"amount": ABSENT, "code": ABSENT}, ("code", "amount"), id="everything missing"),
]


@pytest.mark.parametrize(("changes", "field_name"), WRONG_PRICING_FIELDS)
@pytest.mark.parametrize("call", PRICING_CALLS)
def test_pricing_wrong_types_and_missing_fields(
    scene: Scene, call: str, changes: dict[str, Any], field_name: str | tuple[str, ...]
) -> None:
    path, headers = pricing_path_and_headers(scene, call)
    scene.refused("POST", path, headers=headers, json_body=pricing_body(scene, **changes),
                  status=422, code="validation_error", field=field_name)


BAD_EUR_AMOUNTS: list[Any] = [
    pytest.param("0", id="zero"),
    pytest.param("0.00", id="zero with decimals"),
    pytest.param("0.0", id="zero with one decimal"),
    pytest.param("00", id="double zero"),
    pytest.param("-1", id="negative"),
    pytest.param("-0.01", id="negative cent"),
    pytest.param("-0", id="negative zero"),
    pytest.param("1e3", id="exponent"),
    pytest.param("1.5e2", id="decimal exponent"),
    pytest.param("12.345", id="three decimals"),
    pytest.param("12.500", id="three decimals ending in zero"),
    pytest.param("0.001", id="a tenth of a cent"),
    pytest.param("10000000.01", id="10^9 + 1 minor units"),
    pytest.param("10000001", id="over 10^9 minor units, no decimals"),
    pytest.param("99999999999999999999", id="twenty nines"),
    pytest.param("9" * 1000, id="a thousand nines"),
    pytest.param(12.5, id="JSON number with decimals"),
    pytest.param(12, id="JSON integer"),
    pytest.param(0, id="JSON zero"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param(None, id="null"),
    pytest.param(["12.50"], id="list"),
    pytest.param({"value": "12.50"}, id="object"),
    pytest.param("", id="empty string"),
    pytest.param(" ", id="a space"),
    pytest.param("abc", id="letters"),
    pytest.param("1,50", id="decimal comma"),
    pytest.param("1.000,50", id="thousands dot"),
    pytest.param("1_000", id="underscore"),
    pytest.param("0x10", id="hexadecimal"),
    pytest.param("١٢", id="Arabic-Indic digits"),
    pytest.param("１２", id="fullwidth digits"),
    pytest.param("12.٥٠", id="Arabic-Indic decimals"),
    pytest.param("+5", id="plus sign"),
    pytest.param(".5", id="no units"),
    pytest.param("5.", id="no decimals after the point"),
    pytest.param("1.2.3", id="two points"),
    pytest.param("NaN", id="NaN"),
    pytest.param("Infinity", id="Infinity"),
    pytest.param("€12.50", id="currency sign"),
    pytest.param("12.50 EUR", id="currency code"),
    pytest.param("12.50\n", id="trailing newline"),
    pytest.param("12.50 ", id="trailing space"),
    pytest.param(" 12.50", id="leading space"),
]


@pytest.mark.parametrize("amount", BAD_EUR_AMOUNTS)
@pytest.mark.parametrize("call", PRICING_CALLS)
def test_bad_amount_is_refused(scene: Scene, call: str, amount: Any) -> None:
    path, headers = pricing_path_and_headers(scene, call)
    scene.refused("POST", path, headers=headers, json_body=pricing_body(scene, amount=amount),
                  status=422, code="validation_error", field="amount")


BAD_AMOUNTS_IN_OTHER_CURRENCIES: list[Any] = [
    pytest.param("JPY", "12.5", id="JPY a decimal"),
    pytest.param("JPY", "12.0", id="JPY a zero decimal"),
    pytest.param("JPY", "0.5", id="JPY half a yen"),
    pytest.param("JPY", "0", id="JPY zero"),
    pytest.param("JPY", "-1", id="JPY negative"),
    pytest.param("JPY", "1000000001", id="JPY 10^9 + 1 yen"),
    pytest.param("JPY", 12, id="JPY JSON integer"),
    pytest.param("BHD", "1.2345", id="BHD four decimals"),
    pytest.param("BHD", "0.000", id="BHD zero"),
    pytest.param("BHD", "1000000.001", id="BHD 10^9 + 1 fils"),
]


@pytest.mark.parametrize(("currency", "amount"), BAD_AMOUNTS_IN_OTHER_CURRENCIES)
@pytest.mark.parametrize("call", PRICING_CALLS)
def test_bad_amount_in_another_currency_is_refused(scene: Scene, call: str, currency: str, amount: Any) -> None:
    priced = scene.other(currency=currency)
    path, headers = pricing_path_and_headers(priced, call)
    priced.refused("POST", path, headers=headers, json_body=pricing_body(priced, amount=amount),
                   status=422, code="validation_error", field="amount")


GOOD_AMOUNTS: list[Any] = [
    pytest.param("EUR", "0.01", "0.01", id="EUR one cent"),
    pytest.param("EUR", "12.5", "12.50", id="EUR one decimal"),
    pytest.param("EUR", "12", "12.00", id="EUR no decimals"),
    pytest.param("EUR", "10000000.00", "10000000.00", id="EUR exactly 10^9 minor units"),
    pytest.param("EUR", "10000000", "10000000.00", id="EUR exactly 10^9 minor units, no decimals"),
    pytest.param("JPY", "1", "1", id="JPY one yen"),
    pytest.param("JPY", "1000000000", "1000000000", id="JPY exactly 10^9"),
    pytest.param("BHD", "1.234", "1.234", id="BHD three decimals"),
    pytest.param("BHD", "1000000.000", "1000000.000", id="BHD exactly 10^9 fils"),
]


@pytest.mark.parametrize(("currency", "amount", "echoed"), GOOD_AMOUNTS)
@pytest.mark.parametrize("call", PRICING_CALLS)
def test_boundary_amounts_are_accepted(scene: Scene, call: str, currency: str, amount: str, echoed: str) -> None:
    priced = scene if currency == "EUR" else scene.other(currency=currency)
    path, headers = pricing_path_and_headers(priced, call)
    response = priced.send("POST", path, headers=headers, json_body=pricing_body(priced, amount=amount))
    assert response.status_code == (200 if call == "quote" else 201), response.get_json()
    assert response.get_json()["amount"] == echoed


BAD_REDEMPTIONS: list[Any] = [
    pytest.param(-1, "12.50", id="negative"),
    pytest.param(1.5, "12.50", id="a fraction"),
    pytest.param(10.0, "12.50", id="a float with no fraction"),
    pytest.param("10", "12.50", id="a string"),
    pytest.param(True, "12.50", id="true"),
    pytest.param(False, "12.50", id="false"),
    pytest.param([1], "12.50", id="a list"),
    pytest.param(10**20, "12.50", id="absurd"),
    pytest.param(WELCOME_BONUS + 1, "100.00", id="more than the balance"),
    pytest.param(26, "0.50", id="more than the cap (50% of 0.50 is 25 points)"),
]


@pytest.mark.parametrize(("redeem", "amount"), BAD_REDEMPTIONS)
@pytest.mark.parametrize("call", PRICING_CALLS)
def test_bad_redeem_points_are_refused(scene: Scene, call: str, redeem: Any, amount: str) -> None:
    path, headers = pricing_path_and_headers(scene, call)
    scene.refused("POST", path, headers=headers,
                  json_body=pricing_body(scene, amount=amount, redeem_points=redeem),
                  status=422, code="validation_error", field="redeem_points")


@pytest.mark.parametrize("call", PRICING_CALLS)
def test_redeeming_where_points_cannot_pay_is_refused(scene: Scene, call: str) -> None:
    no_redeem = scene.other(rules=NO_REDEEM_RULES)
    path, headers = pricing_path_and_headers(no_redeem, call)
    no_redeem.refused("POST", path, headers=headers, json_body=pricing_body(no_redeem, redeem_points=1),
                      status=422, code="validation_error", field="redeem_points")


@pytest.mark.parametrize(("redeem", "amount"), [
    pytest.param(WELCOME_BONUS, "100.00", id="the whole balance"),
    pytest.param(25, "0.50", id="exactly the cap"),
    pytest.param(0, "12.50", id="zero"),
])
@pytest.mark.parametrize("call", PRICING_CALLS)
def test_redeem_points_at_the_limits_are_accepted(scene: Scene, call: str, redeem: int, amount: str) -> None:
    path, headers = pricing_path_and_headers(scene, call)
    response = scene.send("POST", path, headers=headers,
                          json_body=pricing_body(scene, amount=amount, redeem_points=redeem))
    assert response.status_code == (200 if call == "quote" else 201), response.get_json()
    assert response.get_json()["points_redeemed"] == redeem


BAD_COUPONS: list[Any] = [
    pytest.param("SUMMER", id="a string, not a list"),
    pytest.param({"code": "SUMMER"}, id="an object"),
    pytest.param(5, id="a number"),
    pytest.param(True, id="a boolean"),
    pytest.param([1], id="a list of numbers"),
    pytest.param([None], id="a list holding null"),
    pytest.param([["SUMMER"]], id="a list of lists"),
    pytest.param(["SUMMER", 2], id="a string and a number"),
    pytest.param([""], id="an empty coupon code"),
    pytest.param(["   "], id="a coupon code of spaces"),
    pytest.param(["X" * 65], id="a coupon code of 65 characters"),
    pytest.param(["X" * 5000], id="an absurd coupon code"),
    pytest.param([f"CODE{i}" for i in range(21)], id="21 coupon codes"),
]


@pytest.mark.parametrize("coupons", BAD_COUPONS)
@pytest.mark.parametrize("call", PRICING_CALLS)
def test_bad_coupon_codes_are_refused(scene: Scene, call: str, coupons: Any) -> None:
    path, headers = pricing_path_and_headers(scene, call)
    scene.refused("POST", path, headers=headers, json_body=pricing_body(scene, coupon_codes=coupons),
                  status=422, code="validation_error", field="coupon_codes")


@pytest.mark.parametrize("call", PRICING_CALLS)
def test_an_unknown_coupon_is_reported_by_a_quote_and_refuses_a_purchase(scene: Scene, call: str) -> None:
    """A code that is no coupon of the program is the rules' refusal, not malformed input: the quote prices the
    basket without it and says why; a purchase naming it commits nothing (422 coupon_refused, with the reason)."""
    path, headers = pricing_path_and_headers(scene, call)
    body = pricing_body(scene, coupon_codes=["nope"])
    if call == "quote":
        before = snapshot(scene.session)
        response = scene.send("POST", path, headers=headers, json_body=body)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["coupon_refusals"] == [
            {"code": "NOPE", "reason": "unknown",
             "message": "NOPE is not a coupon of this program; check the spelling."}
        ]
        assert response.get_json()["amount_due"] == "12.50"
        assert_nothing_written(before, snapshot(scene.session))
    else:
        problem = scene.refused("POST", path, headers=headers, json_body=body, status=422, code="coupon_refused")
        assert [(r["code"], r["reason"]) for r in problem["refusals"]] == [("NOPE", "unknown")]


@pytest.mark.parametrize("call", PRICING_CALLS)
def test_twenty_coupon_codes_are_read(scene: Scene, call: str) -> None:
    """The control for "21 coupon codes": twenty are within the limit (each refused as unknown on a quote)."""
    path, headers = pricing_path_and_headers(scene, call)
    response = scene.send("POST", path, headers=headers,
                          json_body=pricing_body(scene, coupon_codes=[f"CODE{i}" for i in range(20)]))
    if call == "quote":
        assert response.status_code == 200, response.get_json()
        assert len(response.get_json()["coupon_refusals"]) == 20
    else:
        assert_problem(response, 422, "coupon_refused")


BAD_OFFER_IDS: list[Any] = [
    pytest.param(1, id="a number, not a list"),
    pytest.param("1", id="a string"),
    pytest.param({"id": 1}, id="an object"),
    pytest.param(["1"], id="a list of strings"),
    pytest.param([1.5], id="a fraction"),
    pytest.param([1.0], id="a float with no fraction"),
    pytest.param([True], id="a boolean"),
    pytest.param([None], id="a list holding null"),
    pytest.param([[1]], id="a list of lists"),
    pytest.param([0], id="zero"),
    pytest.param([-1], id="negative"),
    pytest.param([2**63], id="past the largest bigint"),
    pytest.param([10**40], id="absurd"),
    pytest.param(list(range(1, 22)), id="21 offers"),
    pytest.param(None, id="null"),
]


@pytest.mark.parametrize("offer_ids", BAD_OFFER_IDS)
@pytest.mark.parametrize("call", PRICING_CALLS)
def test_bad_offer_ids_are_refused(scene: Scene, call: str, offer_ids: Any) -> None:
    path, headers = pricing_path_and_headers(scene, call)
    scene.refused("POST", path, headers=headers, json_body=pricing_body(scene, offer_ids=offer_ids),
                  status=422, code="validation_error", field="offer_ids")


def _offer(scene: Scene, **values: Any) -> int:
    offer = Offer(program_id=scene.kit.program.id, title="Members' week", discount_type="percent",
                  discount_value=1000, **values)
    scene.session.add(offer)
    scene.session.commit()
    return offer.id


def test_a_purchase_naming_an_offer_that_is_not_there_commits_nothing(scene: Scene) -> None:
    withdrawn = _offer(scene, active=False)
    theirs = scene.other()
    their_offer = _offer(theirs)
    for offer_id in (withdrawn, their_offer, their_offer + 1000):
        problem = scene.refused("POST", "/api/v1/purchases", headers=scene.kit.purchase_headers(),
                                json_body=pricing_body(scene, offer_ids=[offer_id]), status=422,
                                code="offer_refused")
        assert [r["reason"] for r in problem["refusals"]] == ["offer_unknown"]
        quote = scene.send("POST", "/api/v1/purchases/quote", json_body=pricing_body(scene, offer_ids=[offer_id]))
        assert quote.status_code == 200
        assert [n["code"] for n in quote.get_json()["notices"]] == ["offer_unknown"]


BAD_REWARD_IDS: list[Any] = [
    pytest.param("1", id="a string"),
    pytest.param(1.5, id="a fraction"),
    pytest.param(True, id="a boolean"),
    pytest.param(0, id="zero"),
    pytest.param(-1, id="negative"),
    pytest.param(2**63, id="past the largest bigint"),
    pytest.param([1], id="a list"),
    pytest.param({"id": 1}, id="an object"),
    pytest.param(lambda s: s.reward(active=False), id="a withdrawn reward"),
    pytest.param(lambda s: s.other().reward(), id="another program's reward"),
    pytest.param(lambda s: s.reward() + 1000, id="an unknown reward"),
    pytest.param(lambda s: s.reward(points_cost=WELCOME_BONUS + 1), id="a reward the card cannot pay for"),
]


@pytest.mark.parametrize("reward_id", BAD_REWARD_IDS)
@pytest.mark.parametrize("call", PRICING_CALLS)
def test_bad_reward_id_is_refused(scene: Scene, call: str, reward_id: Any) -> None:
    if callable(reward_id):
        reward_id = reward_id(scene)
    path, headers = pricing_path_and_headers(scene, call)
    scene.refused("POST", path, headers=headers, json_body=pricing_body(scene, reward_id=reward_id),
                  status=422, code="validation_error", field="reward_id")


@pytest.mark.parametrize("call", PRICING_CALLS)
def test_a_reward_costing_exactly_the_balance_is_accepted(scene: Scene, call: str) -> None:
    """The control for the rewards above: null is no reward, and a reward the balance just covers applies."""
    for reward_id, spent in ((None, 0), (scene.reward(points_cost=WELCOME_BONUS), WELCOME_BONUS)):
        path, headers = pricing_path_and_headers(scene, call)
        response = scene.send("POST", path, headers=headers, json_body=pricing_body(scene, reward_id=reward_id))
        assert response.status_code == (200 if call == "quote" else 201), response.get_json()
        assert response.get_json()["reward_points"] == spent


BAD_CASHBACK: list[Any] = [
    pytest.param(1, id="a JSON integer"),
    pytest.param(1.5, id="a JSON number"),
    pytest.param(None, id="null"),
    pytest.param(True, id="a boolean"),
    pytest.param(["1.00"], id="a list"),
    pytest.param("", id="empty"),
    pytest.param("-1.00", id="negative"),
    pytest.param("-0", id="negative zero"),
    pytest.param("1,50", id="decimal comma"),
    pytest.param("1.234", id="three decimals"),
    pytest.param("0.000", id="zero with three decimals"),
    pytest.param("10000000.01", id="10^9 + 1 minor units"),
    pytest.param("abc", id="letters"),
    pytest.param("1.00", id="more than the card holds (nothing)"),
]


@pytest.mark.parametrize("cashback", BAD_CASHBACK)
@pytest.mark.parametrize("call", PRICING_CALLS)
def test_bad_redeem_cashback_is_refused(scene: Scene, call: str, cashback: Any) -> None:
    path, headers = pricing_path_and_headers(scene, call)
    scene.refused("POST", path, headers=headers, json_body=pricing_body(scene, redeem_cashback=cashback),
                  status=422, code="validation_error", field="redeem_cashback")


@pytest.mark.parametrize("cashback", ["0", "0.00", "0.0", "00"])
@pytest.mark.parametrize("call", PRICING_CALLS)
def test_zero_cashback_is_accepted(scene: Scene, call: str, cashback: str) -> None:
    path, headers = pricing_path_and_headers(scene, call)
    response = scene.send("POST", path, headers=headers, json_body=pricing_body(scene, redeem_cashback=cashback))
    assert response.status_code == (200 if call == "quote" else 201), response.get_json()
    assert response.get_json()["cashback_redeemed"] == "0.00"


@pytest.mark.parametrize("use_voucher", [
    pytest.param("yes", id="a string"),
    pytest.param("true", id="the string true"),
    pytest.param(1, id="one"),
    pytest.param(None, id="null"),
    pytest.param([True], id="a list"),
    pytest.param(True, id="no voucher on the card"),
])
@pytest.mark.parametrize("call", PRICING_CALLS)
def test_bad_use_voucher_is_refused(scene: Scene, call: str, use_voucher: Any) -> None:
    path, headers = pricing_path_and_headers(scene, call)
    scene.refused("POST", path, headers=headers, json_body=pricing_body(scene, use_voucher=use_voucher),
                  status=422, code="validation_error", field="use_voucher")


# --- card codes on scan, quote and purchase -------------------------------------------------------------------


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def _swap_char(code: str, index: int) -> str:
    replacement = "A" if code[index] != "A" else "B"
    return code[:index] + replacement + code[index + 1:]


def _random_base32(scene: Scene) -> str:
    return "".join(secrets.choice(BASE32) for _ in range(CODE_LENGTH))


def _unknown_kid(scene: Scene) -> str:
    kid = new_kid()
    while kid == parse_card_code(scene.code).kid:
        kid = new_kid()
    return sign_card_code(Ed25519PrivateKey.generate(), kid, scene.kit.program.slug, scene.serial)


def _forged_with_real_kid(scene: Scene) -> str:
    kid = parse_card_code(scene.code).kid
    return sign_card_code(Ed25519PrivateKey.generate(), kid, scene.kit.program.slug, scene.serial)


def _unknown_serial_signed_by_us(scene: Scene) -> str:
    kid = parse_card_code(scene.code).kid
    return sign_card_code(scene.app.extensions["keys"].load(kid), kid, scene.kit.program.slug, new_serial())


def _other_programs_serial_signed_by_us(scene: Scene) -> str:
    kid = parse_card_code(scene.code).kid
    return sign_card_code(scene.app.extensions["keys"].load(kid), kid, scene.kit.program.slug, scene.other().serial)


def _signed_for_another_slug(scene: Scene) -> str:
    kid = parse_card_code(scene.code).kid
    return sign_card_code(scene.app.extensions["keys"].load(kid), kid, scene.kit.program.slug + "-x", scene.serial)


def _unknown_version(scene: Scene) -> str:
    parsed = parse_card_code(scene.code)
    payload = bytes([VERSION + 1]) + parsed.payload[1:]
    signature = scene.app.extensions["keys"].load(parsed.kid).sign(signed_message(scene.kit.program.slug, payload))
    return _b32(payload + signature)


def _wrong_program(scene: Scene) -> str:
    return scene.other().code


def _revoked_card(scene: Scene) -> str:
    revoke_card(scene.session, scene.card())
    scene.session.commit()
    return scene.code


def _reissued_card(scene: Scene) -> str:
    old_code = scene.code
    reissue_card(scene.session, scene.card())
    scene.session.commit()
    return old_code


BAD_CODES: list[Any] = [
    pytest.param(_random_base32, "invalid_code", id="unknown: random base32 of the right length"),
    pytest.param(_unknown_kid, "invalid_code", id="unknown: signed by a key id we never issued"),
    pytest.param(_unknown_serial_signed_by_us, "invalid_code", id="unknown: our signature, no such card"),
    pytest.param(_forged_with_real_kid, "invalid_code", id="forged: our key id, another private key"),
    pytest.param(_signed_for_another_slug, "invalid_code", id="forged: our key, signed for another slug"),
    pytest.param(_unknown_version, "invalid_code", id="forged: version 2, signed by our key"),
    pytest.param(_other_programs_serial_signed_by_us, "invalid_code",
                 id="forged: our signature over another program's serial"),
    pytest.param(lambda s: _swap_char(s.code, 10), "invalid_code", id="tampered: serial"),
    pytest.param(lambda s: _swap_char(s.code, 3), "invalid_code", id="tampered: key id"),
    pytest.param(lambda s: _swap_char(s.code, 100), "invalid_code", id="tampered: signature"),
    pytest.param(lambda s: s.code[:-1], "invalid_code", id="truncated by one"),
    pytest.param(lambda s: s.code[: CODE_LENGTH // 2], "invalid_code", id="truncated by half"),
    pytest.param(lambda s: s.code[:1], "invalid_code", id="one character"),
    pytest.param(lambda s: s.code + "A", "invalid_code", id="one character too many"),
    pytest.param(lambda s: s.code[:-1] + "=", "invalid_code", id="base32 padding"),
    pytest.param(lambda s: s.code[:-1] + "1", "invalid_code", id="outside the alphabet"),
    pytest.param(lambda s: s.code[:-1] + "\x00", "invalid_code", id="NUL byte"),
    pytest.param(lambda s: "É" * CODE_LENGTH, "invalid_code", id="non-ASCII of the right length"),
    pytest.param(lambda s: s.code * 80, "invalid_code", id="absurdly long"),
    pytest.param(_wrong_program, "wrong_program", id="wrong program"),
    pytest.param(_revoked_card, "revoked_card", id="revoked card"),
    pytest.param(_reissued_card, "revoked_card", id="replaced by a reissued card"),
]


def _code_request(scene: Scene, call: str, code: Any) -> tuple[str, dict[str, str], dict[str, Any]]:
    if call == "scan":
        return "/api/v1/scans", dict(scene.kit.headers), {"code": code}
    path, headers = pricing_path_and_headers(scene, call)
    return path, headers, pricing_body(scene, code=code)


@pytest.mark.parametrize(("make_code", "problem_code"), BAD_CODES)
@pytest.mark.parametrize("call", CODE_CALLS)
def test_unknown_forged_tampered_wrong_program_or_revoked_code_is_refused(
    scene: Scene, call: str, make_code: Callable[[Scene], str], problem_code: str
) -> None:
    code = make_code(scene)
    path, headers, body = _code_request(scene, call, code)
    problem = scene.refused("POST", path, headers=headers, json_body=body, status=422, code=problem_code)
    assert problem.get("reason"), "a card refusal carries a short reason for the till's screen"


WRONG_TYPE_CODES: list[Any] = [
    pytest.param(ABSENT, id="missing"),
    pytest.param(None, id="null"),
    pytest.param("", id="empty string"),
    pytest.param(12345, id="a number"),
    pytest.param(["X"], id="a list"),
    pytest.param({"code": "X"}, id="an object"),
    pytest.param(True, id="a boolean"),
]


@pytest.mark.parametrize("code", WRONG_TYPE_CODES)
@pytest.mark.parametrize("call", CODE_CALLS)
def test_code_of_the_wrong_type_is_a_validation_error(scene: Scene, call: str, code: Any) -> None:
    """The same body gets the same `code` on every call: a missing or non-string code is validation_error."""
    if call == "scan":
        path, headers = "/api/v1/scans", dict(scene.kit.headers)
        body: dict[str, Any] = {} if code is ABSENT else {"code": code}
    else:
        path, headers = pricing_path_and_headers(scene, call)
        body = pricing_body(scene, code=code)
    scene.refused("POST", path, headers=headers, json_body=body, status=422, code="validation_error",
                  field="code")


# --- enrollment ------------------------------------------------------------------------------------------------


BAD_ENROLLMENTS: list[Any] = [
    pytest.param({}, "name", id="empty object"),
    pytest.param({"email": "amina@example.com"}, "name", id="name missing"),
    pytest.param({"name": None, "email": "amina@example.com"}, "name", id="name null"),
    pytest.param({"name": 42, "email": "amina@example.com"}, "name", id="name a number"),
    pytest.param({"name": ["Amina"], "email": "amina@example.com"}, "name", id="name a list"),
    pytest.param({"name": True, "email": "amina@example.com"}, "name", id="name a boolean"),
    pytest.param({"name": "", "email": "amina@example.com"}, "name", id="name empty"),
    pytest.param({"name": "   ", "email": "amina@example.com"}, "name", id="name whitespace"),
    pytest.param({"name": "\t\n", "email": "amina@example.com"}, "name", id="name tab and newline"),
    pytest.param({"name": "A" * 101, "email": "amina@example.com"}, "name", id="name 101 characters"),
    pytest.param({"name": "A" * 10_000, "email": "amina@example.com"}, "name", id="name 10000 characters"),
    pytest.param({"name": "Amina\x00Karimi", "email": "amina@example.com"}, "name", id="name with NUL"),
    pytest.param({"name": "Amina\x07", "email": "amina@example.com"}, "name", id="name with a bell"),
    pytest.param({"name": "Amina Karimi"}, ("email", "phone"), id="no email and no phone"),
    pytest.param({"name": "Amina Karimi", "email": None, "phone": None}, ("email", "phone"),
                 id="email and phone null"),
    pytest.param({"name": "Amina Karimi", "email": "", "phone": " "}, ("email", "phone"),
                 id="email and phone blank"),
    pytest.param({"name": "Amina Karimi", "email": "not-an-email"}, "email", id="email without @"),
    pytest.param({"name": "Amina Karimi", "email": "amina@example"}, "email", id="email without a dot"),
    pytest.param({"name": "Amina Karimi", "email": "amina@@example.com"}, "email", id="email with two @"),
    pytest.param({"name": "Amina Karimi", "email": "@example.com"}, "email", id="email without local part"),
    pytest.param({"name": "Amina Karimi", "email": "amina karimi@example.com"}, "email",
                 id="email with a space"),
    pytest.param({"name": "Amina Karimi", "email": "amina\x00@example.com"}, "email", id="email with NUL"),
    pytest.param({"name": "Amina Karimi", "email": "amina\x01@example.com"}, "email",
                 id="email with a control character"),
    pytest.param({"name": "Amina Karimi", "email": "a" * 250 + "@example.com"}, "email",
                 id="email over 254 characters"),
    pytest.param({"name": "Amina Karimi", "email": 42}, "email", id="email a number"),
    pytest.param({"name": "Amina Karimi", "email": ["amina@example.com"]}, "email", id="email a list"),
    pytest.param({"name": "Amina Karimi", "phone": "abcdefgh"}, "phone", id="phone letters"),
    pytest.param({"name": "Amina Karimi", "phone": "+33 6 ab cd ef gh"}, "phone", id="phone with letters"),
    pytest.param({"name": "Amina Karimi", "phone": "123"}, "phone", id="phone too short"),
    pytest.param({"name": "Amina Karimi", "phone": "123456"}, "phone", id="phone six digits"),
    pytest.param({"name": "Amina Karimi", "phone": "1234567890123456"}, "phone", id="phone 16 digits"),
    pytest.param({"name": "Amina Karimi", "phone": "+33 6 12 34 56 78 90 12 34"}, "phone", id="phone too long"),
    pytest.param({"name": "Amina Karimi", "phone": "+"}, "phone", id="phone a plus"),
    pytest.param({"name": "Amina Karimi", "phone": "++33612345678"}, "phone", id="phone two pluses"),
    pytest.param({"name": "Amina Karimi", "phone": "0612345678+"}, "phone", id="phone plus at the end"),
    pytest.param({"name": "Amina Karimi", "phone": "٠٦١٢٣٤٥٦٧٨"}, "phone", id="phone Arabic-Indic digits"),
    pytest.param({"name": "Amina Karimi", "phone": "０６１２３４５６７８"}, "phone", id="phone fullwidth digits"),
    pytest.param({"name": "Amina Karimi", "phone": "06123456²"}, "phone", id="phone superscript digit"),
    pytest.param({"name": "Amina Karimi", "phone": 33612345678}, "phone", id="phone a number"),
    pytest.param({"name": "Amina Karimi", "email": "amina@example.com", "phone": "abc"}, "phone",
                 id="good email, bad phone"),
    pytest.param({"name": "Amina Karimi", "email": "nope", "phone": "+33612345678"}, "email",
                 id="bad email, good phone"),
    pytest.param({"name": "Amina Karimi", "email": "amina@example.com", "marketing_consent": "yes"},
                 "marketing_consent", id="consent 'yes'"),
    pytest.param({"name": "Amina Karimi", "email": "amina@example.com", "marketing_consent": "true"},
                 "marketing_consent", id="consent 'true'"),
    pytest.param({"name": "Amina Karimi", "email": "amina@example.com", "marketing_consent": 1},
                 "marketing_consent", id="consent 1"),
    pytest.param({"name": "Amina Karimi", "email": "amina@example.com", "referral_code": "NOPE"},
                 "referral_code", id="unknown referral code"),
    pytest.param({"name": "Amina Karimi", "email": "amina@example.com", "referral_code": 42},
                 "referral_code", id="referral code a number"),
]


@pytest.mark.parametrize(("body", "field_name"), BAD_ENROLLMENTS)
def test_bad_enrollment_is_refused(scene: Scene, body: dict[str, Any], field_name: str | tuple[str, ...]) -> None:
    scene.refused("POST", "/api/v1/enrollments", json_body=body, status=422, code="validation_error",
                  field=field_name)


@pytest.mark.parametrize("body", [
    pytest.param({"name": "A" * 100, "email": "long.name@example.com"}, id="name of exactly 100 characters"),
    pytest.param({"name": "Amina Karimi", "phone": "+33 6 12 34 56 78"}, id="phone only"),
    pytest.param({"name": "Amina Karimi", "email": "amina.k@example.com", "marketing_consent": True},
                 id="email only, with consent"),
    pytest.param({"name": "Amina Karimi", "phone": "1234567"}, id="phone of seven digits"),
    pytest.param({"name": "Amina Karimi", "phone": "+123456789012345"}, id="phone of fifteen digits"),
])
def test_enrollment_at_the_limits_is_accepted(scene: Scene, body: dict[str, Any]) -> None:
    response = scene.send("POST", "/api/v1/enrollments", json_body=body)
    assert response.status_code == 201, response.get_json()


@pytest.mark.parametrize(("first", "second"), [
    pytest.param({"email": "amina@example.com"}, {"email": "amina@example.com"}, id="same email"),
    pytest.param({"email": "amina@example.com"}, {"email": "AMINA@Example.COM"}, id="email in other case"),
    pytest.param({"email": "amina@example.com"}, {"email": "  amina@example.com  "}, id="email with spaces"),
    pytest.param({"phone": "+33612345678"}, {"phone": "+33 6 12 34 56 78"}, id="phone with spaces"),
    pytest.param({"phone": "+33 6 12 34 56 78"}, {"phone": "+33612345678"}, id="phone compact second"),
    pytest.param({"phone": "+33612345678"}, {"phone": "+33 (6) 12-34-56-78"}, id="phone with dashes"),
    pytest.param({"phone": "+33612345678"}, {"phone": "+33.6.12.34.56.78"}, id="phone with dots"),
    pytest.param({"email": "amina@example.com", "phone": "+33612345678"},
                 {"email": "other@example.com", "phone": "+33 6 12 34 56 78"}, id="new email, same phone"),
    pytest.param({"email": "amina@example.com", "phone": "+33612345678"},
                 {"email": "amina@example.com", "phone": "+33700000000"}, id="same email, new phone"),
])
def test_second_enrollment_is_already_enrolled(scene: Scene, first: dict[str, Any], second: dict[str, Any]) -> None:
    first_response = scene.send("POST", "/api/v1/enrollments", json_body={"name": "Amina Karimi", **first})
    assert first_response.status_code == 201, first_response.get_json()
    problem = scene.refused("POST", "/api/v1/enrollments", json_body={"name": "Someone Else", **second},
                            status=409, code="already_enrolled")
    recovery_url = problem.get("recovery_url")
    assert isinstance(recovery_url, str), problem
    assert urlparse(recovery_url).scheme in ("http", "https") and scene.kit.program.slug in recovery_url


def test_the_same_email_may_join_another_program(scene: Scene) -> None:
    """The control for the 409s above: uniqueness is per program."""
    body = {"name": "Amina Karimi", "email": "amina@example.com"}
    assert scene.send("POST", "/api/v1/enrollments", json_body=body).status_code == 201
    elsewhere = scene.make_program()
    response = scene.send("POST", "/api/v1/enrollments", headers=elsewhere.headers, json_body=body)
    assert response.status_code == 201, response.get_json()


# --- idempotency -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [
    pytest.param(None, id="missing"),
    pytest.param("", id="empty"),
    pytest.param("   ", id="whitespace"),
    pytest.param("k" * 256, id="256 characters"),
    pytest.param("k" * 300, id="300 characters"),
    pytest.param("k" * 8000, id="8000 characters"),
])
def test_bad_idempotency_key_is_refused(scene: Scene, key: str | None) -> None:
    headers = dict(scene.kit.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    scene.refused("POST", "/api/v1/purchases", headers=headers, json_body=pricing_body(scene),
                  status=422, code="validation_error", field="Idempotency-Key")


def test_idempotency_key_of_255_characters_is_accepted(scene: Scene) -> None:
    response = scene.send("POST", "/api/v1/purchases", headers=scene.kit.purchase_headers("k" * 255),
                          json_body=pricing_body(scene))
    assert response.status_code == 201, response.get_json()


@pytest.mark.parametrize("changes", [
    pytest.param({"amount": "12.51"}, id="another amount"),
    pytest.param({"redeem_points": 1}, id="points redeemed"),
    pytest.param({"code": ABSENT}, id="another card"),
])
def test_same_idempotency_key_with_another_body_is_a_conflict(scene: Scene, changes: dict[str, Any]) -> None:
    headers = scene.kit.purchase_headers("till-1-0001")
    first = scene.send("POST", "/api/v1/purchases", headers=headers, json_body=pricing_body(scene))
    assert first.status_code == 201, first.get_json()
    if changes.get("code") is ABSENT:
        changes = {"code": scene.enroll(scene.kit)["code"]}
    scene.refused("POST", "/api/v1/purchases", headers=headers, json_body=pricing_body(scene, **changes),
                  status=422, code="idempotency_conflict")


def test_same_idempotency_key_with_the_same_body_writes_nothing_more(scene: Scene) -> None:
    """The control for the conflict: the same body is a replay, answered the same and written once."""
    headers = scene.kit.purchase_headers("till-1-0002")
    first = scene.send("POST", "/api/v1/purchases", headers=headers, json_body=pricing_body(scene))
    assert first.status_code == 201, first.get_json()
    before = snapshot(scene.session)
    again = scene.send("POST", "/api/v1/purchases", headers=headers, json_body=pricing_body(scene))
    assert again.status_code == 201 and again.get_json() == first.get_json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert_nothing_written(before, snapshot(scene.session))


def test_a_refused_purchase_does_not_use_up_its_idempotency_key(scene: Scene) -> None:
    headers = scene.kit.purchase_headers("till-1-0003")
    scene.refused("POST", "/api/v1/purchases", headers=headers, json_body=pricing_body(scene, amount="0"),
                  status=422, code="validation_error", field="amount")
    response = scene.send("POST", "/api/v1/purchases", headers=headers, json_body=pricing_body(scene))
    assert response.status_code == 201, response.get_json()


# --- void ------------------------------------------------------------------------------------------------------


ARABIC_INDIC_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULLWIDTH_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")


@pytest.mark.parametrize("path_id", [
    pytest.param(lambda pid: str(pid + 1000), id="unknown"),
    pytest.param(lambda pid: "0", id="zero"),
    pytest.param(lambda pid: f"-{pid}", id="negative"),
    pytest.param(lambda pid: "abc", id="letters"),
    pytest.param(lambda pid: f"{pid}.0", id="a decimal"),
    pytest.param(lambda pid: f"{pid}e0", id="an exponent"),
    pytest.param(lambda pid: f"{pid}%20", id="a trailing space"),
    pytest.param(lambda pid: str(pid).translate(ARABIC_INDIC_DIGITS), id="the id in Arabic-Indic digits"),
    pytest.param(lambda pid: str(pid).translate(FULLWIDTH_DIGITS), id="the id in fullwidth digits"),
    pytest.param(lambda pid: str(2**63 - 1), id="the largest bigint"),
    pytest.param(lambda pid: str(2**63), id="one past the largest bigint"),
    pytest.param(lambda pid: str(2**64 + pid), id="the id plus 2^64"),
    pytest.param(lambda pid: "9" * 40, id="forty nines"),
])
def test_void_of_unknown_or_malformed_purchase_id_is_not_found(scene: Scene, path_id: Callable[[int], str]) -> None:
    purchase = scene.purchase()  # a purchase that must stay as it is
    scene.refused("POST", f"/api/v1/purchases/{path_id(purchase['id'])}/void", status=404, code="not_found")


def test_void_of_another_programs_purchase_is_not_found(scene: Scene) -> None:
    theirs = scene.other()
    purchase = theirs.purchase()
    scene.refused("POST", f"/api/v1/purchases/{purchase['id']}/void", status=404, code="not_found")


def test_second_void_is_already_voided(scene: Scene) -> None:
    purchase = scene.purchase("100.00")
    first = scene.send("POST", f"/api/v1/purchases/{purchase['id']}/void")
    assert first.status_code == 200, first.get_json()
    scene.refused("POST", f"/api/v1/purchases/{purchase['id']}/void", status=409, code="already_voided")


def test_void_after_the_points_were_spent_is_refused(scene: Scene) -> None:
    spender = scene.other(rules=SPEND_ALL_RULES)
    earning = spender.purchase("100.00")  # 50 + 100 = 150 points
    spending = spender.purchase("2.00", redeem_points=150)  # all of them
    assert spending["points"] == 0, spending
    spender.refused("POST", f"/api/v1/purchases/{earning['id']}/void", status=409, code="points_already_spent")


# --- cards and stats -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make_serial", [
    pytest.param(lambda s: new_serial(), id="unknown serial"),
    pytest.param(lambda s: s.other().serial, id="another program's card"),
    pytest.param(lambda s: s.code, id="the card code instead of the serial"),
    pytest.param(lambda s: "A" * 300, id="absurdly long"),
    pytest.param(lambda s: "%00", id="NUL byte"),
    pytest.param(lambda s: "%C3%89", id="non-ASCII"),
    pytest.param(lambda s: "%20", id="a space"),
])
def test_unknown_card_is_not_found(scene: Scene, make_serial: Callable[[Scene], str]) -> None:
    scene.refused("GET", f"/api/v1/cards/{make_serial(scene)}", status=404, code="not_found")


@pytest.mark.parametrize("query", [
    pytest.param("?period=year", id="unknown period"),
    pytest.param("?period=", id="empty period"),
    pytest.param("?period=day%00", id="period with NUL"),
    pytest.param("?period=" + "d" * 5000, id="absurd period"),
])
def test_bad_stats_period_is_refused(scene: Scene, query: str) -> None:
    scene.refused("GET", f"/api/v1/stats/enrollments{query}", status=422, code="validation_error",
                  field="period")


# --- methods, paths and sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/v1/purchases"),
    ("GET", "/api/v1/enrollments"),
    ("GET", "/api/v1/scans"),
    ("PUT", "/api/v1/purchases/quote"),
    ("GET", "/api/v1/purchases/1/void"),
    ("DELETE", "/api/v1/purchases/1/void"),
    ("POST", "/api/v1/cards/{serial}"),
    ("DELETE", "/api/v1/cards/{serial}"),
    ("POST", "/api/v1/stats/enrollments"),
])
def test_wrong_method_is_method_not_allowed(scene: Scene, method: str, path: str) -> None:
    scene.refused(method, path.format(serial=scene.serial), status=405, code="method_not_allowed")


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/api/v1/purchases", "POST"),
    ("DELETE", "/api/v1/cards/{serial}", "GET"),
    ("POST", "/api/v1/stats/enrollments", "GET"),
])
def test_method_not_allowed_names_the_allowed_methods(scene: Scene, method: str, path: str, allowed: str) -> None:
    """RFC 9110 15.5.6: a 405 response MUST carry an Allow header, problem JSON or not."""
    response = scene.send(method, path.format(serial=scene.serial))
    assert_problem(response, 405, "method_not_allowed")
    assert allowed in {m.strip() for m in response.headers.get("Allow", "").split(",")}, response.headers


@pytest.mark.parametrize("path", [
    "/api/v1/nope",
    "/api/v1/",
    "/api/v1/cards",
    "/api/v1/cards/{serial}/ledger",
    "/api/v1/purchases/1/refund",
    "/api/v2/enrollments",
])
def test_unknown_api_path_is_a_not_found_problem(scene: Scene, path: str) -> None:
    scene.refused("GET", path.format(serial=scene.serial), status=404, code="not_found")


@pytest.mark.parametrize("call", BODY_CALLS)
def test_body_over_64_kib_is_payload_too_large(scene: Scene, call: str) -> None:
    request_ = valid_call(scene, call)
    assert isinstance(request_.json_body, dict)
    raw = json.dumps({**request_.json_body, "padding": "x" * MAX_BODY_BYTES}).encode()
    assert len(raw) > MAX_BODY_BYTES
    scene.refused(request_.method, request_.path, headers=request_.headers(scene.kit.headers), data=raw,
                  status=413, code="payload_too_large")


def test_body_of_exactly_64_kib_is_read(scene: Scene) -> None:
    """The control for the 413s: the limit is 64 KiB, not less."""
    body = pricing_body(scene, padding="")
    raw = json.dumps(body).encode()
    raw = json.dumps({**body, "padding": "x" * (MAX_BODY_BYTES - len(raw))}).encode()
    assert len(raw) == MAX_BODY_BYTES
    response = scene.send("POST", "/api/v1/purchases/quote", data=raw)
    assert response.status_code == 200, response.get_json()


def test_every_answer_of_this_module_is_recorded(scene: Scene, answer_log: AnswerLog) -> None:
    """The autouse 5xx check sees requests: without this, "no 500 anywhere" could pass vacuously."""
    seen = len(answer_log.answered)
    scene.send("GET", "/api/v1/nope")
    assert answer_log.answered[seen:] == [("GET", "/api/v1/nope", 404)]
