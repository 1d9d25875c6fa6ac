"""Marketing consent as it changes, and the win-back reminders sent to lapsed members.

Who may be emailed and who was, decided in app/domain/consent.py and app/domain/reminders.py; these rows are the
record both keep.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Enum, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, BigIntId, intpk, timestamp
from app.models.card import Card
from app.models.people import Customer

# How a consent change reached us. Checked by the domain (app/domain/consent.py), not by a CHECK that SQLite
# could not widen later: more ways to change consent will come.
CONSENT_CHANNELS = ("enrollment", "unsubscribe_link", "one_click")
REMINDER_STATUSES = ("claimed", "sent", "failed", "cancelled")


class ConsentChange(Base):
    """One change of a customer's marketing consent: given or withdrawn, when, and how.

    `customers.marketing_consent` is the current answer; these rows are how it came to be, for the member who
    asks "when did I unsubscribe?" and for the merchant who must show it.
    """

    __tablename__ = "consent_changes"

    id: Mapped[intpk]
    customer_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("customers.id"), index=True)
    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"), index=True)
    consent: Mapped[bool]
    via: Mapped[str] = mapped_column(String(32))
    at: Mapped[timestamp]

    customer: Mapped[Customer] = relationship()


class Reminder(Base):
    """One win-back email to a lapsed member, claimed (written and committed) before it goes to SMTP.

    At most one per card and lapse: `last_activity_at` is the lapse's key (the last purchase, or the enrollment
    if none), and the unique constraint on it refuses a second claim however many senders run at once.
    `claimed` then `sent`; `failed` when the SMTP server refused it or could not be reached (it can be retried);
    `cancelled` when a retry found the member no longer wants or needs it. A row left `claimed` is a send that
    stopped half-way: it may have gone out, so it is never sent again.
    """

    __tablename__ = "reminders"
    __table_args__ = (
        UniqueConstraint("card_id", "last_activity_at"),
        Index("ix_reminders_program_status", "program_id", "status"),
    )

    id: Mapped[intpk]
    program_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("programs.id"))
    card_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("cards.id"))
    last_activity_at: Mapped[dt.datetime]
    status: Mapped[str] = mapped_column(
        Enum(*REMINDER_STATUSES, name="reminder_status", native_enum=False, create_constraint=True),
        default="claimed",
    )
    claimed_at: Mapped[timestamp]
    sent_at: Mapped[dt.datetime | None]
    error: Mapped[str] = mapped_column(String(500), default="")

    card: Mapped[Card] = relationship()
