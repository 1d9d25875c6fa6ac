"""Operator commands for the analytics roll-ups: `flask --app wsgi stats refresh|rebuild|summary`.

The dashboard and the stats API fold new purchases in themselves before they read; `stats refresh` does it ahead
of time (after a bulk import, or from cron so the first dashboard of the morning has nothing to fold), and
`stats rebuild` recomputes a program's roll-ups from its rows, for a repair.
"""

from __future__ import annotations

import json
import time

import click
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select

from app.analytics import fresh_rollups, rebuild
from app.cli import domain_command
from app.db import get_session
from app.domain.analytics import parse_range
from app.domain.analytics_report import build_report, summary_json
from app.domain.programs import get_program
from app.models import Program, utcnow

stats_cli = AppGroup("stats", help="The analytics behind the manager's dashboard and the stats API.")

_PROGRAM_OPTION = click.option("--program", "program_slug", help="The program's slug (default: every program).")


@stats_cli.command("refresh")
@_PROGRAM_OPTION
@with_appcontext
@domain_command
def stats_refresh(program_slug: str | None) -> None:
    """Fold new purchases, ledger entries and members into the roll-ups (safe to run any time)."""
    session = get_session()
    programs = ([get_program(session, program_slug)] if program_slug
                else list(session.scalars(select(Program).order_by(Program.id))))
    session.rollback()  # the refresh runs in transactions of its own
    for program in programs:
        started = time.perf_counter()
        folded = fresh_rollups(program.id)
        took = time.perf_counter() - started
        click.echo(f"{program.slug}: {'folded in' if folded else 'nothing new'} ({took:.2f} s)")


@stats_cli.command("rebuild")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@with_appcontext
@domain_command
def stats_rebuild(program_slug: str) -> None:
    """Recompute one program's roll-ups from all of its rows (a repair; tills may go on: what they write meanwhile
    is folded in by the next refresh)."""
    session = get_session()
    program = get_program(session, program_slug)
    session.rollback()
    started = time.perf_counter()
    rebuild(program.id)
    click.echo(f"{program.slug}: roll-ups rebuilt in {time.perf_counter() - started:.1f} s")


@stats_cli.command("summary")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@click.option("--from", "start", metavar="YYYY-MM-DD", help="First day (default: 90 days before --to).")
@click.option("--to", "end", metavar="YYYY-MM-DD", help="Last day (default: today, UTC).")
@with_appcontext
@domain_command
def stats_summary(program_slug: str, start: str | None, end: str | None) -> None:
    """Print the program's key figures over a range of days as JSON (the same as GET /api/v1/stats/summary)."""
    session = get_session()
    program = get_program(session, program_slug)
    now = utcnow()
    rng = parse_range(start, end, today=now.date())
    session.rollback()
    fresh_rollups(program.id)
    click.echo(json.dumps(summary_json(build_report(session, program, rng, now)), indent=2))


GROUPS = (stats_cli,)
