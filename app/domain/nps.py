"""The NPS question, "How likely are you to recommend us?": when a member is asked, recording the answer, the
email that asks members who agreed to marketing email, and the figures the manager's dashboard shows.

When the question is due (docs/nps.md): the member made a committed purchase since they last closed the question
(answered it, or pressed "Not now"), and that close is at least `interval_days` old (the program's
`rules["nps"]["interval_days"]`, 90 unless set). A member never asked is due after their first purchase. The
card page shows the question while it is due, however often the page is opened: only closing it counts.

The email asks the same question, once per due period: a member is emailed when the question is due for them,
they agreed to marketing email and have an address, and no NPS email went to them since their last purchase
and within `interval_days`. Each email is claimed (`NpsAsk.emailed_at`, an `NpsEmail` row) and committed before
it is sent, so a run that crashes half-way never sends anyone a second one.

The score: promoters answer 9-10, passives 7-8, detractors 0-6; NPS = % promoters - % detractors, rounded to
the nearest integer (halves away from zero), between -100 and 100, and None without answers.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, cast

from sqlalchemy import CursorResult, Select, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.domain.errors import Conflict, ValidationError
from app.models import Card, Customer, NpsAsk, NpsEmail, NpsResponse, Program, Purchase
from app.models.nps import NPS_CHANNELS, NPS_COMMENT_MAX

__all__ = [
    "DEFAULT_INTERVAL_DAYS",
    "MAX_INTERVAL_DAYS",
    "NPS_CHANNELS",
    "NPS_COMMENT_MAX",
    "NpsAnswer",
    "NpsComment",
    "NpsEmailDue",
    "NpsFigures",
    "NpsMonth",
    "NpsNotDue",
    "NpsQuestion",
    "NpsSettings",
    "claim_nps_email",
    "dismiss_nps",
    "email_due",
    "finish_nps_email",
    "months_between",
    "nps_by_month",
    "nps_comments",
    "nps_email_text",
    "nps_figures",
    "nps_months",
    "nps_overall",
    "nps_overall_of",
    "nps_question",
    "nps_score",
    "nps_settings",
    "nps_email_recipients",
    "nps_emails_due",
    "question_due",
    "read_nps_answer",
    "read_preselected_score",
    "record_nps_answer",
]

DEFAULT_INTERVAL_DAYS = 90
MAX_INTERVAL_DAYS = 3650
PROMOTER_MIN = 9
PASSIVE_MIN = 7


class NpsNotDue(Conflict):
    """The member already answered (or dismissed) the question recently, or has not bought since."""

    code = "nps_not_due"
    title = "Already answered"


@dataclass(frozen=True)
class NpsSettings:
    interval_days: int = DEFAULT_INTERVAL_DAYS


def nps_settings(rules: Mapping[str, Any]) -> NpsSettings:
    """The `nps` part of a program's stored rules: `interval_days`, a whole number from 1 to 3650 (default 90)."""
    stored = rules.get("nps") or {}
    if not isinstance(stored, Mapping):
        raise ValidationError("nps must be an object of settings.", field="nps")
    days = stored.get("interval_days", DEFAULT_INTERVAL_DAYS)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_INTERVAL_DAYS:
        raise ValidationError(f"nps.interval_days is a whole number of days from 1 to {MAX_INTERVAL_DAYS}.",
                              field="nps.interval_days")
    return NpsSettings(interval_days=days)


# --- When to ask (pure) ----------------------------------------------------------------------------------------


def question_due(
    *, last_purchase_at: dt.datetime | None, closed_at: dt.datetime | None, now: dt.datetime, interval_days: int
) -> bool:
    """Whether the card page asks: a purchase since the question was last closed, and that close at least
    `interval_days` ago. Never before a first purchase."""
    if last_purchase_at is None:
        return False
    if closed_at is None:
        return True
    return last_purchase_at > closed_at and now - closed_at >= dt.timedelta(days=interval_days)


def email_due(
    *, last_purchase_at: dt.datetime | None, closed_at: dt.datetime | None, emailed_at: dt.datetime | None,
    now: dt.datetime, interval_days: int,
) -> bool:
    """Whether to email the question: it is due, and no NPS email went out since the last purchase and within
    `interval_days` (consent and an address are the caller's to check)."""
    if not question_due(last_purchase_at=last_purchase_at, closed_at=closed_at, now=now,
                        interval_days=interval_days):
        return False
    assert last_purchase_at is not None
    if emailed_at is None:
        return True
    return last_purchase_at > emailed_at and now - emailed_at >= dt.timedelta(days=interval_days)


