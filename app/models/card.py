"""A member's card (the account: balance, spend, tier) and its append-only ledger."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import BigInteger, CheckConstraint, Enum, ForeignKey, Index, SmallInteger, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, BigIntId, intpk, minor_units, timestamp, utcnow
from app.models.people import ApiKey, Customer, Staff
from app.models.program import Program


def new_pass_auth_token() -> str:
    return secrets.token_urlsafe(24)


class Card(Base):
    __tablename__ = "cards"
    __table_args__ = (
        CheckConstraint("points >= 0", name="points_not_negative"),
        # Tier sizes and the VIP segment are counted per tier; a tier changes rarely, so this index costs the
        # purchase path almost nothing (PostgreSQL keeps its updates HOT while the tier stays the same).
        Index("ix_cards_program_tier", "program_id", "tier"),
        # Only the few revoked cards: the dashboard's segments leave their members out.
        Index("ix_cards_not_active", "program_id",
              sqlite_where=text("status <> 'active'"), postgresql_where=text("status <> 'active'")),
    )

    id: Mapped[intpk]
    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), index=True)
    customer_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("customers.id"), unique=True)
    # 64 random bits, base32; never sequential. The signed card code carries it. A reissue gives the card a
    # new serial (so a new code) and files the old one under RetiredSerial.
    serial: Mapped[str] = mapped_column(String(16), unique=True)
    status: Mapped[str] = mapped_column(
        Enum("active", "revoked", name="card_status", native_enum=False, create_constraint=True),
        default="active",
    )
    points: Mapped[int] = mapped_column(BigInteger, default=0)
    lifetime_spend: Mapped[minor_units] = mapped_column(default=0)
    tier: Mapped[str | None] = mapped_column(String(64))
    # The secret in the card page's link (128 random bits): not the serial, not the code.
    page_token: Mapped[str] = mapped_column(String(64), unique=True)
    # The authenticationToken in the card's Apple pass: what a device shows the PassKit web service. A reissue
    # replaces it with the serial, so the old pass can no longer fetch updates.
    pass_auth_token: Mapped[str] = mapped_column(String(64), default=new_pass_auth_token)
    # Stamp cards: stamps towards the next voucher, and vouchers earned and not yet used.
    stamps: Mapped[int] = mapped_column(default=0)
    vouchers: Mapped[int] = mapped_column(default=0)
    # Cashback programs: a money-value balance in minor units, spent like points.
    cashback: Mapped[int] = mapped_column(BigInteger, default=0)
    # For the second-visit discount, referral bonuses and points expiry.
    purchase_count: Mapped[int] = mapped_column(default=0)
    first_purchase_at: Mapped[dt.datetime | None]
    last_purchase_at: Mapped[dt.datetime | None]
    # The code in the member's referral link (/r/<code>): short, random, not the serial.
    referral_code: Mapped[str | None] = mapped_column(String(16), unique=True)
    # A random id of the browser that enrolled (a cookie), so referring yourself from one phone earns nothing.
    enrolled_device: Mapped[str | None] = mapped_column(String(64))
    birthday_bonus_year: Mapped[int | None]
    expiry_warned_at: Mapped[dt.datetime | None]
    created_at: Mapped[timestamp]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    program: Mapped[Program] = relationship()
    customer: Mapped[Customer] = relationship()


class RetiredSerial(Base):
    """A serial a card had before it was reissued: its codes are refused as revoked, not as unknown."""

    __tablename__ = "retired_serials"

    serial: Mapped[str] = mapped_column(String(16), primary_key=True)
    card_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("cards.id"), index=True)
    retired_at: Mapped[timestamp]


LEDGER_KINDS = ("earn", "bonus", "redeem", "void", "adjust")


class LedgerEntry(Base):
    """One change of a card's points. Rows are only ever added; a void adds its reversal."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_entries_rollup_pending", "card_id",
              sqlite_where=text("rollup_state <> 0"), postgresql_where=text("rollup_state <> 0")),
    )

    id: Mapped[intpk]
    card_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("cards.id"), index=True)
    kind: Mapped[str] = mapped_column(
        Enum(*LEDGER_KINDS, name="ledger_kind", native_enum=False, create_constraint=True)
    )
    points: Mapped[int] = mapped_column(BigInteger)
    purchase_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("purchases.id"), index=True)
    staff_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("staff.id"))
    api_key_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("api_keys.id"))
    note: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[timestamp]
    # New (1), being folded in (-1) or folded into the analytics roll-ups (0): app/models/analytics.py.
    rollup_state: Mapped[int] = mapped_column(SmallInteger, server_default=text("1"))

    card: Mapped[Card] = relationship()
    staff: Mapped[Staff | None] = relationship()
    api_key: Mapped[ApiKey | None] = relationship()
