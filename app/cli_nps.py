"""Operator command for the NPS question by email: `flask --app wsgi nps send [--program SLUG] [--dry-run]`.

Meant for cron, once a day. It emails the question to members who made a purchase, are due the question
(app/domain/nps.py) and agreed to marketing email. Each email is claimed in the database and committed before
it goes to SMTP, so a run that crashes half-way never sends anyone a second one, and running it again sends
only the rest. An email the SMTP server refuses gives its claim back and stops the run, to be run again.
"""

from __future__ import annotations

import smtplib

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select

from app.db import begin_reading, get_session, start_writing
from app.domain.cards import display_name
from app.domain.errors import DomainError
from app.domain.nps import NpsEmailDue, claim_nps_email, finish_nps_email, nps_email_recipients, nps_email_text
from app.domain.programs import get_program
from app.google_wallet import public_base_url
from app.mail import send_mail
from app.models import Program, utcnow
from app.unsubscribe_links import external_url, unsubscribe_headers, unsubscribe_url

nps_cli = AppGroup("nps", help="The NPS question (how likely members are to recommend you), by email.")


@nps_cli.command("send")
@click.option("--program", "slug", metavar="SLUG", help="Only this program; default: every program.")
@click.option("--dry-run", is_flag=True, help="List who would be asked; send and change nothing.")
@with_appcontext
def nps_send(slug: str | None, dry_run: bool) -> None:
    """Email the NPS question to members who bought since they were last asked and agreed to marketing email.

    At most once per the program's NPS interval (90 days unless set on the Rules page). Each email links every
    score 0-10 to the member's card page with that score chosen; the answer is saved when they press Send
    there. Every email carries an unsubscribe link and List-Unsubscribe headers.
    """
    session = get_session()
    begin_reading(session)
    try:
        programs = [get_program(session, slug)] if slug else list(session.scalars(select(Program).order_by(Program.id)))
    except DomainError as error:
        raise click.ClickException(error.detail) from None
    now = utcnow()
    plans = []
    for program in programs:
        try:
            plans.append((program, nps_email_recipients(session, program, now)))
        except DomainError as error:  # rules stored by hand that cannot be read: that program is skipped
            click.echo(f"Skipped {program.slug}: {error.detail}", err=True)
    if dry_run:
        for program, recipients in plans:
            for recipient in recipients:
                click.echo(f"{recipient.serial}  {display_name(recipient.name):<20}  {_masked(recipient.email)}  "
                           f"({program.slug}) would be asked")
        total = sum(len(recipients) for _, recipients in plans)
        click.echo(f"Dry run: {total} member{'' if total == 1 else 's'} would be asked; nothing was sent.")
        return
    if any(recipients for _, recipients in plans):
        if not current_app.config["MAIL_SERVER"]:
            click.echo("MAIL_SERVER is not set: the emails are written to the log, not sent.", err=True)
        if not current_app.config["PUBLIC_BASE_URL"]:
            click.echo(f"PUBLIC_BASE_URL is not set: links in the emails point at {public_base_url()}.", err=True)
    start_writing(session)
    sent = 0
    for program, recipients in plans:
        for number, planned in enumerate(recipients, start=1):
            claimed = claim_nps_email(session, program, planned.card_id, utcnow())
            if claimed is None:  # answered, unsubscribed or emailed by another run since the plan was made
                session.rollback()
                continue
            # The claim is committed before sending: a crash or a second run never sends this email twice.
            session.commit()
            claim, recipient = claimed
            try:
                _send(program, recipient)
            except (OSError, smtplib.SMTPException) as error:
                finish_nps_email(session, claim, error=str(error) or type(error).__name__, now=utcnow())
                session.commit()
                raise click.ClickException(
                    f"Sending the NPS email for card {recipient.serial} failed ({error}). {sent} emails were sent; "
                    "run the command again to send the rest."
                ) from None
            finish_nps_email(session, claim, error=None, now=utcnow())
            session.commit()
            sent += 1
            click.echo(f"[{program.slug} {number}/{len(recipients)}] sent to card {recipient.serial}")
    click.echo(f"Sent {sent} NPS email{'' if sent == 1 else 's'}.")


def _send(program: Program, recipient: NpsEmailDue) -> None:
    links = [external_url("customer.card_page", token=recipient.page_token, nps=score) + "#nps"
             for score in range(11)]
    subject, body = nps_email_text(program_name=program.name, customer_name=recipient.name.split()[0],
                                   score_links=links, unsubscribe_url=unsubscribe_url(recipient.customer_id))
    send_mail(recipient.email, subject, body, headers=unsubscribe_headers(recipient.customer_id))


def _masked(email: str) -> str:
    """Enough of an address for an operator to tell members apart in a listing, not to copy it."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}…@{domain}" if domain else "…"


GROUPS = (nps_cli,)

__all__ = ["GROUPS", "nps_cli"]
