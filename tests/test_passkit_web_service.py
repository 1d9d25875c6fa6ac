"""Apple's PassKit web service, walked as an iPhone's Wallet walks it, against a local APNs server.

Every request here commits for real (no rolled-back outer transaction): the pass publisher runs in its own
sessions, as it does in production. Each test makes its own program, so nothing leaks between tests.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import secrets
import subprocess
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from app.models import AppleDevice, ApplePush, AppleRegistration, Card, Offer
from app.wallet import DEV_FILES, DEV_TEAM_ID, PassUpdateWorker, get_apple_wallet
from tests.apns_server import LocalApns
from tests.conftest import ProgramKit

PASSKIT = "/wallet/apple/v1"
KEY_ID = "KEYID12345"


@pytest.fixture()
def apns(app: Flask, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LocalApns]:
    """A local APNs (HTTP/2, TLS, token auth checked with PyJWT) that the app's pushes go to."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    with LocalApns(token_key_public_pem=public_pem, team_id=DEV_TEAM_ID, key_id=KEY_ID) as server:
        for name, value in (("APNS_URL", server.url), ("APNS_CA_FILE", server.ca_file),
                            ("APNS_KEY_FILE", str(key_file)), ("APNS_KEY_ID", KEY_ID)):
            monkeypatch.setitem(app.config, name, value)
        app.extensions.pop("apple_wallet", None)
        try:
            yield server
        finally:
            with app.app_context():
                get_apple_wallet().close()
            app.extensions.pop("apple_wallet", None)


@dataclass
class Member:
    serial: str
    code: str
    token: str
    pass_type: str
    card_url: str
    pass_url: str

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"ApplePass {self.token}"}

    def registration(self, device: str) -> str:
        return f"{PASSKIT}/devices/{device}/registrations/{self.pass_type}/{self.serial}"

    def pass_path(self) -> str:
        return f"{PASSKIT}/passes/{self.pass_type}/{self.serial}"


@pytest.fixture()
def member(committed_client: FlaskClient, committed_shop: ProgramKit) -> Member:
    """A new member who has just added their card to Apple Wallet (downloaded the pass from the answer's link)."""
    answer = committed_client.post("/api/v1/enrollments", headers=committed_shop.headers,
                                json={"name": "Amina Karimi", "email": f"{secrets.token_hex(5)}@example.com"}).json
    assert answer["apple_pass_url"].endswith("/card.pkpass")
    pass_json = _pass_json(committed_client.get(answer["apple_pass_url"]).data)
    return Member(pass_json["serialNumber"], answer["code"], pass_json["authenticationToken"],
                  pass_json["passTypeIdentifier"], answer["card_url"], answer["apple_pass_url"])


def _pass_json(pkpass: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(pkpass)) as archive:
        return json.loads(archive.read("pass.json"))  # type: ignore[no-any-return]


def _points(pass_json: dict[str, Any]) -> tuple[int, str | None]:
    """The points field of a store card and its changeMessage, wherever the layout put it."""
    for group in ("headerFields", "primaryFields", "secondaryFields", "auxiliaryFields"):
        for item in pass_json["storeCard"].get(group, []):
            if item["key"] == "points":
                return item["value"], item.get("changeMessage")
    raise AssertionError("no points field on the pass")


def _buy(client: FlaskClient, shop: ProgramKit, member: Member, amount: str = "12.50") -> dict[str, Any]:
    response = client.post("/api/v1/purchases", headers=shop.purchase_headers(),
                           json={"code": member.code, "amount": amount})
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[no-any-return]


def _worker(app: Flask) -> PassUpdateWorker:
    worker: PassUpdateWorker = app.extensions["pass_updates"]
    return worker


def _push_token() -> str:
    return secrets.token_hex(32)


def _device() -> str:
    return uuid.uuid4().hex


