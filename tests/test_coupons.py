"""Coupons, batches of single-use codes, member-only offers and the rewards catalogue, from the manager's side.

The form readers are pure: tables of bad input with the message each gets, no fixtures. The command line makes and
exports a batch of 5,000 codes; the manager's pages are driven over HTTP as a person would (signed in, with the
form's CSRF token), and the database is read afterwards.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.cli_coupons import GROUPS, coupons_cli, offers_cli, rewards_cli
from app.domain.coupons import (
    CHUNK,
    CODE_ALPHABET,
    EXPORT_HEADER,
    batch_code,
    batch_csv,
    create_batch,
    create_coupon,
    create_offer,
    create_reward,
    last_day,
    read_batch_form,
    read_coupon_form,
    read_offer_form,
    read_reward_form,
    window_text,
)
from app.domain.errors import ValidationError
from app.domain.mechanics import Discount
from app.domain.programs import create_staff
from app.models import Card, Coupon, CouponBatch, CouponUse, Offer, Program, Purchase, Reward, utcnow

PASSWORD = "correct horse battery"
TODAY = dt.date(2025, 3, 10)
UTC = dt.UTC
BATCH_CODE = re.compile(rf"[{CODE_ALPHABET}]{{10}}")


# --- the forms, read: tables, no fixtures -------------------------------------------------------------------------

GOOD_CODE = {"code": " spring 10 ", "discount_type": "percent", "discount": "10", "min_basket": "20.00",
             "valid_from": "2025-03-01", "valid_until": "2025-03-31", "per_member_limit": "2", "member_only": "on",
             "stackable": "", "label": ""}


def _errors(call: Callable[[], Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as raised:
        call()
    assert raised.value.detail.startswith("Nothing was saved")
    errors: dict[str, str] = raised.value.extra["errors"]
    return errors


def test_a_good_promo_code_is_read_into_minor_units_basis_points_and_utc_days() -> None:
    new = read_coupon_form(GOOD_CODE, "EUR", today=TODAY)
    assert new.code == "SPRING10"
    terms = new.terms
    assert terms.discount == Discount("percent", 1000)
    assert terms.min_basket == 2000
    # First day from 00:00 UTC (inclusive), last day through 23:59:59 (exclusive end the next midnight).
    assert terms.valid_from == dt.datetime(2025, 3, 1, tzinfo=UTC)
    assert terms.valid_until == dt.datetime(2025, 4, 1, tzinfo=UTC)
    assert (terms.per_member_limit, terms.member_only, terms.stackable) == (2, True, False)


@pytest.mark.parametrize(
    ("changes", "currency", "discount", "min_basket"),
    [
        ({"discount": "12.5"}, "EUR", Discount("percent", 1250), 2000),
        ({"discount": "0.01%"}, "EUR", Discount("percent", 1), 2000),
        ({"discount": "100"}, "EUR", Discount("percent", 10_000), 2000),
        ({"discount_type": "fixed", "discount": "5.00"}, "EUR", Discount("fixed", 500), 2000),
        ({"discount_type": "fixed", "discount": "5", "min_basket": ""}, "EUR", Discount("fixed", 500), 0),
        ({"discount_type": "fixed", "discount": "500", "min_basket": "2000"}, "JPY", Discount("fixed", 500), 2000),
        ({"min_basket": "0"}, "EUR", Discount("percent", 1000), 0),
    ],
)
def test_discounts_and_minimums_in_the_program_currency(changes: dict[str, str], currency: str, discount: Discount,
                                                        min_basket: int) -> None:
    terms = read_coupon_form({**GOOD_CODE, **changes}, currency, today=TODAY).terms
    assert (terms.discount, terms.min_basket) == (discount, min_basket)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("discount", "0", "more than 0"),
        ("discount", "100.5", "at most 100"),
        ("discount", "abc", "a number such as 10"),
        ("discount", "-5", "cannot be negative"),
        ("discount", "", "Give the percent off"),
        ("discount", "10.123", "at most 2 decimals"),
        ("discount_type", "", "Choose a percent off or an amount off"),
        ("discount_type", "bogus", "Choose a percent off or an amount off"),
        ("min_basket", "-1", "cannot be negative"),
        ("min_basket", "-0.50", "cannot be negative"),
        ("min_basket", "abc", "is an amount in EUR such as 5.00"),
        ("min_basket", "20.001", "more decimals than EUR allows"),
        ("valid_until", "2025-02-28", "before the first day (2025-03-01)"),
        ("valid_from", "2025-13-01", "is not a date"),
        ("valid_from", "1/3/2025", "give one as YYYY-MM-DD"),
        ("code", "SPRING-10!", "letters A-Z and digits only"),
        ("code", "ÉTÉ2025", "letters A-Z and digits only"),
        ("code", "AB", "3 to 32 letters and digits"),
        ("code", "X" * 33, "3 to 32 letters and digits"),
        ("code", "   ", "Give the code"),
        ("per_member_limit", "0", "whole number from 1"),
        ("per_member_limit", "two", "whole number from 1"),
        ("label", "x" * 201, "at most 200 characters"),
    ],
)
def test_a_bad_coupon_field_gets_its_own_message(field: str, value: str, message: str) -> None:
    errors = _errors(lambda: read_coupon_form({**GOOD_CODE, field: value}, "EUR", today=TODAY))
    assert list(errors) == [field]
    assert message in errors[field]


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"discount_type": "fixed", "discount": "0"}, "discount", "The amount off must be more than 0."),
        ({"discount_type": "fixed", "discount": "0.00"}, "discount", "The amount off must be more than 0."),
        ({"discount_type": "fixed", "discount": ""}, "discount", "Give the amount off in EUR"),
        ({"discount_type": "fixed", "discount": "5.5.5"}, "discount", "is an amount in EUR"),
        ({"discount_type": "fixed", "discount": "99999999999"}, "discount", "larger than the most"),
        ({"valid_from": "", "valid_until": "2025-03-09"}, "valid_until", "already past (today is 2025-03-10"),
    ],
)
def test_fixed_amounts_and_past_windows_are_refused(changes: dict[str, str], field: str, message: str) -> None:
    errors = _errors(lambda: read_coupon_form({**GOOD_CODE, **changes}, "EUR", today=TODAY))
    assert list(errors) == [field]
    assert message in errors[field]


def test_every_bad_coupon_field_is_reported_at_once() -> None:
    form = {**GOOD_CODE, "code": "no way!", "discount": "0", "min_basket": "-3", "valid_until": "2025-01-01",
            "per_member_limit": "x"}
    errors = _errors(lambda: read_coupon_form(form, "EUR", today=TODAY))
    assert set(errors) == {"code", "discount", "min_basket", "valid_until", "per_member_limit"}


def test_a_code_the_program_has_is_reported_with_the_other_fields() -> None:
    form = {**GOOD_CODE, "discount": "abc"}
    errors = _errors(lambda: read_coupon_form(form, "EUR", today=TODAY, code_taken=lambda code: f"{code} is taken"))
    assert errors == {"code": "SPRING10 is taken", "discount": errors["discount"]}


GOOD_BATCH = {"label": "Spring flyer", "count": "5000", "discount_type": "fixed", "discount": "5.00",
              "min_basket": "20", "valid_from": "", "valid_until": "2025-04-30", "member_only": "", "stackable": "on"}


def test_a_good_batch_is_read() -> None:
    new = read_batch_form({**GOOD_BATCH, "count": "5,000"}, "EUR", today=TODAY)
    assert (new.label, new.count) == ("Spring flyer", 5000)
    assert new.terms.discount == Discount("fixed", 500)
    assert (new.terms.valid_from, new.terms.valid_until) == (None, dt.datetime(2025, 5, 1, tzinfo=UTC))
    assert (new.terms.stackable, new.terms.member_only, new.terms.per_member_limit) == (True, False, None)
    assert new.terms.label == "Spring flyer"  # each code's line on the receipt


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("count", "0", "at least 1 code"),
        ("count", "100001", "from 1 to 100,000 codes"),
        ("count", "1000000000", "from 1 to 100,000 codes"),
        ("count", "-5", "whole number from 1 to 100,000"),
        ("count", "abc", "whole number from 1 to 100,000"),
        ("count", "", "How many codes?"),
        ("label", "", "Name the batch"),
        ("discount", "0", "more than 0"),
    ],
)
def test_a_bad_batch_field_gets_its_own_message(field: str, value: str, message: str) -> None:
    errors = _errors(lambda: read_batch_form({**GOOD_BATCH, field: value}, "EUR", today=TODAY))
    assert list(errors) == [field]
    assert message in errors[field]


GOOD_OFFER = {"title": "Members' week", "detail": "On all pastries", "discount_type": "percent", "discount": "15",
              "min_basket": "", "starts": "2025-03-12", "ends": "2025-03-18"}


def test_a_good_offer_is_read() -> None:
    new = read_offer_form(GOOD_OFFER, "EUR", today=TODAY)
    assert (new.title, new.detail, new.discount, new.min_basket) == ("Members' week", "On all pastries",
                                                                     Discount("percent", 1500), 0)
    assert (new.starts_at, new.ends_at) == (dt.datetime(2025, 3, 12, tzinfo=UTC), dt.datetime(2025, 3, 19, tzinfo=UTC))
    assert read_offer_form({**GOOD_OFFER, "starts": ""}, "EUR", today=TODAY).starts_at is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("title", "", "Give the offer a title"),
        ("detail", "x" * 501, "at most 500 characters"),
        ("ends", "", "Give the last day: an offer is time-boxed."),
        ("ends", "2025-03-11", "before the first day (2025-03-12)"),
        ("discount", "100.5", "at most 100"),
        ("min_basket", "-2", "cannot be negative"),
    ],
)
def test_a_bad_offer_field_gets_its_own_message(field: str, value: str, message: str) -> None:
    errors = _errors(lambda: read_offer_form({**GOOD_OFFER, field: value}, "EUR", today=TODAY))
    assert list(errors) == [field]
    assert message in errors[field]


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"name": "A free coffee", "points_cost": "150", "value": "3.20"}, ("A free coffee", 150, 320)),
        ({"name": " Cake ", "points_cost": "1,000", "value": "4"}, ("Cake", 1000, 400)),
    ],
)
def test_a_good_reward_is_read(form: dict[str, str], expected: tuple[str, int, int]) -> None:
    new = read_reward_form(form, "EUR")
    assert (new.name, new.points_cost, new.value) == expected


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "", "Name the reward"),
        ("points_cost", "0", "1 or more"),
        ("points_cost", "-3", "cannot be negative"),
        ("points_cost", "many", "whole number"),
        ("value", "0", "must be more than 0"),
        ("value", "", "Give the reward's value in EUR"),
        ("value", "abc", "is an amount in EUR"),
    ],
)
def test_a_bad_reward_field_gets_its_own_message(field: str, value: str, message: str) -> None:
    form = {"name": "A free coffee", "points_cost": "150", "value": "3.20", field: value}
    errors = _errors(lambda: read_reward_form(form, "EUR"))
    assert list(errors) == [field]
    assert message in errors[field]


@pytest.mark.parametrize(
    ("starts", "ends", "text"),
    [
        (dt.datetime(2025, 3, 1, tzinfo=UTC), dt.datetime(2025, 4, 1, tzinfo=UTC), "1 Mar 2025 to 31 Mar 2025"),
        (dt.datetime(2025, 3, 1, tzinfo=UTC), dt.datetime(2025, 3, 2, tzinfo=UTC), "on 1 Mar 2025 only"),
        (None, dt.datetime(2025, 4, 1, 12, tzinfo=UTC), "until 1 Apr 2025"),
        (dt.datetime(2025, 3, 1, tzinfo=UTC), None, "from 1 Mar 2025"),
        (None, None, ""),
    ],
)
def test_window_text_states_the_last_day_inclusive(starts: dt.datetime | None, ends: dt.datetime | None,
                                                   text: str) -> None:
    assert window_text(starts, ends) == text


def test_last_day_of_an_exclusive_end() -> None:
    assert last_day(dt.datetime(2025, 4, 1, tzinfo=UTC)) == dt.date(2025, 3, 31)
    assert last_day(dt.datetime(2025, 4, 1, 0, 0, 1, tzinfo=UTC)) == dt.date(2025, 4, 1)


def test_batch_codes_are_ten_unambiguous_characters_from_fifty_random_bits() -> None:
    assert batch_code(lambda n: b"\x00" * n) == "0000000000"
    assert batch_code(lambda n: b"\xff" * n) == "ZZZZZZZZZZ"
    codes = {batch_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(BATCH_CODE.fullmatch(code) for code in codes)
    assert not set("ILOU") & set("".join(codes))


# --- making them in the database ----------------------------------------------------------------------------------

NOW = dt.datetime(2025, 3, 10, 12, tzinfo=UTC)


def test_a_duplicate_code_is_refused_with_a_clear_message(make_program, db_session: Session) -> None:
    kit, other = make_program(), make_program()
    create_coupon(db_session, kit.program, GOOD_CODE, now=NOW)
    errors = _errors(lambda: create_coupon(db_session, kit.program, {**GOOD_CODE, "code": "Spring10"}, now=NOW))
    assert errors == {"code": "SPRING10 already exists in this program; choose another code, or use the one you "
                              "have."}
    # Codes are unique per program: another program may have its own SPRING10.
    assert create_coupon(db_session, other.program, GOOD_CODE, now=NOW).code == "SPRING10"
    assert db_session.scalar(select(func.count(Coupon.id)).where(Coupon.code == "SPRING10",
                                                                 Coupon.program_id == kit.program.id)) == 1


def test_a_batch_never_repeats_a_code_even_when_the_randomness_does(make_program, db_session: Session) -> None:
    kit = make_program()
    # Each random draw comes twice, and the very first code is already a promo code of the program.
    draws = (secrets.token_bytes(7) for _ in range(10_000))
    first = next(draws)
    taken = batch_code(lambda n: first)
    create_coupon(db_session, kit.program, {**GOOD_CODE, "code": taken}, now=NOW)
    repeated = iter([first, first, *(d for draw in draws for d in (draw, draw))])
    batch = create_batch(db_session, kit.program, {**GOOD_BATCH, "count": "1500"}, now=NOW,
                         random_bytes=lambda n: next(repeated))
    codes = db_session.scalars(select(Coupon.code).where(Coupon.batch_id == batch.id)).all()
    assert len(codes) == len(set(codes)) == 1500
    assert taken not in codes


# --- the command line ---------------------------------------------------------------------------------------------

def _invoke(runner: FlaskCliRunner, group: Any, *args: str) -> Any:
    return runner.invoke(group, list(args))


@pytest.mark.parametrize(
    ("group", "command"),
    [(group, name) for group in GROUPS for name in group.commands],
    ids=lambda value: value if isinstance(value, str) else value.name,
)
def test_every_command_has_help(runner: FlaskCliRunner, group: Any, command: str) -> None:
    result = _invoke(runner, group, command, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output
    assert len(result.output.split("\n\n")[1].strip()) > 10


def test_a_batch_of_5000_from_the_command_line_exports_as_csv(runner: FlaskCliRunner, make_program,
                                                              db_session: Session, tmp_path: Path) -> None:
    kit = make_program()
    slug = kit.program.slug
    made = _invoke(runner, coupons_cli, "batch", "--program", slug, "--count", "5000", "--percent", "10",
                   "--min-basket", "20.00", "--valid-until", "2099-12-31", "--member-only", "--label", "Spring flyer")
    assert made.exit_code == 0, made.output
    batch_id = int(made.stdout.strip())
    assert "Making 5,000 codes" in made.stderr  # the progress bar's label (the bar itself needs a terminal)
    assert f"Made 5,000 codes in batch {batch_id} (Spring flyer)" in made.stderr

    batch = db_session.get(CouponBatch, batch_id)
    assert batch is not None and (batch.program_id, batch.count, batch.label) == (kit.program.id, 5000, "Spring flyer")
    rows = db_session.execute(select(Coupon.code, Coupon.kind, Coupon.discount_type, Coupon.discount_value,
                                     Coupon.min_basket, Coupon.member_only, Coupon.valid_until)
                              .where(Coupon.batch_id == batch_id)).all()
    codes = [row.code for row in rows]
    assert len(codes) == len(set(codes)) == 5000
    assert all(BATCH_CODE.fullmatch(code) for code in codes)
    assert {row[1:] for row in rows} == {("single_use", "percent", 1000, 2000, True,
                                          dt.datetime(2100, 1, 1, tzinfo=UTC))}

    target = tmp_path / "spring.csv"
    exported = _invoke(runner, coupons_cli, "export", "--program", slug, "--batch", str(batch_id), "-o", str(target))
    assert exported.exit_code == 0, exported.output
    assert f"Wrote 5,000 codes of batch {batch_id}" in exported.stderr
    with target.open(newline="", encoding="utf-8") as file:
        table = list(csv.reader(file))
    assert tuple(table[0]) == EXPORT_HEADER
    assert len(table) == 5001
    assert sorted(row[0] for row in table[1:]) == sorted(codes)
    assert {tuple(row[1:]) for row in table[1:]} == {(
        "10% off, baskets from 20.00 EUR, until 31 Dec 2099 (UTC), members only, not combined with other codes",
        "10%", "20.00", "", "2099-12-31", "yes", "no", "yes", "no")}

    # Streamed: the header, then a piece per CHUNK rows, never the whole file at once.
    pieces = list(batch_csv(db_session, batch, "EUR"))
    assert len(pieces) == 1 + 5000 // CHUNK
    assert "".join(pieces) == target.read_bytes().decode("utf-8")
    to_stdout = _invoke(runner, coupons_cli, "export", "--program", slug, "--batch", str(batch_id))
    assert to_stdout.exit_code == 0 and to_stdout.stdout.count("\n") == 5001


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--count", "0", "--percent", "10"], "--count: A batch holds at least 1 code."),
        (["--count", "100001", "--percent", "10"], "--count: A batch holds from 1 to 100,000 codes"),
        (["--count", "5", "--percent", "0"], "--percent/--amount: A percent off is more than 0"),
        (["--count", "5", "--amount", "0"], "--percent/--amount: The amount off must be more than 0."),
        (["--count", "5"], "--percent/--amount: Choose a percent off or an amount off."),
        (["--count", "5", "--percent", "10", "--amount", "5"], "Give --percent or --amount, not both."),
        (["--count", "5", "--percent", "10", "--min-basket", "-1"], "--min-basket: The minimum basket cannot be"),
        (["--count", "5", "--percent", "10", "--valid-from", "2099-02-01", "--valid-until", "2099-01-01"],
         "--valid-until: The last day is before the first day (2099-02-01)."),
    ],
)
def test_a_bad_batch_option_is_named_and_nothing_is_saved(runner: FlaskCliRunner, make_program, db_session: Session,
                                                          args: list[str], message: str) -> None:
    kit = make_program()
    result = _invoke(runner, coupons_cli, "batch", "--program", kit.program.slug, "--label", "Flyer", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert db_session.scalar(select(func.count(CouponBatch.id)).where(CouponBatch.program_id == kit.program.id)) == 0


def test_codes_offers_and_rewards_from_the_command_line(runner: FlaskCliRunner, make_program,
                                                        db_session: Session) -> None:
    kit = make_program()
    slug = kit.program.slug
    created = _invoke(runner, coupons_cli, "create", "--program", slug, "--code", "spring10", "--amount", "5.00",
                      "--per-member-limit", "1", "--stackable")
    assert created.exit_code == 0, created.output
    assert created.stdout.strip() == "SPRING10"
    again = _invoke(runner, coupons_cli, "create", "--program", slug, "--code", "Spring10", "--percent", "5")
    assert again.exit_code == 1
    assert "--code: SPRING10 already exists in this program" in again.output
    listed = _invoke(runner, coupons_cli, "list", "--program", slug)
    assert "SPRING10\t0 uses\tactive\t5.00 EUR off, 1 per member, combines with other codes" in listed.stdout
    off = _invoke(runner, coupons_cli, "deactivate", "--program", slug, "--code", "spring 10")
    assert off.exit_code == 0, off.output
    assert db_session.scalar(select(Coupon.active).where(Coupon.program_id == kit.program.id)) is False
    missing = _invoke(runner, coupons_cli, "export", "--program", slug, "--batch", "999999")
    assert missing.exit_code == 1 and "has no batch of codes 999999" in missing.output

    revision = kit.program.pass_revision
    offer = _invoke(runner, offers_cli, "create", "--program", slug, "--title", "Members' week", "--percent", "15",
                    "--ends", "2099-01-31")
    assert offer.exit_code == 0, offer.output
    offer_id = int(offer.stdout)
    assert f"{offer_id}\trunning\tMembers' week\t15% off, until 31 Jan 2099 (UTC)" in _invoke(
        runner, offers_cli, "list", "--program", slug).stdout
    ended = _invoke(runner, offers_cli, "end", "--program", slug, str(offer_id))
    assert ended.exit_code == 0 and f"Offer {offer_id} (Members' week) has ended." in ended.stdout
    db_session.expire_all()
    assert db_session.get(Program, kit.program.id).pass_revision == revision + 2  # type: ignore[union-attr]

    reward = _invoke(runner, rewards_cli, "create", "--program", slug, "--name", "A free coffee", "--points", "150",
                     "--value", "3.20")
    assert reward.exit_code == 0, reward.output
    assert "A free coffee\t150 points\t3.20 EUR\tactive" in _invoke(runner, rewards_cli, "list", "--program",
                                                                    slug).stdout
    bad = _invoke(runner, rewards_cli, "create", "--program", slug, "--name", "", "--points", "0", "--value", "0")
    assert bad.exit_code == 1
    assert all(f"{option}: " in bad.output for option in ("--name", "--points", "--value"))


# --- the manager's pages ------------------------------------------------------------------------------------------

def _csrf(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, f"{path} carries a CSRF token"
    return match.group(1)


def _sign_in(client: FlaskClient, email: str) -> None:
    response = client.post("/login", data={"csrf_token": _csrf(client), "email": email, "password": PASSWORD})
    assert response.status_code == 303, response.text


@pytest.fixture()
def signed_in(client: FlaskClient, db_session: Session) -> Callable[..., FlaskClient]:
    """signed_in(kit, role="manager") -> the test client, signed in as new staff of that program."""
    def sign_in(kit: Any, role: str = "manager") -> FlaskClient:
        staff = create_staff(db_session, kit.program, email=f"{role}-{secrets.token_hex(4)}@example.com", role=role,
                             password=PASSWORD)
        db_session.commit()
        _sign_in(client, staff.email)
        return client
    return sign_in


def _post(client: FlaskClient, path: str, data: dict[str, str], page: str) -> Any:
    return client.post(path, data={"csrf_token": _csrf(client, page), **data})


def _field_error(html: str, field: str) -> str:
    match = re.search(rf'data-error-for="{field}">([^<]*)<', html)
    assert match, f"an error is shown next to {field}"
    return match.group(1)


def _count(db_session: Session, model: Any, program: Program) -> int:
    return db_session.scalar(select(func.count(model.id)).where(model.program_id == program.id)) or 0


@pytest.mark.parametrize(
    ("path", "empty"),
    [("/manager/coupons", ['data-empty="codes"', 'data-empty="batches"']),
     ("/manager/offers", ['data-empty="offers"']),
     ("/manager/rewards", ['data-empty="rewards"'])],
)
def test_empty_pages_say_what_to_do(make_program, signed_in, path: str, empty: list[str]) -> None:
    page = signed_in(make_program()).get(path)
    assert page.status_code == 200
    for marker in empty:
        assert marker in page.text
    assert re.findall(r'<a href="([^"]+)" aria-current="page">', page.text) == [path]  # its tab is the current one


def test_a_manager_creates_a_promo_code(make_program, signed_in, db_session: Session) -> None:
    kit = make_program()
    client = signed_in(kit)
    form = {"code": "spring10", "discount_type": "percent", "discount": "10", "min_basket": "20.00",
            "valid_from": "", "valid_until": "2099-03-31", "per_member_limit": "1", "stackable": "on"}
    created = _post(client, "/manager/coupons", form, "/manager/coupons")
    assert created.status_code == 303
    assert created.headers["Location"] == "/manager/coupons"
    page = client.get("/manager/coupons").text
    assert "SPRING10 is ready" in page
    assert re.search(r'<tr data-coupon="SPRING10" data-active="true" data-uses="0">', page)
    assert ("10% off, baskets from 20.00 EUR, until 31 Mar 2099 (UTC), 1 per member, combines with other codes"
            in page)
    coupon = db_session.scalar(select(Coupon).where(Coupon.program_id == kit.program.id))
    assert coupon is not None
    assert (coupon.code, coupon.kind, coupon.discount_type, coupon.discount_value, coupon.min_basket,
            coupon.valid_from, coupon.valid_until, coupon.per_member_limit, coupon.member_only, coupon.stackable) == (
        "SPRING10", "reusable", "percent", 1000, 2000, None, dt.datetime(2099, 4, 1, tzinfo=UTC), 1, False, True)


def test_a_bad_promo_code_form_names_every_field_and_saves_nothing(make_program, signed_in,
                                                                  db_session: Session) -> None:
    kit = make_program()
    client = signed_in(kit)
    form = {"code": "SPRING-10!", "discount_type": "percent", "discount": "100.5", "min_basket": "-1",
            "valid_from": "2099-03-10", "valid_until": "2099-03-01", "per_member_limit": "0"}
    response = _post(client, "/manager/coupons", form, "/manager/coupons")
    assert response.status_code == 422
    assert "Nothing was saved: 5 fields need fixing." in response.text
    assert "letters A-Z and digits only" in _field_error(response.text, "code")
    assert "at most 100" in _field_error(response.text, "discount")
    assert "cannot be negative" in _field_error(response.text, "min_basket")
    assert "before the first day" in _field_error(response.text, "valid_until")
    assert "whole number from 1" in _field_error(response.text, "per_member_limit")
    assert re.search(r'id="code"[^>]*value="SPRING-10!"', response.text)  # what was typed stays
    assert re.search(r'id="discount"[^>]*aria-invalid="true"', response.text)
    assert _count(db_session, Coupon, kit.program) == 0


def test_a_duplicate_code_on_the_page(make_program, signed_in, db_session: Session) -> None:
    kit = make_program()
    client = signed_in(kit)
    form = {"code": "WELCOME", "discount_type": "fixed", "discount": "2"}
    assert _post(client, "/manager/coupons", form, "/manager/coupons").status_code == 303
    again = _post(client, "/manager/coupons", {**form, "code": "welcome"}, "/manager/coupons")
    assert again.status_code == 422
    assert "WELCOME already exists in this program" in _field_error(again.text, "code")
    assert _count(db_session, Coupon, kit.program) == 1


def test_a_manager_makes_a_batch_and_downloads_it(make_program, signed_in, db_session: Session) -> None:
    kit = make_program()
    client = signed_in(kit)
    form = {"batch_label": "Mailing", "batch_count": "1,200", "batch_discount_type": "fixed",
            "batch_discount": "5.00", "batch_member_only": "on"}
    made = _post(client, "/manager/coupons/batches", form, "/manager/coupons")
    assert made.status_code == 303
    assert made.headers["Location"] == "/manager/coupons#batches"
    batch = db_session.scalar(select(CouponBatch).where(CouponBatch.program_id == kit.program.id))
    assert batch is not None and (batch.count, batch.label) == (1200, "Mailing")
    page = client.get("/manager/coupons").text
    assert "Made 1,200 single-use codes for Mailing." in page
    assert re.search(rf'<tr data-batch="{batch.id}" data-count="1200" data-used="0" data-active="1200">', page)
    link = f"/manager/coupons/batches/{batch.id}.csv"
    assert f'href="{link}"' in page

    download = client.get(link)
    assert download.status_code == 200
    assert download.is_streamed
    assert download.mimetype == "text/csv"
    assert f'filename="{kit.program.slug}-codes-{batch.id}.csv"' in download.headers["Content-Disposition"]
    table = list(csv.reader(io.StringIO(download.get_data(as_text=True))))
    assert tuple(table[0]) == EXPORT_HEADER and len(table) == 1201
    stored = set(db_session.scalars(select(Coupon.code).where(Coupon.batch_id == batch.id)))
    assert {row[0] for row in table[1:]} == stored
    assert {row[2] for row in table[1:]} == {"5.00"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("batch_count", "100001", "from 1 to 100,000 codes"), ("batch_count", "0", "at least 1 code"),
     ("batch_label", "", "Name the batch"), ("batch_discount", "abc", "a number such as 10")],
)
def test_a_bad_batch_form_saves_nothing(make_program, signed_in, db_session: Session, field: str, value: str,
                                        message: str) -> None:
    kit = make_program()
    client = signed_in(kit)
    form = {"batch_label": "Flyer", "batch_count": "10", "batch_discount_type": "percent", "batch_discount": "10",
            field: value}
    response = _post(client, "/manager/coupons/batches", form, "/manager/coupons")
    assert response.status_code == 422
    assert message in _field_error(response.text, field)
    assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', response.text)
    assert '<a href="/manager/coupons" aria-current="page">' in response.text
    assert _count(db_session, CouponBatch, kit.program) == 0
    assert _count(db_session, Coupon, kit.program) == 0


def _use(client: FlaskClient, kit: Any, enroll: Any, db_session: Session, coupon: Coupon) -> None:
    """Record a committed purchase's use of the coupon, as the till will."""
    member = enroll(kit)
    made = client.post("/api/v1/purchases", json={"code": member["code"], "amount": "30.00"},
                       headers=kit.purchase_headers())
    assert made.status_code == 201, made.json
    purchase = db_session.get(Purchase, made.json["id"])
    assert purchase is not None
    db_session.add(CouponUse(coupon_id=coupon.id, card_id=purchase.card_id, purchase_id=purchase.id, discount=300))
    db_session.commit()


