"""Apple Wallet's side of a card: devices that hold its pass, their registrations, and the pushes we owe them.

Apple's PassKit web service has no accounts: a device registers a pass by serial number with the pass's
authentication token, gives us a push token, and later asks which of its passes changed since a tag we handed
it. Everything here exists to answer those questions and to push exactly once per change.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Enum, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, BigIntId, intpk, timestamp
from app.models.card import Card


class ApplePassState(Base):
    """What the card's Apple pass last showed, and when it changed: its update tag and Last-Modified.

    A row exists once a device has registered the card's pass. The `shown_*` columns are what the published
    pass said; when the card drifts from them the pass is republished (a new tag) and the devices are pushed.
    """

    __tablename__ = "apple_pass_states"

    card_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("cards.id", ondelete="CASCADE"), primary_key=True)
    # From one database-wide counter that a publishing transaction increments and holds until it commits, so
    # tags are strictly increasing in commit order and "changed since tag T" never skips a later commit.
    update_tag: Mapped[int] = mapped_column(BigInteger, index=True)
    # Whole seconds: HTTP dates carry no fractions, and If-Modified-Since is compared with this.
    last_modified: Mapped[dt.datetime]
    shown_points: Mapped[int] = mapped_column(BigInteger)
    shown_tier: Mapped[str] = mapped_column(String(64))
    shown_serial: Mapped[str] = mapped_column(String(16))
    shown_status: Mapped[str] = mapped_column(String(16))
    shown_program_revision: Mapped[int]

    card: Mapped[Card] = relationship()


class AppleDevice(Base):
    """A device (an iPhone's Wallet) that registered at least one of our passes, and where to push it."""

    __tablename__ = "apple_devices"

    id: Mapped[intpk]
    # Apple's deviceLibraryIdentifier: opaque, stable per device and pass type.
    library_id: Mapped[str] = mapped_column(String(128), unique=True)
    push_token: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[timestamp]
    updated_at: Mapped[timestamp]


class AppleRegistration(Base):
    """A device that holds a card's pass and wants to hear when it changes."""

    __tablename__ = "apple_registrations"
    __table_args__ = (UniqueConstraint("device_id", "card_id"),)

    id: Mapped[intpk]
    device_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("apple_devices.id", ondelete="CASCADE"))
    card_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("cards.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[timestamp]

    device: Mapped[AppleDevice] = relationship()


PUSH_STATUSES = ("pending", "sent", "purged", "failed")


class ApplePush(Base):
    """One APNs notification owed to one device for one card's change, kept as a record once it is settled.

    The device's push token is copied in, so the record stays whole after a 410 purges the registration.
    """

    __tablename__ = "apple_pushes"
    __table_args__ = (Index("ix_apple_pushes_due", "status", "next_attempt_at"),)

    id: Mapped[intpk]
    card_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("cards.id", ondelete="CASCADE"), index=True)
    device_library_id: Mapped[str] = mapped_column(String(128))
    push_token: Mapped[str] = mapped_column(String(200))
    update_tag: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(
        Enum(*PUSH_STATUSES, name="apple_push_status", native_enum=False, create_constraint=True),
        default="pending",
    )
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime]
    # A sender owns a pending push until this time; another process may take it over after that.
    claimed_until: Mapped[dt.datetime | None]
    last_status: Mapped[int | None]
    last_reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[timestamp]
    settled_at: Mapped[dt.datetime | None]


class WalletCounter(Base):
    """Named counters; `apple_update_tag` hands out the update tags above."""

    __tablename__ = "wallet_counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class CardCodeSecret(Base):
    """A TOTP secret that makes a card's rotating code: slot 0 is the card's Google Wallet object, slots from 1
    are the browsers that opened the card page (each device its own secret, so one can be withdrawn)."""

    __tablename__ = "card_code_secrets"

    card_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("cards.id", ondelete="CASCADE"), primary_key=True)
    slot: Mapped[int] = mapped_column(primary_key=True)
    secret: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[timestamp]


class UsedRotatingCode(Base):
    """A rotating code that was scanned: the replay cache. One row per card, slot and time step; the till
    that scanned it may go on to quote and buy with it, nobody may scan it again."""

    __tablename__ = "used_rotating_codes"

    card_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("cards.id", ondelete="CASCADE"), primary_key=True)
    slot: Mapped[int] = mapped_column(primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # Who scanned it ("staff:12", "api_key:3").
    actor: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[dt.datetime] = mapped_column(index=True)


class GoogleWalletClass(Base):
    """A program's loyalty class at Google, and whether it has been inserted there over REST."""

    __tablename__ = "google_wallet_classes"

    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id", ondelete="CASCADE"),
                                            primary_key=True)
    class_id: Mapped[str] = mapped_column(String(200), unique=True)
    inserted_at: Mapped[dt.datetime | None]
    shown_program_revision: Mapped[int] = mapped_column(default=0)


GOOGLE_SYNC_STATUSES = ("ok", "pending", "failed", "absent")


class GoogleWalletObject(Base):
    """A card's loyalty object at Google: what it last showed, and the patch owed when the card changes.

    A row is made when a save link is handed out (or the object is inserted over REST); a patch that Google
    answers 404 for means the member never saved it ("absent"), and the next change tries again.
    """

    __tablename__ = "google_wallet_objects"
    __table_args__ = (Index("ix_google_wallet_objects_due", "sync_status", "next_attempt_at"),)

    card_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("cards.id", ondelete="CASCADE"), primary_key=True)
    object_id: Mapped[str] = mapped_column(String(200), unique=True)
    inserted_at: Mapped[dt.datetime | None]
    shown_points: Mapped[int] = mapped_column(BigInteger)
    shown_tier: Mapped[str] = mapped_column(String(64))
    shown_serial: Mapped[str] = mapped_column(String(16))
    shown_status: Mapped[str] = mapped_column(String(16))
    shown_program_revision: Mapped[int]
    sync_status: Mapped[str] = mapped_column(
        Enum(*GOOGLE_SYNC_STATUSES, name="google_sync_status", native_enum=False, create_constraint=True),
        default="ok",
    )
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime | None]
    claimed_until: Mapped[dt.datetime | None]
    last_status: Mapped[int | None]
    last_reason: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[timestamp]
