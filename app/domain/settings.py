"""The manager's Rules form: what a person types, read into the program's rules, with a message for each bad
field, and the save that stores them.

People think in the program currency and in percent ("Silver from 100.00 EUR, 5% off"); the stored rules are
minor units and basis points (app/domain/rules.py, app/domain/mechanics.py). This module converts both ways.
Every bad field is reported at once, so the manager fixes the form in one go; the messages travel as
`ValidationError.extra["errors"]`, keyed by the form field's name. Only the last section touches the database:
what cards hold when the program's kind changes, and the save.

The mechanics follow one rule: a mechanic whose fields are all blank is off, and its key leaves Program.rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.domain.errors import ValidationError
from app.domain.mechanics import PROGRAM_TYPES, MechanicsRules, mechanics_from_json
from app.domain.money import currency_exponent, format_amount, parse_amount
from app.domain.nps import DEFAULT_INTERVAL_DAYS, nps_settings
from app.domain.programs import update_program_rules
from app.domain.rules import ROUNDING_MODES, ProgramRules, rules_from_json
from app.domain.segments import DEFAULT_LAPSED_DAYS, DEFAULT_NEW_DAYS, MAX_SEGMENT_DAYS, segment_settings
from app.models import Card, Program

ROUNDING_LABELS = {"down": "Round down", "half_up": "Round to nearest (half up)", "up": "Round up"}
# The form shows the program's tiers plus blank rows to add more; a blank row is ignored, which removes a tier.
BLANK_TIER_ROWS = 3
MIN_TIER_ROWS = 5
MAX_TIER_ROWS = 20
TIER_NAME_MAX = 64  # Card.tier's column width

_RATE = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,4})?")
_PERCENT = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,2})?")
_WHOLE = re.compile(r"[0-9]{1,9}")
_ZERO = re.compile(r"0+(?:\.0*)?")
_AMOUNT = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def tier_row_count(rules: ProgramRules) -> int:
    return min(max(len(rules.tiers) + BLANK_TIER_ROWS, MIN_TIER_ROWS), MAX_TIER_ROWS)


def rules_form_values(rules: ProgramRules, currency: str) -> dict[str, str]:
    """The form's fields filled in from stored rules, as a person would type them."""
    values = {
        "points_per_unit": _plain_decimal(rules.points_per_unit),
        "rounding": rules.rounding,
        "welcome_bonus": str(rules.welcome_bonus),
        "point_value": format_amount(rules.point_value, currency),
        "redeem_max_percent": str(rules.redeem_max_percent),
    }
    for index in range(tier_row_count(rules)):
        tier = rules.tiers[index] if index < len(rules.tiers) else None
        values[f"tier_name_{index}"] = tier.name if tier else ""
        values[f"tier_min_spend_{index}"] = format_amount(tier.min_spend, currency) if tier else ""
        values[f"tier_discount_{index}"] = _plain_decimal(Decimal(tier.discount_bp) / 100) if tier else ""
    return values


def rules_from_form(form: Mapping[str, str], currency: str) -> ProgramRules:
    """Read the submitted form's core rules (earning, tiers, welcome bonus, redemption), or raise
    ValidationError listing every bad field."""
    errors: dict[str, str] = {}
    stored = _base_rules_json(form, currency, errors)
    _refuse_if_any(errors)
    # The stored form's own validation has the last word, so the form can never save what the engine refuses.
    return rules_from_json(stored)


