"""`flask --app wsgi synth`: fill the database with a synthetic program's members and purchases, fast.

For trying the analytics at the size of a real chain (docs/performance.md, "Analytics at scale"); what the data
looks like is described in app/synthetic.py. The whole load is one transaction: a run that fails or is
interrupted leaves nothing behind. Afterwards the tables it filled are analysed (on PostgreSQL vacuumed too), so
the first dashboard after it is planned on fresh statistics, and SQLite's write-ahead log, which held the whole
load until the commit, is emptied.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from flask.cli import with_appcontext
from sqlalchemy.orm import Session

from app.bulk_load import analyze, sqlite_load_settings, truncate_wal
from app.db import get_db, get_session
from app.domain.errors import DomainError
from app.keys import get_keys
from app.models import utcnow
from app.synthetic import (
    LOADED_TABLES,
    PhaseTiming,
    Progress,
    SynthOptions,
    SynthReport,
    check_options,
    synthesize,
)


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A click progress bar on stderr: done / total, rate and time left."""
    with click.progressbar(length=max(total, 1), label=f"{label:<10}", file=sys.stderr, show_eta=True,
                           show_pos=True, show_percent=True) as bar:
        yield bar.update


@click.command("synth")
@click.option("--members", type=int, help="New members to make (1 or more), e.g. 1000000.")
@click.option("--purchases", type=int, default=0, show_default=True,
              help="Purchases of those members, spread over the window, e.g. 10000000.")
@click.option("--program", "program_slug",
              help="Fill this program (a points program) instead of making a new one, synthetic-<n>.")
@click.option("--days", type=int, default=730, show_default=True, help="Days the data spreads over, ending now.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of the random choices: the same seed makes the same shop (serials and tokens excepted).")
@with_appcontext
def synth_command(members: int | None, purchases: int, program_slug: str | None, days: int, seed: int) -> None:
    """Make synthetic members and purchases (with their ledger, coupons, referrals and roll-ups), fast.

    A new program comes with tiers, locations, a manager, a cashier and an API key, whose credentials are
    printed once. Progress bars go to stderr; a summary of rows and rates ends the run.
    """
    options = SynthOptions(members=members or 0, purchases=purchases, days=days, seed=seed,
                           program_slug=program_slug)
    try:
        check_options(options)
        report = load_synthetic(options, progress_bar)
    except DomainError as error:
        raise click.ClickException(error.detail) from None
    click.echo(summary(report))


def load_synthetic(options: SynthOptions, progress: Progress) -> SynthReport:
    """The whole load in the app's database, as `synth` runs it: one transaction with SQLite's load-time
    settings, then ANALYZE (VACUUM ANALYZE on PostgreSQL). Needs an app context."""
    database = get_db()
    if database.pinned_session is not None:
        # Tests: everything happens in the pinned session's outer transaction, which they roll back.
        session = get_session()
        try:
            report = synthesize(session, get_keys(), options, now=utcnow(), progress=progress)
        except DomainError:
            session.rollback()
            raise
        session.commit()
        started = time.perf_counter()
        analyze(session.connection(), LOADED_TABLES, vacuum=False)
        report.phases.append(PhaseTiming("analyze", len(LOADED_TABLES), time.perf_counter() - started))
        return report
    with database.engine.connect() as connection, sqlite_load_settings(connection):
        session = Session(bind=connection, expire_on_commit=False)
        try:
            report = synthesize(session, get_keys(), options, now=utcnow(), progress=progress)
            started = time.perf_counter()
            session.commit()  # on SQLite this also copies the load from the WAL into the database
            report.phases.append(PhaseTiming("commit", report.members + report.purchases,
                                             time.perf_counter() - started))
        finally:
            session.close()
    started = time.perf_counter()
    with progress("analyze", 1) as advance, database.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            analyze(connection.execution_options(isolation_level="AUTOCOMMIT"), LOADED_TABLES, vacuum=True)
        else:
            analyze(connection, LOADED_TABLES, vacuum=False)
            connection.commit()
            truncate_wal(connection)
        advance(1)
    report.phases.append(PhaseTiming("analyze", len(LOADED_TABLES), time.perf_counter() - started))
    return report


def summary(report: SynthReport) -> str:
    """What the run made, the credentials of a new program, and each phase's rows, seconds and rows/s."""
    lines = [
        "",
        f"Program {report.slug}: {report.members:,} members and {report.purchases:,} purchases from "
        f"{report.first_day} to {report.last_day} ({report.voided:,} voided, {report.redeeming:,} redeeming "
        f"points); {report.ledger_entries:,} ledger entries, {report.coupon_uses:,} coupon uses, "
        f"{report.referrals:,} referrals.",
    ]
    if report.credentials is not None:
        c = report.credentials
        lines += [
            "These credentials are shown only this once:",
            f"  manager   {c.manager_email} / {c.manager_password}",
            f"  cashier   {c.cashier_email} / {c.cashier_password}",
            f"  API key   {c.api_key}",
        ]
    lines += ["", f"{'phase':<10} {'rows':>12} {'seconds':>9} {'rows/s':>10}"]
    for phase in report.phases:
        lines.append(f"{phase.name:<10} {phase.rows:>12,} {phase.seconds:>9.1f} {phase.rate:>10,.0f}")
    rows = report.members + report.purchases
    total = report.seconds
    lines.append(f"{'total':<10} {rows:>12,} {total:>9.1f} {rows / total if total else 0:>10,.0f}")
    return "\n".join(lines)


GROUPS = (synth_command,)

__all__ = ["GROUPS", "load_synthetic", "summary", "synth_command"]