def test_uses_are_counted_and_voided_uses_are_not(client: FlaskClient, make_program, enroll, signed_in,
                                                  db_session: Session) -> None:
    kit = make_program()
    code = create_coupon(db_session, kit.program, {**GOOD_CODE, "valid_from": "", "valid_until": ""}, now=utcnow())
    batch = create_batch(db_session, kit.program, {**GOOD_BATCH, "count": "3", "valid_until": ""}, now=utcnow())
    db_session.commit()
    first_of_batch = db_session.scalars(select(Coupon).where(Coupon.batch_id == batch.id).order_by(Coupon.id)).first()
    assert first_of_batch is not None
    _use(client, kit, enroll, db_session, code)
    _use(client, kit, enroll, db_session, code)
    _use(client, kit, enroll, db_session, first_of_batch)
    voided = CouponUse(coupon_id=code.id, card_id=db_session.scalars(select(Card.id)).first(),
                       purchase_id=db_session.scalars(select(Purchase.id)).first(), discount=100, voided_at=utcnow())
    db_session.add(voided)
    db_session.commit()

    page = signed_in(kit).get("/manager/coupons").text
    assert re.search(r'<tr data-coupon="SPRING10" data-active="true" data-uses="2">', page)
    assert re.search(rf'<tr data-batch="{batch.id}" data-count="3" data-used="1" data-active="3">', page)
    table = list(csv.reader(io.StringIO("".join(batch_csv(db_session, batch, "EUR")))))
    assert {row[0]: row[-1] for row in table[1:]}[first_of_batch.code] == "yes"
    assert sorted(row[-1] for row in table[1:]) == ["no", "no", "yes"]


