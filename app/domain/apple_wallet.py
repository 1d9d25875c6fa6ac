"""Apple Wallet passes of cards: what a card's pass shows, and the PassKit web service's bookkeeping.

Apple's web service (served at the pass's webServiceURL) lets a device register a pass for updates, ask which of
its passes changed since a tag, and fetch the latest pass. When a card changes, `publish_changes` gives its pass
a new tag and a new Last-Modified and owes every registered device one APNs push; `claim_due_pushes` and
`record_push_result` are the sender's half. There is no network in here: the caller sends.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Select, and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from app.domain.errors import NotFound, Unauthorized, ValidationError
from app.domain.money import format_amount
from app.domain.retries import MAX_ATTEMPTS, retry_delay
from app.domain.rules import rules_from_json
from app.models import (
    AppleDevice,
    ApplePassState,
    ApplePush,
    AppleRegistration,
    Card,
    Program,
    WalletCounter,
)
from passes import CardPass, Offer

TAG_COUNTER = "apple_update_tag"
MAX_PUSH_ATTEMPTS = MAX_ATTEMPTS
PUSH_LEASE = dt.timedelta(seconds=60)

_SERIAL = re.compile(r"[A-Z2-7]{13}")
# Apple documents neither alphabet; both are opaque printable strings in practice (hex push tokens, UUID-ish
# library ids). Anything else is refused rather than stored.
_LIBRARY_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_PUSH_TOKEN = re.compile(r"[0-9A-Fa-f]{1,200}")
_TAG = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class ApplePassConfig:
    """The app's Pass Type ID, where its web service lives, and whether this is a development set-up."""

    pass_type_identifier: str
    team_identifier: str
    web_service_url: str
    development: bool


def card_pass(card: Card, code: str, config: ApplePassConfig, card_page_url: str,
              offers: tuple[Offer, ...] = ()) -> CardPass:
    """The frozen description `passes.build_pkpass` turns into the card's .pkpass, with the program's running
    member-only offers (app/domain/member_card.py pass_offers)."""
    program = card.program
    return CardPass(
        pass_type_identifier=config.pass_type_identifier,
        team_identifier=config.team_identifier,
        serial_number=card.serial,
        organization_name=program.name,
        program_name=program.name,
        holder_name=card.customer.name,
        points=card.points,
        tier=card.tier,
        offers=offers,
        barcode_message=code,
        barcode_alt_text=short_serial(card.serial),
        card_page_url=card_page_url,
        background_color=program.pass_background,
        foreground_color=program.pass_foreground,
        label_color=program.pass_label,
        logo_png=program.logo_png,
        terms=program_terms(program),
        web_service_url=config.web_service_url,
        authentication_token=card.pass_auth_token,
        voided=card.status == "revoked",
        development=config.development,
    )


def short_serial(serial: str) -> str:
    """What the pass prints under its QR: enough of the serial for a person to read out, not the code."""
    return f"{serial[:4]}-{serial[4:8]}"


def program_terms(program: Program) -> str:
    """The back of the pass: how points work in this program, in the program's own numbers."""
    rules = rules_from_json(program.rules)
    lines = [f"You earn {rules.points_per_unit.normalize():f} points per {program.currency} 1 spent at {program.name}."]
    if rules.point_value:
        lines.append(
            f"Each point is worth {format_amount(rules.point_value, program.currency)} against a purchase "
            f"(up to {rules.redeem_max_percent}% of the bill)."
        )
    for tier in rules.tiers:
        lines.append(
            f"{tier.name}: from {format_amount(tier.min_spend, program.currency)} spent, "
            f"{tier.discount_bp / 100:g}% off every purchase."
        )
    lines.append("Points have no cash value. Show this card's code only at the till.")
    return "\n".join(lines)


# --- the web service: authentication, registrations, changed serials ------------------------------------------


def authenticated_card(
    session: Session, config: ApplePassConfig, pass_type_identifier: str, serial: str, authorization: str | None
) -> Card:
    """The card whose pass the request speaks for, checked against its `ApplePass <token>` header."""
    if pass_type_identifier != config.pass_type_identifier:
        raise NotFound("This server issues no passes of that pass type.")
    scheme, _, token = (authorization or "").partition(" ")
    card = session.scalar(select(Card).where(Card.serial == serial)) if _SERIAL.fullmatch(serial) else None
    # An unknown serial and a wrong token get the same answer, so the endpoint reveals nothing about serials.
    if (
        card is None
        or scheme != "ApplePass"
        or not hmac.compare_digest(token.strip().encode(), card.pass_auth_token.encode())
    ):
        raise Unauthorized("The pass's authentication token is missing or wrong.")
    return card


