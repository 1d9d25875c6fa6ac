"""A committed purchase: the quote that was accepted, as it was accepted."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Enum, ForeignKey, Index, SmallInteger, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, BigIntId, intpk, minor_units, timestamp
from app.models.card import Card


class Purchase(Base):
    __tablename__ = "purchases"
    # A retried or doubled request carries the same key and so can land only once per program.
    __table_args__ = (
        UniqueConstraint("program_id", "idempotency_key"),
        # A member's purchases in order, with what the analytics' window over a member's history reads, so folding
        # a member's new purchase reads this index alone (app/domain/analytics_rollups.py).
        Index("ix_purchases_card_history", "card_id", "created_at", "status"),
        # Only the few rows the analytics roll-ups have not folded in yet (app/models/analytics.py).
        Index("ix_purchases_rollup_pending", "program_id", "card_id",
              sqlite_where=text("rollup_state <> 0"), postgresql_where=text("rollup_state <> 0")),
    )

    id: Mapped[intpk]
    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"))
    card_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("cards.id"))
    location_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("locations.id"))
    staff_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("staff.id"))
    api_key_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("api_keys.id"))
    amount: Mapped[minor_units]
    discount: Mapped[minor_units]
    amount_due: Mapped[minor_units]
    points_earned: Mapped[int]
    points_redeemed: Mapped[int]
    lines: Mapped[list[dict[str, Any]]]
    # The balance and tier right after this purchase, so a replayed request gets the first answer verbatim.
    points_after: Mapped[int]
    tier_after: Mapped[str | None] = mapped_column(String(64))
    # What the purchase did beyond points (stamps, vouchers, cashback, coupons, bonuses), so a void undoes
    # exactly that (app/domain/mechanics.py PurchaseEffects); None for purchases made before mechanics existed.
    effects: Mapped[dict[str, Any] | None]
    status: Mapped[str] = mapped_column(
        Enum("committed", "voided", name="purchase_status", native_enum=False, create_constraint=True),
        default="committed",
    )
    idempotency_key: Mapped[str] = mapped_column(String(255))
    # SHA-256 of the canonical request, so the same key with a different body is recognised and refused.
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[timestamp]
    voided_at: Mapped[dt.datetime | None]
    # Where the analytics roll-ups stand with this purchase (ROLLUP_* in app/models/analytics.py): new and not
    # folded in yet (the server default, so the purchase path sends nothing more), voided after or before it was
    # folded in, or settled.
    rollup_state: Mapped[int] = mapped_column(SmallInteger, server_default=text("1"))

    card: Mapped[Card] = relationship()