def _base_rules_json(form: Mapping[str, str], currency: str, errors: dict[str, str]) -> dict[str, Any]:
    """The core rules' stored form (app/domain/rules.py), adding a message to `errors` for each bad field."""

    def field(name: str) -> str:
        return (form.get(name) or "").strip()

    rate = _earn_rate(field("points_per_unit"), currency, errors)
    rounding = field("rounding")
    if rounding not in ROUNDING_MODES:
        errors["rounding"] = "Choose how points are rounded."
    welcome = _whole(field("welcome_bonus"), "welcome_bonus", "The welcome bonus", errors)
    point_value = _amount_or_zero(field("point_value"), currency, "point_value", "A point's value", errors)
    max_percent = _whole(field("redeem_max_percent"), "redeem_max_percent", "The redemption cap", errors)
    if max_percent is not None and max_percent > 100:
        errors["redeem_max_percent"] = "The redemption cap is a percentage: at most 100."

    tiers: list[dict[str, Any]] = []
    seen_names: dict[str, str] = {}
    seen_spends: dict[int, str] = {}
    for index in range(MAX_TIER_ROWS):
        keys = (f"tier_name_{index}", f"tier_min_spend_{index}", f"tier_discount_{index}")
        name, spend_text, discount_text = (field(key) for key in keys)
        if not (name or spend_text or discount_text):
            continue  # a blank row: nothing to add, or a tier the manager removed
        if not name:
            errors[keys[0]] = "Give this tier a name, or clear the whole row to remove it."
        elif len(name) > TIER_NAME_MAX:
            errors[keys[0]] = f"A tier name has at most {TIER_NAME_MAX} characters."
        elif name.casefold() in seen_names:
            errors[keys[0]] = f"Another tier is already called {seen_names[name.casefold()]}."
        else:
            seen_names[name.casefold()] = name
        if not spend_text:
            min_spend = None
            errors[keys[1]] = f"Give the lifetime spend (in {currency}) that reaches this tier."
        else:
            min_spend = _amount_or_zero(spend_text, currency, keys[1], "The minimum spend", errors)
        if min_spend is not None:
            if min_spend in seen_spends:
                errors[keys[1]] = f"{seen_spends[min_spend]} already starts at this spend; give each tier its own."
            else:
                seen_spends[min_spend] = name
        discount_bp = _percent(discount_text or "0", keys[2], errors)
        if keys[0] not in errors and min_spend is not None and discount_bp is not None:
            tiers.append({"name": name, "min_spend": min_spend, "discount_bp": discount_bp})

    return {
        "earn": {"points_per_unit": str(rate), "rounding": rounding},
        "tiers": tiers,
        "welcome_bonus": welcome,
        "redeem": {"point_value": point_value, "max_percent": max_percent},
    }


def _refuse_if_any(errors: dict[str, str]) -> None:
    if errors:
        count = len(errors)
        raise ValidationError(
            f"Nothing was saved: {count} field{'s' if count > 1 else ''} need{'' if count > 1 else 's'} fixing.",
            field=next(iter(errors)),
            errors=errors,
        )


# --- The mechanics: the program's kind, second visit, stamp card, cashback, referral, birthday, expiry ------------

# The Program.rules keys the mechanics own (app/domain/mechanics.py MechanicsRules.to_json). A save replaces them
# all, so a mechanic left blank is removed, while keys nobody here knows are kept.
MECHANIC_KEYS = ("program_type", "second_visit", "stamps", "cashback", "referral", "birthday", "expiry")
KIND_LABELS = {"points": "Points", "stamps": "Stamp card", "cashback": "Cashback"}
KIND_HINTS = {
    "points": "Members earn points on what they pay and can pay with them.",
    "stamps": "A purchase over the minimum adds a stamp; a full card gives a reward voucher.",
    "cashback": "A share of what members pay is credited as money they can spend on later purchases.",
}
MECHANIC_FIELDS = (
    "program_kind",
    "second_visit_percent", "second_visit_days",
    "stamps_needed", "stamps_min_basket", "stamps_reward_label", "stamps_reward_value", "stamps_per_multiple",
    "cashback_percent",
    "referral_referrer_bonus", "referral_referee_bonus",
    "birthday_bonus", "birthday_grace_days",
    "expiry_months", "expiry_warn_days",
)
MAX_SECOND_VISIT_DAYS = 365
MAX_STAMPS_NEEDED = 100
REWARD_LABEL_MAX = 64
MAX_BIRTHDAY_GRACE_DAYS = 31
MAX_EXPIRY_MONTHS = 120
MAX_EXPIRY_WARN_DAYS = 365


def bonus_unit_label(kind: str, currency: str) -> str:
    """What the referral and birthday bonuses are counted in, which follows the program's kind."""
    return {"points": "points", "stamps": "stamps"}.get(kind, currency)


