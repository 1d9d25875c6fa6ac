"""Cards: issuing their signed codes, checking a scanned code, revoking and reissuing, and the ledger audit."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from app.domain.apple_wallet import forget_card_passes
from app.domain.card_code import ParsedCode, new_serial, parse_card_code, sign_card_code, verify_signature
from app.domain.errors import (
    CardRevoked,
    Conflict,
    InvalidCardCode,
    NotFound,
    RotatingCodeRequired,
    WrongProgram,
)
from app.domain.pass_changes import note_card_changed
from app.domain.rotating_codes import check_rotating, forget_device_secrets, parse_rotating_code
from app.domain.signing import KeyStore, active_signing_key, public_key_from_bytes
from app.models import Card, LedgerEntry, Program, RetiredSerial, SigningKey
from app.models.card import new_pass_auth_token

_SERIAL = re.compile(r"[A-Z2-7]{13}")


def unused_serial(session: Session) -> str:
    """A fresh random serial; a collision of 64 random bits is all but impossible, but it costs one query."""
    while True:
        serial = new_serial()
        taken = session.scalar(select(Card.id).where(Card.serial == serial)) or session.get(RetiredSerial, serial)
        if not taken:
            return serial


def new_page_token() -> str:
    """The secret in a card page's link: 128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)


def card_code(session: Session, card: Card, keys: KeyStore) -> str:
    """The card's current code, always signed with its program's active key."""
    signing_key = active_signing_key(session, card.program_id)
    return sign_card_code(keys.load(signing_key.kid), signing_key.kid, card.program.slug, card.serial)


@dataclass(frozen=True)
class Signer:
    """What a key id stands for: the program it signs for and its public key. Never changes for a kid."""

    kid: str
    program_id: int
    public_key: bytes


@dataclass(frozen=True)
class CheckedCode:
    """A code whose signature verified; `load_card` confirms the signer is still registered and not removed."""

    parsed: ParsedCode
    signer: Signer


# Signers by kid, so the signature check needs no query. An entry is only a hint: `load_card`'s query confirms
# that this very key is registered and not removed, so a removal takes effect at once in every process.
_signers: dict[str, Signer] = {}
_SIGNERS_KEPT = 1024

_SIGNING_KEY_BY_KID = select(SigningKey).where(SigningKey.kid == bindparam("kid"))
_SIGNER_STILL_VALID = (
    select(SigningKey.id)
    .where(
        SigningKey.kid == bindparam("kid"),
        SigningKey.program_id == bindparam("program_id"),
        SigningKey.public_key == bindparam("public_key"),
        SigningKey.status != "removed",
    )
    .exists()
)
_CARD = select(Card).where(
    Card.serial == bindparam("serial"), Card.program_id == bindparam("program_id"), _SIGNER_STILL_VALID
)
_CARD_FOR_UPDATE = _CARD.with_for_update(of=Card).execution_options(populate_existing=True)


def verify_card_code(session: Session, program: Program, code: object, *, lock: bool = False) -> Card:
    """The card a scanned code belongs to, or the reason it is refused at this program's tills.

    With `lock`, the card row is read FOR UPDATE, so the caller may then change its balance safely.
    """
    return load_card(session, program, check_code_signature(session, program, code), lock=lock)


def verify_till_code(
    session: Session, program: Program, code: object, *, actor: str, now: dt.datetime, consume: bool
) -> Card:
    """The card a till's scanned code names, under the program's choice of static or live codes.

    A program with live codes (app/domain/rotating_codes.py) takes only them: a static code, even a genuine
    one, is a printout or a screenshot there. `consume` is True for a scan (the code is taken, once), False for
    a quote or a purchase (the till that scanned it goes on with it). A program without live codes takes a live
    code by the signed card code inside it, which it would take on its own anyway: a pass or a page still
    showing live codes just after the program turned them off keeps working.
    """
    rotating = parse_rotating_code(code)
    card = verify_card_code(session, program, code if rotating is None else rotating.static_code)
    if not program.rotating_codes:
        return card
    if rotating is None:
        raise RotatingCodeRequired(
            "This program uses live codes: scan the code on the member's phone, not a printout or screenshot."
        )
    check_rotating(session, card, program, rotating, actor, now, consume=consume)
    return card


def check_code_signature(session: Session, program: Program, code: object) -> CheckedCode:
    """The first half of `verify_card_code`: the code is well formed, signed by a known key, of this program."""
    parsed = parse_card_code(code)
    signer = _signers.get(parsed.kid)
    if signer is None or not _signature_holds(session, parsed, signer):
        # Not known here yet, or known by a key the database no longer has (a test's rolled-back key, say).
        signer = _signer_from_database(session, parsed.kid)
        if not _signature_holds(session, parsed, signer):
            raise InvalidCardCode("This card code has been altered or was not issued by us.")
        if len(_signers) >= _SIGNERS_KEPT:
            _signers.clear()
        _signers[parsed.kid] = signer
    if signer.program_id != program.id:
        other = session.get(Program, signer.program_id)
        raise WrongProgram(f"This is a card of {other.name if other else 'another program'}, not of {program.name}.")
    return CheckedCode(parsed, signer)


