"""Google Wallet objects of cards: what a card's object shows, the save link, and the patches owed.

A program is one loyalty class at Google and a card one loyalty object. A row in `google_wallet_objects` is
made when a save link is handed out (or the object is inserted over REST); when the card drifts from what that
row says the object shows, the object is owed a PATCH, sent by the pass publisher with retries and back-off.
There is no network in here: the caller sends and reports back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.orm import Session

from app.domain.apple_wallet import short_serial
from app.domain.retries import MAX_ATTEMPTS, retry_delay
from app.models import Card, GoogleWalletClass, GoogleWalletObject, Program
from passes.google import LoyaltyCard, LoyaltyProgram, Offer, RotatingBarcode

MAX_SYNC_ATTEMPTS = MAX_ATTEMPTS
SYNC_LEASE = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class GoogleWalletConfig:
    """The issuer account's id and the origins the save button may appear on."""

    issuer_id: str
    origins: tuple[str, ...]
    development: bool = False


def loyalty_program(program: Program, config: GoogleWalletConfig, *, logo_url: str,
                    homepage_url: str | None) -> LoyaltyProgram:
    """The program as Google's loyalty class describes it."""
    return LoyaltyProgram(
        issuer_id=config.issuer_id,
        class_suffix=f"loyalty-{program.slug}",
        issuer_name=program.name,
        program_name=program.name,
        logo_url=logo_url,
        background_color=program.pass_background,
        locations=tuple((location.latitude, location.longitude) for location in program.locations
                        if location.latitude is not None and location.longitude is not None),
        homepage_url=homepage_url,
        development=config.development,
    )


def loyalty_card(card: Card, code: str, program: LoyaltyProgram, *, card_page_url: str,
                 rotating_secret: bytes | None, offers: tuple[Offer, ...] = ()) -> LoyaltyCard:
    """The card as Google's loyalty object describes it; with rotation on, its QR is the rotating code of slot 0."""
    rotating = None
    if rotating_secret is not None:
        rotating = RotatingBarcode(
            secret=rotating_secret,
            period_millis=card.program.code_period_seconds * 1000,
            # The same format as the card page's live code: code, slot (0 = Google Wallet), TOTP value.
            value_pattern=f"{code}.0.{{totp_value_0}}",
            alternate_text=short_serial(card.serial),
        )
    return LoyaltyCard(
        program=program,
        object_suffix=f"card-{card.serial}",
        account_id=card.serial,
        account_name=card.customer.name,
        points=card.points,
        barcode_value=code,
        barcode_alt_text=short_serial(card.serial),
        tier=card.tier,
        offers=offers,
        card_page_url=card_page_url,
        active=card.status == "active",
        rotating=rotating,
    )


def class_row(session: Session, program: Program, class_id: str) -> GoogleWalletClass:
    """The program's class bookkeeping, made on first use."""
    row = session.get(GoogleWalletClass, program.id)
    if row is None:
        row = GoogleWalletClass(program_id=program.id, class_id=class_id, inserted_at=None,
                                shown_program_revision=program.pass_revision)
        session.add(row)
        session.flush()
    return row


def object_row(session: Session, card: Card, object_id: str, now: dt.datetime) -> GoogleWalletObject:
    """The card's object bookkeeping, made when its save link is first handed out.

    A row left from the card's previous serial (before a reissue) is replaced: that object is Google's record
    of a code that no longer works, and the publisher has already retired it.
    """
    row = session.get(GoogleWalletObject, card.id)
    if row is not None and row.object_id != object_id:
        session.delete(row)
        session.flush()
        row = None
    if row is None:
        row = GoogleWalletObject(card_id=card.id, object_id=object_id, inserted_at=None, sync_status="ok",
                                 attempts=0, updated_at=now, **_shown(card, card.program))
        session.add(row)
        session.flush()
    return row


def mark_shown(row: GoogleWalletObject, shown: dict[str, Any], now: dt.datetime) -> None:
    """The object at Google now shows `shown` (see `shown_values`): a save link was built, or a patch landed."""
    for column, value in shown.items():
        setattr(row, column, value)
    row.updated_at = now


def shown_values(card: Card) -> dict[str, Any]:
    """What an object built from the card right now shows, in the row's terms."""
    return _shown(card, card.program)


# --- keeping objects up to date ------------------------------------------------------------------------------------


def stale_object_card_ids(
    session: Session, *, card_ids: Collection[int] | None = None, program_ids: Collection[int] | None = None
) -> list[int]:
    """Cards whose Google object no longer shows them as they are and is not already owed a patch. Only reads."""
    query = (
        select(GoogleWalletObject.card_id)
        .join(Card, Card.id == GoogleWalletObject.card_id)
        .join(Program, Program.id == Card.program_id)
        .where(GoogleWalletObject.sync_status != "pending", _drifted())
    )
    return list(session.scalars(_only(query, card_ids, program_ids)))


