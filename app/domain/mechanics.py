"""The loyalty mechanics merchants run, as pure functions: values in, values out, nothing mutated, no queries.

Coupons and promo codes, member-only offers, the second-visit discount, referral bonuses, stamp cards, cashback,
points and catalogue redemption, birthday bonuses, points expiry, the reversal of a purchase and the simulation
of a rule change. The clock comes in as an argument (`now`, `today`); the caller looks coupons, uses and
balances up and passes them in as facts. Nothing here reads a database or a configuration.

How a basket is priced (`quote`), in this order, each step on what is left after the one before:

 1. Free items: the catalogue reward chosen (it costs its points), then a stamp-card voucher. Each takes off its
    stated value, at most what is left. They come first so no percentage is ever given on an item that is free.
 2. The tier discount (a percentage; the tier is the one the lifetime spend reached before this purchase).
 3. The member-only offers chosen, in the order given.
 4. The second-visit discount (a percentage), when this is the member's second purchase (`second_visit_applies`).
 5. Coupons, in the order given. A coupon that is refused is skipped with its reason and takes nothing off.
    Stacking is between coupons only: a non-stackable coupon is used alone, so it is refused when another coupon
    was accepted before it, and a later coupon is refused once a non-stackable one was accepted.
 6. Points, then cashback, redeemed against what is left. Together they pay at most `redeem_max_percent` of the
    amount after steps 1 to 5 (the catalogue reward is outside that cap: a free coffee may be the whole basket).
    Points are never more than the card holds after the reward's cost; cashback never more than its balance.
    A request above either limit is lowered to it, with a warning that says so (or, with `strict_redemption`,
    refused with the messages `rules.price_purchase` gives, as the JSON API does today).

Rounding: a percentage discount is rounded half up to the minor unit (`rules.percent_of`), on the amount left,
so every percentage discount is at most what is left; a fixed discount is capped at what is left. Hence the
amount due is never below zero and the discounts plus the amount due are exactly the basket. The redemption
cap is floored to the minor unit and points are whole (`cap // point_value`), so redemption never exceeds the cap.

What a purchase earns is worked out on the amount due after every discount and redemption:

- points programs: points by the program's rate and stated rounding (`rules.points_for`);
- stamp programs: one stamp when the amount due is above zero and at least the stamp minimum; with `per_multiple`
  one stamp per whole multiple of the minimum (so one purchase may fill the card twice and issue two vouchers).
  At `stamps_needed` stamps a voucher is issued and the count starts again from the remainder;
- cashback programs: `percent_bp` of the amount due, rounded down to the minor unit, credited as money.

Line amounts are what the line takes off the basket, in positive minor units, like `rules.QuoteLine`, so a quote
here has the same `lines`, `discount_total` and `amount_due` as the current API. The two lines the API already
shows keep their kinds and labels ("tier_discount", "Silver member 5%"; "points_redemption", "300 points
redeemed"); the new kinds are "reward", "voucher", "offer", "second_visit", "coupon", "cashback_redemption".

Times: a validity window (coupon, offer) starts at `valid_from` inclusive and ends at `valid_until` exclusive;
either may be None for open-ended. Compare aware UTC datetimes. Day counts (second visit) and dates (expiry,
birthday) are calendar dates of the values passed: pass local datetimes or dates for local days.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, get_args

from app.domain.errors import PointsAlreadySpent, ValidationError
from app.domain.money import currency_exponent, format_amount
from app.domain.rules import ProgramRules, QuoteLine, Tier, percent_of, points_for, rules_from_json, tier_for

__all__ = [
    "NON_MEMBER",
    "Balances",
    "BirthdayRules",
    "Bonus",
    "CardChange",
    "CashbackRules",
    "Coupon",
    "CouponRefusal",
    "CouponUse",
    "Discount",
    "ExpiryRules",
    "HistoricPurchase",
    "MechanicsRules",
    "MemberFacts",
    "Notice",
    "Offer",
    "PurchaseEffects",
    "Quote",
    "Referral",
    "ReferralParty",
    "ReferralRules",
    "Reversal",
    "Reward",
    "SecondVisitRules",
    "SimulatedPurchase",
    "SimulationReport",
    "SimulationTotals",
    "StampRules",
    "add_months",
    "add_stamps",
    "birthday_bonus_due",
    "birthday_in",
    "check_coupon",
    "expiry_due",
    "expiry_warning_due",
    "is_self_referral",
    "mechanics_from_json",
    "normalize_code",
    "percent_text",
    "points_expiry_date",
    "quote",
    "reverse",
    "second_visit_applies",
    "simulate",
    "single_use_codes",
    "stamps_for",
    "unknown_coupon",
]

ProgramType = Literal["points", "stamps", "cashback"]
DiscountKind = Literal["percent", "fixed"]
CouponKind = Literal["single_use", "reusable"]
BonusUnit = Literal["points", "cashback", "stamps"]
RefusalReason = Literal[
    "unknown", "expired", "not_yet_valid", "below_minimum", "already_used", "not_for_member", "not_stackable"
]

PROGRAM_TYPES: tuple[str, ...] = get_args(ProgramType)
_BONUS_UNIT: dict[str, BonusUnit] = {"points": "points", "cashback": "cashback", "stamps": "stamps"}


# --- What the rules say -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Discount:
    """A percentage (`value` in basis points, 1000 = 10%, at most 100%) or a fixed amount (`value` in minor units)."""

    kind: DiscountKind
    value: int

    def __post_init__(self) -> None:
        if self.kind not in get_args(DiscountKind):
            raise ValidationError("A discount is a percent or a fixed amount.", field="discount")
        if self.value < 0 or (self.kind == "percent" and self.value > 10_000):
            raise ValidationError("A discount is between 0 and 100%, or a fixed amount of zero or more.",
                                  field="discount")

    def amount_off(self, left: int) -> int:
        """What this discount takes off `left`: never more than `left`."""
        if self.kind == "percent":
            return percent_of(left, self.value)
        return min(self.value, left)

    def text(self, currency: str) -> str:
        return percent_text(self.value) if self.kind == "percent" else format_amount(self.value, currency)


@dataclass(frozen=True)
class SecondVisitRules:
    """A discount on the member's second purchase when it comes within `within_days` calendar days of the first."""

    percent_bp: int
    within_days: int


