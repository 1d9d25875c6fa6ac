"""Operator commands that write a program's data as CSV: `flask --app wsgi export members|purchases|ledger`.

The same CSV, byte for byte, as the manager's downloads (app/domain/exports.py), read a page at a time in one
read-only transaction. With `--out FILE` a progress bar (rows done of the total, and the time left) follows on
stderr, and the file appears only once it is complete, readable by its owner alone: it is written under a
temporary name beside it and renamed at the end, so a failed run never leaves a file that looks whole.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from flask.cli import AppGroup, with_appcontext

from app.cli import options_command
from app.db import begin_reading, get_session
from app.domain.exports import count_rows, export_csv, parse_date_range
from app.domain.programs import get_program

F = TypeVar("F", bound=Callable[..., Any])

export_cli = AppGroup("export", help="A program's members, purchases or points ledger as CSV.")
GROUPS = (export_cli,)

_OPTION_OF = {"from": "--from", "to": "--to"}
_ROWS_OF = {"members": "members", "purchases": "purchases", "ledger": "ledger entries"}


# A refusal (an unknown program, a bad day, a file that cannot be written) becomes a one-line error and exit
# status 1, with no traceback.
export_command = options_command(_OPTION_OF, "Nothing was exported.")


_PROGRAM_OPTION = click.option("--program", "program_slug", required=True, help="The program's slug.")
_OUT_OPTION = click.option("-o", "--out", "out", default="-", show_default=True,
                           help="The CSV file to write (with a progress bar on stderr); - for stdout.")
_FROM_OPTION = click.option("--from", "first", metavar="YYYY-MM-DD",
                            help="First day (UTC, inclusive) of the rows by their created_at; default: the first.")
_TO_OPTION = click.option("--to", "last", metavar="YYYY-MM-DD",
                          help="Last day (UTC, inclusive); default: the last.")


@export_cli.command("members")
@_PROGRAM_OPTION
@_OUT_OPTION
@with_appcontext
@export_command
def export_members(program_slug: str, out: str) -> None:
    """Write every member as CSV: serial, contact, consent, channel, location, balance, spend, tier, activity."""
    _export("members", program_slug, out, None, None)


@export_cli.command("purchases")
@_PROGRAM_OPTION
@_OUT_OPTION
@_FROM_OPTION
@_TO_OPTION
@with_appcontext
@export_command
def export_purchases(program_slug: str, out: str, first: str | None, last: str | None) -> None:
    """Write the purchases as CSV: amounts, points, status, who rang them up and the coupon codes used."""
    _export("purchases", program_slug, out, first, last)


@export_cli.command("ledger")
@_PROGRAM_OPTION
@_OUT_OPTION
@_FROM_OPTION
@_TO_OPTION
@with_appcontext
@export_command
def export_ledger(program_slug: str, out: str, first: str | None, last: str | None) -> None:
    """Write the points ledger as CSV: every change of a card's points, its kind, purchase, note and author."""
    _export("ledger", program_slug, out, first, last)


def _export(kind: str, program_slug: str, out: str, first: str | None, last: str | None) -> None:
    session = get_session()
    begin_reading(session)  # one read-only transaction: on SQLite one snapshot and no write lock
    dates = parse_date_range(first, last)  # bad days are refused before a file is touched
    program = get_program(session, program_slug)
    if out == "-":
        stdout = sys.stdout.buffer
        for piece in export_csv(session, program, kind, dates):
            stdout.write(piece.encode("utf-8"))
        stdout.flush()
        return
    written = [0]
    with _output_file(out) as file, click.progressbar(
        length=count_rows(session, program, kind, dates), label=f"Exporting {kind}", show_pos=True,
        show_percent=True, show_eta=True, file=sys.stderr,
    ) as bar:

        def progress(rows: int) -> None:
            written[0] += rows
            bar.update(rows)

        for piece in export_csv(session, program, kind, dates, progress=progress):
            file.write(piece.encode("utf-8"))
    click.echo(f"Wrote {written[0]:,} {_ROWS_OF[kind]} of {program.slug} to {out}.", err=True)


@contextmanager
def _output_file(out: str) -> Iterator[IO[bytes]]:
    """A temporary file beside `out` (mode 0600), renamed to `out` once everything was written."""
    target = Path(out)
    if target.is_dir():
        raise click.ClickException(f"{out} is a folder; give a file name, such as {target / 'export.csv'}.")
    try:
        file = tempfile.NamedTemporaryFile(  # closed below, then renamed or removed
            "wb", dir=target.parent, prefix=f".{target.name}.", suffix=".partial", delete=False)
    except OSError as error:
        raise click.ClickException(f"Cannot write {out}: {error.strerror or error}.") from None
    try:
        with file:
            yield file
        os.replace(file.name, target)
    except OSError as error:
        Path(file.name).unlink(missing_ok=True)
        raise click.ClickException(f"Cannot write {out}: {error.strerror or error}.") from None
    except BaseException:
        Path(file.name).unlink(missing_ok=True)
        raise


__all__ = ["GROUPS", "export_cli"]
