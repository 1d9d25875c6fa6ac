"""The Rules page's mechanics: what members collect, second visit, stamp card, cashback, referrals, birthday
bonus and points expiry. Read as the manager types them, every bad field refused next to itself with nothing
saved, a good save read back by the engine (`mechanics_from_json`), and a change of kind confirmed when cards
already hold what the old kind gave them.
"""

from __future__ import annotations

import html as html_text
import re
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.errors import ValidationError
from app.domain.mechanics import (
    BirthdayRules,
    CashbackRules,
    ExpiryRules,
    MechanicsRules,
    ReferralRules,
    SecondVisitRules,
    StampRules,
    mechanics_from_json,
)
from app.domain.programs import create_staff
from app.domain.rules import ProgramRules, Tier
from app.domain.settings import MECHANIC_FIELDS, mechanics_form_values, mechanics_from_form
from app.models import Card, Program, Staff

PASSWORD = "correct horse battery"


# --- signing in and reading the form, as a browser does -------------------------------------------------------


class _FormReader(HTMLParser):
    """The Rules form's fields as a browser would submit them: text inputs, the checked radio and checkboxes,
    the selected option."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self._select: str | None = None
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and "settings-form" in a.get("class", ""):
            self._in_form = True
        if not self._in_form:
            return
        if tag == "input" and a.get("name") and a.get("name") != "csrf_token":
            kind = a.get("type", "text")
            if kind in ("radio", "checkbox"):
                if "checked" in a:
                    self.values[a["name"]] = a.get("value", "on")
            else:
                self.values[a["name"]] = a.get("value", "")
        elif tag == "select":
            self._select = a.get("name")
        elif tag == "option" and self._select and "selected" in a:
            self.values[self._select] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        if tag == "form":
            self._in_form = False


def read_form(html: str) -> dict[str, str]:
    reader = _FormReader()
    reader.feed(html)
    return reader.values


def csrf(client: FlaskClient, path: str = "/login") -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert match, f"{path} carries a CSRF token"
    return match.group(1)


def sign_in_manager(client: FlaskClient, db_session: Session, kit: Any) -> FlaskClient:
    """The test client, signed in (through the sign-in form) as a new manager of the kit's program."""
    staff: Staff = create_staff(db_session, kit.program, email=f"manager-{kit.program.slug}@example.com",
                                role="manager", password=PASSWORD)
    db_session.commit()
    response = client.post("/login", data={"csrf_token": csrf(client), "email": staff.email, "password": PASSWORD})
    assert response.status_code == 303, response.text
    return client


@pytest.fixture()
def manager_of(client: FlaskClient, db_session: Session) -> Callable[[Any], FlaskClient]:
    """manager_of(kit) -> the test client, signed in as a new manager of that program."""
    return lambda kit: sign_in_manager(client, db_session, kit)


def settings_form(client: FlaskClient) -> dict[str, str]:
    page = client.get("/manager/settings")
    assert page.status_code == 200
    return read_form(page.text)


def post_settings(client: FlaskClient, form: dict[str, str], action: str = "save"):  # type: ignore[no-untyped-def]
    return client.post("/manager/settings",
                       data={"csrf_token": csrf(client, "/manager/settings"), "action": action, **form})


def field_error(html: str, field: str) -> str:
    match = re.search(rf'data-error-for="{field}">([^<]*)<', html)
    assert match, f"an error is shown next to {field}"
    return html_text.unescape(match.group(1))


def reload(db_session: Session, program: Program) -> Program:
    db_session.expire_all()
    found = db_session.get(Program, program.id)
    assert found is not None
    return found


# A complete set of mechanics, as a manager types them (points program; bonuses in points).
GOOD_MECHANICS = {
    "second_visit_percent": "15", "second_visit_days": "7",
    "stamps_needed": "", "stamps_min_basket": "", "stamps_reward_label": "", "stamps_reward_value": "",
    "cashback_percent": "",
    "referral_referrer_bonus": "200", "referral_referee_bonus": "100",
    "birthday_bonus": "50", "birthday_grace_days": "3",
    "expiry_months": "12", "expiry_warn_days": "30",
}
STAMP_CARD = {"stamps_needed": "10", "stamps_min_basket": "5.00", "stamps_reward_label": "Free coffee",
              "stamps_reward_value": "3.50"}


