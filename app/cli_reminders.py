"""Operator commands for win-back reminders: `flask --app wsgi reminders send|list`.

`reminders send` emails lapsed members who agreed to marketing email, once per lapse (app/domain/reminders.py
says who and why). Meant for cron, once a day; `--dry-run` first shows who would get what. Each reminder is
claimed and committed before it goes to the SMTP server, so a run that crashes or is killed is finished by
running it again and nobody gets one twice; a reminder the server refused, or could not take because it was
down, is marked failed and sent by a later run with `--retry-unsent`.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import sys

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from app.cli import domain_command
from app.db import begin_reading, get_session, start_writing
from app.domain.programs import get_program
from app.domain.reminders import (
    SEGMENT,
    DueReminder,
    claim_reminder,
    failed_reminders,
    mark_failed,
    mark_sent,
    reclaim_failed,
    reminder_email,
    reminder_log,
    reminder_subject,
    reminders_due,
    unconfirmed_reminders,
)
from app.google_wallet import public_base_url
from app.mail import send_mail
from app.models import REMINDER_STATUSES, Program, utcnow
from app.unsubscribe_links import external_url, unsubscribe_headers, unsubscribe_url

reminders_cli = AppGroup("reminders", help="Win-back emails to lapsed members who agreed to marketing email.")

_PROGRAM_OPTION = click.option("--program", "program_slug", metavar="SLUG",
                               help="Only this program (its slug); default: every program.")


@reminders_cli.command("send")
@_PROGRAM_OPTION
@click.option("--dry-run", is_flag=True, help="List who would get what; send nothing and write nothing.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N",
              help="Send at most N reminders in this run; the rest go in the next.")
@click.option("--retry-unsent", is_flag=True,
              help="Also send again the reminders whose sending failed with an error (the mail server refused "
                   "them or was down). Reminders a crashed run left unconfirmed are never sent again.")
@with_appcontext
@domain_command
def reminders_send(program_slug: str | None, dry_run: bool, limit: int | None, retry_unsent: bool) -> None:
    """Email a reminder to each lapsed member who agreed to marketing email and has not had one for this lapse
    (nor any in 30 days): what they hold, a running offer for lapsed members, their card link and an
    unsubscribe link. Exits 1 if any could not be sent; those are kept for --retry-unsent."""
    session = get_session()
    now = utcnow()
    begin_reading(session)
    program = get_program(session, program_slug) if program_slug else None
    plan = reminders_due(session, now, program)
    retries = failed_reminders(session, now, program) if retry_unsent else []
    for message in plan.skipped:
        click.echo(f"Skipped {message}", err=True)
    _report_left_over(now, program, retry_unsent)
    todo = [*retries, *plan.items][:limit]
    if dry_run:
        for due in todo:
            click.echo(_dry_run_line(due))
        click.echo(f"Dry run: {len(todo)} reminders would be sent"
                   + (f" ({sum(due.reminder_id is not None for due in todo)} of them retries)" if retries else "")
                   + "; nothing was sent or written.")
        return
    if not todo:
        click.echo("No reminders are due.")
        return
    if not current_app.config["MAIL_SERVER"]:
        raise click.ClickException("MAIL_SERVER is not set, so no reminder can be sent. Set MAIL_SERVER and "
                                   "MAIL_PORT (see README), or look with --dry-run.")
    if not current_app.config["PUBLIC_BASE_URL"]:
        click.echo(f"PUBLIC_BASE_URL is not set: links in the reminders point at {public_base_url()}.", err=True)
    _send(todo)


def _send(todo: list[DueReminder]) -> None:
    session = get_session()
    start_writing(session)
    sent = not_due = 0
    refused: list[str] = []
    with click.progressbar(todo, label="Sending reminders", file=sys.stderr) as bar:
        for due in bar:
            now = utcnow()
            reminder_id = reclaim_failed(session, due, now) if due.reminder_id else claim_reminder(session, due, now)
            # The claim is committed before the mail server hears of it: whatever happens next, no later run
            # sends this reminder again unless it is marked failed below.
            session.commit()
            if reminder_id is None:
                not_due += 1
                continue
            subject, body = reminder_email(
                due, card_url=external_url("customer.card_page", token=due.page_token),
                unsubscribe_url=unsubscribe_url(due.customer_id),
            )
            try:
                send_mail(due.email, subject, body, headers=unsubscribe_headers(due.customer_id))
            except smtplib.SMTPRecipientsRefused as error:
                # This address only: the server takes mail, so the others go on.
                mark_failed(session, reminder_id, _smtp_error(error))
                session.commit()
                refused.append(f"{due.email} (card {due.serial}): {_smtp_error(error)}")
                continue
            except (OSError, smtplib.SMTPException) as error:
                mark_failed(session, reminder_id, _smtp_error(error))
                session.commit()
                raise click.ClickException(
                    f"Sending the reminder to {due.email} (card {due.serial}) failed: {_smtp_error(error)}. "
                    f"{sent} reminders were sent in this run. That one is marked failed and the rest were not "
                    "tried: once the mail server works, run `reminders send --retry-unsent`."
                ) from None
            mark_sent(session, reminder_id, utcnow())
            session.commit()
            sent += 1
    skipped = f" {not_due} were no longer due (claimed by another run, or the member changed)." if not_due else ""
    click.echo(f"Sent {sent} reminders.{skipped}")
    if refused:
        for line in refused:
            click.echo(f"Refused by the mail server: {line}", err=True)
        raise click.ClickException(f"{len(refused)} reminders were refused by the mail server; they are marked "
                                   "failed, and `reminders send --retry-unsent` tries them again.")


@reminders_cli.command("list")
@_PROGRAM_OPTION
@click.option("--status", type=click.Choice(REMINDER_STATUSES), help="Only reminders with this status.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, metavar="N",
              help="Show the newest N.")
@with_appcontext
@domain_command
def reminders_list(program_slug: str | None, status: str | None, limit: int) -> None:
    """The reminder log, newest first: when each was claimed, its status, who it went to, the lapse it is for
    (the last activity), when it was sent, and any error."""
    session = get_session()
    program = get_program(session, program_slug) if program_slug else None
    rows = reminder_log(session, program=program, status=status, limit=limit)
    for row in rows:
        sent = f"sent {row.sent_at:%Y-%m-%d %H:%M}" if row.sent_at else ""
        error = f"  error: {row.error}" if row.error else ""
        click.echo(f"{row.claimed_at:%Y-%m-%d %H:%M}  {row.status:<9}  {row.program_slug}  {row.serial}  "
                   f"{row.holder:<20}  {row.email or '-'}  last activity {row.last_activity_at:%Y-%m-%d}  "
                   f"{sent}{error}".rstrip())
    click.echo(f"{len(rows)} reminders" + (f" (the newest {limit})" if len(rows) == limit else "") + ".", err=True)


def _report_left_over(started: dt.datetime, program: Program | None, retry_unsent: bool) -> None:
    """Say what earlier runs left: unconfirmed sends (never repeated) and failures (retried on request)."""
    session = get_session()
    unconfirmed = unconfirmed_reminders(session, started, program)
    if unconfirmed:
        click.echo(f"{len(unconfirmed)} reminders were claimed by a run that stopped while sending them (or that "
                   "is still running): they may have gone out, so they are not sent again. "
                   "`reminders list --status claimed` lists them.", err=True)
    if not retry_unsent:
        failed = reminder_log(session, program=program, status="failed")
        if failed:
            click.echo(f"{len(failed)} reminders failed to send earlier; --retry-unsent sends them again.", err=True)


def _dry_run_line(due: DueReminder) -> str:
    activity = (f"last purchase {due.last_activity_at:%Y-%m-%d}" if due.bought
                else f"joined {due.last_activity_at:%Y-%m-%d}, never bought")
    retry = "  (retry)" if due.reminder_id is not None else ""
    return (f"{due.program_slug}  {due.serial}  {due.holder:<20}  {due.email}  {SEGMENT}  {activity}  "
            f"\"{reminder_subject(due)}\"{retry}")


def _smtp_error(error: Exception) -> str:
    """The error in one line, as the mail server or the network said it."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code, message = next(iter(error.recipients.values()))
        return f"{code} {message.decode(errors='replace')}"
    if isinstance(error, smtplib.SMTPResponseException):
        reply = error.smtp_error
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
        return f"{error.smtp_code} {text}"
    return str(error) or type(error).__name__


GROUPS = (reminders_cli,)

__all__ = ["GROUPS", "reminders_cli"]