def test_deactivate_and_reactivate_codes_and_batches(make_program, signed_in, db_session: Session) -> None:
    kit = make_program()
    coupon = create_coupon(db_session, kit.program, {**GOOD_CODE, "valid_from": "", "valid_until": ""}, now=utcnow())
    batch = create_batch(db_session, kit.program, {**GOOD_BATCH, "count": "4", "valid_until": ""}, now=utcnow())
    db_session.commit()
    client = signed_in(kit)

    off = _post(client, f"/manager/coupons/{coupon.id}/deactivate", {}, "/manager/coupons")
    assert off.status_code == 303
    page = client.get("/manager/coupons").text
    assert "SPRING10 is switched off" in page
    assert re.search(r'<tr data-coupon="SPRING10" data-active="false"', page)
    assert f"/manager/coupons/{coupon.id}/reactivate" in page
    db_session.expire_all()
    assert db_session.get(Coupon, coupon.id).active is False  # type: ignore[union-attr]
    assert _post(client, f"/manager/coupons/{coupon.id}/reactivate", {}, "/manager/coupons").status_code == 303
    db_session.expire_all()
    assert db_session.get(Coupon, coupon.id).active is True  # type: ignore[union-attr]

    assert _post(client, f"/manager/coupons/batches/{batch.id}/deactivate", {}, "/manager/coupons").status_code == 303
    assert set(db_session.scalars(select(Coupon.active).where(Coupon.batch_id == batch.id))) == {False}
    assert re.search(rf'data-batch="{batch.id}" data-count="4" data-used="0" data-active="0"',
                     client.get("/manager/coupons").text)
    assert _post(client, f"/manager/coupons/batches/{batch.id}/reactivate", {}, "/manager/coupons").status_code == 303
    assert set(db_session.scalars(select(Coupon.active).where(Coupon.batch_id == batch.id))) == {True}