def owe_patches(session: Session, card_ids: Collection[int], now: dt.datetime) -> int:
    """Mark these cards' objects as owed a patch, due now."""
    result = session.execute(
        update(GoogleWalletObject)
        .where(GoogleWalletObject.card_id.in_(list(card_ids)), GoogleWalletObject.sync_status != "pending")
        .values(sync_status="pending", attempts=0, next_attempt_at=now, claimed_until=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def next_patch_due(session: Session) -> dt.datetime | None:
    return session.scalar(select(func.min(GoogleWalletObject.next_attempt_at))
                          .where(GoogleWalletObject.sync_status == "pending"))


def claim_due_patches(session: Session, now: dt.datetime, *, limit: int = 50) -> list[int]:
    """Take up to `limit` owed patches for `SYNC_LEASE`; answers their card ids."""
    free = or_(GoogleWalletObject.claimed_until.is_(None), GoogleWalletObject.claimed_until < now)
    due = list(session.scalars(
        select(GoogleWalletObject.card_id)
        .where(GoogleWalletObject.sync_status == "pending", GoogleWalletObject.next_attempt_at <= now, free)
        .order_by(GoogleWalletObject.next_attempt_at).limit(limit)
    ))
    if not due:
        return []
    claimed = session.scalars(
        update(GoogleWalletObject)
        .where(GoogleWalletObject.card_id.in_(due), GoogleWalletObject.sync_status == "pending", free)
        .values(claimed_until=now + SYNC_LEASE)
        .returning(GoogleWalletObject.card_id)
    ).all()
    return sorted(claimed)


class SyncOutcome(Protocol):
    """What the Wallet API said (passes.google.WalletResult has this shape)."""

    @property
    def status(self) -> int: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def ok(self) -> bool: ...
    @property
    def not_found(self) -> bool: ...
    @property
    def retryable(self) -> bool: ...


def record_patch_result(session: Session, card_id: int, shown: dict[str, Any], outcome: SyncOutcome,
                        now: dt.datetime) -> str:
    """Settle or reschedule a claimed patch built from `shown`; return the object's new sync status.

    A 404 means the member never saved the object (a save link is only an offer): nothing to update, and the
    next change tries again. The row records what the patch carried, so a change that landed while it was in
    flight leaves the row stale and is patched next round.
    """
    row = session.get(GoogleWalletObject, card_id)
    if row is None:
        return "gone"
    row.claimed_until = None
    row.last_status = outcome.status
    row.last_reason = (outcome.reason or "")[:200] or None
    row.attempts += 1
    if outcome.ok or outcome.not_found:
        row.sync_status = "ok" if outcome.ok else "absent"
        row.attempts = 0
        row.next_attempt_at = None
        mark_shown(row, shown, now)
    elif outcome.retryable and row.attempts < MAX_SYNC_ATTEMPTS:
        row.next_attempt_at = now + retry_delay(row.attempts)
    else:
        row.sync_status = "failed"
        row.next_attempt_at = None
    session.flush()
    return row.sync_status


def retired_object_id(row: GoogleWalletObject, card: Card) -> bool:
    """True when the row's object belongs to a serial the card no longer has (it was reissued)."""
    return row.shown_serial != card.serial


def stale_class_program_ids(session: Session) -> list[int]:
    """Programs whose inserted class shows an older revision of the program."""
    return list(session.scalars(
        select(GoogleWalletClass.program_id)
        .join(Program, Program.id == GoogleWalletClass.program_id)
        .where(GoogleWalletClass.inserted_at.is_not(None),
               GoogleWalletClass.shown_program_revision != Program.pass_revision)
    ))


def _drifted() -> Any:
    return or_(
        GoogleWalletObject.shown_points != Card.points,
        GoogleWalletObject.shown_tier != func.coalesce(Card.tier, ""),
        GoogleWalletObject.shown_serial != Card.serial,
        GoogleWalletObject.shown_status != Card.status,
        GoogleWalletObject.shown_program_revision != Program.pass_revision,
    )


def _only(query: Select[Any], card_ids: Collection[int] | None, program_ids: Collection[int] | None) -> Select[Any]:
    if card_ids is None and program_ids is None:
        return query
    return query.where(or_(Card.id.in_(list(card_ids or ())), Card.program_id.in_(list(program_ids or ()))))


def _shown(card: Card, program: Program) -> dict[str, Any]:
    return {"shown_points": card.points, "shown_tier": card.tier or "", "shown_serial": card.serial,
            "shown_status": card.status, "shown_program_revision": program.pass_revision}
