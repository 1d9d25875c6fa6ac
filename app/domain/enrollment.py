"""Enrolling a customer: validating what they typed, refusing a second card, issuing the first."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.domain.cards import new_page_token, unused_serial
from app.domain.errors import AlreadyEnrolled, ValidationError
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


@dataclass(frozen=True)
class EnrollmentRequest:
    name: str
    email: str | None
    phone: str | None
    marketing_consent: bool
    referral_code: str | None


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
                             referral_code=referral)


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
) -> Card:
    """A new member and their card, with the welcome bonus on the ledger. Refuses a second card."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown enrollment channel {channel!r}")
    if request.referral_code is not None:
        raise ValidationError(f"Unknown referral code {request.referral_code!r}.", field="referral_code")
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
    )
    session.add(card)
    session.flush()
    if bonus:
        session.add(LedgerEntry(card_id=card.id, kind="bonus", points=bonus, note="Welcome bonus"))
        session.flush()
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