def test_offers_run_come_and_end_and_republish_the_passes(make_program, signed_in, db_session: Session) -> None:
    kit = make_program()
    client = signed_in(kit)
    revision = kit.program.pass_revision
    today = utcnow().date()
    form = {"title": "Members' week", "detail": "Pastries", "discount_type": "percent", "discount": "15",
            "starts": "", "ends": (today + dt.timedelta(days=6)).isoformat()}
    created = _post(client, "/manager/offers", form, "/manager/offers")
    assert created.status_code == 303
    upcoming = {**form, "title": "Summer", "discount_type": "fixed", "discount": "3", "min_basket": "10",
                "starts": (today + dt.timedelta(days=30)).isoformat(),
                "ends": (today + dt.timedelta(days=40)).isoformat()}
    assert _post(client, "/manager/offers", upcoming, "/manager/offers").status_code == 303
    db_session.expire_all()
    assert _reload(db_session, kit.program).pass_revision == revision + 2

    offers = {o.title: o for o in db_session.scalars(select(Offer).where(Offer.program_id == kit.program.id))}
    week = offers["Members' week"]
    assert (week.discount_type, week.discount_value, week.starts_at, week.active) == ("percent", 1500, None, True)
    assert week.ends_at == dt.datetime.combine(today + dt.timedelta(days=7), dt.time(), UTC)
    page = client.get("/manager/offers").text
    assert f'<tr data-offer="{week.id}" data-status="running">' in page
    assert f'<tr data-offer="{offers["Summer"].id}" data-status="upcoming">' in page
    assert "3.00 EUR off, baskets from 10.00 EUR" in page
    assert 'data-empty="ended"' in page

    ended = _post(client, f"/manager/offers/{week.id}/end", {}, "/manager/offers")
    assert ended.status_code == 303
    page = client.get("/manager/offers").text
    assert "Members&#39; week has ended." in page
    assert f'<tr data-offer="{week.id}" data-status="ended">' in page
    db_session.expire_all()
    week = db_session.get(Offer, week.id)  # type: ignore[assignment]
    assert week.active is False and week.ends_at is not None and week.ends_at <= utcnow()
    assert _reload(db_session, kit.program).pass_revision == revision + 3
    # Ending it again changes nothing, not even the passes.
    assert _post(client, f"/manager/offers/{week.id}/end", {}, "/manager/offers").status_code == 303
    assert "had already ended" in client.get("/manager/offers").text
    assert _reload(db_session, kit.program).pass_revision == revision + 3


