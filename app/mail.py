"""Outgoing email over SMTP. Without MAIL_SERVER set (development), messages are written to the log instead."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

from flask import current_app


def send_mail(to: str, subject: str, body: str) -> None:
    config = current_app.config
    message = EmailMessage()
    message["From"] = config["MAIL_FROM"]
    message["To"] = to
    message["Subject"] = subject
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