@dataclass(frozen=True)
class StampRules:
    """A stamp card: a purchase of at least `min_basket` (amount due) adds a stamp; `stamps_needed` give a voucher.

    The voucher takes `reward_value` off a later basket (the price of the free item, at most what is left).
    With `per_multiple`, a purchase earns one stamp per whole multiple of `min_basket` (a minimum above zero).
    """

    stamps_needed: int
    min_basket: int = 0
    reward_label: str = "Free item"
    reward_value: int = 0
    per_multiple: bool = False


@dataclass(frozen=True)
class CashbackRules:
    """Cashback: `percent_bp` of the amount due credited as money, spent like points."""

    percent_bp: int


@dataclass(frozen=True)
class ReferralRules:
    """Bonuses paid once, when the referred member's first purchase commits; in the program's unit."""

    referrer_bonus: int
    referee_bonus: int


@dataclass(frozen=True)
class BirthdayRules:
    """A bonus on the member's birthday, or up to `grace_days` after it when the daily run missed the day."""

    bonus: int
    grace_days: int = 0


@dataclass(frozen=True)
class ExpiryRules:
    """Points expire `months` calendar months after the last purchase; members are warned `warn_days` before."""

    months: int
    warn_days: int = 0


@dataclass(frozen=True)
class MechanicsRules:
    """A program's complete rules: its type, the pricing rules of `rules.ProgramRules`, and the optional mechanics.

    The balance unit follows the type: points programs earn points, stamp programs stamps and vouchers, cashback
    programs money. Referral and birthday bonuses are paid in that unit. Tiers, offers, the second visit,
    coupons and redemption of whatever the card holds work in every type.
    """

    program_type: ProgramType = "points"
    base: ProgramRules = field(default_factory=ProgramRules)
    second_visit: SecondVisitRules | None = None
    stamps: StampRules | None = None
    cashback: CashbackRules | None = None
    referral: ReferralRules | None = None
    birthday: BirthdayRules | None = None
    expiry: ExpiryRules | None = None

    def __post_init__(self) -> None:
        if self.program_type not in PROGRAM_TYPES:
            raise ValidationError(f"program_type must be one of {', '.join(PROGRAM_TYPES)}.", field="program_type")
        if self.program_type == "stamps" and self.stamps is None:
            raise ValidationError("A stamp program needs its stamp rules.", field="stamps")
        if self.program_type == "cashback" and self.cashback is None:
            raise ValidationError("A cashback program needs its cashback share.", field="cashback")

    @property
    def bonus_unit(self) -> BonusUnit:
        return _BONUS_UNIT[self.program_type]

    def to_json(self) -> dict[str, Any]:
        """The stored form: `ProgramRules.to_json()` plus a key per mechanic, which `rules_from_json` ignores."""
        data: dict[str, Any] = {**self.base.to_json(), "program_type": self.program_type}
        if self.second_visit:
            data["second_visit"] = {"percent_bp": self.second_visit.percent_bp,
                                    "within_days": self.second_visit.within_days}
        if self.stamps:
            data["stamps"] = {"stamps_needed": self.stamps.stamps_needed, "min_basket": self.stamps.min_basket,
                              "reward_label": self.stamps.reward_label, "reward_value": self.stamps.reward_value,
                              "per_multiple": self.stamps.per_multiple}
        if self.cashback:
            data["cashback"] = {"percent_bp": self.cashback.percent_bp}
        if self.referral:
            data["referral"] = {"referrer_bonus": self.referral.referrer_bonus,
                                "referee_bonus": self.referral.referee_bonus}
        if self.birthday:
            data["birthday"] = {"bonus": self.birthday.bonus, "grace_days": self.birthday.grace_days}
        if self.expiry:
            data["expiry"] = {"months": self.expiry.months, "warn_days": self.expiry.warn_days}
        return data


def mechanics_from_json(data: Mapping[str, Any]) -> MechanicsRules:
    """Read stored rules (Program.rules), validating each mechanic so a bad edit is caught with its field."""
    program_type = data.get("program_type", "points")
    if program_type not in PROGRAM_TYPES:
        raise ValidationError(f"program_type must be one of {', '.join(PROGRAM_TYPES)}.", field="program_type")

    def section(name: str) -> Mapping[str, Any] | None:
        value = data.get(name)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ValidationError(f"{name} must be an object.", field=name)
        return value

    second = section("second_visit")
    stamps = section("stamps")
    cashback = section("cashback")
    referral = section("referral")
    birthday = section("birthday")
    expiry = section("expiry")
    per_multiple = stamps.get("per_multiple", False) if stamps else False
    if not isinstance(per_multiple, bool):
        raise ValidationError("stamps.per_multiple must be true or false.", field="stamps.per_multiple")
    return MechanicsRules(
        program_type=program_type,
        base=rules_from_json(data),
        second_visit=SecondVisitRules(
            percent_bp=_whole(second.get("percent_bp"), "second_visit.percent_bp", maximum=10_000),
            within_days=_whole(second.get("within_days"), "second_visit.within_days"),
        ) if second else None,
        stamps=StampRules(
            stamps_needed=_whole(stamps.get("stamps_needed"), "stamps.stamps_needed", minimum=1),
            min_basket=_whole(stamps.get("min_basket", 0), "stamps.min_basket"),
            reward_label=_label(stamps.get("reward_label", "Free item"), "stamps.reward_label"),
            reward_value=_whole(stamps.get("reward_value", 0), "stamps.reward_value"),
            per_multiple=per_multiple,
        ) if stamps else None,
        cashback=CashbackRules(
            percent_bp=_whole(cashback.get("percent_bp"), "cashback.percent_bp", maximum=10_000),
        ) if cashback else None,
        referral=ReferralRules(
            referrer_bonus=_whole(referral.get("referrer_bonus", 0), "referral.referrer_bonus"),
            referee_bonus=_whole(referral.get("referee_bonus", 0), "referral.referee_bonus"),
        ) if referral else None,
        birthday=BirthdayRules(
            bonus=_whole(birthday.get("bonus"), "birthday.bonus"),
            grace_days=_whole(birthday.get("grace_days", 0), "birthday.grace_days"),
        ) if birthday else None,
        expiry=ExpiryRules(
            months=_whole(expiry.get("months"), "expiry.months", minimum=1),
            warn_days=_whole(expiry.get("warn_days", 0), "expiry.warn_days"),
        ) if expiry else None,
    )


