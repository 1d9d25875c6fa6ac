"""Win-back reminders: one email to a lapsed member who agreed to marketing email, to bring them back.

Who: members of the `lapsed` segment (app/domain/segments.py: no purchase, or no enrollment if they never
bought, for the program's `segments.lapsed_days`, 90 by default) whose card is active, who have an email
address and whose marketing consent stands (app/domain/consent.py). Nobody else, ever.

How often: once per lapse. A lapse is keyed by the member's last activity (their last committed purchase, or
their enrollment): `reminders` holds one row per card and key under a unique constraint, so a member who buys
again and lapses again may get another, and no two senders, however they interleave, send one lapse twice. On
top of that, never two reminders to one card within 30 days.

Crash safety, in three steps per member, each its own transaction: `claim_reminder` re-checks the member
under the card's lock and writes the row as `claimed`, and the caller COMMITS before talking to SMTP; after
the SMTP server accepted the message, `mark_sent`; if it refused it or could not be reached, `mark_failed`
with the error. A row left `claimed` is a send that stopped half-way (a crash, a kill): the message may have
gone out, so nothing ever sends it again; `unconfirmed_reminders` lists them for the operator. Rows marked
`failed` are retried only when asked (`reclaim_failed`), after the same checks: a member who unsubscribed or
bought in the meantime has theirs `cancelled` instead.

The planning half (`reminders_due`, `failed_reminders`) only reads, so `--dry-run` shows exactly who would
get what and changes nothing. The email's words are a pure function of the plan (`reminder_email`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, and_, exists, func, not_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.domain.cards import display_name
from app.domain.errors import ValidationError
from app.domain.mechanics import MechanicsRules, mechanics_from_json, percent_text
from app.domain.member_card import running_offers
from app.domain.money import format_amount
from app.domain.segments import members_in_segment, segment_settings
from app.models import Card, Customer, Offer, Program, Reminder

log = logging.getLogger(__name__)

SEGMENT = "lapsed"
# However a member's purchases fall, at most one reminder to a card in this long.
MIN_GAP = dt.timedelta(days=30)
# The statuses that count as "reminded" for the 30 days: sent, possibly sent, or waiting for a retry.
_COUNTS_FOR_GAP = ("claimed", "sent", "failed")

_LAST_ACTIVITY = func.coalesce(Card.last_purchase_at, Customer.created_at)


@dataclass(frozen=True)
class DueReminder:
    """One reminder to send (or that would be sent): the member, their card, and what the email says."""

    card_id: int
    customer_id: int
    program_id: int
    program: str  # the program's name
    program_slug: str
    serial: str
    holder: str  # masked: "Amina K."
    first_name: str
    email: str
    page_token: str
    last_activity_at: dt.datetime  # the lapse's key
    bought: bool  # False: the last activity is the enrollment; they never bought
    balance: str  # "1,250 points", "3 of 8 stamps", "12.50 EUR cashback"; "" when they hold nothing
    balance_sentence: str  # the same in a sentence for the body, with the tier or the vouchers
    offer: str | None  # a running offer aimed at lapsed members, in a line
    reminder_id: int | None = None  # set for a failed reminder being retried


@dataclass(frozen=True)
class ReminderPlan:
    """Who would get a reminder now, and the programs left out (rules that do not read), with why."""

    items: tuple[DueReminder, ...]
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoggedReminder:
    """A row of the reminder log, with who it went to."""

    id: int
    program_slug: str
    serial: str
    holder: str
    email: str | None
    last_activity_at: dt.datetime
    status: str
    claimed_at: dt.datetime
    sent_at: dt.datetime | None
    error: str


# --- Planning (reads only) ----------------------------------------------------------------------------------------


def reminders_due(session: Session, now: dt.datetime, program: Program | None = None) -> ReminderPlan:
    """The reminders due at `now`, in every program or in `program`: lapsed members with consent and an email,
    not reminded for this lapse and not reminded at all in the last 30 days. Ordered by program, then card."""
    items: list[DueReminder] = []
    skipped: list[str] = []
    for candidate in _programs(session, program):
        try:
            rules = mechanics_from_json(candidate.rules)
            segment_settings(candidate.rules)
        except ValidationError as error:
            skipped.append(f"{candidate.slug}: its rules do not read ({error.detail}); fix them in the settings.")
            log.warning("Program %s skipped by reminders: %s", candidate.slug, error.detail)
            continue
        offer = _offer_line(session, candidate, now)
        rows = session.execute(
            select(Card, Customer)
            .join(Customer, Customer.id == Card.customer_id)
            .where(Card.id.in_(members_in_segment(session, candidate, SEGMENT, now)), *_reachable(),
                   not_(_reminded(Card.id, _LAST_ACTIVITY, now)))
            .order_by(Card.id)
        ).all()
        items.extend(_due(candidate, rules, card, customer, offer) for card, customer in rows)
    return ReminderPlan(tuple(items), tuple(skipped))


def failed_reminders(session: Session, now: dt.datetime, program: Program | None = None) -> list[DueReminder]:
    """The reminders whose sending failed with an error (the SMTP server refused them or was not reachable), to
    retry; as they would be written now. Whether each is still wanted is decided by `reclaim_failed`."""
    items: list[DueReminder] = []
    for candidate in _programs(session, program):
        try:
            rules = mechanics_from_json(candidate.rules)
        except ValidationError:
            continue  # reminders_due reports it
        offer = _offer_line(session, candidate, now)
        rows = session.execute(
            select(Reminder, Card, Customer)
            .join(Card, Card.id == Reminder.card_id)
            .join(Customer, Customer.id == Card.customer_id)
            .where(Reminder.program_id == candidate.id, Reminder.status == "failed")
            .order_by(Reminder.id)
        ).all()
        for reminder, card, customer in rows:
            due = _due(candidate, rules, card, customer, offer)
            items.append(replace(due, reminder_id=reminder.id, last_activity_at=reminder.last_activity_at))
    return items


def unconfirmed_reminders(session: Session, before: dt.datetime, program: Program | None = None
                          ) -> list[LoggedReminder]:
    """Reminders claimed before `before` and never confirmed sent: a run stopped while sending them. They may
    have gone out, so they are not sent again; the operator may want to know."""
    return reminder_log(session, program=program, status="claimed", claimed_before=before)


def reminder_log(
    session: Session,
    *,
    program: Program | None = None,
    status: str | None = None,
    claimed_before: dt.datetime | None = None,
    limit: int | None = None,
) -> list[LoggedReminder]:
    """The reminder log, newest first: every reminder claimed, with its status and any error."""
    query = (
        select(Reminder, Card, Customer, Program)
        .join(Card, Card.id == Reminder.card_id)
        .join(Customer, Customer.id == Card.customer_id)
        .join(Program, Program.id == Reminder.program_id)
        .order_by(Reminder.claimed_at.desc(), Reminder.id.desc())
    )
    if program is not None:
        query = query.where(Reminder.program_id == program.id)
    if status is not None:
        query = query.where(Reminder.status == status)
    if claimed_before is not None:
        query = query.where(Reminder.claimed_at < claimed_before)
    if limit is not None:
        query = query.limit(limit)
    return [
        LoggedReminder(id=reminder.id, program_slug=program_row.slug, serial=card.serial,
                       holder=display_name(customer.name), email=customer.email,
                       last_activity_at=reminder.last_activity_at, status=reminder.status,
                       claimed_at=reminder.claimed_at, sent_at=reminder.sent_at, error=reminder.error)
        for reminder, card, customer, program_row in session.execute(query)
    ]


# --- Sending, one member at a time (the caller commits after each step) -------------------------------------------


def claim_reminder(session: Session, due: DueReminder, now: dt.datetime) -> int | None:
    """Write the reminder as `claimed`, after checking under the card's lock that it is still due; its id, or
    None when it is not (another sender claimed it, the member bought, unsubscribed or changed address).

    The caller commits the claim before sending: from then on no run sends this lapse's reminder again.
    """
    card, customer = _locked(session, due.card_id)
    if not _still_due(session, card, customer, due, now) or session.scalar(
        select(_reminded(card.id, due.last_activity_at, now))
    ):
        return None
    reminder = Reminder(program_id=due.program_id, card_id=due.card_id, last_activity_at=due.last_activity_at,
                        status="claimed", claimed_at=now)
    try:
        with session.begin_nested():
            session.add(reminder)
    except IntegrityError:
        # A sender that did not wait for the card's lock (none of ours) claimed this lapse first.
        return None
    return reminder.id


def reclaim_failed(session: Session, due: DueReminder, now: dt.datetime) -> int | None:
    """Claim a failed reminder again for a retry; its id, or None when it is not to be sent after all.

    A member who since unsubscribed, bought, lost their card or changed address gets nothing: the reminder is
    marked `cancelled` with why. The caller commits before sending, as for a first claim.
    """
    assert due.reminder_id is not None, "only failed reminders are reclaimed"
    card, customer = _locked(session, due.card_id)
    reminder = session.get(Reminder, due.reminder_id, with_for_update=True)
    if reminder is None or reminder.status != "failed":
        return None  # another run retried it already
    why_not = _why_not_due(session, card, customer, due, now)
    if why_not is not None:
        reminder.status, reminder.error = "cancelled", why_not
        session.flush()
        return None
    reminder.status, reminder.claimed_at, reminder.error = "claimed", now, ""
    session.flush()
    return reminder.id


def mark_sent(session: Session, reminder_id: int, now: dt.datetime) -> None:
    """The SMTP server accepted the reminder."""
    _set_status(session, reminder_id, "sent", sent_at=now, error="")


def mark_failed(session: Session, reminder_id: int, error: str) -> None:
    """The SMTP server refused the reminder or could not be reached: it was not sent, and may be retried."""
    _set_status(session, reminder_id, "failed", error=error[:500])


# --- The email ----------------------------------------------------------------------------------------------------


def reminder_subject(due: DueReminder) -> str:
    """The reminder's subject: the program, and what the member holds when they hold something."""
    if due.balance:
        verb = "is" if due.balance.endswith("cashback") else "are"
        return f"{due.program}: your {due.balance} {verb} waiting for you"
    return f"{due.program}: we have not seen you for a while"


