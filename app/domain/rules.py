"""A program's rules and the pure functions that price a purchase: values in, values out, no queries.

Stored rules (Program.rules, JSON) use minor units and basis points so nothing is a float:

    {"earn": {"points_per_unit": "1", "rounding": "down"},
     "tiers": [{"name": "Silver", "min_spend": 10000, "discount_bp": 500}, ...],
     "welcome_bonus": 50,
     "redeem": {"point_value": 1, "max_percent": 50}}

Points are earned on the amount due after every discount, per whole currency unit, rounded as stated.
A tier's discount applies to the whole basket for members whose lifetime spend (amount due of committed
purchases) has reached the tier's threshold before this purchase.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from app.domain.errors import ValidationError

ROUNDING_MODES = {"down": ROUND_FLOOR, "half_up": ROUND_HALF_UP, "up": ROUND_CEILING}


@dataclass(frozen=True)
class Tier:
    name: str
    min_spend: int  # minor units of lifetime spend
    discount_bp: int  # basis points: 500 = 5%


@dataclass(frozen=True)
class ProgramRules:
    points_per_unit: Decimal = Decimal(1)
    rounding: str = "down"
    tiers: tuple[Tier, ...] = ()
    welcome_bonus: int = 0
    # What one point is worth when redeemed, in minor units; 0 turns redemption off.
    point_value: int = 0
    # Redeemed points may pay at most this share of the basket after other discounts.
    redeem_max_percent: int = 100

    def to_json(self) -> dict[str, Any]:
        return {
            "earn": {"points_per_unit": str(self.points_per_unit), "rounding": self.rounding},
            "tiers": [
                {"name": t.name, "min_spend": t.min_spend, "discount_bp": t.discount_bp} for t in self.tiers
            ],
            "welcome_bonus": self.welcome_bonus,
            "redeem": {"point_value": self.point_value, "max_percent": self.redeem_max_percent},
        }


def rules_from_json(data: Mapping[str, Any]) -> ProgramRules:
    """Read stored rules, validating them so a bad manual edit is caught with the field it names."""
    earn = data.get("earn", {})
    redeem = data.get("redeem", {})
    try:
        rate = Decimal(str(earn.get("points_per_unit", "1")))
    except InvalidOperation:
        raise ValidationError("earn.points_per_unit must be a decimal number.", field="earn.points_per_unit") from None
    if not rate.is_finite() or rate < 0:
        raise ValidationError("earn.points_per_unit must be zero or more.", field="earn.points_per_unit")
    rounding = earn.get("rounding", "down")
    if rounding not in ROUNDING_MODES:
        raise ValidationError(
            f"earn.rounding must be one of {', '.join(ROUNDING_MODES)}.", field="earn.rounding"
        )
    tiers = tuple(
        sorted(
            (
                Tier(
                    name=_text(t.get("name"), "tiers.name"),
                    min_spend=_non_negative_int(t.get("min_spend"), "tiers.min_spend"),
                    discount_bp=_non_negative_int(t.get("discount_bp", 0), "tiers.discount_bp", 10_000),
                )
                for t in data.get("tiers", [])
            ),
            key=lambda t: t.min_spend,
        )
    )
    return ProgramRules(
        points_per_unit=rate,
        rounding=rounding,
        tiers=tiers,
        welcome_bonus=_non_negative_int(data.get("welcome_bonus", 0), "welcome_bonus"),
        point_value=_non_negative_int(redeem.get("point_value", 0), "redeem.point_value"),
        redeem_max_percent=_non_negative_int(redeem.get("max_percent", 100), "redeem.max_percent", 100),
    )


def tier_for(lifetime_spend: int, tiers: Sequence[Tier]) -> Tier | None:
    """The highest tier whose threshold the lifetime spend has reached, or None below the first."""
    reached = [t for t in tiers if lifetime_spend >= t.min_spend]
    return max(reached, key=lambda t: t.min_spend) if reached else None


def next_tier(lifetime_spend: int, tiers: Sequence[Tier]) -> Tier | None:
    """The lowest tier the member has not reached yet, or None at the top."""
    ahead = [t for t in tiers if t.min_spend > lifetime_spend]
    return min(ahead, key=lambda t: t.min_spend) if ahead else None


def points_for(amount_minor: int, rules: ProgramRules, exponent: int) -> int:
    """Points earned on an amount due, per whole currency unit, rounded by the program's stated mode."""
    units = Decimal(amount_minor).scaleb(-exponent)
    return int((units * rules.points_per_unit).to_integral_value(rounding=ROUNDING_MODES[rules.rounding]))