def test_the_walk_of_a_device(app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit,
                              member: Member, apns: LocalApns, tmp_path: Path) -> None:
    client = committed_client
    device, push_token = _device(), _push_token()

    # The downloaded pass points at this web service, carries the card's code, and verifies against the dev CA.
    downloaded = client.get(member.pass_url)
    assert downloaded.mimetype == "application/vnd.apple.pkpass"
    pass_json = _pass_json(downloaded.data)
    assert pass_json["webServiceURL"] == "http://loyalty.test/wallet/apple"
    assert pass_json["barcodes"][0]["message"] == member.code
    _verify_with_openssl(app, downloaded.data, tmp_path)

    # Register: 201 new, 200 known, 401 without or with a wrong token, 404 for a pass type not ours.
    assert client.post(member.registration(device), json={"pushToken": push_token}).status_code == 401
    assert client.post(member.registration(device), json={"pushToken": push_token},
                       headers={"Authorization": "ApplePass " + "x" * 32}).status_code == 401
    wrong_type = member.registration(device).replace(member.pass_type, "pass.com.example.other")
    assert client.post(wrong_type, json={"pushToken": push_token}, headers=member.auth()).status_code == 404
    assert client.post(member.registration(device), json={"pushToken": push_token},
                       headers=member.auth()).status_code == 201
    assert client.post(member.registration(device), json={"pushToken": push_token},
                       headers=member.auth()).status_code == 200

    # Serials: all registered passes without a tag; 204 once nothing changed since the tag given.
    changed = client.get(f"{PASSKIT}/devices/{device}/registrations/{member.pass_type}")
    assert changed.status_code == 200
    assert changed.json["serialNumbers"] == [member.serial]
    first_tag = changed.json["lastUpdated"]
    since_first = f"{PASSKIT}/devices/{device}/registrations/{member.pass_type}?passesUpdatedSince={first_tag}"
    assert client.get(since_first).status_code == 204

    # The latest pass: always Last-Modified; 304 when unchanged since; 401 without the token.
    latest = client.get(member.pass_path(), headers=member.auth())
    assert latest.status_code == 200 and latest.mimetype == "application/vnd.apple.pkpass"
    first_modified = latest.headers["Last-Modified"]
    unchanged = client.get(member.pass_path(), headers={**member.auth(), "If-Modified-Since": first_modified})
    assert unchanged.status_code == 304 and unchanged.headers["Last-Modified"] == first_modified
    assert client.get(member.pass_path()).status_code == 401

    # A purchase: exactly one push to the device, then the serial shows up since the old tag with a later one.
    bought = _buy(client, committed_shop, member)
    report = _worker(app).run_once()
    assert (report.republished, report.sent) == (1, 1)
    [push] = apns.wait_for(1)
    assert push.device_token == push_token and push.authorized and push.status == 200
    assert push.headers["apns-topic"] == member.pass_type and push.body == b"{}"
    changed = client.get(since_first)
    assert changed.status_code == 200 and changed.json["serialNumbers"] == [member.serial]
    assert int(changed.json["lastUpdated"]) > int(first_tag)

    # The next fetch (If-Modified-Since the old date) shows the new balance, with the lock-screen message.
    updated = client.get(member.pass_path(), headers={**member.auth(), "If-Modified-Since": first_modified})
    assert updated.status_code == 200
    assert parsedate_to_datetime(updated.headers["Last-Modified"]) > parsedate_to_datetime(first_modified)
    points, message = _points(_pass_json(updated.data))
    assert points == bought["points"] and message is not None and "%@" in message
    assert client.get(member.pass_path(), headers={**member.auth(), "If-Modified-Since":
                                                   updated.headers["Last-Modified"]}).status_code == 304

    # Nothing more to push: a second round sends nothing.
    assert _worker(app).run_once(sweep=True).sent == 0
    assert len(apns.received) == 1

    # The log endpoint takes Wallet's error reports.
    assert client.post(f"{PASSKIT}/log", json={"logs": ["[2026-11-25] Web service error for pass"]}).status_code == 200

    # Unregister: 401 without the token; 200 with it; the device then has nothing to hear about.
    assert client.delete(member.registration(device)).status_code == 401
    assert client.delete(member.registration(device), headers=member.auth()).status_code == 200
    assert client.get(f"{PASSKIT}/devices/{device}/registrations/{member.pass_type}").status_code == 204
    _buy(client, committed_shop, member)
    _worker(app).run_once()
    assert len(apns.received) == 1