def register_device(session: Session, card: Card, library_id: str, push_token: object, now: dt.datetime) -> bool:
    """Register a device for the card's pass updates; True when the registration is new.

    A device that registers again with a new push token keeps its registrations under the new token.
    """
    _check_library_id(library_id)
    if not isinstance(push_token, str) or not _PUSH_TOKEN.fullmatch(push_token):
        raise ValidationError("pushToken must be the device's hexadecimal APNs token.", field="pushToken")
    device = session.scalar(select(AppleDevice).where(AppleDevice.library_id == library_id))
    if device is None:
        device = AppleDevice(library_id=library_id, push_token=push_token, created_at=now, updated_at=now)
        session.add(device)
        session.flush()
    elif device.push_token != push_token:
        device.push_token = push_token
        device.updated_at = now
    existing = session.scalar(
        select(AppleRegistration.id).where(AppleRegistration.device_id == device.id,
                                           AppleRegistration.card_id == card.id)
    )
    if existing is not None:
        session.flush()
        return False
    session.add(AppleRegistration(device_id=device.id, card_id=card.id, created_at=now))
    if session.get(ApplePassState, card.id) is None:
        # The device has just downloaded the pass, so what it shows is the card as it is now.
        session.add(ApplePassState(card_id=card.id, update_tag=next_update_tag(session),
                                   last_modified=whole_seconds(now), **_shown(card, card.program)))
    session.flush()
    return True


def unregister_device(session: Session, card: Card, library_id: str) -> None:
    """The device removed the pass (or turned updates off): forget it, and the device once it holds none."""
    _check_library_id(library_id)
    device = session.scalar(select(AppleDevice).where(AppleDevice.library_id == library_id))
    if device is None:
        return
    session.execute(delete(AppleRegistration).where(AppleRegistration.device_id == device.id,
                                                    AppleRegistration.card_id == card.id))
    _forget_device_if_unused(session, device.id)
    session.flush()


@dataclass(frozen=True)
class UpdatedSerials:
    serial_numbers: list[str]
    last_updated: str


def updated_serials(
    session: Session, config: ApplePassConfig, library_id: str, pass_type_identifier: str, since: str | None
) -> UpdatedSerials | None:
    """The serials of the device's passes updated after tag `since` (all of them without one); None if none."""
    if pass_type_identifier != config.pass_type_identifier:
        raise NotFound("This server issues no passes of that pass type.")
    _check_library_id(library_id)
    if since in (None, ""):
        after = 0
    elif since is not None and _TAG.fullmatch(since):
        after = int(since)
    else:
        raise ValidationError("passesUpdatedSince must be a tag this server gave out.", field="passesUpdatedSince")
    rows = session.execute(
        select(Card.serial, ApplePassState.update_tag)
        .join(AppleRegistration, AppleRegistration.card_id == Card.id)
        .join(AppleDevice, AppleDevice.id == AppleRegistration.device_id)
        .join(ApplePassState, ApplePassState.card_id == Card.id)
        .where(AppleDevice.library_id == library_id, ApplePassState.update_tag > after)
        .order_by(Card.serial)
    ).all()
    if not rows:
        return None
    return UpdatedSerials([serial for serial, _ in rows], str(max(tag for _, tag in rows)))


def pass_last_modified(session: Session, card: Card) -> dt.datetime:
    """When the card's pass last changed, to the second: its Last-Modified."""
    state = session.get(ApplePassState, card.id)
    return state.last_modified if state is not None else whole_seconds(card.updated_at)


# --- publishing changes and the pushes they owe ------------------------------------------------------------------