def mechanics_form_values(mechanics: MechanicsRules, currency: str) -> dict[str, str]:
    """The whole Rules form filled in from stored rules: the core rules plus a field per mechanic (blank: off)."""
    values = rules_form_values(mechanics.base, currency) | dict.fromkeys(MECHANIC_FIELDS, "")
    kind = mechanics.program_type
    values["program_kind"] = kind

    def bonus(amount: int) -> str:
        return format_amount(amount, currency) if kind == "cashback" else str(amount)

    if mechanics.second_visit:
        values["second_visit_percent"] = _percent_value(mechanics.second_visit.percent_bp)
        values["second_visit_days"] = str(mechanics.second_visit.within_days)
    if mechanics.stamps:
        values["stamps_needed"] = str(mechanics.stamps.stamps_needed)
        values["stamps_min_basket"] = format_amount(mechanics.stamps.min_basket, currency)
        values["stamps_reward_label"] = mechanics.stamps.reward_label
        values["stamps_reward_value"] = format_amount(mechanics.stamps.reward_value, currency)
        values["stamps_per_multiple"] = "on" if mechanics.stamps.per_multiple else ""
    if mechanics.cashback:
        values["cashback_percent"] = _percent_value(mechanics.cashback.percent_bp)
    if mechanics.referral:
        values["referral_referrer_bonus"] = bonus(mechanics.referral.referrer_bonus)
        values["referral_referee_bonus"] = bonus(mechanics.referral.referee_bonus)
    if mechanics.birthday:
        values["birthday_bonus"] = bonus(mechanics.birthday.bonus)
        values["birthday_grace_days"] = str(mechanics.birthday.grace_days)
    if mechanics.expiry:
        values["expiry_months"] = str(mechanics.expiry.months)
        values["expiry_warn_days"] = str(mechanics.expiry.warn_days)
    return values


def mechanics_from_form(form: Mapping[str, str], currency: str, *, current_kind: str) -> MechanicsRules:
    """Read the whole Rules form into the program's complete rules, or raise ValidationError listing every bad
    field of the core rules and of the mechanics together.

    A mechanic whose fields are all blank is off. A form without `program_kind` (a client that only knows the
    core rules) keeps `current_kind`. The referral and birthday bonuses are in the program's unit: whole points
    or stamps, or an amount of money for a cashback program.
    """
    errors: dict[str, str] = {}
    stored = _base_rules_json(form, currency, errors)

    def field(name: str) -> str:
        return (form.get(name) or "").strip()

    kind = field("program_kind") or current_kind
    if kind not in PROGRAM_TYPES:
        errors["program_kind"] = "Choose what members collect: points, stamps or cashback."
        kind = current_kind if current_kind in PROGRAM_TYPES else "points"
    stored["program_type"] = kind
    sections = {
        "second_visit": _second_visit(field, errors),
        "stamps": _stamp_card(field, form, currency, errors),
        "cashback": _cashback(field, errors),
        "referral": _referral(field, kind, currency, errors),
        "birthday": _birthday(field, kind, currency, errors),
        "expiry": _expiry(field, errors),
    }
    if kind == "stamps" and sections["stamps"] is None and "stamps_needed" not in errors:
        errors["stamps_needed"] = ("A stamp-card program needs its stamp card: say how many stamps earn the reward, "
                                   "and what the reward is.")
    if kind == "cashback" and sections["cashback"] is None and "cashback_percent" not in errors:
        errors["cashback_percent"] = "A cashback program needs its cashback share, such as 2 (%)."
    _refuse_if_any(errors)
    stored.update({name: section for name, section in sections.items() if section is not None})
    return mechanics_from_json(stored)


_Field = Callable[[str], str]


def _second_visit(field: _Field, errors: dict[str, str]) -> dict[str, int] | None:
    percent_text, days_text = field("second_visit_percent"), field("second_visit_days")
    if not (percent_text or days_text):
        return None
    percent = days = None
    if not percent_text:
        errors["second_visit_percent"] = "Give the discount, such as 15, or clear the days to turn it off."
    else:
        percent = _percent(percent_text, "second_visit_percent", errors, "The second-visit discount")
        if percent == 0:
            errors["second_visit_percent"] = ("The second-visit discount is more than 0%; clear both fields to "
                                              "turn it off.")
    if not days_text:
        errors["second_visit_days"] = "Give how many days after the first purchase the discount holds, such as 7."
    else:
        days = _whole_between(days_text, "second_visit_days", "The number of days", errors, 1,
                              MAX_SECOND_VISIT_DAYS)
    if percent and days is not None:
        return {"percent_bp": percent, "within_days": days}
    return None