# --- Reading an answer (pure) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NpsAnswer:
    score: int
    comment: str | None
    channel: str


_SCORE = re.compile(r"(?:10|[0-9])")
# Control characters other than tab and newline: never typed, and PostgreSQL refuses NUL in text outright.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def read_nps_answer(form: Mapping[str, str]) -> NpsAnswer:
    """The answer form's `score` (0-10), `comment` (optional, at most 1,000 characters) and `channel`
    ("card_page", or "email" when the member came from the email's link). Raises ValidationError whose
    `errors` has a message for each bad field."""
    errors: dict[str, str] = {}
    score_text = (form.get("score") or "").strip()
    score = 0
    if not score_text:
        errors["score"] = "Choose a score from 0 (not at all likely) to 10 (extremely likely), then press Send."
    elif not _SCORE.fullmatch(score_text):
        errors["score"] = "The score is a whole number from 0 (not at all likely) to 10 (extremely likely)."
    else:
        score = int(score_text)
    comment = _CONTROL.sub("", (form.get("comment") or "").replace("\r\n", "\n")).strip()
    if len(comment) > NPS_COMMENT_MAX:
        errors["comment"] = (f"Your comment is {len(comment):,} characters long; please keep it to "
                             f"{NPS_COMMENT_MAX:,}.")
    channel = (form.get("channel") or "card_page").strip()
    if channel not in NPS_CHANNELS:
        errors["channel"] = "The form was not sent from your card page; open the card page and answer there."
    if errors:
        raise ValidationError("Your answer was not saved: " + " ".join(errors.values()), field=next(iter(errors)),
                              errors=errors)
    return NpsAnswer(score=score, comment=comment or None, channel=channel)


def read_preselected_score(value: str | None) -> int | None:
    """The score an email's link preselects (`?nps=7`), or None for anything that is not 0-10."""
    text = (value or "").strip()
    return int(text) if _SCORE.fullmatch(text) else None


# --- The card page's question ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NpsQuestion:
    """What the card page shows about the question: the form when `due`, with `preselected` ticked (from an
    email's link, whose `channel` is then "email"); `closed_recently` when the member answered or dismissed it
    within the interval, so a link followed twice can say so."""

    due: bool
    preselected: int | None
    channel: str
    closed_recently: bool


def nps_question(
    session: Session, card: Card, now: dt.datetime, *, preselect: str | None = None, channel: str | None = None
) -> NpsQuestion:
    """Whether `card`'s page asks the question at `now` (never for a revoked card). `preselect` is the score an
    email's link carries; `channel` the one a returned form said (else "email" with a preselected score)."""
    settings = nps_settings(card.program.rules)
    ask = session.get(NpsAsk, card.id)
    closed_at = ask.closed_at if ask else None
    due = card.status == "active" and question_due(last_purchase_at=card.last_purchase_at, closed_at=closed_at,
                                                    now=now, interval_days=settings.interval_days)
    preselected = read_preselected_score(preselect)
    recently = closed_at is not None and now - closed_at < dt.timedelta(days=settings.interval_days)
    if channel not in NPS_CHANNELS:
        channel = "email" if preselect is not None else "card_page"
    return NpsQuestion(due=due, preselected=preselected if due else None, channel=channel, closed_recently=recently)


def record_nps_answer(session: Session, card: Card, answer: NpsAnswer, now: dt.datetime) -> NpsResponse:
    """Record the member's answer and close the question for `interval_days`. Raises NpsNotDue, writing
    nothing, when the question is not due (answered or dismissed recently, or no purchase since)."""
    if not _close_question(session, card, now, dismissed=False):
        raise NpsNotDue(_not_due_message(session, card))
    response = NpsResponse(program_id=card.program_id, card_id=card.id, score=answer.score, comment=answer.comment,
                           channel=answer.channel, purchase_id=_last_purchase_id(session, card), created_at=now)
    session.add(response)
    session.flush()
    return response


def dismiss_nps(session: Session, card: Card, now: dt.datetime) -> bool:
    """"Not now": close the question without a score, for `interval_days`. False when it was not open."""
    return _close_question(session, card, now, dismissed=True)


