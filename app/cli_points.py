"""Operator commands for the daily upkeep of balances: `flask --app wsgi points birthday|expire|warn-expiry`.

Meant for cron, once a day (each is safe to run again the same day: it applies once). Each plans first, then
changes one card at a time, committing every few cards, so a large run holds the database's write lock only
in short bursts and a run that stops half-way is finished by running it again.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from app.db import begin_reading, get_session, start_writing
from app.domain.member_card import bonus_text
from app.domain.points_upkeep import (
    ExpiryWarning,
    birthday_bonuses_due,
    expire_points,
    expiry_warnings_due,
    grant_birthday_bonus,
    mark_expiry_warned,
    points_to_expire,
    unmark_expiry_warned,
)
from app.google_wallet import public_base_url
from app.mail import send_expiry_warning
from app.models import utcnow

points_cli = AppGroup("points", help="Birthday bonuses and points expiry, for a daily run.")

# Cards changed per transaction: short enough that tills hardly wait for the write lock.
_BATCH = 200
# Below this many cards a run is quick enough to need no progress bar.
_PROGRESS_FROM = 100

T = TypeVar("T")

_DATE_OPTION = click.option(
    "--date", "day", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD",
    help="Run as of this day (YYYY-MM-DD, UTC); default: today. For catching up or trying a date out.",
)
_DRY_RUN_OPTION = click.option("--dry-run", is_flag=True, help="List what would happen; change and send nothing.")


@points_cli.command("birthday")
@_DATE_OPTION
@_DRY_RUN_OPTION
@with_appcontext
def points_birthday(day: dt.datetime | None, dry_run: bool) -> None:
    """Pay each program's birthday bonus to the members whose birthday it is, once a year.

    Members born on 29 February get it on 28 February in other years. With the program's grace days, a day
    the command did not run is caught up by the next run. Programs without a birthday rule are left alone.
    """
    session = get_session()
    today, _ = _as_of(day)
    begin_reading(session)
    plan = birthday_bonuses_due(session, today)
    _report_skipped(plan.skipped)
    if dry_run:
        for bonus in plan.items:
            gift = bonus_text(bonus.amount, bonus.unit, bonus.currency)
            click.echo(f"{bonus.serial}  {bonus.holder:<20}  {bonus.program}: {gift} for the birthday of "
                       f"{bonus.birthday.day} {bonus.birthday:%B %Y}")
        click.echo(f"Dry run: {len(plan.items)} birthday bonuses due on {today}; nothing was changed.")
        return
    start_writing(session)
    paid = 0
    for bonus in _batches(_progress(plan.items, "Birthday bonuses")):
        paid += grant_birthday_bonus(session, bonus)
    session.commit()
    click.echo(f"Paid {paid} birthday bonuses on {today}"
               + (f" ({len(plan.items) - paid} were paid already)." if paid < len(plan.items) else "."))


@points_cli.command("expire")
@_DATE_OPTION
@_DRY_RUN_OPTION
@click.option("--warn/--no-warn", default=True, show_default=True,
              help="Also email the members whose points expire within the program's warning days.")
@with_appcontext
def points_expire(day: dt.datetime | None, dry_run: bool, warn: bool) -> None:
    """Expire the points of members without a purchase for the program's expiry months, then warn the next.

    Each card's points go to zero with an "adjust" ledger row ("Expired after N months without a purchase").
    Members are warned by email the program's warning days before (see `points warn-expiry`). --dry-run lists
    who would lose what: serial, masked name, points and last purchase.
    """
    session = get_session()
    today, now = _as_of(day)
    begin_reading(session)
    plan = points_to_expire(session, today)
    _report_skipped(plan.skipped)
    if dry_run:
        for expiry in plan.items:
            last = (f"last purchase {expiry.last_purchase_at:%Y-%m-%d}" if expiry.last_purchase_at
                    else f"no purchase, enrolled {expiry.last_activity_at:%Y-%m-%d}")
            click.echo(f"{expiry.serial}  {expiry.holder:<20}  {expiry.points:>8,} points  {last}  "
                       f"({expiry.program}, {expiry.months} months)")
        total = sum(expiry.points for expiry in plan.items)
        click.echo(f"Dry run: {total:,} points on {len(plan.items)} cards would expire on {today}; "
                   "nothing was changed.")
    else:
        start_writing(session)
        taken = cards = 0
        for expiry in _batches(_progress(plan.items, "Expiring points")):
            points = expire_points(session, expiry)
            taken += points
            cards += points > 0
        session.commit()
        click.echo(f"Expired {taken:,} points on {cards} cards on {today}.")
    if warn:
        _warn(today, now, dry_run)


@points_cli.command("warn-expiry")
@_DATE_OPTION
@_DRY_RUN_OPTION
@with_appcontext
def points_warn_expiry(day: dt.datetime | None, dry_run: bool) -> None:
    """Email members whose points expire within the program's warning days, once per expiry date.

    A service message about the member's own balance, so it goes to every member with an email address, with
    or without marketing consent. A purchase moves the expiry date, and the new one is warned about afresh.
    """
    today, now = _as_of(day)
    _warn(today, now, dry_run)


def _warn(today: dt.date, now: dt.datetime, dry_run: bool) -> None:
    session = get_session()
    begin_reading(session)
    plan = expiry_warnings_due(session, today)
    _report_skipped(plan.skipped)
    if dry_run:
        for warning in plan.items:
            click.echo(f"{warning.serial}  {warning.holder:<20}  {warning.points:>8,} points  would be warned: "
                       f"they expire on {warning.expires_on}")
        click.echo(f"Dry run: {len(plan.items)} members would be warned; nothing was sent.")
        return
    if plan.items and not current_app.config["MAIL_SERVER"]:
        click.echo("MAIL_SERVER is not set: the warnings are written to the log, not sent.", err=True)
    if plan.items and not current_app.config["PUBLIC_BASE_URL"]:
        click.echo(f"PUBLIC_BASE_URL is not set: card links in the warnings point at {public_base_url()}.",
                   err=True)
    start_writing(session)
    sent = 0
    for warning in _progress(plan.items, "Expiry warnings"):
        if not mark_expiry_warned(session, warning, now):
            session.rollback()
            continue
        # The mark is committed before sending: a crash or a second run never sends this warning twice.
        session.commit()
        try:
            _send_warning(warning)
        except (OSError, smtplib.SMTPException) as error:
            unmark_expiry_warned(session, warning, now)
            session.commit()
            raise click.ClickException(
                f"Sending the expiry warning for card {warning.serial} failed ({error}). {sent} warnings were "
                "sent; run the command again to send the rest."
            ) from None
        sent += 1
    click.echo(f"Sent {sent} expiry warnings.")


def _send_warning(warning: ExpiryWarning) -> None:
    path = current_app.url_map.bind("localhost").build("customer.card_page", {"token": warning.page_token})
    send_expiry_warning(
        warning.email,
        warning.name.split()[0],
        warning.program,
        warning.points,
        warning.expires_on,
        warning.months,
        public_base_url() + path,
    )


def _as_of(day: dt.datetime | None) -> tuple[dt.date, dt.datetime]:
    """The day to run as (UTC) and the moment to record: now, or the same time of day on --date."""
    now = utcnow()
    if day is None:
        return now.date(), now
    return day.date(), dt.datetime.combine(day.date(), now.timetz())


def _report_skipped(skipped: Sequence[str]) -> None:
    for message in skipped:
        click.echo(f"Skipped {message}", err=True)


def _progress(items: Sequence[T], label: str) -> Iterable[T]:
    """The items, with a progress bar on stderr when there are enough of them to wait for."""
    if len(items) < _PROGRESS_FROM:
        yield from items
        return
    with click.progressbar(items, label=label, file=sys.stderr) as bar:
        yield from bar


def _batches(items: Iterable[T]) -> Iterator[T]:
    """The items, committing the session after every batch of them (and the caller commits the rest)."""
    session = get_session()
    for done, item in enumerate(items, start=1):
        yield item
        if done % _BATCH == 0:
            session.commit()


GROUPS = (points_cli,)

__all__ = ["GROUPS", "points_cli"]
