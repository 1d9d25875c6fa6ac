"""A program's members, purchases and points ledger as CSV, for the manager's downloads and `flask export`.

Each export is a generator of CSV text: the header row first, then one piece per page of PAGE_SIZE rows. Pages
are read by keyset (`WHERE id > last ORDER BY id LIMIT n`) as plain rows, not ORM objects, so a program of a
million members is written in the memory of one page, on SQLite and PostgreSQL alike. Every row committed
before the export started is written exactly once; a row committed while it runs may or may not be.

The text is RFC 4180 CSV (the csv module: comma, CRLF line ends, quotes only where needed), UTF-8, one header row.
Timestamps are ISO 8601 UTC to the second (2026-03-02T10:00:00Z); money is a decimal string in the program's
currency ("12.50"); yes/no for flags; an empty cell for nothing.

Formula injection: a spreadsheet runs a cell that starts with =, +, - or @ (and, in some, a tab or carriage
return) as a formula, so a member named `=HYPERLINK(...)` could run something on the manager's computer. Such a
cell is written with a single quote in front (`'=HYPERLINK(...)`), which spreadsheets show as text. A cell that
is just a number (-50 points, a phone number +33612345678) cannot run anything and is left as it is.

Purchases and the ledger can be limited to a range of UTC days by `created_at` (first and last day inclusive).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from app.domain.errors import ValidationError
from app.domain.money import format_amount
from app.models import ApiKey, Card, Coupon, CouponUse, Customer, LedgerEntry, Location, Program, Purchase, Staff

__all__ = [
    "EXPORT_KINDS",
    "LEDGER_COLUMNS",
    "MEMBER_COLUMNS",
    "PAGE_SIZE",
    "PURCHASE_COLUMNS",
    "DateRange",
    "count_ledger",
    "count_members",
    "count_purchases",
    "count_rows",
    "export_csv",
    "export_filename",
    "ledger_csv",
    "member_columns",
    "members_csv",
    "parse_date_range",
    "purchases_csv",
    "safe_cell",
]

EXPORT_KINDS = ("members", "purchases", "ledger")

# Rows read per query and written per piece of text: small enough to hold, large enough that the queries are few.
PAGE_SIZE = 1000

MEMBER_COLUMNS = (
    "serial", "name", "email", "phone", "marketing_consent", "consent_recorded_at", "channel", "location",
    "enrolled_at", "points", "lifetime_spend", "tier", "purchase_count", "first_purchase_at", "last_purchase_at",
    "card_status",
)
# What a card collects besides points, by the program's kind (Program.kind).
KIND_COLUMNS: dict[str, tuple[str, ...]] = {"points": (), "stamps": ("stamps", "vouchers"), "cashback": ("cashback",)}
PURCHASE_COLUMNS = (
    "id", "created_at", "card_serial", "location", "amount", "discount", "amount_due", "points_earned",
    "points_redeemed", "status", "voided_at", "staff_email", "api_key_id", "coupon_codes",
)
LEDGER_COLUMNS = (
    "id", "created_at", "card_serial", "kind", "points", "purchase_id", "note", "staff_email", "api_key_id",
)

Progress = Callable[[int], None]


# --- Date ranges ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DateRange:
    """UTC calendar days, both inclusive; None on either side means no limit there."""

    first: dt.date | None = None
    last: dt.date | None = None

    @property
    def unbounded(self) -> bool:
        return self.first is None and self.last is None

    def clauses(self, column: Any) -> list[ColumnElement[bool]]:
        """From 00:00 UTC of the first day (inclusive) to 00:00 UTC of the day after the last (exclusive)."""
        clauses: list[ColumnElement[bool]] = []
        if self.first is not None:
            clauses.append(column >= dt.datetime.combine(self.first, dt.time(), dt.UTC))
        if self.last is not None and self.last < dt.date.max:
            clauses.append(column < dt.datetime.combine(self.last + dt.timedelta(days=1), dt.time(), dt.UTC))
        return clauses


ALL_TIME = DateRange()

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_date_range(first: str | None, last: str | None) -> DateRange:
    """Read the first and last day (YYYY-MM-DD, either may be empty); a ValidationError names each bad one.

    The error's `extra["errors"]` is keyed "from" and "to", as the forms and the command's options are named.
    """
    errors: dict[str, str] = {}
    first_day = _parse_day((first or "").strip(), "from", errors)
    last_day = _parse_day((last or "").strip(), "to", errors)
    if first_day is not None and last_day is not None and last_day < first_day:
        errors["to"] = (f"The last day ({last_day.isoformat()}) is before the first day ({first_day.isoformat()}); "
                        "swap them.")
    if errors:
        raise ValidationError(" ".join(errors.values()), field=next(iter(errors)), errors=errors)
    return DateRange(first_day, last_day)


def _parse_day(text: str, key: str, errors: dict[str, str]) -> dt.date | None:
    if not text:
        return None
    try:
        if not _DAY.fullmatch(text):
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        what = "first" if key == "from" else "last"
        errors[key] = f"The {what} day {text[:40]!r} is not a date: give one as YYYY-MM-DD, such as 2025-03-31."
        return None


# --- Cells ---------------------------------------------------------------------------------------------------------

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def safe_cell(text: str) -> str:
    """The cell as a spreadsheet shows it without running it: a leading ' before =, +, -, @, tab or CR, unless the
    cell is just a number."""
    if text.startswith(_FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def _when(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else ""


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _csv_text(rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([[safe_cell(cell) for cell in row] for row in rows])
    return buffer.getvalue()


# --- Reading in pages ----------------------------------------------------------------------------------------------


def _pages(session: Session, statement: Select[Any], key: Any) -> Iterator[Sequence[Any]]:
    """The statement's rows a page at a time, by its key (the first column selected) ascending."""
    page_size = PAGE_SIZE  # read when the export starts, so a test can make pages small
    after = 0
    while True:
        rows = session.execute(statement.where(key > after).order_by(key).limit(page_size)).all()
        if rows:
            yield rows
        if len(rows) < page_size:
            return
        after = rows[-1][0]