def _close_question(session: Session, card: Card, now: dt.datetime, *, dismissed: bool) -> bool:
    """Close the question if it is due, as one conditional UPDATE: of two answers racing, one closes it."""
    if card.status != "active" or card.last_purchase_at is None:
        return False
    interval = dt.timedelta(days=nps_settings(card.program.rules).interval_days)
    _ensure_ask_row(session, card)
    result = cast(CursorResult[Any], session.execute(
        update(NpsAsk)
        .where(NpsAsk.card_id == card.id,
               or_(NpsAsk.closed_at.is_(None),
                   and_(NpsAsk.closed_at < card.last_purchase_at, NpsAsk.closed_at <= now - interval)))
        .values(closed_at=now, dismissed=dismissed)
        .execution_options(synchronize_session=False)
    ))
    return result.rowcount == 1


def _ensure_ask_row(session: Session, card: Card) -> None:
    if session.scalar(select(NpsAsk.card_id).where(NpsAsk.card_id == card.id)) is not None:
        return
    try:
        with session.begin_nested():
            session.add(NpsAsk(card_id=card.id, program_id=card.program_id, dismissed=False))
    except IntegrityError:
        pass  # made a moment ago by the member's other request; the conditional UPDATE sorts out who wins


def _not_due_message(session: Session, card: Card) -> str:
    if card.status != "active":
        return "This card has been revoked, so it cannot answer. Ask at the till for a new card."
    ask = session.scalar(select(NpsAsk).where(NpsAsk.card_id == card.id).execution_options(populate_existing=True))
    if card.last_purchase_at is None:
        return "We ask after a purchase: there is nothing to answer yet."
    if ask is not None and ask.closed_at is not None:
        return ("Thank you, but you already answered this question recently, so this answer was not recorded. "
                "We will ask again after a later visit.")
    return "There is no question to answer right now."


def _last_purchase_id(session: Session, card: Card) -> int | None:
    return session.scalar(
        select(Purchase.id).where(Purchase.card_id == card.id, Purchase.status == "committed")
        .order_by(Purchase.created_at.desc(), Purchase.id.desc()).limit(1)
    )


# --- The email -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NpsEmailDue:
    """A member to email the question to."""

    card_id: int
    serial: str
    customer_id: int
    email: str
    name: str
    page_token: str


def nps_emails_due(session: Session, program: Program, now: dt.datetime) -> Select[tuple[int]]:
    """The ids of the program's cards to email the question to at `now`: active cards whose member agreed to
    marketing email, has an address, and is due the email (`email_due`), as one query."""
    interval = dt.timedelta(days=nps_settings(program.rules).interval_days)
    cutoff = now - interval
    return (
        select(Card.id)
        .join(Customer, Customer.id == Card.customer_id)
        .outerjoin(NpsAsk, NpsAsk.card_id == Card.id)
        .where(
            Card.program_id == program.id,
            Card.status == "active",
            Card.last_purchase_at.is_not(None),
            Customer.marketing_consent.is_(True),
            Customer.email.is_not(None),
            Customer.email != "",
            or_(NpsAsk.closed_at.is_(None),
                and_(NpsAsk.closed_at < Card.last_purchase_at, NpsAsk.closed_at <= cutoff)),
            or_(NpsAsk.emailed_at.is_(None),
                and_(NpsAsk.emailed_at < Card.last_purchase_at, NpsAsk.emailed_at <= cutoff)),
        )
        .order_by(Card.id)
    )


def nps_email_recipients(session: Session, program: Program, now: dt.datetime) -> list[NpsEmailDue]:
    """Who `nps_emails_due` names, with what the email and a dry run's listing need."""
    due = nps_emails_due(session, program, now).subquery()
    rows = session.execute(
        select(Card.id, Card.serial, Customer.id, Customer.email, Customer.name, Card.page_token)
        .join(Customer, Customer.id == Card.customer_id)
        .where(Card.id.in_(select(due.c.id)))
        .order_by(Card.id)
    ).tuples()
    return [NpsEmailDue(card_id=card_id, serial=serial, customer_id=customer_id, email=email or "", name=name,
                        page_token=token)
            for card_id, serial, customer_id, email, name, token in rows]