# --- What the caller looked up -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberFacts:
    """The card at the till, before this purchase. `serial` is None and `is_member` False for a customer without
    a card (an API purchase with an open code): they get open coupons and nothing else, and earn nothing.

    The tier is not a fact here: it is worked out from `lifetime_spend`, as `rules.price_purchase` does.
    """

    serial: str | None
    is_member: bool = True
    points: int = 0
    cashback: int = 0  # minor units
    lifetime_spend: int = 0  # minor units: the amount due of committed purchases
    purchases_committed: int = 0
    first_purchase_at: datetime | None = None
    stamps: int = 0
    vouchers: int = 0  # stamp-card vouchers issued and not yet used


NON_MEMBER = MemberFacts(serial=None, is_member=False)


@dataclass(frozen=True)
class Coupon:
    """A coupon or promo code. Codes are compared after `normalize_code`.

    - `kind`: "single_use" codes are spent by their first committed use (batches printed or sent to members;
      `assigned_card` ties one to a card); "reusable" codes (SPRING10) serve anyone, `per_member_limit` times each.
    - `min_basket`: judged on the basket as rung up, before any discount.
    - `member_only`: refused to a customer without a card (so is any code with a `per_member_limit`).
    - `stackable`: may be combined with other stackable coupons; a non-stackable coupon is used alone.
    """

    code: str
    discount: Discount
    kind: CouponKind = "reusable"
    min_basket: int = 0
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    per_member_limit: int | None = None
    member_only: bool = False
    assigned_card: str | None = None
    stackable: bool = False
    label: str = ""

    def line_label(self, currency: str) -> str:
        return self.label or f"Coupon {self.code} {self.discount.text(currency)}"


@dataclass(frozen=True)
class CouponUse:
    """How often the code was used in committed, not voided, purchases: by this member, and by anyone."""

    by_member: int = 0
    total: int = 0


@dataclass(frozen=True)
class CouponRefusal:
    """Why a code takes nothing off. `shortfall` is how far the basket is below the minimum (below_minimum)."""

    code: str
    reason: RefusalReason
    message: str
    shortfall: int = 0


@dataclass(frozen=True)
class Offer:
    """A member-only offer shown on the card page, applied at the till when the member chooses it."""

    id: str
    title: str
    discount: Discount
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    min_basket: int = 0  # judged on the basket as rung up


@dataclass(frozen=True)
class Reward:
    """A catalogue item bought with points: it takes `value` off the basket (the item's price, so it is free),
    at most what is left to pay."""

    id: str
    name: str
    points_cost: int
    value: int


@dataclass(frozen=True)
class Referral:
    """The referral behind this member, if any. `self_referral` is the caller's verdict (`is_self_referral`);
    `bonus_paid` is True once an earlier purchase paid the bonuses."""

    referrer_serial: str
    self_referral: bool = False
    bonus_paid: bool = False


@dataclass(frozen=True)
class ReferralParty:
    """What identifies a person for the self-referral check. Pass normalised email and phone."""

    email: str | None = None
    phone: str | None = None
    device: str | None = None


def is_self_referral(referrer: ReferralParty, referee: ReferralParty) -> bool:
    """True when the two share an email (any case), a phone number or a device: one person, two cards."""
    pairs = (
        (referrer.email.casefold() if referrer.email else None, referee.email.casefold() if referee.email else None),
        (referrer.phone, referee.phone),
        (referrer.device, referee.device),
    )
    return any(a is not None and a == b for a, b in pairs)


# --- What a quote says ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """Something the till should say that is not a coupon refusal: a lowered redemption, an offer out of date."""

    code: str
    message: str


@dataclass(frozen=True)
class Bonus:
    """A bonus a purchase pays: to the member at the till or to someone else (the referrer), in `unit`."""

    kind: Literal["referral_referee", "referral_referrer"]
    serial: str
    amount: int
    unit: BonusUnit
    label: str


@dataclass(frozen=True)
class PurchaseEffects:
    """What a committed purchase did, as `reverse` needs it. Store it with the purchase (`Quote.effects()`)."""

    serial: str
    amount_due: int
    points_earned: int = 0
    points_redeemed: int = 0
    reward_points: int = 0
    cashback_earned: int = 0
    cashback_redeemed: int = 0
    stamps_added: int = 0
    stamps_needed: int = 0  # the stamp rule when the purchase was made
    vouchers_issued: int = 0
    vouchers_used: int = 0
    coupon_codes: tuple[str, ...] = ()
    bonuses: tuple[Bonus, ...] = ()


@dataclass(frozen=True)
class Quote:
    """A priced purchase: every line, every refusal, what is earned and what the card holds after."""

    amount: int
    lines: tuple[QuoteLine, ...]
    refusals: tuple[CouponRefusal, ...]
    warnings: tuple[Notice, ...]
    member_serial: str | None
    coupons_applied: tuple[str, ...]
    offers_applied: tuple[str, ...]
    reward_id: str | None
    reward_points: int
    points_redeemed: int
    points_earned: int
    points_after: int
    cashback_redeemed: int
    cashback_earned: int
    cashback_after: int
    stamps_added: int
    stamps_after: int
    stamps_needed: int
    vouchers_issued: int
    vouchers_used: int
    vouchers_after: int
    tier_before: str | None
    tier_after: str | None
    lifetime_spend_after: int
    bonuses: tuple[Bonus, ...]
    discount_total: int = field(init=False)
    amount_due: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "discount_total", sum(line.amount for line in self.lines))
        object.__setattr__(self, "amount_due", self.amount - self.discount_total)

    @property
    def points_spent(self) -> int:
        """Points leaving the card: the reward's cost and the points redeemed against the price."""
        return self.reward_points + self.points_redeemed

    def to_lines(self, currency: str) -> list[dict[str, str]]:
        """The lines as the till and the API show them, amounts as decimal strings."""
        return [{"kind": line.kind, "label": line.label, "amount": format_amount(line.amount, currency)}
                for line in self.lines]

    def to_json(self, currency: str) -> dict[str, Any]:
        """The quote for the API: the fields `purchases.quote_json` has, and the new ones after them.

        Bonuses name no serial: the till must not learn who referred the member.
        """
        return {
            "amount": format_amount(self.amount, currency),
            "lines": self.to_lines(currency),
            "discount_total": format_amount(self.discount_total, currency),
            "amount_due": format_amount(self.amount_due, currency),
            "points_earned": self.points_earned,
            "points_redeemed": self.points_redeemed,
            "points_after": self.points_after,
            "tier_after": self.tier_after,
            "refusals": [{"coupon": r.code, "reason": r.reason, "message": r.message} for r in self.refusals],
            "warnings": [{"code": w.code, "message": w.message} for w in self.warnings],
            "reward_points": self.reward_points,
            "stamps_added": self.stamps_added,
            "stamps_after": self.stamps_after,
            "vouchers_issued": self.vouchers_issued,
            "cashback_earned": format_amount(self.cashback_earned, currency),
            "cashback_redeemed": format_amount(self.cashback_redeemed, currency),
            "cashback_after": format_amount(self.cashback_after, currency),
            "bonuses": [{"kind": b.kind, "label": b.label, "amount": b.amount, "unit": b.unit}
                        for b in self.bonuses if b.serial == self.member_serial],
        }

    def effects(self) -> PurchaseEffects:
        """What committing this quote does, for `reverse`. Only a member's purchase has effects to store."""
        if self.member_serial is None:
            raise ValidationError("A purchase without a card has no balances to reverse.", field="code")
        return PurchaseEffects(
            serial=self.member_serial,
            amount_due=self.amount_due,
            points_earned=self.points_earned,
            points_redeemed=self.points_redeemed,
            reward_points=self.reward_points,
            cashback_earned=self.cashback_earned,
            cashback_redeemed=self.cashback_redeemed,
            stamps_added=self.stamps_added,
            stamps_needed=self.stamps_needed,
            vouchers_issued=self.vouchers_issued,
            vouchers_used=self.vouchers_used,
            coupon_codes=self.coupons_applied,
            bonuses=self.bonuses,
        )


