"""A merchant's program, its locations, and the keys that sign its cards."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Enum, ForeignKey, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, BigIntId, intpk, short_text, timestamp


class Program(Base):
    __tablename__ = "programs"

    id: Mapped[intpk]
    # The slug is part of every card signature, so it never changes once cards exist.
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[short_text]
    currency: Mapped[str] = mapped_column(String(3))
    rules: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # What a card collects: "points", "stamps" towards a voucher, or "cashback" (a money-value balance).
    # Checked by the domain (app/domain/mechanics.py PROGRAM_KINDS), not by a CHECK that SQLite could not drop.
    kind: Mapped[str] = mapped_column(String(16), default="points")
    # How the wallet passes look: colours as #rrggbb, and the merchant's logo as a PNG (None: a monogram).
    pass_background: Mapped[str] = mapped_column(String(7), default="#1f2937")
    pass_foreground: Mapped[str] = mapped_column(String(7), default="#ffffff")
    pass_label: Mapped[str] = mapped_column(String(7), default="#d1d5db")
    logo_png: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Bumped by every change to what all of the program's passes show (name, colours, logo, rules, offers),
    # so each registered pass is republished.
    pass_revision: Mapped[int] = mapped_column(default=0)
    # Rotating codes: the card's QR (on the card page and in Google Wallet) changes every period and is taken
    # once, so a screenshot of it is worthless. Off by default: static codes keep working.
    rotating_codes: Mapped[bool] = mapped_column(default=False)
    code_period_seconds: Mapped[int] = mapped_column(default=30)
    created_at: Mapped[timestamp]

    locations: Mapped[list[Location]] = relationship(back_populates="program", order_by="Location.id")


class Location(Base):
    __tablename__ = "locations"
    __table_args__ = (UniqueConstraint("program_id", "name"),)

    id: Mapped[intpk]
    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), index=True)
    name: Mapped[short_text]
    # Where the store is, for the Google Wallet class's locations (optional).
    latitude: Mapped[float | None]
    longitude: Mapped[float | None]
    created_at: Mapped[timestamp]

    program: Mapped[Program] = relationship(back_populates="locations")


class SigningKey(Base):
    """The public half of an Ed25519 card-signing key; the private half stays in the instance folder."""

    __tablename__ = "signing_keys"

    id: Mapped[intpk]
    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), index=True)
    kid: Mapped[str] = mapped_column(String(16), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    status: Mapped[str] = mapped_column(
        # A removed key stays as a row so its kid is never handed out again, but it verifies nothing.
        Enum("active", "retired", "removed", name="signing_key_status", native_enum=False, create_constraint=True),
        default="active",
    )
    created_at: Mapped[timestamp]
    retired_at: Mapped[dt.datetime | None]

    program: Mapped[Program] = relationship()