def reminder_email(due: DueReminder, *, card_url: str, unsubscribe_url: str) -> tuple[str, str]:
    """The reminder's subject and plain-text body: the program, what the member holds, a running offer for
    lapsed members if there is one, the link to their card, and the unsubscribe link."""
    subject = reminder_subject(due)
    since = "your last visit" if due.bought else "you joined"
    lines = [
        f"Hello {due.first_name},",
        "",
        f"It has been a while since {since} at {due.program}, on {_day(due.last_activity_at)}.",
    ]
    if due.balance_sentence:
        lines += ["", due.balance_sentence]
    if due.offer:
        lines += ["", f"Just for you: {due.offer}"]
    lines += [
        "",
        "Your card, to show at the till:",
        "",
        card_url,
        "",
        f"You get this email because you agreed to offers and news from {due.program}. To stop them, open this "
        "link (no sign-in needed):",
        "",
        unsubscribe_url,
        "",
    ]
    return subject, "\n".join(lines)


def balance_words(
    rules: MechanicsRules, currency: str, *, points: int, tier: str | None, stamps: int, vouchers: int,
    cashback: int,
) -> tuple[str, str]:
    """What a member holds, as a short phrase for the subject and a sentence for the body, in the program's own
    unit: points (and tier), stamps towards the reward (and vouchers waiting), or cashback. ("", "") for nothing
    worth a mention."""
    tier_part = f" Your tier is {tier}." if tier else ""
    if rules.program_type == "stamps" and rules.stamps is not None:
        needed, reward = rules.stamps.stamps_needed, rules.stamps.reward_label
        vouchers_part = (f" and {vouchers} {'voucher' if vouchers == 1 else 'vouchers'} for it to use"
                         if vouchers else "")
        if not stamps and not vouchers:
            return "", ""
        phrase = f"{min(stamps, needed)} of {needed} stamps"
        return phrase, f"You have {phrase} towards a {reward}{vouchers_part}.{tier_part}"
    if rules.program_type == "cashback":
        if not cashback:
            return "", ""
        phrase = f"{format_amount(cashback, currency)} {currency} cashback"
        return phrase, f"You have {phrase} to spend.{tier_part}"
    if not points:
        return "", tier_part.strip()
    phrase = f"{points:,} {'point' if points == 1 else 'points'}"
    return phrase, f"You have {phrase} to spend.{tier_part}"