def _stamp_card(field: _Field, form: Mapping[str, str], currency: str, errors: dict[str, str]) -> dict[str, Any] | None:
    needed_text, minimum_text = field("stamps_needed"), field("stamps_min_basket")
    label, value_text = field("stamps_reward_label"), field("stamps_reward_value")
    per_multiple = bool(field("stamps_per_multiple"))
    if not (needed_text or minimum_text or label or value_text or per_multiple):
        return None
    needed = value = None
    if not needed_text:
        errors["stamps_needed"] = "Say how many stamps earn the reward, such as 10, or clear the stamp card."
    else:
        needed = _whole_between(needed_text, "stamps_needed", "Stamps for a reward", errors, 1, MAX_STAMPS_NEEDED)
    minimum = _amount_or_zero(minimum_text or "0", currency, "stamps_min_basket", "The minimum basket", errors)
    if not label:
        errors["stamps_reward_label"] = "Name the reward, such as Free coffee."
    elif len(label) > REWARD_LABEL_MAX:
        errors["stamps_reward_label"] = f"The reward's name has at most {REWARD_LABEL_MAX} characters."
    if not value_text:
        errors["stamps_reward_value"] = (f"Give the reward's value in {currency}: what the voucher takes off the "
                                         "bill, such as the price of the free item.")
    else:
        value = _amount_or_zero(value_text, currency, "stamps_reward_value", "The reward's value", errors)
        if value == 0:
            errors["stamps_reward_value"] = "The reward's value is more than zero: what the voucher takes off."
    if per_multiple and minimum == 0:
        errors["stamps_per_multiple"] = "A stamp per whole multiple needs a minimum basket above zero."
    if needed is None or minimum is None or not value or any(key.startswith("stamps_") for key in errors):
        return None
    return {"stamps_needed": needed, "min_basket": minimum, "reward_label": label, "reward_value": value,
            "per_multiple": per_multiple}


def _cashback(field: _Field, errors: dict[str, str]) -> dict[str, int] | None:
    text = field("cashback_percent")
    if not text:
        return None
    percent = _percent(text, "cashback_percent", errors, "The cashback share")
    if percent == 0:
        errors["cashback_percent"] = "The cashback share is more than 0%; clear it to turn cashback off."
        return None
    return {"percent_bp": percent} if percent is not None else None


def _referral(field: _Field, kind: str, currency: str, errors: dict[str, str]) -> dict[str, int] | None:
    referrer_text, referee_text = field("referral_referrer_bonus"), field("referral_referee_bonus")
    if not (referrer_text or referee_text):
        return None
    referrer = _bonus(referrer_text or "0", "referral_referrer_bonus", "The referrer's bonus", kind, currency, errors)
    referee = _bonus(referee_text or "0", "referral_referee_bonus", "The new member's bonus", kind, currency, errors)
    if referrer == 0 and referee == 0:
        errors["referral_referrer_bonus"] = ("Give at least one bonus above zero, or clear both to turn referral "
                                             "bonuses off.")
    if referrer is None or referee is None or not (referrer or referee):
        return None
    return {"referrer_bonus": referrer, "referee_bonus": referee}


def _birthday(field: _Field, kind: str, currency: str, errors: dict[str, str]) -> dict[str, int] | None:
    bonus_text, grace_text = field("birthday_bonus"), field("birthday_grace_days")
    if not (bonus_text or grace_text):
        return None
    bonus = None
    if not bonus_text:
        errors["birthday_bonus"] = "Give the birthday bonus, or clear the days too to turn it off."
    else:
        bonus = _bonus(bonus_text, "birthday_bonus", "The birthday bonus", kind, currency, errors)
        if bonus == 0:
            errors["birthday_bonus"] = "The birthday bonus is more than zero; clear it to turn the bonus off."
    grace = _whole_between(grace_text or "0", "birthday_grace_days", "The days of grace", errors, 0,
                           MAX_BIRTHDAY_GRACE_DAYS)
    if not bonus or grace is None:
        return None
    return {"bonus": bonus, "grace_days": grace}