# --- Pricing -------------------------------------------------------------------------------------------------------


def normalize_code(text: str) -> str:
    """A code as stored and compared: upper case, no spaces. "spring 10" and "SPRING10" are the same code."""
    return "".join(text.split()).upper()


def unknown_coupon(code: str) -> CouponRefusal:
    """The refusal for a code the caller found no coupon for."""
    return CouponRefusal(code, "unknown", f"{code} is not a coupon of this program; check the spelling.")


def check_coupon(
    coupon: Coupon,
    use: CouponUse,
    member: MemberFacts,
    basket: int,
    now: datetime,
    *,
    currency: str,
    accepted: Sequence[Coupon] = (),
) -> CouponRefusal | None:
    """Why this coupon cannot be used on this basket now, or None if it can.

    `accepted` are the coupons already accepted on this purchase. The reasons are checked in this order, and the
    first that applies is given: already on this purchase (already_used), not_yet_valid, expired, not_for_member
    (issued to another card; member-only or limited per member, and no card), already_used (single-use code
    spent; per-member limit reached), below_minimum, not_stackable.
    """
    code = coupon.code
    if any(normalize_code(other.code) == normalize_code(code) for other in accepted):
        return CouponRefusal(code, "already_used", f"{code} is already on this purchase.")
    if coupon.valid_from is not None and now < coupon.valid_from:
        return CouponRefusal(code, "not_yet_valid", f"{code} can be used from {_when(coupon.valid_from)}.")
    if coupon.valid_until is not None and now >= coupon.valid_until:
        return CouponRefusal(code, "expired", f"{code} expired at {_when(coupon.valid_until)}.")
    if coupon.assigned_card is not None and coupon.assigned_card != member.serial:
        return CouponRefusal(code, "not_for_member", f"{code} was issued to another member's card.")
    if coupon.member_only and not member.is_member:
        return CouponRefusal(code, "not_for_member", f"{code} is for members only: scan the customer's card.")
    if coupon.per_member_limit is not None and not member.is_member:
        # A limit per member cannot be counted without a card.
        return CouponRefusal(code, "not_for_member",
                             f"{code} is limited per member: scan the customer's card to use it.")
    if coupon.kind == "single_use" and use.total >= 1:
        return CouponRefusal(code, "already_used", f"{code} has already been used; it was good for one purchase.")
    if coupon.per_member_limit is not None and use.by_member >= coupon.per_member_limit:
        return CouponRefusal(code, "already_used",
                             f"{code} can be used {_times(coupon.per_member_limit)} per member, and this member "
                             f"has used it {_times(use.by_member)}.")
    if basket < coupon.min_basket:
        short = coupon.min_basket - basket
        return CouponRefusal(
            code, "below_minimum",
            f"{code} needs a basket of at least {format_amount(coupon.min_basket, currency)}; "
            f"this one is {format_amount(short, currency)} short.",
            shortfall=short,
        )
    alone = next((other for other in accepted if not other.stackable), None)
    if alone is not None:
        return CouponRefusal(code, "not_stackable",
                             f"{code} cannot be added: {alone.code} is on this purchase and is used alone.")
    if accepted and not coupon.stackable:
        return CouponRefusal(code, "not_stackable",
                             f"{code} cannot be combined with another coupon; {accepted[0].code} is already on.")
    return None


def second_visit_applies(
    first_purchase_at: datetime | None, purchases_committed: int, now: datetime, within_days: int
) -> bool:
    """True for the member's second purchase when it comes within `within_days` calendar days of the first.

    Days are the calendar dates of the two datetimes as given: the first purchase's date is day 0, and the
    discount holds through the whole of day N (the date N days later), not on day N+1. With N = 7, a first
    purchase on 1 March at 18:00 gives the discount until 8 March 23:59:59, not on 9 March.
    """
    if purchases_committed != 1 or first_purchase_at is None:
        return False
    days = (now.date() - first_purchase_at.date()).days
    return 0 <= days <= within_days