def _write(header: Sequence[str], pages: Iterator[Sequence[Sequence[str]]], progress: Progress | None
           ) -> Iterator[str]:
    yield _csv_text([header])
    for rows in pages:
        if progress is not None:
            progress(len(rows))
        yield _csv_text(rows)


# --- Members -------------------------------------------------------------------------------------------------------


def member_columns(program: Program) -> tuple[str, ...]:
    """The members export's header for this program: the common columns, then what its kind of card collects."""
    return MEMBER_COLUMNS + KIND_COLUMNS.get(program.kind, ())


def count_members(session: Session, program: Program) -> int:
    """How many members (cards) the program has: the members export's rows."""
    return int(session.scalar(select(func.count()).select_from(Card).where(Card.program_id == program.id)) or 0)


def members_csv(session: Session, program: Program, *, progress: Progress | None = None) -> Iterator[str]:
    """Every member of the program (one row per card, oldest first) with their contact, consent, balance and
    activity. `progress` is called with the number of rows of each page as it is written."""
    statement = (
        select(Card.id, Card.serial, Customer.name, Customer.email, Customer.phone, Customer.marketing_consent,
               Customer.consent_recorded_at, Customer.channel, Location.name.label("location"), Customer.created_at,
               Card.points,
               Card.lifetime_spend, Card.tier, Card.purchase_count, Card.first_purchase_at, Card.last_purchase_at,
               Card.status, Card.stamps, Card.vouchers, Card.cashback)
        .join(Customer, Customer.id == Card.customer_id)
        .outerjoin(Location, Location.id == Customer.location_id)
        .where(Card.program_id == program.id)
    )
    currency, kind = program.currency, program.kind

    def row(member: Any) -> tuple[str, ...]:
        extra: tuple[str, ...] = ()
        if kind == "stamps":
            extra = (str(member.stamps), str(member.vouchers))
        elif kind == "cashback":
            extra = (format_amount(member.cashback, currency),)
        return (
            member.serial, member.name, _text(member.email), _text(member.phone), _yes(member.marketing_consent),
            _when(member.consent_recorded_at), member.channel, _text(member.location), _when(member.created_at),
            str(member.points), format_amount(member.lifetime_spend, currency), _text(member.tier),
            str(member.purchase_count), _when(member.first_purchase_at), _when(member.last_purchase_at),
            member.status, *extra,
        )

    pages = ([row(member) for member in page] for page in _pages(session, statement, Card.id))
    return _write(member_columns(program), pages, progress)


# --- Purchases -----------------------------------------------------------------------------------------------------


def _purchases_where(program: Program, dates: DateRange) -> list[ColumnElement[bool]]:
    return [Purchase.program_id == program.id, *dates.clauses(Purchase.created_at)]


def count_purchases(session: Session, program: Program, dates: DateRange = ALL_TIME) -> int:
    """How many purchases of the program fall in the date range: the purchases export's rows."""
    return int(session.scalar(select(func.count()).select_from(Purchase)
                              .where(*_purchases_where(program, dates))) or 0)


def purchases_csv(session: Session, program: Program, dates: DateRange = ALL_TIME, *,
                  progress: Progress | None = None) -> Iterator[str]:
    """Every purchase of the program in the date range, committed and voided, oldest first: the amounts as
    decimal strings, the points, who rang it up (a member of staff's email or a till's API key id) and the coupon
    codes it used (space-separated; a voided purchase keeps the codes it had used)."""
    statement = (
        select(Purchase.id, Purchase.created_at, Card.serial, Location.name.label("location"), Purchase.amount,
               Purchase.discount, Purchase.amount_due, Purchase.points_earned, Purchase.points_redeemed,
               Purchase.status, Purchase.voided_at, Staff.email.label("staff_email"),
               ApiKey.key_id.label("api_key_id"))
        .join(Card, Card.id == Purchase.card_id)
        .outerjoin(Location, Location.id == Purchase.location_id)
        .outerjoin(Staff, Staff.id == Purchase.staff_id)
        .outerjoin(ApiKey, ApiKey.id == Purchase.api_key_id)
        .where(*_purchases_where(program, dates))
    )
    currency = program.currency

    def rows(page: Sequence[Any]) -> list[tuple[str, ...]]:
        codes = _coupon_codes(session, program, page[0].id, page[-1].id)
        return [(
            str(p.id), _when(p.created_at), p.serial, _text(p.location), format_amount(p.amount, currency),
            format_amount(p.discount, currency), format_amount(p.amount_due, currency), str(p.points_earned),
            str(p.points_redeemed), p.status, _when(p.voided_at), _text(p.staff_email), _text(p.api_key_id),
            " ".join(codes.get(p.id, ())),
        ) for p in page]

    return _write(PURCHASE_COLUMNS, (rows(page) for page in _pages(session, statement, Purchase.id)), progress)