def load_card(session: Session, program: Program, checked: CheckedCode, *, lock: bool = False) -> Card:
    """The second half of `verify_card_code`: the card a checked code names, unless revoked or replaced."""
    parsed, signer = checked.parsed, checked.signer
    card = session.scalar(
        _CARD_FOR_UPDATE if lock else _CARD,
        {"serial": parsed.serial, "program_id": program.id, "kid": signer.kid, "public_key": signer.public_key},
    )
    if card is None:
        still_valid = session.scalar(
            select(_SIGNER_STILL_VALID),
            {"kid": signer.kid, "program_id": signer.program_id, "public_key": signer.public_key},
        )
        if not still_valid:
            _signers.pop(signer.kid, None)
            raise InvalidCardCode("This card code was signed by a key we do not know.")
        if session.get(RetiredSerial, parsed.serial) is not None:
            raise CardRevoked("This card was replaced by a newer one; ask the member to show their new card.")
        raise InvalidCardCode("This card is not on file.")
    if card.status == "revoked":
        raise CardRevoked("This card has been revoked; ask the member for their new card.")
    return card


def _signer_from_database(session: Session, kid: str) -> Signer:
    signing_key = session.scalar(_SIGNING_KEY_BY_KID, {"kid": kid})
    if signing_key is None or signing_key.status == "removed":
        raise InvalidCardCode("This card code was signed by a key we do not know.")
    return Signer(kid, signing_key.program_id, signing_key.public_key)


def _signature_holds(session: Session, parsed: ParsedCode, signer: Signer) -> bool:
    program = session.get(Program, signer.program_id)
    if program is None:
        return False
    try:
        verify_signature(parsed, program.slug, public_key_from_bytes(signer.public_key))
    except InvalidCardCode:
        return False
    return True


def display_name(name: str) -> str:
    """The name a till may show: first name and initial of the last ("Amina K.")."""
    parts = name.split()
    if not parts:
        return ""
    if len(parts) == 1:
        return parts[0]
    return f"{parts[0]} {parts[-1][0].upper()}."


def get_card(session: Session, program: Program, serial: str) -> Card:
    card = None
    if _SERIAL.fullmatch(serial):
        card = session.scalar(select(Card).where(Card.serial == serial, Card.program_id == program.id))
    if card is None:
        raise NotFound(f"No card {serial!r} in this program.")
    return card


def find_card_by_serial(session: Session, serial: str) -> Card:
    serial = serial.strip().upper()
    card = session.scalar(select(Card).where(Card.serial == serial)) if _SERIAL.fullmatch(serial) else None
    if card is None:
        raise NotFound(f"No card with serial {serial!r}.")
    return card


def revoke_card(session: Session, card: Card) -> Card:
    """A lost or stolen card: every code it ever had is refused with the reason "revoked"."""
    if card.status == "revoked":
        raise Conflict(f"Card {card.serial} is already revoked.")
    card.status = "revoked"
    note_card_changed(session, card.id)
    session.flush()
    return card


def reissue_card(session: Session, card: Card) -> Card:
    """A replacement on the same account and balance: a new serial and code, and a new card page link.

    Every code of the old serial is refused with the reason "revoked" from then on.
    """
    session.add(RetiredSerial(serial=card.serial, card_id=card.id))
    card.serial = unused_serial(session)
    card.status = "active"
    card.page_token = new_page_token()
    # The old wallet pass goes with the old serial: its token stops working and its devices are forgotten.
    card.pass_auth_token = new_pass_auth_token()
    forget_card_passes(session, card)
    # The browsers that showed live codes did so behind the old link, which now leads nowhere.
    forget_device_secrets(session, card, browsers_only=True)
    note_card_changed(session, card.id)
    session.flush()
    return card


@dataclass(frozen=True)
class LedgerMismatch:
    serial: str
    balance: int
    ledger_sum: int


def check_ledger(session: Session) -> tuple[int, list[LedgerMismatch]]:
    """Recompute every balance from the ledger; return how many cards were checked and which disagree."""
    sums = (
        select(LedgerEntry.card_id, func.coalesce(func.sum(LedgerEntry.points), 0).label("total"))
        .group_by(LedgerEntry.card_id)
        .subquery()
    )
    rows = session.execute(
        select(Card.serial, Card.points, func.coalesce(sums.c.total, 0)).outerjoin(sums, sums.c.card_id == Card.id)
    ).all()
    mismatches = [LedgerMismatch(s, p, int(t)) for s, p, t in rows if int(t) != p]
    return len(rows), mismatches