def publish_changes(
    session: Session,
    now: dt.datetime,
    *,
    card_ids: Collection[int] | None = None,
    program_ids: Collection[int] | None = None,
) -> int:
    """Republish every registered pass that no longer shows its card as it is; return how many.

    With neither `card_ids` nor `program_ids` it sweeps all registered passes, which also catches changes made
    by another process or by hand. Each republished pass gets a new update tag (one per call, from the shared
    counter) and a later Last-Modified, and each of its devices one pending push (or the one still pending).
    """
    stale = _stale(select(ApplePassState, Card, Program), card_ids, program_ids)
    rows = session.execute(stale.with_for_update(of=ApplePassState)).all()
    if not rows:
        return 0
    tag = next_update_tag(session)
    for state, card, program in rows:
        state.update_tag = tag
        # Strictly later than before, even for two changes within one second, or If-Modified-Since would hide one.
        state.last_modified = max(whole_seconds(now), state.last_modified + dt.timedelta(seconds=1))
        for column, value in _shown(card, program).items():
            setattr(state, column, value)
        _owe_pushes(session, card.id, tag, now)
    session.flush()
    return len(rows)


def stale_pass_card_ids(
    session: Session, *, card_ids: Collection[int] | None = None, program_ids: Collection[int] | None = None
) -> list[int]:
    """The cards (of those given, or all) whose registered pass no longer shows them as they are. Only reads."""
    return list(session.scalars(_stale(select(ApplePassState.card_id), card_ids, program_ids)))


def _stale(query: Select[Any], card_ids: Collection[int] | None, program_ids: Collection[int] | None) -> Select[Any]:
    query = (
        query
        .join(Card, Card.id == ApplePassState.card_id)
        .join(Program, Program.id == Card.program_id)
        .where(or_(
            ApplePassState.shown_points != Card.points,
            ApplePassState.shown_tier != func.coalesce(Card.tier, ""),
            ApplePassState.shown_serial != Card.serial,
            ApplePassState.shown_status != Card.status,
            ApplePassState.shown_program_revision != Program.pass_revision,
        ))
        .order_by(ApplePassState.card_id)
    )
    if card_ids is not None or program_ids is not None:
        query = query.where(or_(Card.id.in_(list(card_ids or ())), Card.program_id.in_(list(program_ids or ()))))
    return query


def _owe_pushes(session: Session, card_id: int, tag: int, now: dt.datetime) -> None:
    devices = session.execute(
        select(AppleDevice.library_id, AppleDevice.push_token)
        .join(AppleRegistration, AppleRegistration.device_id == AppleDevice.id)
        .where(AppleRegistration.card_id == card_id)
    ).all()
    for library_id, push_token in devices:
        # A push not yet sent already makes the device fetch the newest pass: one is enough.
        waiting = session.execute(
            update(ApplePush)
            .where(ApplePush.card_id == card_id, ApplePush.device_library_id == library_id,
                   ApplePush.status == "pending", ApplePush.claimed_until.is_(None))
            .values(update_tag=tag, push_token=push_token)
        )
        if waiting.rowcount == 0:  # type: ignore[attr-defined]
            session.execute(insert(ApplePush).values(
                card_id=card_id, device_library_id=library_id, push_token=push_token, update_tag=tag,
                status="pending", attempts=0, next_attempt_at=now, created_at=now,
            ))


@dataclass(frozen=True)
class PushJob:
    """A push a sender has claimed: send `{}` to this token, then report with `record_push_result`."""

    id: int
    card_id: int
    device_library_id: str
    push_token: str
    attempts: int


def claim_due_pushes(session: Session, now: dt.datetime, *, limit: int = 100) -> list[PushJob]:
    """Take up to `limit` pushes that are due, for `PUSH_LEASE`; another sender skips them meanwhile."""
    free = or_(ApplePush.claimed_until.is_(None), ApplePush.claimed_until < now)
    due_ids = list(session.scalars(
        select(ApplePush.id)
        .where(ApplePush.status == "pending", ApplePush.next_attempt_at <= now, free)
        .order_by(ApplePush.next_attempt_at, ApplePush.id)
        .limit(limit)
    ))
    if not due_ids:
        return []
    # The condition is checked again under the row lock, so of two senders racing for a push only one gets it.
    claimed = session.execute(
        update(ApplePush)
        .where(ApplePush.id.in_(due_ids), ApplePush.status == "pending", free)
        .values(claimed_until=now + PUSH_LEASE)
        .returning(ApplePush.id, ApplePush.card_id, ApplePush.device_library_id, ApplePush.push_token,
                   ApplePush.attempts)
    ).all()
    return sorted((PushJob(*row) for row in claimed), key=lambda job: job.id)