def _coupon_codes(session: Session, program: Program, first_id: int, last_id: int) -> dict[int, list[str]]:
    """The codes used by the program's purchases with ids first_id..last_id, in the order they were applied."""
    codes: dict[int, list[str]] = {}
    for purchase_id, code in session.execute(
        select(CouponUse.purchase_id, Coupon.code)
        .join(Coupon, Coupon.id == CouponUse.coupon_id)
        .where(CouponUse.purchase_id.between(first_id, last_id), Coupon.program_id == program.id)
        .order_by(CouponUse.id)
    ):
        codes.setdefault(purchase_id, []).append(code)
    return codes


# --- Ledger --------------------------------------------------------------------------------------------------------


def _ledger_where(program: Program, dates: DateRange) -> list[ColumnElement[bool]]:
    return [Card.program_id == program.id, *dates.clauses(LedgerEntry.created_at)]


def count_ledger(session: Session, program: Program, dates: DateRange = ALL_TIME) -> int:
    """How many ledger entries of the program fall in the date range: the ledger export's rows."""
    return int(session.scalar(select(func.count()).select_from(LedgerEntry)
                              .join(Card, Card.id == LedgerEntry.card_id)
                              .where(*_ledger_where(program, dates))) or 0)


def ledger_csv(session: Session, program: Program, dates: DateRange = ALL_TIME, *,
               progress: Progress | None = None) -> Iterator[str]:
    """Every change of the program's points in the date range, oldest first: the card, the kind (earn, bonus,
    redeem, void, adjust), the points (negative when taken), the purchase it belongs to, its note and who made it."""
    statement = (
        select(LedgerEntry.id, LedgerEntry.created_at, Card.serial, LedgerEntry.kind, LedgerEntry.points,
               LedgerEntry.purchase_id, LedgerEntry.note, Staff.email.label("staff_email"),
               ApiKey.key_id.label("api_key_id"))
        .join(Card, Card.id == LedgerEntry.card_id)
        .outerjoin(Staff, Staff.id == LedgerEntry.staff_id)
        .outerjoin(ApiKey, ApiKey.id == LedgerEntry.api_key_id)
        .where(*_ledger_where(program, dates))
    )
    pages = ([(
        str(e.id), _when(e.created_at), e.serial, e.kind, str(e.points), _text(e.purchase_id), e.note,
        _text(e.staff_email), _text(e.api_key_id),
    ) for e in page] for page in _pages(session, statement, LedgerEntry.id))
    return _write(LEDGER_COLUMNS, pages, progress)


# --- One entry point for the views and the command -----------------------------------------------------------------


def export_csv(session: Session, program: Program, kind: str, dates: DateRange = ALL_TIME, *,
               progress: Progress | None = None) -> Iterator[str]:
    """The `kind` export ("members", "purchases" or "ledger") of the program, checked before the first byte: a
    date range for the members is refused (they have none) rather than ignored."""
    if kind == "members":
        if not dates.unbounded:
            raise ValidationError("The members export has no date range: it lists every member. Leave the days "
                                  "empty, or export purchases or the ledger for a range.", field="from")
        return members_csv(session, program, progress=progress)
    if kind == "purchases":
        return purchases_csv(session, program, dates, progress=progress)
    if kind == "ledger":
        return ledger_csv(session, program, dates, progress=progress)
    raise ValidationError(f"There is no {kind!r} export; choose one of {', '.join(EXPORT_KINDS)}.", field="kind")


def count_rows(session: Session, program: Program, kind: str, dates: DateRange = ALL_TIME) -> int:
    """How many rows (without the header) the export will have, for a progress bar."""
    if kind == "members":
        return count_members(session, program)
    if kind == "purchases":
        return count_purchases(session, program, dates)
    if kind == "ledger":
        return count_ledger(session, program, dates)
    raise ValidationError(f"There is no {kind!r} export; choose one of {', '.join(EXPORT_KINDS)}.", field="kind")


def export_filename(program: Program, kind: str, today: dt.date) -> str:
    """e.g. corner-coffee-members-2026-03-02.csv (the slug is lower-case letters, digits and dashes)."""
    return f"{program.slug}-{kind}-{today.isoformat()}.csv"
