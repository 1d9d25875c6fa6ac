"""Referral links: each card's short code, who invited a new member, and whether it was really the same person.

A member shares /r/<code>. The code names their card (never the serial, never the card code) and is no secret:
it is meant to be passed around, and all it reveals is the masked name on the invitation ("Invited by Amina K.").
Codes are 8 characters of Crockford's base32 (40 random bits): no I, L, O or U to misread, and read back
forgivingly (lower case, dashes, spaces, O for 0, I or L for 1).

Self-referral is judged by `mechanics.is_self_referral` on canonical forms of what the two people gave, so the
usual tricks do not hide one person behind two cards: a "+tag" in an email address, the dots of a Gmail address,
a phone number written nationally once and internationally once, or the same browser (the `device_id` cookie).
A self-referral is still recorded (and attributed), but the bonuses are not paid for it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.domain.mechanics import ReferralParty, is_self_referral
from app.models import Card, Program, Referral

REFERRAL_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERRAL_CODE_LENGTH = 8
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})
_REFERRAL_CODE = re.compile(f"[{REFERRAL_CODE_ALPHABET}]{{{REFERRAL_CODE_LENGTH}}}")
_SEPARATORS = re.compile(r"[\s\-]")

# The device cookie's value: what `new_device_id` makes; anything else a browser sends is ignored.
DEVICE_COOKIE = "device_id"
_DEVICE_ID = re.compile(r"[A-Za-z0-9_\-]{16,64}")

# Providers that ignore dots in the local part, so a.mina@gmail.com is amina@gmail.com.
_DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}
# Numbers are compared by their last nine digits: "+33 6 12 34 56 78" and "06 12 34 56 78" are one phone.
_PHONE_DIGITS_COMPARED = 9


def new_referral_code(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """Eight random characters of Crockford's base32 (40 bits)."""
    bits = int.from_bytes(random_bytes(5), "big")
    return "".join(REFERRAL_CODE_ALPHABET[(bits >> shift) & 31] for shift in range(35, -1, -5))


def normalize_referral_code(text: str) -> str | None:
    """A code as typed or linked, as stored; None if it cannot be a referral code at all."""
    code = _SEPARATORS.sub("", text).upper().translate(_READ_AS)
    return code if _REFERRAL_CODE.fullmatch(code) else None


def unused_referral_code(session: Session) -> str:
    """A fresh referral code no card has (a collision of 40 random bits is rare, but it costs one query)."""
    while True:
        code = new_referral_code()
        if session.scalar(select(Card.id).where(Card.referral_code == code)) is None:
            return code


def referral_details_missing(card: Card, device: str | None) -> bool:
    """Whether `complete_referral_details` has anything to write for this card."""
    return card.referral_code is None or (device is not None and card.enrolled_device is None)


def complete_referral_details(session: Session, card: Card, device: str | None) -> None:
    """Give a card what its referral link needs, when it was enrolled before links existed or at a till.

    Its referral code; and, when the card has no enrolling browser on file, the browser now showing its page
    (`device`): following one's own link from that phone is then recognised as a self-referral. Two first
    views at once must not hand out two codes, so each is set only where none is yet.
    """
    if card.referral_code is None:
        session.execute(
            update(Card).where(Card.id == card.id, Card.referral_code.is_(None))
            .values(referral_code=unused_referral_code(session))
            .execution_options(synchronize_session=False)
        )
    if device is not None and card.enrolled_device is None:
        session.execute(
            update(Card).where(Card.id == card.id, Card.enrolled_device.is_(None))
            .values(enrolled_device=device)
            .execution_options(synchronize_session=False)
        )
    session.refresh(card, ["referral_code", "enrolled_device"])


def find_referrer(session: Session, program: Program, code: str) -> Card | None:
    """The card of the program whose referral link carries `code`, or None (unknown, or another program's)."""
    normalized = normalize_referral_code(code)
    if normalized is None:
        return None
    return session.scalar(select(Card).where(Card.referral_code == normalized, Card.program_id == program.id))


def find_referrer_anywhere(session: Session, code: str) -> Card | None:
    """The card whose referral link carries `code`, in whichever program: /r/<code> names no program."""
    normalized = normalize_referral_code(code)
    if normalized is None:
        return None
    return session.scalar(select(Card).where(Card.referral_code == normalized))


def new_device_id() -> str:
    """A random id for one browser (the `device_id` cookie): 128 bits, URL-safe."""
    return secrets.token_urlsafe(16)


def parse_device_id(value: str | None) -> str | None:
    """The device id a browser sent, if it is one we could have made; anything else counts as no device."""
    return value if value is not None and _DEVICE_ID.fullmatch(value) else None


def canonical_email(email: str | None) -> str | None:
    """One person's mailbox however the address is dressed: lower case, no "+tag", no dots at Gmail."""
    if not email or "@" not in email:
        return None
    local, _, domain = email.casefold().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in _DOTLESS_DOMAINS:
        domain = _DOTLESS_DOMAINS[domain]
        local = local.replace(".", "")
    return f"{local}@{domain}" if local else None


def phone_key(phone: str | None) -> str | None:
    """The part of a (normalised) phone number that is the same written nationally or internationally."""
    if not phone:
        return None
    digits = phone.lstrip("+")
    return digits[-_PHONE_DIGITS_COMPARED:]


def referral_party(email: str | None, phone: str | None, device: str | None) -> ReferralParty:
    """What identifies a person for the self-referral check, in canonical form."""
    return ReferralParty(email=canonical_email(email), phone=phone_key(phone), device=device)


def record_referral(session: Session, referrer: Card, referee: Card, referee_party: ReferralParty) -> Referral:
    """Attribute a new member to the card whose link they came by, judging whether it was the same person.

    The referrer's device is the browser that enrolled their card (or first opened its page).
    """
    customer = referrer.customer
    referrer_party = referral_party(customer.email, customer.phone, referrer.enrolled_device)
    referral = Referral(
        referrer_card_id=referrer.id,
        referee_card_id=referee.id,
        self_referral=is_self_referral(referrer_party, referee_party),
    )
    session.add(referral)
    session.flush()
    return referral
