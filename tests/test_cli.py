"""Operator commands, invoked as an operator would: `flask --app wsgi <group> <command>`."""

from __future__ import annotations

import pytest
from flask.testing import FlaskCliRunner
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.domain.programs import authenticate_api_key
from app.models import ApiKey, Card, Location, Program, SigningKey, Staff

COMMANDS = [
    ["db", "upgrade"], ["programs", "create"], ["locations", "create"], ["staff", "create"],
    ["api-keys", "create"], ["api-keys", "revoke"], ["keys", "rotate"], ["keys", "remove"],
    ["cards", "revoke"], ["cards", "reissue"], ["ledger", "check"], ["demo"],
    ["programs", "rotating-codes"], ["passes", "dev-certs"], ["passes", "dev-google-key"], ["passes", "push"],
    ["coupons", "create"], ["coupons", "batch"], ["coupons", "export"], ["coupons", "list"],
    ["coupons", "deactivate"], ["coupons", "reactivate"], ["offers", "create"], ["offers", "list"], ["offers", "end"],
    ["rewards", "create"], ["rewards", "list"], ["points", "birthday"], ["points", "expire"],
    ["points", "warn-expiry"], ["export", "members"], ["export", "purchases"], ["export", "ledger"],
    ["stats", "refresh"], ["stats", "rebuild"], ["stats", "summary"], ["reminders", "send"], ["reminders", "list"],
    ["nps", "send"], ["synth"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(runner: FlaskCliRunner, command: list[str]) -> None:
    result = runner.invoke(args=[*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    docstring_first_line = result.output.split("\n\n")[1].strip()
    assert len(docstring_first_line) > 10


def test_set_up_a_program_from_the_command_line(runner: FlaskCliRunner, db_session: Session) -> None:
    created = runner.invoke(args=["programs", "create", "--name", "Corner Coffee", "--currency", "eur"])
    assert created.exit_code == 0, created.output
    slug = created.stdout.strip()
    assert slug.startswith("corner-coffee")
    program = db_session.scalar(select(Program).where(Program.slug == slug))
    assert program is not None and program.currency == "EUR"
    assert db_session.scalar(select(SigningKey).where(SigningKey.program_id == program.id)).status == "active"

    location = runner.invoke(args=["locations", "create", "--program", slug, "--name", "Station"])
    assert location.exit_code == 0, location.output
    assert db_session.get(Location, int(location.stdout)) is not None

    staff = runner.invoke(args=["staff", "create", "--program", slug, "--email", "Ana@Example.com",
                                "--role", "cashier"], input="a long enough password\n")
    assert staff.exit_code == 0, staff.output
    member = db_session.scalar(select(Staff).where(Staff.email == "ana@example.com"))
    assert member is not None and member.role == "cashier"
    assert "a long enough password" not in member.password_hash
    assert member.password_hash.startswith("scrypt:")

    key = runner.invoke(args=["api-keys", "create", "--program", slug, "--location", "Station"])
    assert key.exit_code == 0, key.output
    secret = key.stdout.strip()
    assert "\n" not in secret and secret.startswith("lk_")
    api_key = authenticate_api_key(db_session, secret)
    assert secret.split("_", 2)[2] not in api_key.secret_hash

    revoked = runner.invoke(args=["api-keys", "revoke", api_key.key_id])
    assert revoked.exit_code == 0, revoked.output
    assert db_session.scalar(select(ApiKey.revoked_at).where(ApiKey.id == api_key.id)) is not None


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["programs", "create", "--name", "X", "--currency", "ZZZ"], None, "Invalid value for '--currency'"),
        (["programs", "create", "--name", "  ", "--currency", "EUR"], None, "needs a name"),
        (["locations", "create", "--program", "nope", "--name", "A"], None, "No program 'nope'"),
        (["staff", "create", "--program", "nope", "--email", "a@b.co", "--role", "cashier"], "x" * 12 + "\n",
         "No program"),
        (["api-keys", "revoke", "nope"], None, "No API key 'nope'"),
        (["keys", "rotate", "--program", "nope"], None, "No program"),
        (["keys", "remove", "abcdef"], None, "No signing key"),
        (["cards", "revoke", "NOPE"], None, "No card with serial"),
        (["cards", "reissue", "NOPE"], None, "No card with serial"),
    ],
)
def test_bad_arguments_get_a_one_line_error(runner: FlaskCliRunner, args: list[str], stdin: str | None,
                                            message: str) -> None:
    result = runner.invoke(args=args, input=stdin)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_staff_password_too_short_is_refused(runner: FlaskCliRunner, make_program, db_session: Session) -> None:
    kit = make_program()
    result = runner.invoke(args=["staff", "create", "--program", kit.program.slug, "--email", "bo@example.com",
                                 "--role", "manager"], input="short\n")
    assert result.exit_code == 1
    assert "at least 10 characters" in result.output
    assert db_session.scalar(select(Staff).where(Staff.email == "bo@example.com")) is None


def test_ledger_check_finds_a_tampered_balance(runner: FlaskCliRunner, make_program, enroll,
                                               db_session: Session) -> None:
    kit = make_program()
    member = enroll(kit)
    clean = runner.invoke(args=["ledger", "check"])
    assert clean.exit_code == 0, clean.output
    db_session.execute(update(Card).where(Card.serial == member["serial"]).values(points=Card.points + 7))
    db_session.commit()
    dirty = runner.invoke(args=["ledger", "check"])
    assert dirty.exit_code == 1
    assert f"MISMATCH card {member['serial']}: balance 57, ledger sum 50" in dirty.output


def test_demo_prints_credentials_once(runner: FlaskCliRunner, client, db_session: Session) -> None:
    first = runner.invoke(args=["demo"])
    assert first.exit_code == 0, first.output
    assert "manager@demo.example / " in first.output
    assert "cashier@demo.example / " in first.output
    api_key = next(line.split()[-1] for line in first.output.splitlines() if line.strip().startswith("API key"))
    code = next(line.split()[-1] for line in first.output.splitlines() if "Their card code" in line)
    scan = client.post("/api/v1/scans", json={"code": code}, headers={"Authorization": f"Bearer {api_key}"})
    assert scan.status_code == 200
    assert scan.json["display_name"] == "Amina K."

    second = runner.invoke(args=["demo"])
    assert second.exit_code == 0
    assert "already set up" in second.output
    assert "/ " not in second.output
