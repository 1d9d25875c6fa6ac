"""The manager's rules form: what a person types, read into ProgramRules, with a message for each bad field.

People think in the program currency and in percent ("Silver from 100.00 EUR, 5% off"); the stored rules are
minor units and basis points (app/domain/rules.py). This module converts both ways and never touches the
database. Every bad field is reported at once, so the manager fixes the form in one go; the messages travel as
`ValidationError.extra["errors"]`, keyed by the form field's name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from app.domain.errors import ValidationError
from app.domain.money import currency_exponent, format_amount, parse_amount
from app.domain.rules import ROUNDING_MODES, ProgramRules, rules_from_json

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
    """Read the submitted form into rules, or raise ValidationError listing every bad field."""
    errors: dict[str, str] = {}

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

    if errors:
        count = len(errors)
        raise ValidationError(
            f"Nothing was saved: {count} field{'s' if count > 1 else ''} need{'' if count > 1 else 's'} fixing.",
            field=next(iter(errors)),
            errors=errors,
        )
    # The stored form's own validation has the last word, so the form can never save what the engine refuses.
    return rules_from_json({
        "earn": {"points_per_unit": str(rate), "rounding": rounding},
        "tiers": tiers,
        "welcome_bonus": welcome,
        "redeem": {"point_value": point_value, "max_percent": max_percent},
    })


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


def _percent(text: str, key: str, errors: dict[str, str]) -> int | None:
    """A percentage such as "5" or "2.5", as basis points."""
    if text.startswith("-"):
        errors[key] = "A discount cannot be negative."
        return None
    text = text.removesuffix("%").strip()
    if not _PERCENT.fullmatch(text):
        errors[key] = "A discount is a percentage such as 5 or 2.5."
        return None
    basis_points = int(Decimal(text) * 100)
    if basis_points > 10_000:
        errors[key] = "A discount is at most 100%."
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