def percent_of(amount_minor: int, basis_points: int) -> int:
    """A percentage discount in minor units, rounded half up to the minor unit."""
    return int((Decimal(amount_minor) * basis_points / 10_000).to_integral_value(rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class QuoteLine:
    kind: str
    label: str
    amount: int  # minor units taken off the basket


@dataclass(frozen=True)
class Quote:
    amount: int
    lines: tuple[QuoteLine, ...]
    points_earned: int
    points_redeemed: int
    tier_before: str | None
    tier_after: str | None
    lifetime_spend_after: int
    points_after: int
    discount_total: int = field(init=False)
    amount_due: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "discount_total", sum(line.amount for line in self.lines))
        object.__setattr__(self, "amount_due", self.amount - self.discount_total)


def price_purchase(
    rules: ProgramRules,
    *,
    amount: int,
    balance: int,
    lifetime_spend: int,
    redeem_points: int,
    exponent: int,
) -> Quote:
    """What a purchase costs and earns for a member with this balance and spend. Raises ValidationError."""
    lines: list[QuoteLine] = []
    tier = tier_for(lifetime_spend, rules.tiers)
    if tier is not None and tier.discount_bp:
        lines.append(
            QuoteLine("tier_discount", f"{tier.name} member {_percent_text(tier.discount_bp)}",
                      percent_of(amount, tier.discount_bp))
        )
    remaining = amount - sum(line.amount for line in lines)
    if redeem_points < 0:
        raise ValidationError("redeem_points cannot be negative.", field="redeem_points")
    if redeem_points:
        if not rules.point_value:
            raise ValidationError("This program does not let points pay for purchases.", field="redeem_points")
        if redeem_points > balance:
            raise ValidationError(
                f"The card has {balance} points; {redeem_points} cannot be redeemed.", field="redeem_points"
            )
        cap = remaining * rules.redeem_max_percent // 100
        most = cap // rules.point_value
        if redeem_points > most:
            raise ValidationError(
                f"At most {most} points can be redeemed on this purchase "
                f"({rules.redeem_max_percent}% of the amount after discounts).",
                field="redeem_points",
            )
        lines.append(QuoteLine("points_redemption", f"{redeem_points} points redeemed",
                               redeem_points * rules.point_value))
    due = amount - sum(line.amount for line in lines)
    earned = points_for(due, rules, exponent)
    spend_after = lifetime_spend + due
    tier_after = tier_for(spend_after, rules.tiers)
    return Quote(
        amount=amount,
        lines=tuple(lines),
        points_earned=earned,
        points_redeemed=redeem_points,
        tier_before=tier.name if tier else None,
        tier_after=tier_after.name if tier_after else None,
        lifetime_spend_after=spend_after,
        points_after=balance - redeem_points + earned,
    )


def _percent_text(basis_points: int) -> str:
    whole, hundredths = divmod(basis_points, 100)
    return f"{whole}%" if not hundredths else f"{whole}.{hundredths:02d}".rstrip("0") + "%"


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} must be a non-empty string.", field=name)
    return value.strip()


def _non_negative_int(value: object, name: str, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{name} must be a whole number, zero or more.", field=name)
    if maximum is not None and value > maximum:
        raise ValidationError(f"{name} must be at most {maximum}.", field=name)
    return value