# --- the page ---------------------------------------------------------------------------------------------------

def test_a_new_program_shows_every_mechanic_off(make_program, manager_of) -> None:
    form = settings_form(manager_of(make_program()))
    assert form["program_kind"] == "points"
    assert {name: form.get(name, "") for name in MECHANIC_FIELDS if name != "program_kind"} == \
        dict.fromkeys(set(MECHANIC_FIELDS) - {"program_kind"}, "")
    assert form["points_per_unit"] == "1" and form["tier_name_0"] == "Silver"  # the core rules are still there


# --- refusals: every field has its message, 422, nothing saved -----------------------------------------------------

BAD_FIELDS = [
    # (what the manager changed, the field refused, part of its message)
    ({"second_visit_percent": "abc"}, "second_visit_percent", "The second-visit discount is a percentage such as 5"),
    ({"second_visit_percent": "-5"}, "second_visit_percent", "The second-visit discount cannot be negative."),
    ({"second_visit_percent": "0"}, "second_visit_percent", "is more than 0%; clear both fields to turn it off"),
    ({"second_visit_percent": "150"}, "second_visit_percent", "The second-visit discount is at most 100%."),
    ({"second_visit_percent": ""}, "second_visit_percent", "Give the discount, such as 15"),
    ({"second_visit_days": ""}, "second_visit_days", "Give how many days after the first purchase"),
    ({"second_visit_days": "0"}, "second_visit_days", "The number of days is a whole number from 1 to 365."),
    ({"second_visit_days": "1.5"}, "second_visit_days", "The number of days is a whole number such as 0 or 50."),
    ({**STAMP_CARD, "stamps_needed": "0"}, "stamps_needed", "Stamps for a reward is a whole number from 1 to 100."),
    ({**STAMP_CARD, "stamps_needed": "ten"}, "stamps_needed", "Stamps for a reward is a whole number"),
    ({**STAMP_CARD, "stamps_needed": ""}, "stamps_needed", "Say how many stamps earn the reward"),
    ({**STAMP_CARD, "stamps_min_basket": "-1"}, "stamps_min_basket", "The minimum basket cannot be negative."),
    ({**STAMP_CARD, "stamps_reward_label": ""}, "stamps_reward_label", "Name the reward, such as Free coffee."),
    ({**STAMP_CARD, "stamps_reward_label": "x" * 65}, "stamps_reward_label", "at most 64 characters"),
    ({**STAMP_CARD, "stamps_reward_value": ""}, "stamps_reward_value", "Give the reward's value in EUR"),
    ({**STAMP_CARD, "stamps_reward_value": "0"}, "stamps_reward_value", "The reward's value is more than zero"),
    ({**STAMP_CARD, "stamps_reward_value": "3.505"}, "stamps_reward_value", "more decimals than EUR allows (2)"),
    ({**STAMP_CARD, "stamps_min_basket": "", "stamps_per_multiple": "on"}, "stamps_per_multiple",
     "A stamp per whole multiple needs a minimum basket above zero."),
    ({"program_kind": "stamps"}, "stamps_needed", "A stamp-card program needs its stamp card"),
    ({"program_kind": "cashback"}, "cashback_percent", "A cashback program needs its cashback share"),
    ({"program_kind": "gold"}, "program_kind", "Choose what members collect: points, stamps or cashback."),
    ({"cashback_percent": "-2"}, "cashback_percent", "The cashback share cannot be negative."),
    ({"cashback_percent": "0"}, "cashback_percent", "The cashback share is more than 0%"),
    ({"cashback_percent": "2,5"}, "cashback_percent", "The cashback share is a percentage such as 5 or 2.5."),
    ({"referral_referrer_bonus": "lots"}, "referral_referrer_bonus", "The referrer's bonus is a whole number"),
    ({"referral_referee_bonus": "-10"}, "referral_referee_bonus", "The new member's bonus cannot be negative."),
    ({"referral_referrer_bonus": "0", "referral_referee_bonus": "0"}, "referral_referrer_bonus",
     "Give at least one bonus above zero, or clear both"),
    # In a cashback program the bonuses are money.
    ({"program_kind": "cashback", "cashback_percent": "2", "referral_referrer_bonus": "1.505"},
     "referral_referrer_bonus", "more decimals than EUR allows (2)"),
    ({"birthday_bonus": "0"}, "birthday_bonus", "The birthday bonus is more than zero"),
    ({"birthday_bonus": ""}, "birthday_bonus", "Give the birthday bonus, or clear the days too"),
    ({"birthday_grace_days": "40"}, "birthday_grace_days", "The days of grace is a whole number from 0 to 31."),
    ({"expiry_months": "0"}, "expiry_months", "The months without a purchase is a whole number from 1 to 120."),
    ({"expiry_months": ""}, "expiry_months", "Give the months without a purchase after which points expire"),
    ({"expiry_months": "1", "expiry_warn_days": "28"}, "expiry_warn_days", "at most 27 days before, with 1 month."),
    ({"expiry_warn_days": "400"}, "expiry_warn_days", "The warning is a whole number from 0 to 365."),
]


