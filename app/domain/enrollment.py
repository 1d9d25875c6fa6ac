"""Enrolling a customer: validating what they typed, refusing a second card, issuing the first.

A new member may come by a friend's referral link (app/domain/referrals.py): the enrollment then records who
invited them, and whether it was the same person under another name. They may also give their birthday, month
and day only, for a birthday treat (app/domain/points_upkeep.py pays it).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.domain.cards import new_page_token, unused_serial
from app.domain.errors import AlreadyEnrolled, ValidationError
from app.domain.referrals import find_referrer, record_referral, referral_party, unused_referral_code
from app.domain.rules import rules_from_json, tier_for
from app.models import Card, Customer, LedgerEntry, Program

# The marketing-consent wording shown next to the checkbox. Change the version whenever the text changes:
# each customer's record keeps the version they saw.
CONSENT_WORDING_VERSION = "2026-11-v1"
CONSENT_WORDING = "Send me offers and news from {program} by email or text message. I can unsubscribe at any time."

CHANNELS = ("web", "till", "api", "referral")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_PHONE_SEPARATORS = re.compile(r"[\s\-().]")
_PHONE_DIGITS = re.compile(r"[0-9]{7,15}")  # ASCII only: isdigit() would take "²" and other scripts' digits
_BIRTHDAY = re.compile(r"(?P<month>[0-9]{2})-(?P<day>[0-9]{2})")
# Why the form asks, next to the field: a birthday is personal data and is asked for one purpose only.
BIRTHDAY_PURPOSE = "For a birthday treat; leave empty if you prefer. We keep the day and month, never the year."
MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
               "October", "November", "December")


@dataclass(frozen=True)
class EnrollmentRequest:
    name: str
    email: str | None
    phone: str | None
    marketing_consent: bool
    referral_code: str | None
    birthday: tuple[int, int] | None = None  # (month, day)


def parse_enrollment(data: Mapping[str, object]) -> EnrollmentRequest:
    """Validate an enrollment from the API or the web form; every message names the field and the fix."""
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("Please give a name.", field="name")
    name = " ".join(name.split())
    if len(name) > 100:
        raise ValidationError("The name is longer than 100 characters.", field="name")
    _refuse_control_characters(name, "name")
    contact = parse_contact(data.get("email"), data.get("phone"))
    consent = data.get("marketing_consent", False)
    if not isinstance(consent, bool):
        raise ValidationError("marketing_consent must be true or false.", field="marketing_consent")
    referral = _optional_text(data.get("referral_code"), "referral_code")
    return EnrollmentRequest(name=name, email=contact.email, phone=contact.phone, marketing_consent=consent,
                             referral_code=referral, birthday=parse_birthday(data.get("birthday")))


def parse_birthday(value: object) -> tuple[int, int] | None:
    """A birthday as "MM-DD" (no year), as (month, day); None or "" for none. 29 February is a birthday."""
    text = _optional_text(value, "birthday")
    if text is None:
        return None
    match = _BIRTHDAY.fullmatch(text)
    if match is None:
        raise ValidationError(f"birthday {text!r} is not a month and day such as \"07-14\" (MM-DD, no year).",
                              field="birthday")
    return _birthday(int(match["month"]), int(match["day"]))


def birthday_from_form(month: str, day: str) -> str | None:
    """The form's two birthday menus as "MM-DD", or None when both are left empty."""
    month, day = month.strip(), day.strip()
    if not month and not day:
        return None
    if not month or not day:
        raise ValidationError("Please choose both the month and the day of your birthday, or leave both empty.",
                              field="birthday")
    if not (month.isascii() and month.isdigit() and day.isascii() and day.isdigit()):
        raise ValidationError("Please choose your birthday's month and day from the lists.", field="birthday")
    month_number, day_number = _birthday(int(month), int(day))
    return f"{month_number:02d}-{day_number:02d}"


def _birthday(month: int, day: int) -> tuple[int, int]:
    if not 1 <= month <= 12:
        raise ValidationError(f"There is no month {month}: a birthday's month is 01 to 12.", field="birthday")
    try:
        date(2000, month, day)  # a leap year, so 29 February is accepted
    except ValueError:
        raise ValidationError(
            f"There is no {day} {MONTH_NAMES[month - 1]}: please check the day of your birthday.", field="birthday"
        ) from None
    return month, day


@dataclass(frozen=True)
class Contact:
    """How to reach a member, normalised so the same person is recognised however they typed it."""

    email: str | None
    phone: str | None


