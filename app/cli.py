"""Operator commands: `flask --app wsgi <group> <command>`, each with --help.

Each command opens the app's session, calls one domain function, commits, and prints what a script needs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from app.db import get_session
from app.domain.cards import card_code, check_ledger, find_card_by_serial, reissue_card, revoke_card
from app.domain.errors import DomainError, ValidationError
from app.domain.money import supported_currencies
from app.domain.programs import (
    STAFF_ROLES,
    create_api_key,
    create_location,
    create_program,
    create_staff,
    get_location,
    get_program,
    revoke_api_key,
)
from app.domain.rotating_codes import set_rotating_codes
from app.domain.signing import remove_signing_key, rotate_signing_key
from app.google_wallet import write_dev_key
from app.keys import get_keys
from app.wallet import DEV_FILES, DEV_PASS_TYPE_ID, DEV_TEAM_ID, write_dev_certificates

F = TypeVar("F", bound=Callable[..., Any])


def domain_command(func: F) -> F:
    """Turn a domain refusal into a one-line error and exit status 1 instead of a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DomainError as error:
            get_session().rollback()
            raise click.ClickException(error.detail) from None

    return wrapper  # type: ignore[return-value]


def options_command(option_of: Mapping[str, str], nothing_done: str) -> Callable[[F], F]:
    """Like `domain_command`, for commands whose options fill a form: a refusal that names several fields becomes
    `nothing_done` and one line per bad option (`option_of` names a field's option; else --the-field-name)."""

    def decorate(func: F) -> F:
        @wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except DomainError as error:
                get_session().rollback()
                errors: dict[str, str] = error.extra.get("errors", {}) if isinstance(error, ValidationError) else {}
                if not errors:
                    raise click.ClickException(error.detail) from None
                lines = [f"{option_of.get(field, '--' + field.replace('_', '-'))}: {message}"
                         for field, message in errors.items()]
                raise click.ClickException("\n  ".join([nothing_done, *lines])) from None

        return wrapper  # type: ignore[return-value]

    return decorate


db_cli = AppGroup("db", help="Database schema.")
programs_cli = AppGroup("programs", help="Loyalty programs.")
locations_cli = AppGroup("locations", help="Stores and till groups.")
staff_cli = AppGroup("staff", help="Cashiers and managers.")
api_keys_cli = AppGroup("api-keys", help="API keys for tills and point-of-sale software.")
keys_cli = AppGroup("keys", help="Card-signing keys.")
cards_cli = AppGroup("cards", help="Members' cards.")
ledger_cli = AppGroup("ledger", help="The points ledger.")
passes_cli = AppGroup("passes", help="Apple Wallet passes: certificates and update pushes.")


