"""What the loyalty mechanics keep: coupons and their uses, member-only offers, the rewards catalogue, referrals.

The rules that price with them are pure (app/domain/mechanics.py); these rows are the facts the rules are given.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Enum, ForeignKey, Index, SmallInteger, String, UniqueConstraint, false, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, BigIntId, intpk, minor_units, short_text, timestamp
from app.models.card import Card

DISCOUNT_TYPES = ("percent", "fixed")
# The named member segments, in the order a member is checked against them (app/domain/segments.py).
SEGMENTS = ("lapsed", "vip", "new", "active")


class CouponBatch(Base):
    """Single-use codes made together (for a mailing, a flyer): their shared terms live on each coupon."""

    __tablename__ = "coupon_batches"

    id: Mapped[intpk]
    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), index=True)
    label: Mapped[short_text]
    count: Mapped[int]
    created_at: Mapped[timestamp]


class Coupon(Base):
    """A coupon or promo code of a program: single-use (one committed use in all) or reusable (SPRING10)."""

    __tablename__ = "coupons"
    __table_args__ = (UniqueConstraint("program_id", "code"),)

    id: Mapped[intpk]
    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), index=True)
    # Upper case, no spaces or dashes (app/domain/mechanics.py normalize_code).
    code: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(
        Enum("single_use", "reusable", name="coupon_kind", native_enum=False, create_constraint=True)
    )
    discount_type: Mapped[str] = mapped_column(
        Enum(*DISCOUNT_TYPES, name="coupon_discount_type", native_enum=False, create_constraint=True)
    )
    # Basis points for a percent discount, minor units for a fixed one.
    discount_value: Mapped[int] = mapped_column(BigInteger)
    min_basket: Mapped[minor_units] = mapped_column(default=0)
    valid_from: Mapped[dt.datetime | None]
    valid_until: Mapped[dt.datetime | None]
    per_member_limit: Mapped[int | None]
    member_only: Mapped[bool] = mapped_column(default=False)
    stackable: Mapped[bool] = mapped_column(default=False)
    # A single-use code issued to one member (a stamp card's voucher, a birthday treat).
    assigned_card_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("cards.id"), index=True)
    batch_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("coupon_batches.id"), index=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[timestamp]


class CouponUse(Base):
    """A coupon taken by a committed purchase; a void stamps `voided_at`, giving the use back."""

    __tablename__ = "coupon_uses"
    __table_args__ = (Index("ix_coupon_uses_coupon_card", "coupon_id", "card_id"),)

    id: Mapped[intpk]
    coupon_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("coupons.id"))
    card_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("cards.id"))
    purchase_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("purchases.id"), index=True)
    discount: Mapped[minor_units]
    used_at: Mapped[timestamp]
    voided_at: Mapped[dt.datetime | None]


class Offer(Base):
    """A member-only offer: shown on the card page while it runs, applied at the till when the member picks it."""

    __tablename__ = "offers"

    id: Mapped[intpk]
    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), index=True)
    title: Mapped[short_text]
    detail: Mapped[str] = mapped_column(String(500), default="")
    discount_type: Mapped[str] = mapped_column(
        Enum(*DISCOUNT_TYPES, name="offer_discount_type", native_enum=False, create_constraint=True)
    )
    discount_value: Mapped[int] = mapped_column(BigInteger)
    min_basket: Mapped[minor_units] = mapped_column(default=0)
    starts_at: Mapped[dt.datetime | None]
    ends_at: Mapped[dt.datetime | None]
    active: Mapped[bool] = mapped_column(default=True)
    # NULL: every member; else only members of that named segment (app/domain/segments.py).
    segment: Mapped[str | None] = mapped_column(
        Enum(*SEGMENTS, name="offer_segment", native_enum=False, create_constraint=True)
    )
    created_at: Mapped[timestamp]


class Reward(Base):
    """An item of the rewards catalogue, bought with points at the till ("A free coffee for 150 points")."""

    __tablename__ = "rewards"

    id: Mapped[intpk]
    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), index=True)
    name: Mapped[short_text]
    points_cost: Mapped[int] = mapped_column(BigInteger)
    # What it takes off the basket: the item's price.
    value: Mapped[minor_units]
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[timestamp]


class Referral(Base):
    """A member who enrolled through another's referral link, and whether the bonuses were paid (and by which
    purchase, so voiding that purchase takes them back)."""

    __tablename__ = "referrals"
    __table_args__ = (
        Index("ix_referrals_rollup_pending", "referee_card_id",
              sqlite_where=text("rollup_state <> 0"), postgresql_where=text("rollup_state <> 0")),
    )

    id: Mapped[intpk]
    referrer_card_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("cards.id"), index=True)
    referee_card_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("cards.id"), unique=True)
    # Same email, phone or device as the referrer: attributed, but it earns nothing.
    self_referral: Mapped[bool] = mapped_column(default=False)
    bonus_purchase_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("purchases.id"))
    created_at: Mapped[timestamp]
    # The analytics roll-ups (app/models/analytics.py DailyReferrals): new (1) or folded in (0), and what they
    # counted for it, so a later purchase or void of the new member changes the funnel by the difference.
    rollup_state: Mapped[int] = mapped_column(SmallInteger, server_default=text("1"))
    rollup_purchased: Mapped[bool] = mapped_column(server_default=false())
    rollup_rewarded: Mapped[bool] = mapped_column(server_default=false())

    referrer: Mapped[Card] = relationship(foreign_keys=[referrer_card_id])
    referee: Mapped[Card] = relationship(foreign_keys=[referee_card_id])