# --- Helpers ------------------------------------------------------------------------------------------------------


def _programs(session: Session, program: Program | None) -> Sequence[Program]:
    if program is not None:
        return [program]
    return session.scalars(select(Program).order_by(Program.id)).all()


def _reachable() -> tuple[ColumnElement[bool], ...]:
    """A member we may email offers: an active card, marketing consent, an email address."""
    return (Card.status == "active", Customer.marketing_consent.is_(True), Customer.email.is_not(None),
            Customer.email != "")


def _reminded(card_id: Any, last_activity: Any, now: dt.datetime) -> Any:
    """EXISTS a reminder for this card's lapse, or any that counts within the last 30 days."""
    return exists().where(
        Reminder.card_id == card_id,
        (Reminder.last_activity_at == last_activity)
        | and_(Reminder.status.in_(_COUNTS_FOR_GAP), Reminder.claimed_at > now - MIN_GAP),
    )


def _due(program: Program, rules: MechanicsRules, card: Card, customer: Customer, offer: str | None) -> DueReminder:
    phrase, sentence = balance_words(rules, program.currency, points=card.points, tier=card.tier,
                                     stamps=card.stamps, vouchers=card.vouchers, cashback=card.cashback)
    return DueReminder(
        card_id=card.id, customer_id=customer.id, program_id=program.id, program=program.name,
        program_slug=program.slug, serial=card.serial, holder=display_name(customer.name),
        first_name=(customer.name.split() or ["there"])[0], email=customer.email or "",
        page_token=card.page_token, last_activity_at=card.last_purchase_at or customer.created_at,
        bought=card.last_purchase_at is not None, balance=phrase, balance_sentence=sentence, offer=offer,
    )