def test_one_push_per_registered_device_and_a_410_purges(
    app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit, member: Member, apns: LocalApns
) -> None:
    client = committed_client
    phone, watch = (_device(), _push_token()), (_device(), _push_token())
    for device, token in (phone, watch):
        assert client.post(member.registration(device), json={"pushToken": token},
                           headers=member.auth()).status_code == 201
    apns.respond(watch[1], 410)

    _buy(client, committed_shop, member)
    report = _worker(app).run_once()
    assert (report.sent, report.purged) == (1, 1)
    assert sorted(push.device_token for push in apns.wait_for(2)) == sorted([phone[1], watch[1]])

    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            devices = set(session.scalars(select(AppleDevice.library_id)))
            assert phone[0] in devices and watch[0] not in devices
            registered = session.scalars(select(AppleRegistration.device_id)
                                         .join(AppleDevice).where(AppleDevice.library_id == watch[0])).all()
            assert registered == []
            statuses = dict(session.execute(select(ApplePush.push_token, ApplePush.status)
                                            .where(ApplePush.push_token.in_([phone[1], watch[1]]))).all())
            assert statuses == {phone[1]: "sent", watch[1]: "purged"}
        finally:
            session.close()
    assert client.get(f"{PASSKIT}/devices/{watch[0]}/registrations/{member.pass_type}").status_code == 204

    # The next change pushes the phone only.
    _buy(client, committed_shop, member)
    _worker(app).run_once()
    assert [push.device_token for push in apns.wait_for(3)][2:] == [phone[1]]


def test_a_failed_push_is_retried_with_backoff(app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit,
                                               member: Member, apns: LocalApns) -> None:
    device, token = _device(), _push_token()
    committed_client.post(member.registration(device), json={"pushToken": token}, headers=member.auth())
    apns.respond(token, 500, 429, 200)
    _buy(committed_client, committed_shop, member)

    start = dt.datetime.now(dt.UTC)
    assert _worker(app).run_once(now=lambda: start).retrying == 1
    # Not due yet: nothing is sent again before the back-off has passed.
    assert _worker(app).run_once(now=lambda: start + dt.timedelta(seconds=10)).retrying == 0
    assert _worker(app).run_once(now=lambda: start + dt.timedelta(seconds=31)).retrying == 1
    assert _worker(app).run_once(now=lambda: start + dt.timedelta(seconds=31 + 61)).sent == 1
    assert [push.status for push in apns.wait_for(3)] == [500, 429, 200]


