"""Who touches a program: its staff, the API keys of its tills, and its customers."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Enum, ForeignKey, Index, SmallInteger, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, BigIntId, intpk, short_text, timestamp
from app.models.program import Location, Program


class Staff(Base):
    __tablename__ = "staff"

    id: Mapped[intpk]
    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    role: Mapped[str] = mapped_column(
        Enum("cashier", "manager", name="staff_role", native_enum=False, create_constraint=True)
    )
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)
    # Bumped whenever the account is disabled: every session signed in before then ends for good, even if the
    # account is enabled again later.
    session_epoch: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[timestamp]

    program: Mapped[Program] = relationship()


class ApiKey(Base):
    """A till's credential. Only a SHA-256 of the secret is stored; the key is shown once at creation."""

    __tablename__ = "api_keys"

    id: Mapped[intpk]
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), index=True)
    location_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("locations.id"))
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[timestamp]
    revoked_at: Mapped[dt.datetime | None]

    program: Mapped[Program] = relationship()
    location: Mapped[Location] = relationship()


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (
        UniqueConstraint("program_id", "email"),
        UniqueConstraint("program_id", "phone"),
        # The dashboard's newest members, without sorting a million.
        Index("ix_customers_program_newest", "program_id", "created_at", "id"),
        Index("ix_customers_rollup_pending", "program_id",
              sqlite_where=text("rollup_state <> 0"), postgresql_where=text("rollup_state <> 0")),
    )

    id: Mapped[intpk]
    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), index=True)
    name: Mapped[short_text]
    # Stored normalised (email lower-cased, phone as + and digits) so a second enrollment is recognised.
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(20))
    marketing_consent: Mapped[bool] = mapped_column(default=False)
    # Optional, asked "for a birthday treat"; no year is kept.
    birthday_month: Mapped[int | None]
    birthday_day: Mapped[int | None]
    consent_wording_version: Mapped[str] = mapped_column(String(32))
    consent_recorded_at: Mapped[timestamp]
    channel: Mapped[str] = mapped_column(
        Enum("web", "till", "api", "referral", name="enrollment_channel", native_enum=False,
             create_constraint=True)
    )
    location_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("locations.id"))
    created_at: Mapped[timestamp] = mapped_column(index=True)
    # New (1), being folded in (-1) or folded into the analytics roll-ups (0): app/models/analytics.py.
    rollup_state: Mapped[int] = mapped_column(SmallInteger, server_default=text("1"))

    program: Mapped[Program] = relationship()
