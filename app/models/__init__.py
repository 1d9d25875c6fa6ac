"""SQLAlchemy 2 typed models, one module per idea."""

from app.models.analytics import (
    NO_LOCATION,
    ROLLUP_NEW,
    ROLLUP_SETTLED,
    ROLLUP_VOIDED_COUNTED,
    ROLLUP_VOIDED_NEW,
    AnalyticsState,
    DailyCouponUses,
    DailyEnrollments,
    DailyPoints,
    DailyReferrals,
    DailySales,
    DailyVisits,
    MonthlyCohorts,
)
from app.models.base import Base, utcnow
from app.models.card import LEDGER_KINDS, Card, LedgerEntry, RetiredSerial
from app.models.mechanics import Coupon, CouponBatch, CouponUse, Offer, Referral, Reward
from app.models.nps import NpsAsk, NpsEmail, NpsResponse
from app.models.people import ApiKey, Customer, Staff
from app.models.program import Location, Program, SigningKey
from app.models.purchase import Purchase
from app.models.ratelimit import RateLimitWindow
from app.models.reminders import CONSENT_CHANNELS, REMINDER_STATUSES, ConsentChange, Reminder
from app.models.wallet import (
    AppleDevice,
    ApplePassState,
    ApplePush,
    AppleRegistration,
    CardCodeSecret,
    GoogleWalletClass,
    GoogleWalletObject,
    UsedRotatingCode,
    WalletCounter,
)

__all__ = [
    "LEDGER_KINDS",
    "NO_LOCATION",
    "ROLLUP_NEW",
    "ROLLUP_SETTLED",
    "ROLLUP_VOIDED_COUNTED",
    "ROLLUP_VOIDED_NEW",
    "AnalyticsState",
    "DailyCouponUses",
    "DailyEnrollments",
    "DailyPoints",
    "DailyReferrals",
    "DailySales",
    "DailyVisits",
    "MonthlyCohorts",
    "ApiKey",
    "AppleDevice",
    "ApplePassState",
    "ApplePush",
    "AppleRegistration",
    "Base",
    "Card",
    "Coupon",
    "CouponBatch",
    "CouponUse",
    "CardCodeSecret",
    "Customer",
    "GoogleWalletClass",
    "GoogleWalletObject",
    "LedgerEntry",
    "NpsAsk",
    "NpsEmail",
    "NpsResponse",
    "Location",
    "Offer",
    "Program",
    "Purchase",
    "RateLimitWindow",
    "Reminder",
    "REMINDER_STATUSES",
    "CONSENT_CHANNELS",
    "ConsentChange",
    "Referral",
    "RetiredSerial",
    "Reward",
    "SigningKey",
    "Staff",
    "UsedRotatingCode",
    "WalletCounter",
    "utcnow",
]
