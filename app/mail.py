"""Outgoing email over SMTP. Without MAIL_SERVER set (development), messages are written to the log instead."""

from __future__ import annotations

import smtplib
from collections.abc import Mapping
from datetime import date, timedelta
from email.message import EmailMessage

from flask import current_app


def send_mail(to: str, subject: str, body: str, headers: Mapping[str, str] | None = None) -> None:
    """Send a plain-text email; `headers` adds more (List-Unsubscribe, from app/unsubscribe_links.py)."""
    config = current_app.config
    message = EmailMessage()
    message["From"] = config["MAIL_FROM"]
    message["To"] = to
    message["Subject"] = subject
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    if not config["MAIL_SERVER"]:
        current_app.logger.warning("MAIL_SERVER is not set; this email was not sent:\n%s", message)
        return
    with smtplib.SMTP(config["MAIL_SERVER"], config["MAIL_PORT"], timeout=10) as smtp:
        if config["MAIL_STARTTLS"]:
            smtp.starttls()
        if config["MAIL_USERNAME"]:
            smtp.login(config["MAIL_USERNAME"], config["MAIL_PASSWORD"])
        smtp.send_message(message)


def send_card_link(to: str, name: str, program_name: str, link: str) -> None:
    send_mail(
        to,
        f"Your {program_name} card",
        f"Hello {name},\n\nHere is the link to your {program_name} loyalty card:\n\n{link}\n\n"
        "Keep it to yourself: anyone with this link can show your card.\n",
    )


def send_expiry_warning(
    to: str, name: str, program_name: str, points: int, expires_on: date, months: int, link: str
) -> None:
    """Tell a member their points are about to expire for want of a purchase.

    A service message about their own balance, not marketing: it goes to every member with an email address,
    whether or not they agreed to offers and news, and says so.
    """
    last_day = expires_on - timedelta(days=1)
    send_mail(
        to,
        f"Your {points:,} {program_name} points expire on {_day(expires_on)}",
        f"Hello {name},\n\n"
        f"Your {points:,} points with {program_name} expire on {_day(expires_on)}: points are kept for "
        f"{months} months after your last purchase.\n\n"
        f"Make a purchase with your card by {_day(last_day)} and you keep them all, for another {months} "
        f"months from that purchase.\n\n"
        f"Your card:\n\n{link}\n\n"
        f"You get this message because you have points on a {program_name} card; it is about your balance, "
        "not an advertisement, and you get it once before your points expire.\n",
    )


def _day(day: date) -> str:
    return f"{day.day} {day:%B %Y}"