@pytest.mark.parametrize(("changes", "field", "message"), BAD_FIELDS)
def test_a_bad_mechanic_is_refused_next_to_its_field_and_nothing_is_saved(
    make_program, manager_of, db_session: Session, changes: dict[str, str], field: str, message: str
) -> None:
    kit = make_program()
    client = manager_of(kit)
    rules_before, kind_before = dict(kit.program.rules), kit.program.kind
    # Good changes alongside the bad one: none of them is saved either.
    form = {**settings_form(client), **GOOD_MECHANICS, "points_per_unit": "3", **changes}
    response = post_settings(client, form)
    assert response.status_code == 422
    assert message in field_error(response.text, field)
    assert "Nothing was saved" in response.text
    assert re.search(rf'id="{field}[^"]*"[^>]*aria-invalid="true"', response.text)
    sent = read_form(response.text)
    for name, value in changes.items():  # what was typed stays, so it can be fixed (a radio shows only its choices)
        if name != "program_kind":
            assert sent.get(name, "") == value, name
    program = reload(db_session, kit.program)
    assert (program.rules, program.kind) == (rules_before, kind_before)


def test_every_bad_field_of_the_core_rules_and_the_mechanics_is_reported_at_once(make_program, manager_of) -> None:
    client = manager_of(make_program())
    form = {**settings_form(client), **GOOD_MECHANICS, "welcome_bonus": "-1", "second_visit_days": "",
            "cashback_percent": "x", "expiry_months": "0", "referral_referee_bonus": "1.5"}
    response = post_settings(client, form)
    assert response.status_code == 422
    assert "5 fields need fixing" in response.text
    for field in ("welcome_bonus", "second_visit_days", "cashback_percent", "expiry_months", "referral_referee_bonus"):
        assert field_error(response.text, field)


# --- a good save ------------------------------------------------------------------------------------------------