def quote(
    rules: MechanicsRules,
    member: MemberFacts,
    basket: int,
    *,
    now: datetime,
    currency: str,
    coupons: Sequence[tuple[Coupon, CouponUse]] = (),
    unknown_codes: Sequence[str] = (),
    offers_chosen: Sequence[Offer] = (),
    reward_chosen: Reward | None = None,
    use_voucher: bool = False,
    redeem_points: int = 0,
    redeem_cashback: int = 0,
    referral: Referral | None = None,
    strict_redemption: bool = False,
) -> Quote:
    """Price a basket for a member, in the order and with the rounding the module docstring states.

    Bad coupons, offers and requests do not raise: they are refused or lowered with a reason, so the till can
    show the rest of the quote. Raises ValidationError for malformed input (a negative amount), and, with
    `strict_redemption`, for points or cashback it would otherwise lower, with the messages of
    `rules.price_purchase` (the JSON API refuses such a request rather than charging a different amount).
    """
    for name, value in (("amount", basket), ("redeem_points", redeem_points), ("redeem_cashback", redeem_cashback)):
        if value < 0:
            raise ValidationError(f"{name} cannot be negative.", field=name)
    exponent = currency_exponent(currency)
    base = rules.base
    lines: list[QuoteLine] = []
    warnings: list[Notice] = []
    refusals = [unknown_coupon(code) for code in unknown_codes]

    def left() -> int:
        return basket - sum(line.amount for line in lines)

    # 1. Free items.
    reward_points = 0
    reward_applied: Reward | None = None
    if reward_chosen is not None:
        if not member.is_member:
            warnings.append(Notice("reward_members_only", f"{reward_chosen.name} is for members only."))
        elif member.points < reward_chosen.points_cost:
            warnings.append(Notice(
                "not_enough_points",
                f"{reward_chosen.name} needs {reward_chosen.points_cost} points; the card has {member.points}.",
            ))
        else:
            reward_applied = reward_chosen
            reward_points = reward_chosen.points_cost
            lines.append(QuoteLine("reward", f"{reward_chosen.name} ({reward_chosen.points_cost} points)",
                                   min(reward_chosen.value, left())))
    vouchers_used = 0
    if use_voucher:
        if rules.stamps is None or not member.is_member or member.vouchers < 1:
            warnings.append(Notice("no_voucher", "The card holds no stamp-card voucher to use."))
        else:
            vouchers_used = 1
            lines.append(QuoteLine("voucher", f"Stamp card: {rules.stamps.reward_label}",
                                   min(rules.stamps.reward_value, left())))

    # 2. Tier.
    tier = tier_for(member.lifetime_spend, base.tiers) if member.is_member else None
    if tier is not None and tier.discount_bp:
        lines.append(QuoteLine("tier_discount", f"{tier.name} member {percent_text(tier.discount_bp)}",
                               percent_of(left(), tier.discount_bp)))

    # 3. Offers.
    offers_applied: list[str] = []
    for offer in offers_chosen:
        notice = _offer_notice(offer, member, basket, now, currency, offers_applied)
        if notice is not None:
            warnings.append(notice)
            continue
        offers_applied.append(offer.id)
        lines.append(QuoteLine("offer", offer.title, offer.discount.amount_off(left())))

    # 4. Second visit.
    visit = rules.second_visit
    if (visit is not None and visit.percent_bp and member.is_member
            and second_visit_applies(member.first_purchase_at, member.purchases_committed, now, visit.within_days)):
        lines.append(QuoteLine("second_visit", f"Second visit {percent_text(visit.percent_bp)}",
                               percent_of(left(), visit.percent_bp)))

    # 5. Coupons.
    accepted: list[Coupon] = []
    for coupon, use in coupons:
        refusal = check_coupon(coupon, use, member, basket, now, currency=currency, accepted=accepted)
        if refusal is not None:
            refusals.append(refusal)
            continue
        accepted.append(coupon)
        lines.append(QuoteLine("coupon", coupon.line_label(currency), coupon.discount.amount_off(left())))

    # 6. Redemption, capped together at a share of what is left.
    cap = left() * base.redeem_max_percent // 100
    points_redeemed, notice = _points_to_redeem(base, member, redeem_points, reward_points, cap, strict_redemption)
    if points_redeemed:
        value = points_redeemed * base.point_value
        lines.append(QuoteLine("points_redemption", f"{points_redeemed} points redeemed", value))
        cap -= value
    cashback_redeemed, cashback_notice = _cashback_to_redeem(
        base, member, redeem_cashback, cap, currency, strict_redemption
    )
    if cashback_redeemed:
        lines.append(QuoteLine("cashback_redemption", "Cashback redeemed", cashback_redeemed))
    warnings.extend(n for n in (notice, cashback_notice) if n is not None)

    due = left()
    assert due >= 0, "every step takes at most what is left"

    # What the purchase earns.
    points_earned = stamps_added = cashback_earned = 0
    if member.is_member:
        if rules.program_type == "points":
            points_earned = points_for(due, base, exponent)
        elif rules.program_type == "stamps" and rules.stamps is not None:
            stamps_added = stamps_for(due, rules.stamps)
        elif rules.program_type == "cashback" and rules.cashback is not None:
            cashback_earned = due * rules.cashback.percent_bp // 10_000

    bonuses = _referral_bonuses(rules, member, referral, warnings)
    own_bonus = sum(b.amount for b in bonuses if b.serial == member.serial)
    unit = rules.bonus_unit
    stamps_needed = rules.stamps.stamps_needed if rules.stamps else 0
    stamps_after, vouchers_issued = add_stamps(
        member.stamps, stamps_added + (own_bonus if unit == "stamps" else 0), stamps_needed
    )
    tier_after = tier_for(member.lifetime_spend + due, base.tiers) if member.is_member else None
    return Quote(
        amount=basket,
        lines=tuple(lines),
        refusals=tuple(refusals),
        warnings=tuple(warnings),
        member_serial=member.serial,
        coupons_applied=tuple(c.code for c in accepted),
        offers_applied=tuple(offers_applied),
        reward_id=reward_applied.id if reward_applied else None,
        reward_points=reward_points,
        points_redeemed=points_redeemed,
        points_earned=points_earned,
        points_after=member.points - reward_points - points_redeemed + points_earned
        + (own_bonus if unit == "points" else 0),
        cashback_redeemed=cashback_redeemed,
        cashback_earned=cashback_earned,
        cashback_after=member.cashback - cashback_redeemed + cashback_earned
        + (own_bonus if unit == "cashback" else 0),
        stamps_added=stamps_added,
        stamps_after=stamps_after,
        stamps_needed=stamps_needed,
        vouchers_issued=vouchers_issued,
        vouchers_used=vouchers_used,
        vouchers_after=member.vouchers - vouchers_used + vouchers_issued,
        tier_before=tier.name if tier else None,
        tier_after=tier_after.name if tier_after else None,
        lifetime_spend_after=member.lifetime_spend + (due if member.is_member else 0),
        bonuses=bonuses,
    )