def test_a_bad_offer_saves_nothing_and_leaves_the_passes(make_program, signed_in, db_session: Session) -> None:
    kit = make_program()
    client = signed_in(kit)
    revision = kit.program.pass_revision
    response = _post(client, "/manager/offers", {"title": "", "discount_type": "percent", "discount": "0",
                                                 "ends": "2000-01-01"}, "/manager/offers")
    assert response.status_code == 422
    assert "3 fields need fixing" in response.text
    assert "Give the offer a title" in _field_error(response.text, "title")
    assert "more than 0" in _field_error(response.text, "discount")
    assert "already past" in _field_error(response.text, "ends")
    assert _count(db_session, Offer, kit.program) == 0
    assert _reload(db_session, kit.program).pass_revision == revision


def test_the_rewards_catalogue(make_program, signed_in, db_session: Session) -> None:
    kit = make_program()
    client = signed_in(kit)
    bad = _post(client, "/manager/rewards", {"name": "A free coffee", "points_cost": "0", "value": "0"},
                "/manager/rewards")
    assert bad.status_code == 422
    assert "1 or more" in _field_error(bad.text, "points_cost")
    assert "must be more than 0" in _field_error(bad.text, "value")
    assert _count(db_session, Reward, kit.program) == 0

    good = _post(client, "/manager/rewards", {"name": "A free coffee", "points_cost": "150", "value": "3.20"},
                 "/manager/rewards")
    assert good.status_code == 303
    reward = db_session.scalar(select(Reward).where(Reward.program_id == kit.program.id))
    assert reward is not None and (reward.name, reward.points_cost, reward.value, reward.active) == (
        "A free coffee", 150, 320, True)
    page = client.get("/manager/rewards").text
    assert "A free coffee is in the catalogue for 150 points." in page
    assert f'<tr data-reward="{reward.id}" data-active="true">' in page and "3.20 EUR" in page

    assert _post(client, f"/manager/rewards/{reward.id}/deactivate", {}, "/manager/rewards").status_code == 303
    assert f'<tr data-reward="{reward.id}" data-active="false">' in client.get("/manager/rewards").text
    assert _post(client, f"/manager/rewards/{reward.id}/reactivate", {}, "/manager/rewards").status_code == 303
    db_session.expire_all()
    assert db_session.get(Reward, reward.id).active is True  # type: ignore[union-attr]


