"""Rotating ("live") card codes: the signed card code plus a device slot and a TOTP value that changes every period.

A program may turn them on (`flask programs rotating-codes --program SLUG --on`). Its members' QR codes then
read

    <signed card code> "." <slot> "." <TOTP>

where the signed card code is the 120-character code of docs/card-code.md, unchanged; the slot names which of
the card's secrets made the TOTP (0 is the card's Google Wallet object, 1 and up the browsers that opened the
card page); and the TOTP is RFC 6238 (HMAC-SHA1, 6 digits) over step = floor(unix time / the program's period).

A till accepts a live code within one step either side of its own clock, once: the scan takes it (a row in the
replay cache), and a second scan of it is refused. The till that took it may go on to quote and buy with it for
a while (the cashier needs time to ring up the basket); no other till may. A code older than that is refused as
an "expired code", which is what a screenshot or a photo of the phone becomes within a minute.

The format helpers and `totp` are pure; the rest take the session, the actor and the clock as arguments.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.domain.errors import CodeAlreadyUsed, ExpiredCode, InvalidCardCode, ValidationError
from app.domain.pass_changes import note_program_changed
from app.models import Card, CardCodeSecret, Program, UsedRotatingCode

DIGITS = 6
SECRET_BYTES = 20  # 160 bits, the length RFC 4226 section 4 recommends for HMAC-SHA1
GOOGLE_WALLET_SLOT = 0
MAX_DEVICES = 10  # browsers per card; an eleventh replaces the one registered longest ago
MAX_SLOT = 999_999
# The steps a till accepts, by their distance from its own: now first, then the one before, then the one after.
_STEP_OFFSETS = (0, -1, 1)
# How long the till that scanned a live code may go on quoting and buying with it.
SAME_TILL_GRACE = dt.timedelta(minutes=10)
# Replay-cache rows older than this say nothing any more (no step that old is accepted): they are deleted.
REPLAY_KEPT = dt.timedelta(days=1)
MIN_PERIOD_SECONDS, MAX_PERIOD_SECONDS = 10, 300

_ROTATING = re.compile(r"([A-Z2-7]{120})\.(0|[1-9][0-9]{0,5})\.([0-9]{6})")


@dataclass(frozen=True)
class RotatingCode:
    """A live code split into its parts; nothing is checked yet beyond the shape."""

    static_code: str
    slot: int
    value: str


# ---- the format: pure -----------------------------------------------------------------------------------------


def totp(secret: bytes, step: int, digits: int = DIGITS) -> str:
    """RFC 6238 TOTP (RFC 4226 HOTP of the time step) with HMAC-SHA1, as `digits` decimal digits."""
    mac = hmac.new(secret, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    number = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFF_FFFF
    return str(number % 10**digits).zfill(digits)


def step_at(now: dt.datetime, period: int) -> int:
    """The TOTP time step `now` falls in: whole periods since the Unix epoch."""
    return int(now.timestamp()) // period


def format_rotating_code(static_code: str, slot: int, value: str) -> str:
    return f"{static_code}.{slot}.{value}"


def rotating_code_at(static_code: str, slot: int, secret: bytes, now: dt.datetime, period: int) -> str:
    """The live code a device holding `secret` in `slot` shows at `now` (what Google Wallet's object shows)."""
    return format_rotating_code(static_code, slot, totp(secret, step_at(now, period)))


def parse_rotating_code(text: object) -> RotatingCode | None:
    """Split a live code; None for anything that is not one (a static code, or not a string at all).

    A dotted string that is not a well-formed live code is refused here: it was meant to be one.
    """
    if not isinstance(text, str) or "." not in text:
        return None
    match = _ROTATING.fullmatch(text)
    if match is None:
        raise InvalidCardCode("This live card code is incomplete or garbled. Scan it again.")
    return RotatingCode(static_code=match[1], slot=int(match[2]), value=match[3])


def static_part(code: str) -> str:
    """The signed card code inside a well-formed live code; anything else as it is (the card code check then
    says what is wrong with it)."""
    match = _ROTATING.fullmatch(code) if "." in code else None
    return code if match is None else match[1]




def _matching_step(secret: bytes, value: str, now_step: int) -> int | None:
    """The step within the accepted window whose TOTP is `value`: now first, then the one before, then after."""
    for offset in _STEP_OFFSETS:
        step = now_step + offset
        if hmac.compare_digest(totp(secret, step), value):
            return step
    return None


# ---- the program's switch -------------------------------------------------------------------------------------


def set_rotating_codes(session: Session, program: Program, *, on: bool, period: int | None = None) -> Program:
    """Turn live codes on or off for a program, optionally with a new period (10 to 300 seconds).

    Every wallet pass of the program shows its code differently from now on, so they are all republished.
    """
    if period is not None and not MIN_PERIOD_SECONDS <= period <= MAX_PERIOD_SECONDS:
        raise ValidationError(
            f"The period must be between {MIN_PERIOD_SECONDS} and {MAX_PERIOD_SECONDS} seconds (not {period}): "
            "short enough that a screenshot expires quickly, long enough for a phone's clock to be a little off.",
            field="period",
        )
    program.rotating_codes = on
    if period is not None:
        program.code_period_seconds = period
    program.pass_revision += 1
    note_program_changed(session, program.id)
    session.flush()
    return program


# ---- secrets --------------------------------------------------------------------------------------------------


def new_device_secret(session: Session, card: Card, now: dt.datetime) -> CardCodeSecret:
    """A secret for one more browser showing this card: the next slot from 1 up, 20 random bytes.

    A card keeps at most MAX_DEVICES browsers; a new one replaces the one registered longest ago. Slot numbers
    are not handed out again while a higher one lives, so a browser whose secret was replaced sees its slot
    missing from the card page's list and asks for a new secret (static/js/card-code.js).
    """
    # Two tabs asking at once would pick the same slot: the card's row lock puts them one after the other.
    session.execute(select(Card.id).where(Card.id == card.id).with_for_update())
    devices = list(session.scalars(
        select(CardCodeSecret)
        .where(CardCodeSecret.card_id == card.id, CardCodeSecret.slot >= 1)
        .order_by(CardCodeSecret.created_at, CardCodeSecret.slot)
    ))
    for replaced in devices[: max(0, len(devices) - MAX_DEVICES + 1)]:
        session.delete(replaced)
    kept = devices[max(0, len(devices) - MAX_DEVICES + 1) :]
    slot = max((device.slot for device in kept), default=0) + 1
    if slot > MAX_SLOT:  # never in practice; then take the lowest free slot
        taken = {device.slot for device in kept}
        slot = next(n for n in range(1, MAX_SLOT + 1) if n not in taken)
    device = CardCodeSecret(card_id=card.id, slot=slot, secret=secrets.token_bytes(SECRET_BYTES), created_at=now)
    session.add(device)
    session.flush()
    return device


def device_slots(session: Session, card: Card) -> list[int]:
    """The slots of the browsers that may show this card's live code now."""
    return list(session.scalars(
        select(CardCodeSecret.slot)
        .where(CardCodeSecret.card_id == card.id, CardCodeSecret.slot >= 1)
        .order_by(CardCodeSecret.slot)
    ))


def slot0_secret(session: Session, card: Card) -> CardCodeSecret:
    """The card's Google Wallet secret (slot 0), made on first use; the same one ever after."""
    existing = session.get(CardCodeSecret, (card.id, GOOGLE_WALLET_SLOT))
    if existing is not None:
        return existing
    try:
        with session.begin_nested():
            made = CardCodeSecret(card_id=card.id, slot=GOOGLE_WALLET_SLOT, secret=secrets.token_bytes(SECRET_BYTES))
            session.add(made)
        return made
    except IntegrityError:  # another request made it first: use theirs
        found = session.scalar(
            select(CardCodeSecret)
            .where(CardCodeSecret.card_id == card.id, CardCodeSecret.slot == GOOGLE_WALLET_SLOT)
            .execution_options(populate_existing=True)
        )
        assert found is not None
        return found


def forget_device_secrets(session: Session, card: Card, *, browsers_only: bool = False) -> None:
    """Withdraw the card's secrets (its browsers', and Google Wallet's unless `browsers_only`): their live codes
    stop scanning."""
    lowest = 1 if browsers_only else GOOGLE_WALLET_SLOT
    session.execute(delete(CardCodeSecret).where(CardCodeSecret.card_id == card.id, CardCodeSecret.slot >= lowest))


# ---- the till's check -----------------------------------------------------------------------------------------


def check_rotating(
    session: Session, card: Card, program: Program, code: RotatingCode, actor: str, now: dt.datetime,
    *, consume: bool,
) -> None:
    """Accept a live code of `card` (already verified as the card's signed code) or refuse it.

    `actor` is who is at the till ("staff:12", "api_key:3"). A scan (`consume`) takes the code: nobody may scan
    it again. A quote or a purchase (not `consume`) may use a code its own actor took within SAME_TILL_GRACE;
    a code nobody took yet is taken by it.
    """
    if not program.rotating_codes:
        raise InvalidCardCode(f"{program.name} does not use live codes; scan the member's card code.")
    device = session.get(CardCodeSecret, (card.id, code.slot))
    if device is None:
        raise InvalidCardCode(
            "This live code comes from a phone or pass this card no longer knows. Ask the member to reload their "
            "card page and show the new code."
        )
    step = _matching_step(device.secret, code.value, step_at(now, program.code_period_seconds))
    if step is None:
        if not consume and _taken_recently_by(session, card, code, device.secret, actor, now):
            return
        raise ExpiredCode(
            "This is an expired code: a screenshot, a photo or a page left open too long. Ask the member to show "
            "the live code on their phone."
        )
    if consume:
        if not _take(session, card.id, code.slot, step, actor, now):
            raise _already_used(program)
        return
    # A quote or purchase: the till that scanned the code goes on with it; a code nobody scanned yet (from a
    # client that skips /scans) is taken here, like a scan.
    taken = _taken(session, card.id, code.slot, step)
    if taken is None:
        if _take(session, card.id, code.slot, step, actor, now):
            return
        taken = _taken(session, card.id, code.slot, step)  # the same till's own twin request, perhaps
    if taken is None or taken.actor != actor or taken.used_at < now - SAME_TILL_GRACE:
        raise _already_used(program)


def _taken(session: Session, card_id: int, slot: int, step: int) -> UsedRotatingCode | None:
    return session.scalar(
        select(UsedRotatingCode)
        .where(UsedRotatingCode.card_id == card_id, UsedRotatingCode.slot == slot, UsedRotatingCode.step == step)
        .execution_options(populate_existing=True)
    )


def _already_used(program: Program) -> CodeAlreadyUsed:
    return CodeAlreadyUsed(
        "This code was already scanned. Ask the member for the live code on their phone: it changes every "
        f"{program.code_period_seconds} seconds."
    )


def _take(session: Session, card_id: int, slot: int, step: int, actor: str, now: dt.datetime) -> bool:
    """Record the code as used; False when it already was (by anyone). Of two tills at once, one wins."""
    session.execute(
        delete(UsedRotatingCode).where(UsedRotatingCode.card_id == card_id,
                                       UsedRotatingCode.used_at < now - REPLAY_KEPT)
    )
    try:
        # A savepoint, so the losing insert leaves the rest of the transaction usable on PostgreSQL.
        with session.begin_nested():
            session.execute(insert(UsedRotatingCode).values(card_id=card_id, slot=slot, step=step, actor=actor,
                                                            used_at=now))
    except IntegrityError:
        return False
    return True


def _taken_recently_by(
    session: Session, card: Card, code: RotatingCode, secret: bytes, actor: str, now: dt.datetime
) -> bool:
    """Whether `actor` took this very code (its step's TOTP is the value) within SAME_TILL_GRACE."""
    steps = session.scalars(
        select(UsedRotatingCode.step).where(
            UsedRotatingCode.card_id == card.id, UsedRotatingCode.slot == code.slot,
            UsedRotatingCode.actor == actor, UsedRotatingCode.used_at >= now - SAME_TILL_GRACE,
        )
    )
    return any(hmac.compare_digest(totp(secret, step), code.value) for step in steps)