def _locked(session: Session, card_id: int) -> tuple[Card, Customer]:
    # populate_existing: what the lock protects now, not what an earlier read of this session saw.
    card = session.scalars(
        select(Card).where(Card.id == card_id).with_for_update().execution_options(populate_existing=True)
    ).one()
    customer = session.get(Customer, card.customer_id, populate_existing=True)
    assert customer is not None
    return card, customer


def _still_due(session: Session, card: Card, customer: Customer, due: DueReminder, now: dt.datetime) -> bool:
    return _why_not_due(session, card, customer, due, now) is None


def _why_not_due(session: Session, card: Card, customer: Customer, due: DueReminder, now: dt.datetime
                 ) -> str | None:
    """Why the reminder is not to be sent now, or None when it is."""
    if card.status != "active":
        return "The card was revoked."
    if not customer.marketing_consent:
        return "The member withdrew their marketing consent."
    if not customer.email or customer.email != due.email:
        return "The member's email address changed."
    if (card.last_purchase_at or customer.created_at) != due.last_activity_at:
        return "The member bought again: this lapse is over."
    in_segment = session.scalar(select(
        exists(members_in_segment(session, card.program, SEGMENT, now).where(Card.id == card.id))
    ))
    if not in_segment:
        return "The member is no longer lapsed (the program's lapsed days changed)."
    return None


def _set_status(session: Session, reminder_id: int, status: str, **values: Any) -> None:
    result = cast(CursorResult[Any], session.execute(
        update(Reminder).where(Reminder.id == reminder_id, Reminder.status == "claimed")
        .values(status=status, **values).execution_options(synchronize_session=False)
    ))
    if result.rowcount != 1:
        raise RuntimeError(f"Reminder {reminder_id} was not claimed by this run; its status is left alone.")


def _offer_line(session: Session, program: Program, now: dt.datetime) -> str | None:
    """The first running offer aimed at lapsed members, in a line ("Welcome back: 20% off, until ...")."""
    offer = next((offer for offer in running_offers(session, program, now) if offer.segment == SEGMENT), None)
    return _describe_offer(offer, program.currency) if offer is not None else None


def _describe_offer(offer: Offer, currency: str) -> str:
    if offer.discount_type == "percent":
        benefit = f"{percent_text(offer.discount_value)} off"
    else:
        benefit = f"{format_amount(offer.discount_value, currency)} {currency} off"
    terms = []
    if offer.min_basket:
        terms.append(f"on a basket of {format_amount(offer.min_basket, currency)} {currency} or more")
    if offer.ends_at is not None:
        terms.append(f"until {_day(offer.ends_at - dt.timedelta(microseconds=1))} (UTC)")
    detail = f" {offer.detail}" if offer.detail else ""
    return (f"{offer.title}, {benefit}{', ' if terms else ''}{', '.join(terms)}.{detail} Show your card at the "
            "till and ask for it.")


def _day(moment: dt.datetime) -> str:
    moment = moment.astimezone(dt.UTC)
    return f"{moment.day} {moment:%B %Y}"