def test_a_good_save_is_what_the_engine_reads_and_the_form_shows_it_back(
    make_program, manager_of, db_session: Session
) -> None:
    kit = make_program()
    kit.program.rules = {**kit.program.rules, "from_a_newer_version": {"kept": True}}
    db_session.commit()
    client = manager_of(kit)
    form = {**settings_form(client), **GOOD_MECHANICS, **STAMP_CARD, "stamps_per_multiple": "on",
            "cashback_percent": "2.5", "second_visit_percent": "12.5"}
    response = post_settings(client, form)
    assert response.status_code == 303, response.text

    program = reload(db_session, kit.program)
    assert mechanics_from_json(program.rules) == MechanicsRules(
        program_type="points",
        base=ProgramRules(points_per_unit=Decimal(1), rounding="down",
                          tiers=(Tier("Silver", 10_000, 500), Tier("Gold", 50_000, 1000)),
                          welcome_bonus=50, point_value=1, redeem_max_percent=50),
        second_visit=SecondVisitRules(percent_bp=1250, within_days=7),
        stamps=StampRules(stamps_needed=10, min_basket=500, reward_label="Free coffee", reward_value=350,
                          per_multiple=True),
        cashback=CashbackRules(percent_bp=250),
        referral=ReferralRules(referrer_bonus=200, referee_bonus=100),
        birthday=BirthdayRules(bonus=50, grace_days=3),
        expiry=ExpiryRules(months=12, warn_days=30),
    )
    assert program.rules["from_a_newer_version"] == {"kept": True}  # keys this version does not know stay
    assert program.kind == "points"
    shown = settings_form(client)
    assert {name: shown.get(name, "") for name in form} == {**form, "stamps_per_multiple": "on"}


def test_clearing_a_mechanic_turns_it_off(make_program, manager_of, db_session: Session) -> None:
    kit = make_program()
    client = manager_of(kit)
    assert post_settings(client, {**settings_form(client), **GOOD_MECHANICS}).status_code == 303
    form = {**settings_form(client), "second_visit_percent": "", "second_visit_days": "", "expiry_months": "",
            "expiry_warn_days": ""}
    assert post_settings(client, form).status_code == 303
    rules = reload(db_session, kit.program).rules
    assert "second_visit" not in rules and "expiry" not in rules
    mechanics = mechanics_from_json(rules)
    assert (mechanics.second_visit, mechanics.expiry) == (None, None)
    assert mechanics.referral == ReferralRules(referrer_bonus=200, referee_bonus=100)  # the rest is untouched


def test_a_form_without_the_kind_keeps_the_programs_kind(make_program, manager_of, db_session: Session) -> None:
    kit = make_program()
    kit.program.rules = {**kit.program.rules, "cashback": {"percent_bp": 300}, "program_type": "cashback"}
    kit.program.kind = "cashback"
    db_session.commit()
    client = manager_of(kit)
    form = {k: v for k, v in settings_form(client).items() if k != "program_kind"}
    assert form["cashback_percent"] == "3"
    assert post_settings(client, {**form, "cashback_percent": "4"}).status_code == 303
    program = reload(db_session, kit.program)
    assert program.kind == "cashback"
    assert mechanics_from_json(program.rules).cashback == CashbackRules(percent_bp=400)


def test_bonuses_of_a_cashback_program_are_money(make_program, manager_of, db_session: Session) -> None:
    kit = make_program()
    client = manager_of(kit)  # no member yet: nothing is held, so the kind changes without a question
    form = {**settings_form(client), "program_kind": "cashback", "cashback_percent": "2",
            "referral_referrer_bonus": "5.00", "referral_referee_bonus": "2.50", "birthday_bonus": "1"}
    assert post_settings(client, form).status_code == 303
    program = reload(db_session, kit.program)
    assert program.kind == "cashback" and program.rules["program_type"] == "cashback"
    mechanics = mechanics_from_json(program.rules)
    assert mechanics.referral == ReferralRules(referrer_bonus=500, referee_bonus=250)
    assert mechanics.birthday == BirthdayRules(bonus=100)
    shown = settings_form(client)
    assert (shown["referral_referrer_bonus"], shown["birthday_bonus"]) == ("5.00", "1.00")
    assert 'checked' in re.search(r'<input type="radio" name="program_kind" id="program_kind_cashback"[^>]*>',
                                  client.get("/manager/settings").text).group(0)  # type: ignore[union-attr]


# --- changing what members collect ----------------------------------------------------------------------------