@db_cli.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Migrate to this revision.")
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Apply the schema migrations."""
    from app.migrate import upgrade

    upgrade(current_app.config["DATABASE_URL"], revision)
    click.echo(f"Database at {revision}.", err=True)


@programs_cli.command("create")
@click.option("--name", required=True, help="The brand customers see, e.g. \"Corner Coffee\".")
@click.option("--currency", required=True, type=click.Choice(supported_currencies(), case_sensitive=False),
              help="ISO 4217 currency of all amounts.")
@click.option("--slug", help="URL name; made from the name when left out. Never changes.")
@with_appcontext
@domain_command
def programs_create(name: str, currency: str, slug: str | None) -> None:
    """Create a program with its first signing key; prints its slug."""
    session = get_session()
    program = create_program(session, get_keys(), name=name, currency=currency, slug=slug)
    session.commit()
    click.echo(program.slug)


@programs_cli.command("rotating-codes")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@click.option("--on/--off", "on", default=None,
              help="Live codes that change every period and scan once (--on), or the fixed signed code (--off).")
@click.option("--period", type=int, help="Seconds each live code lasts, 10 to 300 (default: unchanged, first 30).")
@with_appcontext
@domain_command
def programs_rotating_codes(program_slug: str, on: bool | None, period: int | None) -> None:
    """Turn rotating (live) QR codes on or off: with them on, the card page and Google Wallet show a code that
    changes every period, a till takes each once, and a screenshot or printout is refused as expired."""
    if on is None:
        raise click.UsageError("Say --on or --off.")
    session = get_session()
    program = set_rotating_codes(session, get_program(session, program_slug), on=on, period=period)
    session.commit()
    if program.rotating_codes:
        click.echo(f"{program.slug}: live codes on, changing every {program.code_period_seconds} seconds.")
    else:
        click.echo(f"{program.slug}: live codes off; the fixed signed code scans again.")


@locations_cli.command("create")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@click.option("--name", required=True, help="The location's name, e.g. \"High Street\".")
@with_appcontext
@domain_command
def locations_create(program_slug: str, name: str) -> None:
    """Create a location; prints its id."""
    session = get_session()
    location = create_location(session, get_program(session, program_slug), name)
    session.commit()
    click.echo(location.id)


@staff_cli.command("create")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@click.option("--email", required=True, help="The sign-in email.")
@click.option("--role", required=True, type=click.Choice(STAFF_ROLES), help="What they may do.")
@with_appcontext
@domain_command
def staff_create(program_slug: str, email: str, role: str) -> None:
    """Create a cashier or manager; the password is read from standard input (at least 10 characters)."""
    password = sys.stdin.readline().rstrip("\r\n")
    session = get_session()
    staff = create_staff(session, get_program(session, program_slug), email=email, role=role, password=password)
    session.commit()
    click.echo(staff.id)


@api_keys_cli.command("create")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@click.option("--location", required=True, help="The location's name or id.")
@click.option("--label", default="", help="A note for who holds the key, e.g. \"till 2\".")
@with_appcontext
@domain_command
def api_keys_create(program_slug: str, location: str, label: str) -> None:
    """Create an API key; prints the key alone on stdout, once. Only its hash is stored."""
    session = get_session()
    program = get_program(session, program_slug)
    api_key, secret = create_api_key(session, get_location(session, program, location), label)
    session.commit()
    click.echo(f"Key id {api_key.key_id}; store the key now, it is not shown again.", err=True)
    click.echo(secret)


@api_keys_cli.command("revoke")
@click.argument("key_id")
@with_appcontext
@domain_command
def api_keys_revoke(key_id: str) -> None:
    """Revoke an API key by its id (the part after lk_)."""
    session = get_session()
    revoke_api_key(session, key_id)
    session.commit()
    click.echo(f"Revoked API key {key_id}.")


@keys_cli.command("rotate")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@with_appcontext
@domain_command
def keys_rotate(program_slug: str) -> None:
    """Make a new active signing key; older keys keep verifying until removed. Prints the new key id."""
    session = get_session()
    key = rotate_signing_key(session, get_program(session, program_slug), get_keys())
    session.commit()
    click.echo(key.kid)


@keys_cli.command("remove")
@click.argument("kid")
@with_appcontext
@domain_command
def keys_remove(kid: str) -> None:
    """Remove a retired key: cards whose codes it signed must show their card page for a fresh code."""
    session = get_session()
    remove_signing_key(session, get_keys(), kid)
    session.commit()
    click.echo(f"Removed key {kid}.")


@cards_cli.command("revoke")
@click.argument("serial")
@with_appcontext
@domain_command
def cards_revoke(serial: str) -> None:
    """Revoke a lost card: its codes are refused with the reason "revoked"."""
    session = get_session()
    card = revoke_card(session, find_card_by_serial(session, serial))
    session.commit()
    click.echo(f"Revoked card {card.serial}. `cards reissue {card.serial}` gives the member a new code.")


@cards_cli.command("reissue")
@click.argument("serial")
@with_appcontext
@domain_command
def cards_reissue(serial: str) -> None:
    """Give a card a new code on the same account and balance; prints the new code and card link."""
    session = get_session()
    card = reissue_card(session, find_card_by_serial(session, serial))
    code = card_code(session, card, get_keys())
    session.commit()
    click.echo(code)
    click.echo(f"New card page: /c/{card.page_token} (the old link no longer works)", err=True)


@ledger_cli.command("check")
@with_appcontext
def ledger_check() -> None:
    """Recompute every balance from the ledger; exits 1 on any mismatch."""
    checked, mismatches = check_ledger(get_session())
    for m in mismatches:
        click.echo(f"MISMATCH card {m.serial}: balance {m.balance}, ledger sum {m.ledger_sum}")
    click.echo(f"Checked {checked} cards: {len(mismatches)} mismatches.")
    if mismatches:
        sys.exit(1)


@passes_cli.command("dev-certs")
@click.option("--dir", "directory", type=click.Path(file_okay=False),
              help="Where to write them (default: APPLE_DEV_CERTS_DIR, instance/apple-dev-certs).")
@click.option("--pass-type-id", default=DEV_PASS_TYPE_ID, show_default=True, help="The certificate's Pass Type ID.")
@click.option("--team-id", default=DEV_TEAM_ID, show_default=True, help="The certificate's team identifier.")
@click.option("--force", is_flag=True, help="Replace existing ones (passes signed with them stop verifying).")
@with_appcontext
def passes_dev_certs(directory: str | None, pass_type_id: str, team_id: str, force: bool) -> None:
    """Make a throwaway CA, a stand-in for Apple's WWDR intermediate and a pass signing certificate.

    Passes signed with them verify against the printed CA (openssl smime -verify ... -CAfile ca.pem), so the
    whole pass pipeline runs and is tested offline. No iPhone opens them: for that, see the README's
    "Apple Wallet" section on real Pass Type ID certificates.
    """
    target = Path(directory or current_app.config["APPLE_DEV_CERTS_DIR"])
    if (target / DEV_FILES["key"]).exists() and not force:
        raise click.ClickException(f"Development pass certificates already exist in {target}; --force replaces them.")
    ca_path = write_dev_certificates(target, pass_type_id=pass_type_id, team_id=team_id)
    current_app.extensions.pop("apple_wallet", None)
    click.echo(f"Pass certificates for {pass_type_id} (team {team_id}) written to {target}.", err=True)
    click.echo(ca_path)


@passes_cli.command("push")
@click.option("--sweep/--no-sweep", default=True, show_default=True,
              help="Look for every registered pass whose card changed, not only what this process noted.")
@with_appcontext
def passes_push(sweep: bool) -> None:
    """Republish changed passes and send the APNs pushes that are due, once (for cron when
    PASS_UPDATE_WORKER=0)."""
    worker = current_app.extensions["pass_updates"]
    report = worker.run_once(sweep=sweep)
    click.echo(f"{report.republished} passes republished; pushes: {report.sent} sent, {report.purged} purged "
               f"(device gone), {report.retrying} to retry, {report.failed} failed.")
    google = report.google
    click.echo(f"Google Wallet: {google.patched} objects patched, {google.absent} not saved by their member, "
               f"{google.retrying} to retry, {google.failed} failed; {google.classes_patched} classes patched.")


@passes_cli.command("dev-google-key")
@click.option("--file", "path", type=click.Path(dir_okay=False),
              help="Where to write it (default: GOOGLE_DEV_KEY_FILE, instance/google-dev-service-account.json).")
@click.option("--force", is_flag=True, help="Replace an existing one (save links signed with it stop verifying).")
@with_appcontext
def passes_dev_google_key(path: str | None, force: bool) -> None:
    """Make a throwaway Google service-account key, so "Add to Google Wallet" links are made offline.

    The links are signed JWTs like real ones, but Google does not know the key, so it will not save the
    cards: for that, see the README's "Google Wallet" section on issuer accounts and service accounts.
    """
    target = Path(path or current_app.config["GOOGLE_DEV_KEY_FILE"])
    if target.exists() and not force:
        raise click.ClickException(f"A development Google key already exists at {target}; --force replaces it.")
    write_dev_key(target)
    current_app.extensions.pop("google_wallet", None)
    click.echo(f"Development service-account key written to {target}.", err=True)
    click.echo(target)


def init_app(app: Flask) -> None:
    from app.cli_analytics import GROUPS as ANALYTICS_GROUPS
    from app.cli_coupons import GROUPS as COUPON_GROUPS
    from app.cli_exports import GROUPS as EXPORT_GROUPS
    from app.cli_nps import GROUPS as NPS_GROUPS
    from app.cli_points import GROUPS as POINTS_GROUPS
    from app.cli_reminders import GROUPS as REMINDER_GROUPS
    from app.cli_synth import GROUPS as SYNTH_GROUPS
    from app.demo import demo_command

    for group in (db_cli, programs_cli, locations_cli, staff_cli, api_keys_cli, keys_cli, cards_cli, ledger_cli,
                  passes_cli, *COUPON_GROUPS, *POINTS_GROUPS, *EXPORT_GROUPS, *REMINDER_GROUPS,
                  *NPS_GROUPS, *ANALYTICS_GROUPS, *SYNTH_GROUPS):
        app.cli.add_command(group)
    app.cli.add_command(demo_command)
