"""Operator commands for what a manager also sets up on the web: `coupons`, `offers` and `rewards`.

`flask --app wsgi coupons batch --program P --count 5000 --percent 10 --label "Spring flyer"` makes a batch of
single-use codes (a progress bar on stderr, the batch id on stdout) and `coupons export` streams it as CSV.
Options are read by the same domain functions as the manager's forms, so a bad value gets the same message,
named by its option, and nothing is saved.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any, TypeVar

import click
from flask.cli import AppGroup, with_appcontext

from app.cli import options_command
from app.db import get_session
from app.domain.coupons import (
    MAX_BATCH,
    batch_csv,
    create_batch,
    create_coupon,
    create_offer,
    create_reward,
    end_offer,
    find_coupon,
    get_batch,
    list_coupons,
    list_offers,
    list_rewards,
    read_batch_form,
    set_batch_active,
    set_coupon_active,
)
from app.domain.money import format_amount
from app.domain.programs import get_program
from app.models import Program, utcnow

F = TypeVar("F", bound=Callable[..., Any])

coupons_cli = AppGroup("coupons", help="Coupon and promo codes: reusable codes and batches of single-use codes.")
offers_cli = AppGroup("offers", help="Member-only offers, shown on the card and applied at the till.")
rewards_cli = AppGroup("rewards", help="The rewards catalogue, bought with points at the till.")
GROUPS = (coupons_cli, offers_cli, rewards_cli)

# The option that sets each form field, for the error messages.
OPTION_OF = {
    "discount_type": "--percent/--amount", "discount": "--percent/--amount", "min_basket": "--min-basket",
    "valid_from": "--valid-from", "valid_until": "--valid-until", "per_member_limit": "--per-member-limit",
    "starts": "--starts", "ends": "--ends", "points_cost": "--points",
}


# A domain refusal becomes a one-line error (one line per bad option) and exit status 1, nothing saved.
form_command = options_command(OPTION_OF, "Nothing was saved.")


def _program(slug: str) -> Program:
    return get_program(get_session(), slug)


def _discount_options(func: F) -> F:
    for option in reversed([
        click.option("--percent", help="Percent off, 0.01 to 100, e.g. 10 or 12.5."),
        click.option("--amount", help="Amount off in the program's currency, e.g. 5.00."),
        click.option("--min-basket", default="", help="The basket must be at least this (before discounts)."),
    ]):
        func = option(func)
    return func


def _window_options(first: str, last: str, what: str) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        func = click.option(f"--{last.replace('_', '-')}", last, default="",
                            help=f"Last day {what} (YYYY-MM-DD, UTC, inclusive).")(func)
        return click.option(f"--{first.replace('_', '-')}", first, default="",
                            help=f"First day {what} (YYYY-MM-DD, UTC, from 00:00).")(func)
    return decorate


def _discount_form(percent: str | None, amount: str | None, min_basket: str) -> dict[str, str]:
    if percent is not None and amount is not None:
        raise click.UsageError("Give --percent or --amount, not both.")
    kind = "percent" if percent is not None else "fixed" if amount is not None else ""
    return {"discount_type": kind, "discount": percent if percent is not None else amount or "",
            "min_basket": min_basket}


def _flags(**flags: bool) -> dict[str, str]:
    return {name: "on" for name, on in flags.items() if on}


@contextmanager
def _output(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdout
    else:
        # newline="": the csv module writes its own \r\n line ends.
        with open(path, "w", encoding="utf-8", newline="") as file:
            yield file


# --- coupons -------------------------------------------------------------------------------------------------------


@coupons_cli.command("create")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@click.option("--code", required=True, help="The code customers type, e.g. SPRING10 (letters and digits).")
@_discount_options
@_window_options("valid_from", "valid_until", "it can be used")
@click.option("--per-member-limit", default="", help="Uses per member (default: no limit).")
@click.option("--member-only", is_flag=True, help="Only for customers who show their card.")
@click.option("--stackable", is_flag=True, help="May be combined with other stackable codes.")
@click.option("--label", default="", help="The line's name on the receipt (default: the code and discount).")
@with_appcontext
@form_command
def coupons_create(program_slug: str, code: str, percent: str | None, amount: str | None, min_basket: str,
                   valid_from: str, valid_until: str, per_member_limit: str, member_only: bool, stackable: bool,
                   label: str) -> None:
    """Create a reusable promo code (SPRING10); prints the code as stored."""
    session = get_session()
    form = {"code": code, **_discount_form(percent, amount, min_basket), "valid_from": valid_from,
            "valid_until": valid_until, "per_member_limit": per_member_limit, "label": label,
            **_flags(member_only=member_only, stackable=stackable)}
    coupon = create_coupon(session, _program(program_slug), form, now=utcnow())
    session.commit()
    click.echo(coupon.code)


@coupons_cli.command("batch")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@click.option("--count", required=True, type=int, help=f"How many codes, 1 to {MAX_BATCH:,}.")
@_discount_options
@_window_options("valid_from", "valid_until", "they can be used")
@click.option("--member-only", is_flag=True, help="Only for customers who show their card.")
@click.option("--stackable", is_flag=True, help="May be combined with other stackable codes.")
@click.option("--label", required=True, help="The batch's name, e.g. \"Spring flyer\"; also the receipt line.")
@with_appcontext
@form_command
def coupons_batch(program_slug: str, count: int, percent: str | None, amount: str | None, min_basket: str,
                  valid_from: str, valid_until: str, member_only: bool, stackable: bool, label: str) -> None:
    """Make a batch of single-use codes, each good for one purchase; prints the batch id.

    The codes are 10 random characters (no I, L, O or U), unique in the program. A progress bar on stderr follows
    large batches; `coupons export` writes them out as CSV.
    """
    session = get_session()
    program = _program(program_slug)
    form = {"count": str(count), "label": label, **_discount_form(percent, amount, min_basket),
            "valid_from": valid_from, "valid_until": valid_until,
            **_flags(member_only=member_only, stackable=stackable)}
    now = utcnow()
    read_batch_form(form, program.currency, today=now.date())  # a bad option is refused before the bar is drawn
    with click.progressbar(length=count, label=f"Making {count:,} codes", show_pos=True, file=sys.stderr) as bar:
        batch = create_batch(session, program, form, now=now, progress=bar.update)
    session.commit()
    click.echo(f"Made {batch.count:,} codes in batch {batch.id} ({batch.label}). Export them with: "
               f"coupons export --program {program.slug} --batch {batch.id} -o codes.csv", err=True)
    click.echo(batch.id)


@coupons_cli.command("export")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@click.option("--batch", "batch_id", required=True, type=int, help="The batch id (`coupons list` shows them).")
@click.option("-o", "--output", default="-", show_default=True, help="The CSV file to write; - for stdout.")
@with_appcontext
@form_command
def coupons_export(program_slug: str, batch_id: int, output: str) -> None:
    """Write a batch's codes as CSV: code, terms, discount, minimum basket, days, flags, and whether each was used.

    Written as it is read, a thousand rows at a time, so a batch of 100,000 needs little memory.
    """
    session = get_session()
    program = _program(program_slug)
    batch = get_batch(session, program, batch_id)
    with _output(output) as out:
        for piece in batch_csv(session, batch, program.currency):
            out.write(piece)
    if output != "-":
        click.echo(f"Wrote {batch.count:,} codes of batch {batch.id} to {output}.", err=True)


@coupons_cli.command("list")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@with_appcontext
@form_command
def coupons_list(program_slug: str) -> None:
    """List the promo codes (code, uses, on/off, terms) and the batches (id, label, used of count, terms)."""
    program = _program(program_slug)
    listing = list_coupons(get_session(), program)
    for row in listing.codes:
        click.echo(f"code\t{row.coupon.code}\t{row.uses} uses\t{'active' if row.coupon.active else 'off'}\t"
                   f"{row.terms}")
    for batch in listing.batches:
        click.echo(f"batch {batch.batch.id}\t{batch.batch.label}\t{batch.used} of {batch.batch.count} used\t"
                   f"{batch.active} active\t{batch.terms}")
    if not (listing.codes or listing.batches):
        click.echo(f"{program.slug} has no coupons yet.", err=True)


def _set_active(program_slug: str, code: str | None, batch_id: int | None, *, active: bool) -> None:
    if (code is None) == (batch_id is None):
        raise click.UsageError("Give --code or --batch.")
    session = get_session()
    program = _program(program_slug)
    if code is not None:
        coupon = set_coupon_active(session, program, find_coupon(session, program, code).id, active=active)
        what = coupon.code
    else:
        assert batch_id is not None
        batch = set_batch_active(session, program, batch_id, active=active)
        what = f"Every code of batch {batch.id} ({batch.label})"
    session.commit()
    click.echo(f"{what}: {'active again' if active else 'deactivated; the till refuses it'}.")


@coupons_cli.command("deactivate")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@click.option("--code", help="A code to switch off.")
@click.option("--batch", "batch_id", type=int, help="A batch whose codes to switch off, all of them.")
@with_appcontext
@form_command
def coupons_deactivate(program_slug: str, code: str | None, batch_id: int | None) -> None:
    """Switch off a code, or every code of a batch (a leaked flyer): the till refuses them."""
    _set_active(program_slug, code, batch_id, active=False)


@coupons_cli.command("reactivate")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@click.option("--code", help="A code to switch on again.")
@click.option("--batch", "batch_id", type=int, help="A batch whose codes to switch on again, all of them.")
@with_appcontext
@form_command
def coupons_reactivate(program_slug: str, code: str | None, batch_id: int | None) -> None:
    """Switch a deactivated code, or every code of a batch, on again."""
    _set_active(program_slug, code, batch_id, active=True)


# --- offers --------------------------------------------------------------------------------------------------------


@offers_cli.command("create")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@click.option("--title", required=True, help="What members see, e.g. \"Members' week: 15% off\".")
@click.option("--detail", default="", help="A sentence more, shown under the title.")
@_discount_options
@_window_options("starts", "ends", "of the offer")
@with_appcontext
@form_command
def offers_create(program_slug: str, title: str, detail: str, percent: str | None, amount: str | None,
                  min_basket: str, starts: str, ends: str) -> None:
    """Create a member-only offer (from today when --starts is left out, until --ends); prints its id."""
    session = get_session()
    form = {"title": title, "detail": detail, **_discount_form(percent, amount, min_basket), "starts": starts,
            "ends": ends}
    offer = create_offer(session, _program(program_slug), form, now=utcnow())
    session.commit()
    click.echo(offer.id)


@offers_cli.command("list")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@with_appcontext
@form_command
def offers_list(program_slug: str) -> None:
    """List the offers: id, running / upcoming / ended, title, terms."""
    program = _program(program_slug)
    listing = list_offers(get_session(), program, now=utcnow())
    for row in (*listing.running, *listing.upcoming, *listing.ended):
        click.echo(f"{row.offer.id}\t{row.status}\t{row.offer.title}\t{row.terms}")
    if not listing:
        click.echo(f"{program.slug} has no offers yet.", err=True)


@offers_cli.command("end")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@click.argument("offer_id", type=int)
@with_appcontext
@form_command
def offers_end(program_slug: str, offer_id: int) -> None:
    """End an offer now: it leaves the cards and the till at once (an upcoming one never starts)."""
    session = get_session()
    offer, ended = end_offer(session, _program(program_slug), offer_id, now=utcnow())
    session.commit()
    click.echo(f"Offer {offer.id} ({offer.title}) {'has ended' if ended else 'had already ended'}.")


# --- rewards -------------------------------------------------------------------------------------------------------


@rewards_cli.command("create")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@click.option("--name", required=True, help="What the member gets, e.g. \"A free coffee\".")
@click.option("--points", "points_cost", required=True, help="What it costs in points, e.g. 150.")
@click.option("--value", required=True, help="The item's price in the program's currency: what it takes off.")
@with_appcontext
@form_command
def rewards_create(program_slug: str, name: str, points_cost: str, value: str) -> None:
    """Add a reward to the catalogue; prints its id."""
    session = get_session()
    reward = create_reward(session, _program(program_slug), {"name": name, "points_cost": points_cost,
                                                            "value": value}, now=utcnow())
    session.commit()
    click.echo(reward.id)


@rewards_cli.command("list")
@click.option("--program", "program_slug", required=True, help="The program's slug.")
@with_appcontext
@form_command
def rewards_list(program_slug: str) -> None:
    """List the catalogue: id, name, points, value, on/off."""
    program = _program(program_slug)
    rewards = list_rewards(get_session(), program)
    for reward in rewards:
        click.echo(f"{reward.id}\t{reward.name}\t{reward.points_cost} points\t"
                   f"{format_amount(reward.value, program.currency)} {program.currency}\t"
                   f"{'active' if reward.active else 'off'}")
    if not rewards:
        click.echo(f"{program.slug} has no rewards yet.", err=True)