def parse_contact(email: object, phone: object) -> Contact:
    """Validate an email and/or phone; at least one is required."""
    email = _optional_text(email, "email")
    phone = _optional_text(phone, "phone")
    if email is None and phone is None:
        raise ValidationError("Please give an email address or a phone number (or both).", field="email")
    if email is not None:
        email = email.lower()
        if len(email) > 254 or not _EMAIL.match(email):
            raise ValidationError(f"{email!r} is not an email address.", field="email")
    return Contact(email=email, phone=normalise_phone(phone) if phone is not None else None)


def normalise_phone(phone: str) -> str:
    """+ and digits only, so "+33 6 12-34-56-78" and "+33612345678" are the same member."""
    compact = _PHONE_SEPARATORS.sub("", phone)
    digits = compact[1:] if compact.startswith("+") else compact
    if not _PHONE_DIGITS.fullmatch(digits):
        raise ValidationError(
            f"{phone!r} is not a phone number; use digits, optionally starting with + and the country code.",
            field="phone",
        )
    return ("+" if compact.startswith("+") else "") + digits


def find_enrolled(session: Session, program: Program, contact: Contact | EnrollmentRequest) -> Customer | None:
    """The member with this email or phone in the program, if any."""
    clauses = []
    if contact.email:
        clauses.append(Customer.email == contact.email)
    if contact.phone:
        clauses.append(Customer.phone == contact.phone)
    return session.scalar(select(Customer).where(Customer.program_id == program.id, or_(*clauses)).limit(1))


def enroll_customer(
    session: Session,
    program: Program,
    request: EnrollmentRequest,
    *,
    channel: str,
    location_id: int | None = None,
    device: str | None = None,
) -> Card:
    """A new member and their card, with the welcome bonus on the ledger. Refuses a second card.

    With a referral code, the member is attributed to the card it names (a Referral row, judged for
    self-referral); the bonuses wait for their first purchase. `device` is the enrolling browser's id (the
    device_id cookie), kept on the card for later self-referral checks.
    """
    if channel not in CHANNELS:
        raise ValueError(f"unknown enrollment channel {channel!r}")
    referrer = None
    if request.referral_code is not None:
        referrer = find_referrer(session, program, request.referral_code)
        if referrer is None:
            raise ValidationError(
                f"{request.referral_code!r} is not a referral code of {program.name}: check it (it is the part "
                "after /r/ in the member's invitation link), or leave referral_code out to enroll without one.",
                field="referral_code",
            )
    existing = find_enrolled(session, program, request)
    if existing is not None:
        which = "email address" if request.email and existing.email == request.email else "phone number"
        raise AlreadyEnrolled(f"This {which} already has a card with {program.name}.", field=which.split()[0])
    customer = Customer(
        program_id=program.id,
        name=request.name,
        email=request.email,
        phone=request.phone,
        marketing_consent=request.marketing_consent,
        birthday_month=request.birthday[0] if request.birthday else None,
        birthday_day=request.birthday[1] if request.birthday else None,
        consent_wording_version=CONSENT_WORDING_VERSION,
        channel=channel,
        location_id=location_id,
    )
    session.add(customer)
    session.flush()
    rules = rules_from_json(program.rules)
    bonus = rules.welcome_bonus
    starting_tier = tier_for(0, rules.tiers)
    card = Card(
        program_id=program.id,
        customer_id=customer.id,
        serial=unused_serial(session),
        status="active",
        points=bonus,
        lifetime_spend=0,
        tier=starting_tier.name if starting_tier else None,
        page_token=new_page_token(),
        referral_code=unused_referral_code(session),
        enrolled_device=device,
    )
    session.add(card)
    session.flush()
    if bonus:
        session.add(LedgerEntry(card_id=card.id, kind="bonus", points=bonus, note="Welcome bonus"))
        session.flush()
    if referrer is not None:
        record_referral(session, referrer, card, referral_party(request.email, request.phone, device))
    return card


def _optional_text(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string.", field=field)
    _refuse_control_characters(value, field)
    return value.strip() or None


def _refuse_control_characters(value: str, field: str) -> None:
    # NUL and friends are never part of a name or an address, and PostgreSQL refuses NUL outright.
    if any(unicodedata.category(ch) == "Cc" for ch in value.strip()):
        raise ValidationError(f"The {field} contains control characters.", field=field)
