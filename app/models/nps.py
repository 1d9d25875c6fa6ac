"""The NPS question ("How likely are you to recommend us?"): the answers, and when each member was last asked.

When the question is due is decided in app/domain/nps.py; these rows are what it is decided from.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, Enum, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigIntId, intpk, timestamp

NPS_CHANNELS = ("card_page", "email")
NPS_COMMENT_MAX = 1000


class NpsResponse(Base):
    """One member's answer: a score 0-10 and an optional comment. A "Not now" is not an answer and is not here."""

    __tablename__ = "nps_responses"
    __table_args__ = (
        CheckConstraint("score >= 0 AND score <= 10", name="score_0_to_10"),
        Index("ix_nps_responses_program_created", "program_id", "created_at"),
    )

    id: Mapped[intpk]
    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"))
    card_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("cards.id"), index=True)
    score: Mapped[int]
    comment: Mapped[str | None] = mapped_column(String(NPS_COMMENT_MAX))
    channel: Mapped[str] = mapped_column(
        Enum(*NPS_CHANNELS, name="nps_channel", native_enum=False, create_constraint=True)
    )
    # The member's latest committed purchase when they answered: the visit the answer is about.
    purchase_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("purchases.id"))
    created_at: Mapped[timestamp]


class NpsAsk(Base):
    """Where a member stands with the question: when they last closed it (answered or said "Not now") and when
    they were last emailed it. One row per card that has ever been asked; a card with no row was never asked."""

    __tablename__ = "nps_asks"

    card_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("cards.id"), primary_key=True)
    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), index=True)
    closed_at: Mapped[dt.datetime | None]
    # True when the last close was "Not now" rather than a score.
    dismissed: Mapped[bool] = mapped_column(default=False)
    # Set when an email is claimed, before it is sent, so a crash between the two never sends it twice.
    emailed_at: Mapped[dt.datetime | None]


class NpsEmail(Base):
    """One NPS email: claimed (written and committed) before it goes to SMTP, then marked sent or failed."""

    __tablename__ = "nps_emails"

    id: Mapped[intpk]
    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), index=True)
    card_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("cards.id"), index=True)
    # The purchase that made the member due the question.
    purchase_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("purchases.id"))
    status: Mapped[str] = mapped_column(
        Enum("claimed", "sent", "failed", name="nps_email_status", native_enum=False, create_constraint=True),
        default="claimed",
    )
    error: Mapped[str] = mapped_column(String(500), default="")
    claimed_at: Mapped[timestamp]
    sent_at: Mapped[dt.datetime | None]