# --- who may --------------------------------------------------------------------------------------------------------

PAGES = ["/manager/coupons", "/manager/offers", "/manager/rewards"]
FORMS = [
    ("/manager/coupons", {"code": "CASHIER", "discount_type": "percent", "discount": "50"}, Coupon),
    ("/manager/coupons/batches", {"batch_label": "x", "batch_count": "5", "batch_discount_type": "percent",
                                  "batch_discount": "50"}, CouponBatch),
    ("/manager/offers", {"title": "x", "discount_type": "percent", "discount": "50", "ends": "2099-01-01"}, Offer),
    ("/manager/rewards", {"name": "x", "points_cost": "1", "value": "100"}, Reward),
]


@pytest.mark.parametrize("path", PAGES)
def test_a_cashier_gets_403_and_anonymous_is_sent_to_sign_in(app: Flask, make_program, signed_in, path: str) -> None:
    anonymous = app.test_client().get(path)
    assert anonymous.status_code == 302 and anonymous.headers["Location"].startswith("/login?next=")
    assert signed_in(make_program(), "cashier").get(path).status_code == 403


@pytest.mark.parametrize(("path", "form", "model"), FORMS)
def test_a_cashier_cannot_post_and_a_form_without_csrf_is_refused(make_program, signed_in, db_session: Session,
                                                                 path: str, form: dict[str, str], model: Any) -> None:
    kit = make_program()
    cashier = signed_in(kit, "cashier")
    token = _csrf(cashier, "/cashier")
    assert cashier.post(path, data={"csrf_token": token, **form}).status_code == 403
    cashier.post("/logout", data={"csrf_token": token})
    manager = signed_in(kit)
    assert manager.post(path, data=form).status_code == 400  # no CSRF token
    assert _count(db_session, model, kit.program) == 0