def _expiry(field: _Field, errors: dict[str, str]) -> dict[str, int] | None:
    months_text, warn_text = field("expiry_months"), field("expiry_warn_days")
    if not (months_text or warn_text):
        return None
    months = None
    if not months_text:
        errors["expiry_months"] = ("Give the months without a purchase after which points expire, such as 12, "
                                   "or clear the warning too to turn expiry off.")
    else:
        months = _whole_between(months_text, "expiry_months", "The months without a purchase", errors, 1,
                                MAX_EXPIRY_MONTHS)
    warn = _whole_between(warn_text or "0", "expiry_warn_days", "The warning", errors, 0, MAX_EXPIRY_WARN_DAYS)
    # The shortest month has 28 days: a warning due before the last purchase would be sent at once.
    if months is not None and warn is not None and warn >= months * 28:
        errors["expiry_warn_days"] = (f"The warning comes before the points expire and after the last purchase: "
                                      f"at most {months * 28 - 1} days before, with {months} month"
                                      f"{'s' if months > 1 else ''}.")
        return None
    if months is None or warn is None:
        return None
    return {"months": months, "warn_days": warn}


def _bonus(text: str, key: str, label: str, kind: str, currency: str, errors: dict[str, str]) -> int | None:
    """A bonus in the program's unit: an amount of money for cashback, else whole points or stamps."""
    if kind == "cashback":
        return _amount_or_zero(text, currency, key, label, errors)
    return _whole(text, key, label, errors)


def _whole_between(text: str, key: str, label: str, errors: dict[str, str], low: int, high: int) -> int | None:
    value = _whole(text, key, label, errors)
    if value is not None and not low <= value <= high:
        errors[key] = f"{label} is a whole number from {low} to {high}."
        return None
    return value


def _percent_value(basis_points: int) -> str:
    return _plain_decimal(Decimal(basis_points) / 100)


# --- Segments and NPS: who counts as new, lapsed or VIP, and how often members are asked the NPS question -------

ENGAGEMENT_FIELDS = ("segments_new_days", "segments_lapsed_days", "segments_vip_tier", "segments_typical_basket",
                     "nps_interval_days")


@dataclass(frozen=True)
class RulesPage:
    """The whole Rules form read: the pricing rules and mechanics, and the `segments` and `nps` keys of
    Program.rules (None when the form did not carry those fields, so the stored ones stay)."""

    mechanics: MechanicsRules
    engagement: dict[str, Any] | None


def engagement_form_values(rules: Mapping[str, Any], currency: str) -> dict[str, str]:
    """The Segments and NPS fields filled in from stored rules: a stored value, else the default."""
    stored_segments, stored_nps = _section(rules, "segments"), _section(rules, "nps")
    basket = stored_segments.get("typical_basket")
    return {
        "segments_new_days": str(stored_segments.get("new_days", DEFAULT_NEW_DAYS)),
        "segments_lapsed_days": str(stored_segments.get("lapsed_days", DEFAULT_LAPSED_DAYS)),
        "segments_vip_tier": str(stored_segments.get("vip_tier") or ""),
        "segments_typical_basket": format_amount(basket, currency) if isinstance(basket, int) else "",
        "nps_interval_days": str(stored_nps.get("interval_days", DEFAULT_INTERVAL_DAYS)),
    }


