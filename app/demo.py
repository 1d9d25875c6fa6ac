"""`flask --app wsgi demo`: a ready-to-try program with a manager, a cashier, an API key and one member."""

from __future__ import annotations

import secrets

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from app.db import get_session
from app.domain.cards import card_code
from app.domain.enrollment import enroll_customer, parse_enrollment
from app.domain.programs import create_api_key, create_location, create_program, create_staff
from app.keys import get_keys
from app.models import Program

DEMO_SLUG = "demo-coffee"
DEMO_RULES = {
    "earn": {"points_per_unit": "10", "rounding": "down"},
    "tiers": [
        {"name": "Silver", "min_spend": 10_000, "discount_bp": 500},
        {"name": "Gold", "min_spend": 50_000, "discount_bp": 1000},
    ],
    "welcome_bonus": 50,
    "redeem": {"point_value": 1, "max_percent": 50},
}


@click.command("demo")
@with_appcontext
def demo_command() -> None:
    """Seed the demo program once and print its credentials; later runs change nothing."""
    session = get_session()
    if session.scalar(select(Program.id).where(Program.slug == DEMO_SLUG)) is not None:
        click.echo("The demo program is already set up; its credentials were printed when it was made.")
        return
    keys = get_keys()
    program = create_program(session, keys, name="Demo Coffee", currency="EUR", slug=DEMO_SLUG, rules=DEMO_RULES)
    location = create_location(session, program, "High Street")
    manager_password = secrets.token_urlsafe(12)
    cashier_password = secrets.token_urlsafe(12)
    create_staff(session, program, email="manager@demo.example", role="manager", password=manager_password)
    create_staff(session, program, email="cashier@demo.example", role="cashier", password=cashier_password)
    api_key, api_secret = create_api_key(session, location, "demo till")
    member = enroll_customer(
        session, program,
        parse_enrollment({"name": "Amina Karimi", "email": "amina@demo.example", "marketing_consent": False}),
        channel="till", location_id=location.id,
    )
    code = card_code(session, member, keys)
    session.commit()
    base = current_app.config["PUBLIC_BASE_URL"] or "http://127.0.0.1:5000"
    click.echo(
        "\n".join([
            "",
            "Demo program \"Demo Coffee\" (EUR) is ready. These credentials are shown only this once:",
            f"  manager   manager@demo.example / {manager_password}",
            f"  cashier   cashier@demo.example / {cashier_password}",
            f"  API key   {api_secret}",
            "",
            f"  Enrollment form   {base}/join/{DEMO_SLUG}",
            f"  A member's card   {base}/c/{member.page_token}",
            f"  Their card code   {code}",
            f"  Public keys       {base}/.well-known/jwks.json",
            "",
            "Try the API:",
            f"  curl -s -H 'Authorization: Bearer {api_secret}' -H 'Content-Type: application/json' \\",
            f"       -d '{{\"code\": \"{code}\"}}' {base}/api/v1/scans",
            "",
        ])
    )