def test_a_purchase_does_not_wait_for_the_background_publisher(
    app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit, member: Member, apns: LocalApns,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the worker thread on (as in production) the push arrives by itself after the purchase commits."""
    device, token = _device(), _push_token()
    committed_client.post(member.registration(device), json={"pushToken": token}, headers=member.auth())
    monkeypatch.setitem(app.config, "PASS_UPDATE_WORKER", True)
    worker = _worker(app)
    try:
        _buy(committed_client, committed_shop, member)
        [push] = apns.wait_for(1, timeout=10)
        assert push.device_token == token
        # And a later pass fetch shows the balance the push announced.
        fetched = committed_client.get(member.pass_path(), headers=member.auth())
        assert _points(_pass_json(fetched.data))[0] > 0
    finally:
        worker.stop()


def test_changes_from_elsewhere_are_found_by_the_sweep(
    app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit, member: Member, apns: LocalApns
) -> None:
    """A card changed where this process cannot hear of it (another app server, or by hand in SQL) is
    republished by the sweep that the worker runs every SWEEP_SECONDS and `passes push` runs once."""
    device, token = _device(), _push_token()
    committed_client.post(member.registration(device), json={"pushToken": token}, headers=member.auth())
    with app.extensions["db"].engine.begin() as connection:
        connection.execute(update(Card).where(Card.serial == member.serial).values(status="revoked"))
    assert _worker(app).run_once().republished == 0  # nothing was noted in this process
    result = app.test_cli_runner().invoke(args=["passes", "push"])
    assert result.exit_code == 0, result.output
    assert "1 passes republished" in result.output and "1 sent" in result.output
    assert apns.wait_for(1)[0].device_token == token
    revoked = committed_client.get(member.pass_path(), headers=member.auth())
    assert _pass_json(revoked.data).get("voided") is True


def test_a_reissued_card_leaves_its_old_pass_behind(
    app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit, member: Member, apns: LocalApns
) -> None:
    device = _device()
    committed_client.post(member.registration(device), json={"pushToken": _push_token()}, headers=member.auth())
    runner = app.test_cli_runner()
    assert runner.invoke(args=["cards", "reissue", member.serial]).exit_code == 0
    # The old pass's token opens nothing now; its device has no passes left to hear about.
    assert committed_client.get(member.pass_path(), headers=member.auth()).status_code == 401
    assert committed_client.get(f"{PASSKIT}/devices/{device}/registrations/{member.pass_type}").status_code == 204


@pytest.mark.parametrize(("path", "body", "status"), [
    ("/devices/{device}/registrations/{type}/{serial}", {"pushToken": "not hex!"}, 422),
    ("/devices/{device}/registrations/{type}/{serial}", {}, 422),
    ("/devices/{device}/registrations/{type}/{serial}", None, 400),
    ("/devices/bad%20id/registrations/{type}/{serial}", {"pushToken": "ab"}, 422),
    ("/devices/{device}/registrations/{type}/NOTASERIAL", {"pushToken": "ab"}, 401),
    ("/log", {"logs": "not a list"}, 400),
    ("/log", None, 400),
])
def test_bad_requests_get_a_clear_answer_and_change_nothing(
    committed_client: FlaskClient, member: Member, path: str, body: dict[str, Any] | None, status: int
) -> None:
    url = PASSKIT + path.format(device=_device(), type=member.pass_type, serial=member.serial)
    response = committed_client.post(url, json=body, headers=member.auth()) if body is not None else \
        committed_client.post(url, data="{", headers={**member.auth(), "Content-Type": "application/json"})
    assert response.status_code == status
    assert response.mimetype == "application/problem+json" and response.json["detail"]


def test_bad_tags_are_refused(committed_client: FlaskClient, member: Member) -> None:
    response = committed_client.get(f"{PASSKIT}/devices/{_device()}/registrations/{member.pass_type}"
                                 "?passesUpdatedSince=yesterday")
    assert response.status_code == 422 and response.json["field"] == "passesUpdatedSince"


def test_tags_and_last_modified_strictly_increase(
    app: Flask, committed_client: FlaskClient, committed_shop: ProgramKit, member: Member, apns: LocalApns
) -> None:
    """Three changes within one second still give three later tags and three later Last-Modified dates."""
    device = _device()
    committed_client.post(member.registration(device), json={"pushToken": _push_token()}, headers=member.auth())
    tags, dates = [], []
    moment = dt.datetime.now(dt.UTC)
    for _ in range(3):
        _buy(committed_client, committed_shop, member, "1.00")
        _worker(app).run_once(now=lambda: moment)
        tags.append(int(committed_client.get(f"{PASSKIT}/devices/{device}/registrations/{member.pass_type}")
                        .json["lastUpdated"]))
        dates.append(parsedate_to_datetime(committed_client.get(member.pass_path(), headers=member.auth())
                                           .headers["Last-Modified"]))
    assert tags == sorted(set(tags)) and len(set(tags)) == 3
    assert dates == sorted(set(dates)) and len(set(dates)) == 3
    assert format_datetime(dates[0], usegmt=True)  # HTTP dates, whole seconds


def _verify_with_openssl(app: Flask, pkpass: bytes, tmp_path: Path) -> None:
    folder = tmp_path / f"pass-{time.monotonic_ns()}"
    with zipfile.ZipFile(io.BytesIO(pkpass)) as archive:
        archive.extractall(folder)
    ca = Path(app.config["APPLE_DEV_CERTS_DIR"]) / DEV_FILES["ca"]
    subprocess.run(["openssl", "smime", "-verify", "-inform", "DER", "-binary", "-in", str(folder / "signature"),
                    "-content", str(folder / "manifest.json"), "-purpose", "any", "-CAfile", str(ca),
                    "-out", "/dev/null"], check=True, capture_output=True)



def test_the_pass_lists_the_programs_running_offers(app: Flask, committed_client: FlaskClient,
                                                    committed_shop: ProgramKit, member: Member) -> None:
    """Member-only offers running now are on the pass (its back), with their benefit and terms; ended ones not."""
    now = dt.datetime.now(dt.UTC)
    with app.app_context():
        session = app.extensions["db"].sessionmaker()
        try:
            for title, ends in (("Pastry week", now + dt.timedelta(days=3)), ("Last month", now)):
                session.add(Offer(program_id=committed_shop.program.id, title=title, detail="Any pastry.",
                                  discount_type="percent", discount_value=2000, min_basket=0,
                                  starts_at=now - dt.timedelta(days=30), ends_at=ends, active=True))
            session.commit()
        finally:
            session.close()
    pass_json = _pass_json(committed_client.get(member.pass_url).data)
    back = " ".join(f"{item.get('label', '')} {item['value']}" for item in pass_json["storeCard"]["backFields"])
    assert "Pastry week: 20% off" in back and "Any pastry." in back
    assert "Last month" not in back