def test_changing_the_kind_while_cards_hold_points_asks_first_and_keeps_the_points(
    make_program, enroll, manager_of, db_session: Session
) -> None:
    kit = make_program()
    member = enroll(kit)  # 50 welcome points
    client = manager_of(kit)
    form = {**settings_form(client), **STAMP_CARD, "program_kind": "stamps"}

    asked = post_settings(client, form)
    assert asked.status_code == 422
    warning = field_error(asked.text, "program_kind")
    assert "from points to stamp card" in warning and "1 card holds 50 points in all" in warning
    assert "keep them and can still pay with them" in warning
    assert 'name="confirm_kind_change"' in asked.text
    program = reload(db_session, kit.program)
    assert program.kind == "points" and "stamps" not in program.rules

    confirmed = post_settings(client, {**read_form(asked.text), "confirm_kind_change": "yes"})
    assert confirmed.status_code == 303
    program = reload(db_session, kit.program)
    assert program.kind == "stamps"
    assert mechanics_from_json(program.rules).stamps == StampRules(10, 500, "Free coffee", 350)
    card = db_session.scalar(select(Card).where(Card.serial == member["serial"]))
    assert card is not None and card.points == 50  # kept, not converted or removed
    # Saving again with the same kind asks nothing.
    assert post_settings(client, settings_form(client)).status_code == 303


def test_the_confirmation_is_not_asked_for_when_nothing_is_held(make_program, manager_of, db_session: Session) -> None:
    kit = make_program()
    client = manager_of(kit)
    page = client.get("/manager/settings").text
    assert 'name="confirm_kind_change"' not in page
    response = post_settings(client, {**settings_form(client), **STAMP_CARD, "program_kind": "stamps"})
    assert response.status_code == 303
    assert reload(db_session, kit.program).kind == "stamps"


# --- the form's reading, without the app: a table of rule sets round-trips -------------------------------------

ROUND_TRIPS = [
    MechanicsRules(),
    MechanicsRules(second_visit=SecondVisitRules(1500, 7), referral=ReferralRules(200, 0),
                   birthday=BirthdayRules(25, 2), expiry=ExpiryRules(18, 14)),
    MechanicsRules(program_type="stamps", stamps=StampRules(8, 0, "Free bagel", 250),
                   referral=ReferralRules(1, 1)),
    MechanicsRules(program_type="stamps", stamps=StampRules(5, 1000, "Free lunch", 1200, per_multiple=True)),
    MechanicsRules(program_type="cashback", cashback=CashbackRules(125), referral=ReferralRules(500, 250),
                   birthday=BirthdayRules(300), base=ProgramRules(point_value=0, redeem_max_percent=100)),
]


@pytest.mark.parametrize("rules", ROUND_TRIPS)
def test_the_form_round_trips_stored_rules(rules: MechanicsRules) -> None:
    values = mechanics_form_values(rules, "EUR")
    assert mechanics_from_form(values, "EUR", current_kind="points") == rules


@pytest.mark.parametrize(("currency", "typed", "stored"), [("EUR", "2.50", 250), ("JPY", "300", 300),
                                                           ("KWD", "1.250", 1250)])
def test_money_in_the_mechanics_follows_the_currency(currency: str, typed: str, stored: int) -> None:
    values = mechanics_form_values(MechanicsRules(), currency) | {
        "program_kind": "cashback", "cashback_percent": "1", "referral_referrer_bonus": typed,
        **{**STAMP_CARD, "stamps_reward_value": typed, "stamps_min_basket": ""}}
    rules = mechanics_from_form(values, currency, current_kind="points")
    assert rules.referral == ReferralRules(referrer_bonus=stored, referee_bonus=0)
    assert rules.stamps is not None and rules.stamps.reward_value == stored
    assert mechanics_from_form(mechanics_form_values(rules, currency), currency, current_kind="points") == rules


def test_the_form_names_every_bad_mechanic() -> None:
    values = mechanics_form_values(replace(MechanicsRules(), second_visit=SecondVisitRules(1000, 3)), "EUR") | {
        "second_visit_days": "400", "program_kind": "stamps", "birthday_grace_days": "2", "cashback_percent": "101"}
    with pytest.raises(ValidationError) as caught:
        mechanics_from_form(values, "EUR", current_kind="points")
    assert set(caught.value.extra["errors"]) == {"second_visit_days", "stamps_needed", "birthday_bonus",
                                                 "cashback_percent"}