def claim_nps_email(session: Session, program: Program, card_id: int, now: dt.datetime) -> tuple[NpsEmail,
                                                                                                   NpsEmailDue] | None:
    """Claim the email for one card before it is sent: re-read the card and its member, check consent and that
    the email is still due, and mark it sent-to (`NpsAsk.emailed_at`) with a conditional UPDATE, so two runs at
    once claim it once. None when it is no longer due. The caller commits, then sends, then `finish_nps_email`."""
    row = session.execute(
        select(Card, Customer).join(Customer, Customer.id == Card.customer_id)
        .where(Card.id == card_id, Card.program_id == program.id)
        .execution_options(populate_existing=True)
    ).tuples().first()
    if row is None:
        return None
    card, customer = row
    if card.status != "active" or not customer.marketing_consent or not customer.email:
        return None
    settings = nps_settings(program.rules)
    ask = session.scalar(select(NpsAsk).where(NpsAsk.card_id == card.id).execution_options(populate_existing=True))
    if not email_due(last_purchase_at=card.last_purchase_at, closed_at=ask.closed_at if ask else None,
                     emailed_at=ask.emailed_at if ask else None, now=now, interval_days=settings.interval_days):
        return None
    assert card.last_purchase_at is not None
    _ensure_ask_row(session, card)
    cutoff = now - dt.timedelta(days=settings.interval_days)
    result = cast(CursorResult[Any], session.execute(
        update(NpsAsk)
        .where(NpsAsk.card_id == card.id,
               or_(NpsAsk.emailed_at.is_(None),
                   and_(NpsAsk.emailed_at < card.last_purchase_at, NpsAsk.emailed_at <= cutoff)))
        .values(emailed_at=now)
        .execution_options(synchronize_session=False)
    ))
    if result.rowcount != 1:
        return None
    claim = NpsEmail(program_id=program.id, card_id=card.id, purchase_id=_last_purchase_id(session, card),
                     status="claimed", claimed_at=now)
    session.add(claim)
    session.flush()
    return claim, NpsEmailDue(card_id=card.id, serial=card.serial, customer_id=customer.id, email=customer.email,
                              name=customer.name, page_token=card.page_token)


def finish_nps_email(session: Session, claim: NpsEmail, *, error: str | None, now: dt.datetime) -> None:
    """Mark a claimed email sent, or failed with the SMTP error. A failed one gives its claim back (the server
    refused it, so nothing went out) so the next run tries again."""
    if error is None:
        claim.status, claim.sent_at = "sent", now
    else:
        claim.status, claim.error = "failed", error[:500]
        session.execute(update(NpsAsk).where(NpsAsk.card_id == claim.card_id, NpsAsk.emailed_at == claim.claimed_at)
                        .values(emailed_at=None).execution_options(synchronize_session=False))
    session.flush()


def nps_email_text(
    *, program_name: str, customer_name: str, score_links: Sequence[str], unsubscribe_url: str | None
) -> tuple[str, str]:
    """The email's subject and plain-text body: the question, a link per score 0-10 (each opens the card page's
    form with that score ticked; nothing is recorded until the member presses Send), and how to stop these."""
    if len(score_links) != 11:
        raise ValueError("the question needs a link for each score from 0 to 10")
    lines = [f"Hello {customer_name},", "",
             f"Thank you for your recent visit. How likely are you to recommend {program_name} to a friend or "
             "colleague? Pick a score from 0 (not at all likely) to 10 (extremely likely):", ""]
    for score, link in enumerate(score_links):
        label = " - not at all likely" if score == 0 else " - extremely likely" if score == 10 else ""
        lines.append(f"{score}{label}: {link}")
    lines += ["", "The link opens your card page with that score chosen; you can add a comment there, and your "
                  "answer is saved when you press Send. The links open your card, so keep this email to yourself.",
              "", f"You get this email because you agreed to hear from {program_name}."]
    if unsubscribe_url:
        lines.append(f"To stop these emails: {unsubscribe_url}")
    return f"How likely are you to recommend {program_name}?", "\n".join(lines) + "\n"


# --- The dashboard's figures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NpsFigures:
    responses: int
    promoters: int
    passives: int
    detractors: int
    nps: int | None


@dataclass(frozen=True)
class NpsMonth(NpsFigures):
    month: dt.date  # the first day of the calendar month (UTC)


@dataclass(frozen=True)
class NpsComment:
    """A comment as the dashboard lists it: never the member's name or email."""

    day: dt.date
    score: int
    comment: str


def nps_score(promoters: int, passives: int, detractors: int) -> int | None:
    """% promoters - % detractors, rounded to the nearest integer with halves away from zero; None when nobody
    answered."""
    responses = promoters + passives + detractors
    if responses == 0:
        return None
    exact = Fraction(100 * (promoters - detractors), responses)
    rounded = int(abs(exact) + Fraction(1, 2))
    return rounded if exact >= 0 else -rounded