def _section(rules: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    section = rules.get(key)
    return section if isinstance(section, Mapping) else {}


def rules_page_from_form(
    form: Mapping[str, str], currency: str, *, current_kind: str, stored: Mapping[str, Any]
) -> RulesPage:
    """Read the whole Rules form: `mechanics_from_form`'s fields and the Segments and NPS section, reporting every
    bad field of both at once. `stored` is the program's rules now, kept for a form without the section."""
    errors: dict[str, str] = {}
    mechanics = None
    try:
        mechanics = mechanics_from_form(form, currency, current_kind=current_kind)
    except ValidationError as error:
        errors.update(error.extra.get("errors") or {error.field or "form": error.detail})
    # The VIP tier is judged against the tiers as this form saves them.
    if mechanics is not None:
        tier_names = [tier.name for tier in mechanics.base.tiers]
    else:
        tier_names = [(form.get(f"tier_name_{i}") or "").strip() for i in range(MAX_TIER_ROWS)]
    engagement = _engagement(form, stored, [name for name in tier_names if name], currency, errors)
    _refuse_if_any(errors)
    assert mechanics is not None
    return RulesPage(mechanics, engagement)


def _engagement(form: Mapping[str, str], stored: Mapping[str, Any], tier_names: list[str], currency: str,
                errors: dict[str, str]) -> dict[str, Any] | None:
    if not any(name in form for name in ENGAGEMENT_FIELDS):
        # A client that only knows the other sections: keep what is stored, unless its VIP tier is gone.
        vip = _section(stored, "segments").get("vip_tier")
        if vip and vip not in tier_names:
            errors["segments_vip_tier"] = (f"{vip} is the VIP tier of the member segments: keep a tier of that name, "
                                           "or choose another VIP tier first.")
        return None

    def field(name: str) -> str:
        return (form.get(name) or "").strip()

    def days(name: str, label: str, default: int) -> int | None:
        text = field(name)
        return _whole_between(text, name, label, errors, 1, MAX_SEGMENT_DAYS) if text else default

    new_days = days("segments_new_days", "The days a member counts as new", DEFAULT_NEW_DAYS)
    lapsed_days = days("segments_lapsed_days", "The days without a purchase before a member lapses",
                       DEFAULT_LAPSED_DAYS)
    if new_days is not None and lapsed_days is not None and new_days >= lapsed_days:
        errors["segments_new_days"] = (f"A member is new for fewer days than it takes to lapse: make this less "
                                       f"than {lapsed_days}.")
    vip_tier = field("segments_vip_tier") or None
    if vip_tier is not None and vip_tier not in tier_names:
        errors["segments_vip_tier"] = (f"{vip_tier} is not one of the tiers above: choose one of them, or "
                                       "“The highest tier”." if tier_names else
                                       "The program has no tiers, so there is no VIP tier to choose.")
    basket = None
    if field("segments_typical_basket"):
        basket = _amount_or_zero(field("segments_typical_basket"), currency, "segments_typical_basket",
                                 "The typical basket", errors)
        if basket == 0:
            errors["segments_typical_basket"] = ("The typical basket is more than zero; leave it blank to use the "
                                                 "average purchase.")
    interval = days("nps_interval_days", "The days between NPS questions", DEFAULT_INTERVAL_DAYS)
    if any(key in errors for key in ENGAGEMENT_FIELDS):
        return None
    segments: dict[str, Any] = {"new_days": new_days, "lapsed_days": lapsed_days}
    if vip_tier is not None:
        segments["vip_tier"] = vip_tier
    if basket:
        segments["typical_basket"] = basket
    engagement = {"segments": segments, "nps": {"interval_days": interval}}
    # The stored form's own readers have the last word, as rules_from_json does for the core rules.
    tiers = [{"name": name, "min_spend": index, "discount_bp": 0} for index, name in enumerate(tier_names)]
    segment_settings({"tiers": tiers, **engagement})
    nps_settings(engagement)
    return engagement


# --- Saving: the only part that touches the database -------------------------------------------------------------


@dataclass(frozen=True)
class HeldBalances:
    """What the program's cards hold now, by unit, and how many cards hold each."""

    points_cards: int = 0
    points: int = 0
    stamp_cards: int = 0
    stamps: int = 0
    vouchers: int = 0
    cashback_cards: int = 0
    cashback: int = 0


def held_balances(session: Session, program: Program) -> HeldBalances:
    row = session.execute(
        select(
            func.count().filter(Card.points > 0), func.coalesce(func.sum(Card.points), 0),
            func.count().filter(or_(Card.stamps > 0, Card.vouchers > 0)), func.coalesce(func.sum(Card.stamps), 0),
            func.coalesce(func.sum(Card.vouchers), 0),
            func.count().filter(Card.cashback > 0), func.coalesce(func.sum(Card.cashback), 0),
        ).where(Card.program_id == program.id)
    ).one()
    return HeldBalances(*(int(value) for value in row))


def kind_change_warning(session: Session, program: Program, new_kind: str) -> str | None:
    """What changing the program's kind does to balances cards already hold, or None when it changes nothing.

    Balances are neither converted nor removed: the cards keep what they hold. Points still pay for purchases
    while a point has a value, cashback can still be spent, and stamp-card vouchers can be used while the
    stamp card is filled in; but only the new kind is earned from then on.
    """
    old_kind = program.kind
    if new_kind == old_kind:
        return None
    held = held_balances(session, program)
    parts = []
    if new_kind != "points" and held.points_cards:
        parts.append(f"{_cards(held.points_cards)} {_hold(held.points_cards)} {held.points:,} points in all: they "
                     "keep them and can still pay with them while a point has a value, but earn no more")
    if new_kind != "stamps" and held.stamp_cards:
        parts.append(f"{_cards(held.stamp_cards)} {_hold(held.stamp_cards)} {held.stamps:,} stamps and "
                     f"{held.vouchers:,} unused vouchers: the vouchers can still be used while the stamp card "
                     "section stays filled in, but the stamps will never fill a card")
    if new_kind != "cashback" and held.cashback_cards:
        parts.append(f"{_cards(held.cashback_cards)} {_hold(held.cashback_cards)} "
                     f"{format_amount(held.cashback, program.currency)} {program.currency} of cashback: they keep "
                     "it and can still spend it, but earn no more")
    if not parts:
        return None
    return (f"This changes the program from {KIND_LABELS.get(old_kind, old_kind).lower()} to "
            f"{KIND_LABELS[new_kind].lower()}, and " + "; ".join(parts) + ". Tick the box below to confirm.")


def save_rules(session: Session, program: Program, mechanics: MechanicsRules, *, kind_change_confirmed: bool,
               engagement: Mapping[str, Any] | None = None) -> None:
    """Store the manager's rules: they price the next purchase. Unknown keys of Program.rules are kept.

    Program.kind (what the till reads, app/domain/mechanics_facts.py) and the rules' `program_type` are written
    together, so they agree. A change of kind while cards hold balances the new kind does not earn needs
    `kind_change_confirmed`; without it this raises ValidationError (nothing written) whose `errors` explain
    what happens to those balances and whose `confirm_kind_change` asks for the confirmation. `engagement` (the
    `segments` and `nps` keys, from `rules_page_from_form`) replaces those keys when given.
    """
    warning = kind_change_warning(session, program, mechanics.program_type)
    if warning and not kind_change_confirmed:
        raise ValidationError("Nothing was saved: confirm the change of the program's kind.", field="program_kind",
                              errors={"program_kind": warning}, confirm_kind_change=True)
    update_program_rules(session, program, mechanics.base)  # tiers move cards now; passes are republished
    kept = {key: value for key, value in program.rules.items() if key not in MECHANIC_KEYS}
    program.rules = {**kept, **mechanics.to_json(), **(engagement or {})}
    program.kind = mechanics.program_type
    session.flush()


def _cards(count: int) -> str:
    return f"{count:,} card{'s' if count != 1 else ''}"


def _hold(count: int) -> str:
    return "holds" if count == 1 else "hold"


def _plain_decimal(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _earn_rate(text: str, currency: str, errors: dict[str, str]) -> Decimal | None:
    if text.startswith("-"):
        errors["points_per_unit"] = f"Points per {currency} cannot be negative; use 0 to stop earning."
    elif not _RATE.fullmatch(text):
        errors["points_per_unit"] = f"Points per {currency} is a number such as 1 or 0.5 (at most 4 decimals)."
    else:
        return Decimal(text)
    return None


def _whole(text: str, key: str, label: str, errors: dict[str, str]) -> int | None:
    if text.startswith("-"):
        errors[key] = f"{label} cannot be negative."
    elif not _WHOLE.fullmatch(text):
        errors[key] = f"{label} is a whole number such as 0 or 50."
    else:
        return int(text)
    return None


def _percent(text: str, key: str, errors: dict[str, str], what: str = "A discount") -> int | None:
    """A percentage such as "5" or "2.5", as basis points."""
    if text.startswith("-"):
        errors[key] = f"{what} cannot be negative."
        return None
    text = text.removesuffix("%").strip()
    if not _PERCENT.fullmatch(text):
        errors[key] = f"{what} is a percentage such as 5 or 2.5."
        return None
    basis_points = int(Decimal(text) * 100)
    if basis_points > 10_000:
        errors[key] = f"{what} is at most 100%."
        return None
    return basis_points


def _amount_or_zero(text: str, currency: str, key: str, label: str, errors: dict[str, str]) -> int | None:
    """An amount in the program currency as minor units; unlike a basket, zero is allowed here."""
    if text.startswith("-"):
        errors[key] = f"{label} cannot be negative."
        return None
    if _ZERO.fullmatch(text):
        return 0
    if not _AMOUNT.fullmatch(text):
        example = "12" if currency_exponent(currency) == 0 else "12." + "5".ljust(currency_exponent(currency), "0")
        errors[key] = f"{label} is an amount in {currency} such as {example}."
        return None
    try:
        return parse_amount(text, currency, field=label)
    except ValidationError as error:  # too many decimals for the currency, or absurdly large
        errors[key] = error.detail
        return None