class PushOutcome(Protocol):
    """What a sender learned (passes.apns.PushResult has this shape)."""

    @property
    def status(self) -> int: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def delivered(self) -> bool: ...
    @property
    def unregistered(self) -> bool: ...
    @property
    def retryable(self) -> bool: ...


def record_push_result(session: Session, job: PushJob, outcome: PushOutcome, now: dt.datetime) -> str:
    """Settle or reschedule a claimed push; return its new status.

    A 410 means the device token is dead: the device and its registrations go (unless it has registered a new
    token since). A retryable failure waits 30 s, 1 min, 2 min, ... up to an hour, `MAX_PUSH_ATTEMPTS` times.
    """
    attempts = job.attempts + 1
    values: dict[str, object] = {"attempts": attempts, "last_status": outcome.status,
                                 "last_reason": (outcome.reason or "")[:200] or None, "claimed_until": None}
    if outcome.delivered:
        values.update(status="sent", settled_at=now)
    elif outcome.unregistered:
        values.update(status="purged", settled_at=now)
        _purge_device(session, job.device_library_id, job.push_token)
    elif outcome.retryable and attempts < MAX_PUSH_ATTEMPTS:
        values.update(next_attempt_at=now + retry_delay(attempts))
    else:
        values.update(status="failed", settled_at=now)
    session.execute(update(ApplePush).where(ApplePush.id == job.id).values(**values))
    session.flush()
    return str(values.get("status", "pending"))


def next_push_due(session: Session) -> dt.datetime | None:
    """When the earliest pending push falls due (for the sender to sleep until then)."""
    return session.scalar(select(func.min(ApplePush.next_attempt_at)).where(ApplePush.status == "pending"))


def next_update_tag(session: Session) -> int:
    """The next tag from the shared counter; its row stays locked until this transaction ends (see the model)."""
    tag = session.execute(
        update(WalletCounter).where(WalletCounter.name == TAG_COUNTER)
        .values(value=WalletCounter.value + 1).returning(WalletCounter.value)
    ).scalar_one_or_none()
    if tag is None:
        session.add(WalletCounter(name=TAG_COUNTER, value=1))
        session.flush()
        return 1
    return int(tag)


def forget_card_passes(session: Session, card: Card) -> None:
    """A reissued card's old pass is dead: its devices stop hearing about the card (the new pass registers anew)."""
    session.execute(delete(AppleRegistration).where(AppleRegistration.card_id == card.id))
    session.execute(delete(ApplePassState).where(ApplePassState.card_id == card.id))
    orphans = select(AppleDevice.id).where(~select(AppleRegistration.id)
                                           .where(AppleRegistration.device_id == AppleDevice.id).exists())
    session.execute(delete(AppleDevice).where(AppleDevice.id.in_(orphans)))


def whole_seconds(moment: dt.datetime) -> dt.datetime:
    return moment.replace(microsecond=0)


def _shown(card: Card, program: Program) -> dict[str, object]:
    return {"shown_points": card.points, "shown_tier": card.tier or "", "shown_serial": card.serial,
            "shown_status": card.status, "shown_program_revision": program.pass_revision}


def _purge_device(session: Session, library_id: str, push_token: str) -> None:
    device = session.scalar(select(AppleDevice).where(
        and_(AppleDevice.library_id == library_id, AppleDevice.push_token == push_token)))
    if device is None:
        return
    session.execute(delete(AppleRegistration).where(AppleRegistration.device_id == device.id))
    session.execute(delete(AppleDevice).where(AppleDevice.id == device.id))


def _forget_device_if_unused(session: Session, device_id: int) -> None:
    left = session.scalar(select(AppleRegistration.id).where(AppleRegistration.device_id == device_id).limit(1))
    if left is None:
        session.execute(delete(AppleDevice).where(AppleDevice.id == device_id))


def _check_library_id(library_id: str) -> None:
    if not _LIBRARY_ID.fullmatch(library_id):
        raise ValidationError("The device library identifier is not one Wallet sends.", field="deviceLibraryIdentifier")