def test_a_manager_reaches_only_their_own_programs_coupons(make_program, signed_in, db_session: Session) -> None:
    ours, theirs = make_program(), make_program()
    coupon = create_coupon(db_session, ours.program, {**GOOD_CODE, "valid_from": "", "valid_until": ""}, now=utcnow())
    batch = create_batch(db_session, ours.program, {**GOOD_BATCH, "count": "2", "valid_until": ""}, now=utcnow())
    offer_form = {**GOOD_OFFER, "starts": "", "ends": "2099-01-01"}
    offer = create_offer(db_session, ours.program, offer_form, now=utcnow())
    reward = create_reward(db_session, ours.program, {"name": "Tea", "points_cost": "5", "value": "1"}, now=utcnow())
    db_session.commit()
    client = signed_in(theirs)
    page = client.get("/manager/coupons").text
    assert 'data-coupon="SPRING10"' not in page and f'data-batch="{batch.id}"' not in page
    assert 'data-empty="codes"' in page
    assert client.get(f"/manager/coupons/batches/{batch.id}.csv").status_code == 404
    for path, page in [(f"/manager/coupons/{coupon.id}/deactivate", "/manager/coupons"),
                       (f"/manager/coupons/batches/{batch.id}/deactivate", "/manager/coupons"),
                       (f"/manager/offers/{offer.id}/end", "/manager/offers"),
                       (f"/manager/rewards/{reward.id}/deactivate", "/manager/rewards")]:
        assert _post(client, path, {}, page).status_code == 404, path
    db_session.expire_all()
    assert db_session.get(Coupon, coupon.id).active  # type: ignore[union-attr]
    assert set(db_session.scalars(select(Coupon.active).where(Coupon.batch_id == batch.id))) == {True}
    assert db_session.get(Offer, offer.id).active  # type: ignore[union-attr]
    assert db_session.get(Reward, reward.id).active  # type: ignore[union-attr]


def _reload(db_session: Session, program: Program) -> Program:
    db_session.expire_all()
    found = db_session.get(Program, program.id)
    assert found is not None
    return found