def nps_figures(promoters: int, passives: int, detractors: int) -> NpsFigures:
    return NpsFigures(promoters + passives + detractors, promoters, passives, detractors,
                      nps_score(promoters, passives, detractors))


def months_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """The first day of each calendar month from `start`'s to `end`'s, both included (none if `end` < `start`)."""
    if end < start:
        return []
    months = []
    month = start.replace(day=1)
    while month <= end:
        months.append(month)
        month = (month + dt.timedelta(days=32)).replace(day=1)
    return months


def nps_months(counts: Mapping[dt.date, tuple[int, int, int]], start: dt.date, end: dt.date) -> list[NpsMonth]:
    """A row per calendar month of the range, from (promoters, passives, detractors) per month's first day;
    a month without answers has zeros and NPS None."""
    rows = []
    for month in months_between(start, end):
        promoters, passives, detractors = counts.get(month, (0, 0, 0))
        figures = nps_figures(promoters, passives, detractors)
        rows.append(NpsMonth(figures.responses, promoters, passives, detractors, figures.nps, month))
    return rows


def nps_overall_of(months: Iterable[NpsFigures]) -> NpsFigures:
    """The range's figures from its months: counts added up, NPS of the totals (not an average of NPS)."""
    rows = list(months)
    return nps_figures(sum(r.promoters for r in rows), sum(r.passives for r in rows),
                       sum(r.detractors for r in rows))


def _range(start: dt.date, end: dt.date) -> tuple[dt.datetime, dt.datetime]:
    if end < start:
        raise ValidationError("The range ends before it starts; choose an end on or after the start.", field="end")
    return (dt.datetime.combine(start, dt.time(0), tzinfo=dt.UTC),
            dt.datetime.combine(end + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC))


# Promoters, passives, detractors: counted by the database.
_COUNTS = (
    func.count().filter(NpsResponse.score >= PROMOTER_MIN),
    func.count().filter(NpsResponse.score.between(PASSIVE_MIN, PROMOTER_MIN - 1)),
    func.count().filter(NpsResponse.score < PASSIVE_MIN),
)


def _month_start(session: Session) -> Any:
    """The first day of a response's UTC calendar month, as the engine writes it ("2026-03-01")."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", NpsResponse.created_at), "YYYY-MM-01")
    return func.strftime("%Y-%m-01", NpsResponse.created_at)


def nps_by_month(session: Session, program: Program, start: dt.date, end: dt.date) -> list[NpsMonth]:
    """The program's NPS per calendar month (UTC) for answers given from `start` to `end` (UTC days, both
    included): counted by the database, one row per month of the range, months without answers included."""
    since, until = _range(start, end)
    month = _month_start(session).label("month")
    rows = session.execute(
        select(month, *_COUNTS)
        .where(NpsResponse.program_id == program.id, NpsResponse.created_at >= since, NpsResponse.created_at < until)
        .group_by(month)
    ).all()
    counts = {dt.date.fromisoformat(key): (int(p), int(pa), int(d)) for key, p, pa, d in rows}
    return nps_months(counts, start, end)


def nps_overall(session: Session, program: Program, start: dt.date, end: dt.date) -> NpsFigures:
    """The program's NPS over the whole range (UTC days, both included)."""
    since, until = _range(start, end)
    promoters, passives, detractors = session.execute(
        select(*_COUNTS).where(NpsResponse.program_id == program.id, NpsResponse.created_at >= since,
                               NpsResponse.created_at < until)
    ).one()
    return nps_figures(int(promoters), int(passives), int(detractors))


def nps_comments(session: Session, program: Program, start: dt.date, end: dt.date, limit: int = 50) -> list[NpsComment]:
    """The newest comments given from `start` to `end` (UTC days, both included), with their score and day;
    nothing that names the member."""
    since, until = _range(start, end)
    rows = session.execute(
        select(NpsResponse.created_at, NpsResponse.score, NpsResponse.comment)
        .where(NpsResponse.program_id == program.id, NpsResponse.created_at >= since,
               NpsResponse.created_at < until, NpsResponse.comment.is_not(None))
        .order_by(NpsResponse.created_at.desc(), NpsResponse.id.desc())
        .limit(limit)
    ).all()
    return [NpsComment(day=created.astimezone(dt.UTC).date(), score=score, comment=comment)
            for created, score, comment in rows if comment]