def _points_to_redeem(
    base: ProgramRules, member: MemberFacts, requested: int, reward_points: int, cap: int, strict: bool
) -> tuple[int, Notice | None]:
    """The points to redeem (at most those held after the reward, and the cap) and why fewer, if fewer."""
    if not requested:
        return 0, None
    if not member.is_member:
        return _lowered(Notice("points_members_only", "Only a member's card holds points to redeem."),
                        strict, "redeem_points")
    if not base.point_value:
        return _lowered(Notice("redemption_off", "This program does not let points pay for purchases."),
                        strict, "redeem_points")
    held = member.points - reward_points
    most = cap // base.point_value
    points = max(0, min(requested, held, most))
    if points == requested:
        return points, None
    after_reward = " after the reward" if reward_points else ""
    if strict:  # price_purchase's checks, in its order
        if requested > held:
            raise ValidationError(f"The card has {held} points{after_reward}; {requested} cannot be redeemed.",
                                  field="redeem_points")
        raise ValidationError(f"At most {most} points can be redeemed on this purchase "
                              f"({base.redeem_max_percent}% of the amount after discounts).", field="redeem_points")
    why = (f"the card has {held} points{after_reward}" if held <= most else
           f"at most {most} can pay for this purchase ({base.redeem_max_percent}% of the amount after discounts)")
    return points, Notice("points_lowered", f"{points} points redeemed, not {requested}: {why}.")


def _cashback_to_redeem(
    base: ProgramRules, member: MemberFacts, requested: int, cap: int, currency: str, strict: bool
) -> tuple[int, Notice | None]:
    """The cashback to spend (at most the balance, and what the cap leaves after points) and why less, if less."""
    if not requested:
        return 0, None
    if not member.is_member:
        return _lowered(Notice("cashback_members_only", "Only a member's card holds cashback to spend."),
                        strict, "redeem_cashback")
    amount = max(0, min(requested, member.cashback, cap))
    if amount == requested:
        return amount, None
    why = (f"the card holds {format_amount(member.cashback, currency)}" if member.cashback <= cap
           else f"at most {format_amount(cap, currency)} can be paid this way "
                f"({base.redeem_max_percent}% of the amount after discounts, less points redeemed)")
    if strict:
        raise ValidationError(f"{format_amount(requested, currency)} of cashback cannot be redeemed: {why}.",
                              field="redeem_cashback")
    return amount, Notice("cashback_lowered", f"{format_amount(amount, currency)} of cashback redeemed, "
                                              f"not {format_amount(requested, currency)}: {why}.")


def _lowered(notice: Notice, strict: bool, field_name: str) -> tuple[int, Notice]:
    if strict:
        raise ValidationError(notice.message, field=field_name)
    return 0, notice


def stamps_for(amount_due: int, stamps: StampRules) -> int:
    """Stamps a purchase earns: one when the amount due is above zero and at least the minimum, or with
    `per_multiple` one per whole multiple of the minimum."""
    if amount_due <= 0 or amount_due < stamps.min_basket:
        return 0
    if stamps.per_multiple and stamps.min_basket > 0:
        return amount_due // stamps.min_basket
    return 1


def add_stamps(stamps: int, added: int, stamps_needed: int) -> tuple[int, int]:
    """(stamps after, vouchers issued) when `added` stamps land on a card holding `stamps`: a voucher for each
    `stamps_needed`, and the count starts again from what is over. Also for a referrer's bonus stamps."""
    if stamps_needed <= 0:
        return stamps + added, 0
    vouchers, after = divmod(stamps + added, stamps_needed)
    return after, vouchers


def _offer_notice(
    offer: Offer, member: MemberFacts, basket: int, now: datetime, currency: str, applied: Sequence[str]
) -> Notice | None:
    if offer.id in applied:
        return Notice("offer_repeated", f"{offer.title} is already on this purchase.")
    if not member.is_member:
        return Notice("offer_members_only", f"{offer.title} is for members only.")
    if offer.valid_from is not None and now < offer.valid_from:
        return Notice("offer_not_yet_valid", f"{offer.title} starts at {_when(offer.valid_from)}.")
    if offer.valid_until is not None and now >= offer.valid_until:
        return Notice("offer_expired", f"{offer.title} ended at {_when(offer.valid_until)}.")
    if basket < offer.min_basket:
        return Notice(
            "offer_below_minimum",
            f"{offer.title} needs a basket of at least {format_amount(offer.min_basket, currency)}; "
            f"this one is {format_amount(offer.min_basket - basket, currency)} short.",
        )
    return None


def _referral_bonuses(
    rules: MechanicsRules, member: MemberFacts, referral: Referral | None, warnings: list[Notice]
) -> tuple[Bonus, ...]:
    """Both referral bonuses, on the referred member's first purchase only, once, and never for a self-referral."""
    if referral is None or rules.referral is None or member.serial is None or not member.is_member:
        return ()
    if member.purchases_committed != 0 or referral.bonus_paid:
        return ()
    if referral.self_referral:
        warnings.append(Notice("self_referral",
                               "No referral bonus: the referrer and the new member share an email, phone or device."))
        return ()
    unit = rules.bonus_unit
    bonuses = (
        Bonus("referral_referee", member.serial, rules.referral.referee_bonus, unit, "Welcome, referred friend"),
        Bonus("referral_referrer", referral.referrer_serial, rules.referral.referrer_bonus, unit,
              "Referral bonus: a friend's first purchase"),
    )
    return tuple(b for b in bonuses if b.amount > 0)


# --- Reversal ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Balances:
    """What a card holds now (locked by the caller while the void is worked out)."""

    serial: str
    points: int = 0
    cashback: int = 0
    stamps: int = 0
    vouchers: int = 0
    lifetime_spend: int = 0


@dataclass(frozen=True)
class CardChange:
    """Increments to apply to one card (SQL-side, `Card.points + delta`)."""

    serial: str
    points: int = 0
    cashback: int = 0
    stamps: int = 0
    vouchers: int = 0
    lifetime_spend: int = 0

    def apply(self, balances: Balances) -> Balances:
        return Balances(
            serial=balances.serial,
            points=balances.points + self.points,
            cashback=balances.cashback + self.cashback,
            stamps=balances.stamps + self.stamps,
            vouchers=balances.vouchers + self.vouchers,
            lifetime_spend=balances.lifetime_spend + self.lifetime_spend,
        )


@dataclass(frozen=True)
class Reversal:
    """What voiding a purchase does: the card changes (the member's first, then the referrer's if its bonus is
    taken back), the coupon uses released, and whether the referral waits for a first purchase again."""

    changes: tuple[CardChange, ...]
    coupons_released: tuple[str, ...]
    referral_reopened: bool
    tier_after: str | None


def reverse(
    effects: PurchaseEffects,
    member: Balances,
    *,
    referrer: Balances | None = None,
    tiers: Sequence[Tier] = (),
) -> Reversal:
    """Undo exactly what a purchase did, or refuse with PointsAlreadySpent if the card no longer holds it.

    Points, cashback and lifetime spend move back by what the purchase moved. Referral bonuses are taken back
    only if this purchase paid them (they are in its effects), from both cards, and the referral is reopened.
    Stamps and vouchers move back as one count, vouchers x stamps_needed + stamps, so a voucher the purchase issued
    is taken back and the stamps it consumed return, whatever later purchases added. A void that would leave any
    balance of either card below zero (points, cashback or that stamp count) is refused: what it would take back
    has been spent; void the later purchase first.
    """
    if member.serial != effects.serial:
        raise ValidationError("The balances are not those of the purchase's card.", field="serial")
    own = [b for b in effects.bonuses if b.serial == effects.serial]
    theirs = [b for b in effects.bonuses if b.serial != effects.serial]
    own_points = sum(b.amount for b in own if b.unit == "points")
    own_cashback = sum(b.amount for b in own if b.unit == "cashback")
    own_stamps = sum(b.amount for b in own if b.unit == "stamps")
    points = effects.reward_points + effects.points_redeemed - effects.points_earned - own_points
    cashback = effects.cashback_redeemed - effects.cashback_earned - own_cashback
    stamps, vouchers = _stamps_back(
        member, effects.stamps_needed, effects.stamps_added + own_stamps, effects.vouchers_used
    )
    member_change = CardChange(effects.serial, points=points, cashback=cashback, stamps=stamps, vouchers=vouchers,
                               lifetime_spend=-effects.amount_due)
    _refuse_if_spent(member_change, member, "this purchase earned")
    changes = [member_change]
    if theirs:
        if referrer is None or any(b.serial != referrer.serial for b in theirs):
            raise ValidationError("Pass the referrer's balances: this purchase paid a referral bonus.",
                                  field="referrer")
        referrer_stamps = sum(b.amount for b in theirs if b.unit == "stamps")
        stamps, vouchers = _stamps_back(referrer, effects.stamps_needed, referrer_stamps, 0)
        referrer_change = CardChange(
            referrer.serial,
            points=-sum(b.amount for b in theirs if b.unit == "points"),
            cashback=-sum(b.amount for b in theirs if b.unit == "cashback"),
            stamps=stamps,
            vouchers=vouchers,
        )
        _refuse_if_spent(referrer_change, referrer, "the referral bonus gave the referrer")
        changes.append(referrer_change)
    tier = tier_for(member.lifetime_spend - effects.amount_due, tiers)
    return Reversal(
        changes=tuple(changes),
        coupons_released=effects.coupon_codes,
        referral_reopened=bool(effects.bonuses),
        tier_after=tier.name if tier else None,
    )


def _stamps_back(card: Balances, needed: int, stamps_taken: int, vouchers_returned: int) -> tuple[int, int]:
    """The (stamps, vouchers) increments that take `stamps_taken` stamps off and give `vouchers_returned` back."""
    if needed <= 0:
        return -stamps_taken, vouchers_returned
    total = card.vouchers * needed + card.stamps - stamps_taken + vouchers_returned * needed
    if total < 0:
        return total - card.stamps, -card.vouchers  # a stamp count below zero, which _refuse_if_spent refuses
    vouchers, stamps = divmod(total, needed)
    return stamps - card.stamps, vouchers - card.vouchers


def _refuse_if_spent(change: CardChange, card: Balances, what: str) -> None:
    after = change.apply(card)
    if after.points < 0:
        raise PointsAlreadySpent(
            f"The member has already spent points {what}: the card has {card.points} points and the void would "
            f"take {-change.points}. Void the later purchase first."
        )
    if after.cashback < 0:
        raise PointsAlreadySpent(
            f"The member has already spent cashback {what}: the card holds {card.cashback} and the void would "
            f"take {-change.cashback} (minor units). Void the later purchase first."
        )
    if after.stamps < 0 or after.vouchers < 0:
        raise PointsAlreadySpent(
            f"The member has already used the stamp-card voucher {what}. Void the later purchase first."
        )


# --- Dates: expiry and birthdays -----------------------------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    """The same day `months` calendar months later, or the month's last day: 31 January + 1 month = 28/29 Feb."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    next_month = date(year + month // 12, month % 12 + 1, 1)
    last = (next_month - timedelta(days=1)).day
    return date(year, month, min(day.day, last))


def points_expiry_date(last_activity: date, months: int) -> date:
    """The day points expire: `months` calendar months after the last purchase (or the enrollment, with none).

    They expire at the start of that day, so the last day to purchase and keep them is the day before.
    """
    return add_months(last_activity, months)


def expiry_due(last_activity: date, today: date, months: int | None) -> date | None:
    """The expiry date when today is on or after it (the points should be expired now), else None.

    None too when expiry is off (`months` None or 0).
    """
    if not months:
        return None
    expires = points_expiry_date(last_activity, months)
    return expires if today >= expires else None


def expiry_warning_due(
    last_activity: date, today: date, months: int | None, warn_days: int, warned_for: date | None = None
) -> date | None:
    """The expiry date to warn the member about, or None.

    A warning is due from `warn_days` before the expiry date until the day before it, once per expiry date:
    `warned_for` is the expiry date of the last warning sent, so a missed daily run still warns, and a new
    purchase (a later expiry date) is warned about afresh.
    """
    if not months or warn_days <= 0:
        return None
    expires = points_expiry_date(last_activity, months)
    if expires - timedelta(days=warn_days) <= today < expires and warned_for != expires:
        return expires
    return None


def birthday_in(year: int, birthday: tuple[int, int]) -> date:
    """The member's birthday (month, day) in `year`; 29 February is kept on 28 February in other years."""
    month, day = birthday
    if (month, day) == (2, 29) and not _is_leap(year):
        return date(year, 2, 28)
    return date(year, month, day)


def birthday_bonus_due(
    birthday: tuple[int, int], last_bonus_year: int | None, today: date, grace_days: int = 0
) -> date | None:
    """The birthday the bonus is now due for, or None. Its `.year` is what to store as `last_bonus_year`.

    Due on the birthday and up to `grace_days` after it (so a missed daily run still pays), once per year.
    A birthday late in December with a grace period may be paid in January, for the year before.
    """
    for year in (today.year, today.year - 1):
        day = birthday_in(year, birthday)
        if day <= today <= day + timedelta(days=grace_days) and last_bonus_year != year:
            return day
    return None


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


# --- Single-use codes ----------------------------------------------------------------------------------------------

_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O or U to misread


def single_use_codes(prefix: str, count: int, random_bytes: Callable[[int], bytes]) -> tuple[str, ...]:
    """A batch of `count` distinct single-use codes, PREFIX-XXXXX-XXXXX, each with 50 random bits.

    `random_bytes` is the randomness (`secrets.token_bytes` in the app); the caller still checks the batch
    against codes already stored, as it must for any unique value.
    """
    prefix = normalize_code(prefix)
    if not prefix.isascii() or not prefix.isalnum():
        raise ValidationError("A code prefix is letters and digits only.", field="prefix")
    if not 0 < count <= 100_000:
        raise ValidationError("A batch holds between 1 and 100,000 codes.", field="count")
    codes: dict[str, None] = {}
    while len(codes) < count:
        bits = int.from_bytes(random_bytes(7), "big") >> 6
        body = "".join(_CODE_ALPHABET[(bits >> shift) & 31] for shift in range(45, -1, -5))
        codes[f"{prefix}-{body[:5]}-{body[5:]}"] = None
    return tuple(codes)


# --- Simulation ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoricPurchase:
    """A committed purchase as it was rung up: the member's facts then, the basket, what was asked for, when."""

    member: MemberFacts
    basket: int
    at: datetime
    coupons: tuple[tuple[Coupon, CouponUse], ...] = ()
    offers: tuple[Offer, ...] = ()
    reward: Reward | None = None
    use_voucher: bool = False
    redeem_points: int = 0
    redeem_cashback: int = 0
    referral: Referral | None = None

    def quote(self, rules: MechanicsRules, currency: str) -> Quote:
        return quote(
            rules, self.member, self.basket, now=self.at, currency=currency, coupons=self.coupons,
            offers_chosen=self.offers, reward_chosen=self.reward, use_voucher=self.use_voucher,
            redeem_points=self.redeem_points, redeem_cashback=self.redeem_cashback, referral=self.referral,
        )


@dataclass(frozen=True)
class SimulationTotals:
    """What a rule set gives and issues over a set of purchases. Money in minor units."""

    purchases: int = 0
    basket: int = 0
    discount_given: int = 0
    amount_due: int = 0
    points_issued: int = 0  # earned plus bonuses paid in points, to anyone
    points_spent: int = 0  # redeemed plus rewards
    cashback_issued: int = 0
    cashback_redeemed: int = 0
    stamps_issued: int = 0
    vouchers_issued: int = 0
    members_discounted: int = 0  # distinct members given any discount

    def minus(self, other: SimulationTotals) -> SimulationTotals:
        return SimulationTotals(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})


@dataclass(frozen=True)
class SimulatedPurchase:
    purchase: HistoricPurchase
    before: Quote
    after: Quote

    @property
    def changed(self) -> bool:
        return _outcome(self.before) != _outcome(self.after)


@dataclass(frozen=True)
class SimulationReport:
    """The same purchases priced under the current rules and under the proposed ones.

    The members affected by the change are `members_changed`: those with at least one purchase whose result
    (its lines, amount due, anything issued or spent) differs between the two.
    """

    before: SimulationTotals
    after: SimulationTotals
    difference: SimulationTotals
    members_changed: tuple[str, ...]
    rows: tuple[SimulatedPurchase, ...]

    @property
    def members_affected(self) -> int:
        return len(self.members_changed)


def simulate(
    rules_before: MechanicsRules,
    rules_after: MechanicsRules,
    purchases: Sequence[HistoricPurchase],
    *,
    currency: str,
) -> SimulationReport:
    """What a rule change would have given and earned on real purchases (say the last 30 days).

    Each purchase is priced by `quote` on the facts it was rung up with (the tier, balance, stamp count and
    purchase count of that moment), under each rule set. So the simulation is by construction what `quote` does
    on those purchases; it does not replay how balances would have drifted under the new rules.
    """
    rows = tuple(SimulatedPurchase(p, p.quote(rules_before, currency), p.quote(rules_after, currency))
                 for p in purchases)
    before = _totals([row.before for row in rows])
    after = _totals([row.after for row in rows])
    changed = sorted({row.before.member_serial for row in rows if row.changed and row.before.member_serial})
    return SimulationReport(before=before, after=after, difference=after.minus(before),
                            members_changed=tuple(changed), rows=rows)


def _totals(quotes: Sequence[Quote]) -> SimulationTotals:
    def bonus(q: Quote, unit: BonusUnit) -> int:
        return sum(b.amount for b in q.bonuses if b.unit == unit)

    discounted = {q.member_serial for q in quotes if q.member_serial is not None and q.discount_total}
    return SimulationTotals(
        purchases=len(quotes),
        basket=sum(q.amount for q in quotes),
        discount_given=sum(q.discount_total for q in quotes),
        amount_due=sum(q.amount_due for q in quotes),
        points_issued=sum(q.points_earned + bonus(q, "points") for q in quotes),
        points_spent=sum(q.points_spent for q in quotes),
        cashback_issued=sum(q.cashback_earned + bonus(q, "cashback") for q in quotes),
        cashback_redeemed=sum(q.cashback_redeemed for q in quotes),
        stamps_issued=sum(q.stamps_added + bonus(q, "stamps") for q in quotes),
        vouchers_issued=sum(q.vouchers_issued for q in quotes),
        members_discounted=len(discounted),
    )


def _outcome(q: Quote) -> tuple[object, ...]:
    return (q.lines, q.amount_due, q.points_earned, q.points_spent, q.cashback_earned, q.cashback_redeemed,
            q.stamps_added, q.vouchers_issued, q.bonuses)


# --- Small helpers -------------------------------------------------------------------------------------------------


def percent_text(basis_points: int) -> str:
    """Basis points as a label: 500 -> "5%", 250 -> "2.5%", 1234 -> "12.34%"."""
    text = str(Decimal(basis_points) / 100)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}%"


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M %Z").strip()


def _whole(value: object, name: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(f"{name} must be a whole number, {minimum} or more.", field=name)
    if maximum is not None and value > maximum:
        raise ValidationError(f"{name} must be at most {maximum}.", field=name)
    return value


def _label(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} must be a non-empty string.", field=name)
    return value.strip()
