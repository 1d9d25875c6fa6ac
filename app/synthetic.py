"""Synthetic data at the size of a real chain: a program's members and two years of their purchases.

`flask --app wsgi synth` (app/cli_synth.py) and the scale benchmark (bench/analytics.py) use it to fill a
database with, say, a million members and ten million purchases in minutes, so the analytics can be measured
where they must hold.

The data looks like a shop's: members enrol on opening hours, more each month (the program grows) and more at
the weekend, through the web form, a till, the API or a friend's referral link; 40% agree to marketing. Most
buy on the day they join at a till. What they buy is skewed as in real shops: some never come, many come once,
and a long tail of regulars comes every week for a while and then, for about half of them, stops. Baskets are
log-normal around a typical basket; Silver and Gold members get their tier discount; a few purchases use a
coupon, about 3% redeem points, about 0.3% are voided a minute later. A referred member's first purchase pays
both referral bonuses.

Every row is one the app could have written: purchases are priced by the program's own rules (the common
purchase by the integer arithmetic of app/domain/rules.py, written out here for speed; one with a coupon or a
referral by `mechanics.quote` itself), with the lines, effects and ledger entries `commit_purchase` writes, and
the cards end with the balance, spend, tier, purchase count and dates their purchases give (so `ledger check`
is clean). Serials, page tokens and referral codes have the app's formats and come from os.urandom, as real
ones from `secrets` do; everything else follows `seed` and the moment of the run, so one seed makes the same
shop whenever the window (the last `days` days up to now) is the same.

How it stays fast: purchases are simulated in time order (a heap holds each member's next visit), so ids
follow time as in a real database. A large run simulates in a process of its own, which hands chunks of plain
tuples through a pipe to this one, which writes them through app/bulk_load.py (COPY on PostgreSQL, executemany
on SQLite): making rows and writing them each get a CPU. Every row is written settled for the roll-ups, which
`rebuild_rollups` then computes once from all of them. Memory holds a few numbers per member, never the
purchases: a chunk is written and dropped.

Contact details are safe to keep around: email addresses are at example.com/.net/.org (RFC 2606) and phone
numbers start with +999, a country code the ITU has not assigned, so nothing can ever reach a real person.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import heapq
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import random
import secrets
import time
import traceback
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from statistics import NormalDist
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Connection, create_engine, func, select, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from app.bulk_load import IdReserver, RowWriter, check_references, skip_row_reference_checks, timestamp_text
from app.domain import mechanics
from app.domain.analytics_rollups import ROLLUP_TABLES, rebuild_rollups
from app.domain.enrollment import CONSENT_WORDING_VERSION
from app.domain.errors import ValidationError
from app.domain.mechanics_facts import Receipt, effects_to_json, engine_coupon, program_mechanics
from app.domain.money import currency_exponent
from app.domain.programs import create_api_key, create_location, create_program, create_staff, get_program
from app.domain.referrals import REFERRAL_CODE_ALPHABET
from app.domain.rules import Tier, tier_for
from app.domain.signing import KeyStore
from app.models import ROLLUP_SETTLED, ApiKey, Base, Card, Coupon, Customer, Location, Program, Staff

# --- The shop ------------------------------------------------------------------------------------------------------

SYNTH_RULES: dict[str, Any] = {
    "earn": {"points_per_unit": "1", "rounding": "down"},
    "tiers": [
        {"name": "Silver", "min_spend": 25_000, "discount_bp": 300},
        {"name": "Gold", "min_spend": 100_000, "discount_bp": 700},
    ],
    "welcome_bonus": 50,
    "redeem": {"point_value": 1, "max_percent": 50},
    "referral": {"referrer_bonus": 200, "referee_bonus": 100},
}
# (name, share of the chain's trade); the first is the flagship.
LOCATIONS = (("High Street", 0.34), ("Station", 0.26), ("Market Square", 0.18), ("Riverside", 0.13),
             ("Airport", 0.09))


@dataclass(frozen=True)
class SynthCoupon:
    """A promo code the synthetic shop runs; its window is a share of the data's window (None: always)."""

    code: str
    discount_type: str
    discount_value: int
    min_basket: int
    window: tuple[float, float] | None
    per_member_limit: int | None
    member_only: bool
    weight: float  # how often a coupon purchase uses this one


SYNTH_COUPONS = (
    SynthCoupon("WELCOME10", "percent", 1000, 0, None, 1, True, 0.35),
    SynthCoupon("COFFEE2", "fixed", 200, 800, None, None, False, 0.35),
    SynthCoupon("SPRING5", "fixed", 500, 2500, (0.30, 0.42), None, False, 0.15),
    SynthCoupon("SUMMER15", "percent", 1500, 4000, (0.62, 0.75), None, True, 0.15),
)

CHANNEL_SHARES = (("till", 0.45), ("web", 0.27), ("api", 0.16), ("referral", 0.12))
# The program's growth: a day at the end of the window sees this many times the enrollments of the first.
GROWTH = 3.0
OPEN_HOUR, CLOSE_HOUR = 8, 21
# Each weekday's trade (Monday first), as a share of an average day's.
WEEKDAY_TRADE = (0.85, 0.90, 0.95, 1.00, 1.15, 1.35, 0.80)
CONSENT_SHARE = 0.40
BIRTHDAY_SHARE = 0.35
EMAIL_SHARE = 0.85
PHONE_SHARE = 0.50
SELF_REFERRAL_SHARE = 0.04
# Members who never buy; buyers who come once; regulars who stop coming at some point.
NEVER_BUY = 0.15
ONE_TIMERS = 0.35
CHURN = 0.45
# A regular's appetite, relative to others: log-normal, capped so no one buys more than a few times a week.
APPETITE_SIGMA = 1.3
APPETITE_CAP = 30.0
# First purchase: in the same visit for most till and API enrollments, else days later (mean, in days).
SAME_VISIT = 0.70
FIRST_PURCHASE_DAYS = 5.0
# Baskets in minor units: log-normal around a median, clamped.
BASKET_MEDIAN = 1450
BASKET_SIGMA = 0.55
BASKET_MIN, BASKET_MAX = 100, 50_000
HOME_LOCATION = 0.80  # purchases at the location a till member enrolled at
API_PURCHASES = 0.20  # purchases rung up by point-of-sale software rather than a cashier
COUPON_PURCHASES = 0.04
REDEEM_FROM = 150  # points a member holds before they think of redeeming
REDEEMING = 0.075  # of the purchases of members holding that many
VOIDED = 0.003

FIRST_NAMES = (
    "Amina", "Liam", "Sofia", "Noah", "Chloe", "Mateo", "Yuki", "Omar", "Elena", "Lucas", "Fatima", "Jonas",
    "Priya", "Hugo", "Mei", "Ravi", "Ingrid", "Kwame", "Lea", "Tomasz", "Aisha", "Pierre", "Nadia", "Diego",
    "Hannah", "Kenji", "Zara", "Felix", "Leila", "Arjun", "Marta", "Samuel", "Ines", "Oscar", "Ayumi", "Karim",
    "Julia", "Emeka", "Clara", "Mohammed", "Anna", "Tariq", "Lucia", "Ben", "Sara", "Ivan", "Maya", "Rosa",
)
LAST_NAMES = (
    "Karimi", "Smith", "Garcia", "Muller", "Rossi", "Dubois", "Nowak", "Tanaka", "Haddad", "Okafor", "Silva",
    "Jensen", "Kowalski", "Martin", "Chen", "Patel", "Novak", "Larsen", "Moreau", "Ivanova", "Santos", "Fischer",
    "Nguyen", "Ahmed", "Bianchi", "Lopez", "Schmidt", "Yilmaz", "Kim", "Mensah", "Costa", "Petrov", "Ali", "Berg",
    "Romano", "Sato", "Mendes", "Weber", "Hassan", "Lindqvist", "Ortiz", "Bauer", "Rahman", "Fontaine", "Varga",
    "Dahl", "Herrera", "Wolff",
)
EMAIL_DOMAINS = ("example.com", "example.net", "example.org")

# Rows per chunk: one executemany or COPY each.
MEMBER_CHUNK = 20_000
PURCHASE_CHUNK = 25_000
_BASKET_STEPS = 4096

# --- Options, report, progress -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthOptions:
    """What to make: `members` new members and `purchases` purchases of theirs over the last `days` days."""

    members: int
    purchases: int = 0
    days: int = 730
    seed: int = 1
    program_slug: str | None = None  # fill this program; None makes a new one, "synthetic-<n>"


MAX_MEMBERS = 50_000_000
MAX_PURCHASES = 1_000_000_000
MAX_DAYS = 3_650


def check_options(options: SynthOptions) -> None:
    """Refuse what cannot be made, with what to ask for instead (ValidationError)."""
    if options.members < 1:
        if options.purchases:
            raise ValidationError("Purchases need members to make them: give --members 1 or more.",
                                  field="members")
        raise ValidationError("--members must be 1 or more: how many new members to make.", field="members")
    if options.members > MAX_MEMBERS:
        raise ValidationError(f"--members may be at most {MAX_MEMBERS:,}.", field="members")
    if not 0 <= options.purchases <= MAX_PURCHASES:
        raise ValidationError(f"--purchases must be between 0 and {MAX_PURCHASES:,}.", field="purchases")
    if not 1 <= options.days <= MAX_DAYS:
        raise ValidationError(f"--days must be between 1 and {MAX_DAYS}: the days the data spreads over, "
                              "ending now.", field="days")


@dataclass(frozen=True)
class Credentials:
    """The sign-ins of a new synthetic program, shown once (only their hashes are stored)."""

    manager_email: str
    manager_password: str
    cashier_email: str
    cashier_password: str
    api_key: str


@dataclass(frozen=True)
class PhaseTiming:
    """One phase of a run: rows written (or members folded), and how long it took."""

    name: str
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass
class SynthReport:
    """What a run made, for the summary and for the benchmark."""

    program_id: int
    slug: str
    created: bool
    credentials: Credentials | None
    first_day: dt.date
    last_day: dt.date
    members: int = 0
    purchases: int = 0
    voided: int = 0
    redeeming: int = 0
    coupon_uses: int = 0
    referrals: int = 0
    ledger_entries: int = 0
    phases: list[PhaseTiming] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(phase.seconds for phase in self.phases)


class Progress(Protocol):
    """progress(label, total) -> a context in which advance(n) says n more of `total` are done."""

    def __call__(self, label: str, total: int) -> AbstractContextManager[Callable[[int], None]]: ...


@contextmanager
def no_progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    yield lambda done: None


# --- Time: opening hours, weekdays, growth ---------------------------------------------------------------------------


class Calendar:
    """The window's opening hours as one line of "business seconds": each day's hours, stretched by how busy
    its weekday is. Drawing uniformly on that line puts visits in opening hours, more on busy days; the map back
    to clock time keeps order, so a member's visits stay in the order they were drawn."""

    def __init__(self, now: dt.datetime, days: int, dialect: str) -> None:
        first = now.astimezone(dt.UTC).date() - dt.timedelta(days=days - 1)
        between, after = timestamp_text(dialect)
        self.now = now
        self.first_day = first
        self.last_day = first + dt.timedelta(days=days - 1)
        self.starts: list[int] = []  # business second at which each day's opening starts
        self.lengths: list[int] = []  # business seconds of each day
        self.seconds_per_business: list[float] = []
        self.day_texts: list[str] = []
        self._day_epoch: list[int] = []
        total = 0
        for number in range(days):
            day = first + dt.timedelta(days=number)
            opens = dt.datetime.combine(day, dt.time(OPEN_HOUR), dt.UTC)
            closes = min(dt.datetime.combine(day, dt.time(CLOSE_HOUR), dt.UTC), now)
            open_seconds = max(0, int((closes - opens).total_seconds()))
            trade = WEEKDAY_TRADE[day.weekday()]
            length = int(open_seconds * trade)
            self.starts.append(total)
            self.lengths.append(length)
            self.seconds_per_business.append(1 / trade)
            self.day_texts.append(f"{day.isoformat()}{between}")
            self._day_epoch.append(int(opens.timestamp()))
            total += length
        self.total = total
        self.clock = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}{after}" for s in range(86_400)]

    def _locate(self, business: int) -> tuple[int, int]:
        day = bisect.bisect_right(self.starts, business) - 1
        return day, OPEN_HOUR * 3600 + int((business - self.starts[day]) * self.seconds_per_business[day])

    def text(self, business: int, later: int = 0) -> str:
        """The timestamp of a business second, as the database keeps it; `later` adds clock seconds."""
        day, second = self._locate(business)
        return self.day_texts[day] + self.clock[second + later]

    def moment(self, business: int) -> dt.datetime:
        day, second = self._locate(business)
        return dt.datetime.fromtimestamp(self._day_epoch[day] + second, dt.UTC)


# --- Setting the program up -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShopCoupon:
    """A coupon of the program the members may use: its row id and its terms as the engine reads them."""

    id: int
    engine: mechanics.Coupon
    weight: float


@dataclass(frozen=True)
class SynthPlan:
    """Everything the simulation needs, as plain values, so that it can run in a process of its own."""

    options: SynthOptions
    now: dt.datetime
    dialect: str
    database_url: str  # PostgreSQL: where the simulation reserves row ids from the sequences
    program_id: int
    slug: str
    currency: str
    rules: mechanics.MechanicsRules
    locations: tuple[int, ...]
    location_shares: tuple[float, ...]
    cashier_id: int | None
    api_key_id: int | None
    api_location_id: int | None
    coupons: tuple[ShopCoupon, ...]
    customer_offset: int  # customers the program had: makes this run's contact details new
    taken_referral_codes: frozenset[str]
    next_ids: dict[str, int] | None  # SQLite: the first free id of each table written with its ids


def next_synthetic_slug(session: Session) -> str:
    """synthetic-<n> for the smallest n no program has."""
    taken = set(session.scalars(select(Program.slug).where(Program.slug.like("synthetic-%"))))
    number = 1
    while f"synthetic-{number}" in taken:
        number += 1
    return f"synthetic-{number}"


def set_up_shop(
    session: Session, keys: KeyStore, options: SynthOptions, calendar: Calendar
) -> tuple[SynthPlan, Credentials | None]:
    """The program to fill, and the plan to fill it: a new program with tiers, locations, staff, an API key and
    coupons, or the one named.

    A program named is filled as it is set up: its rules price the purchases; its first active cashier and
    API key ring them up; it gets the synthetic coupons it lacks, and locations if it has none.
    """
    credentials = None
    if options.program_slug is None:
        slug = next_synthetic_slug(session)
        program = create_program(session, keys, name=f"Synthetic Coffee {slug.rsplit('-', 1)[1]}", currency="EUR",
                                 slug=slug, rules=SYNTH_RULES)
        manager_password, cashier_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        create_staff(session, program, email=f"manager@{slug}.example", role="manager", password=manager_password)
        create_staff(session, program, email=f"cashier@{slug}.example", role="cashier", password=cashier_password)
    else:
        program = get_program(session, options.program_slug)
    rules = program_mechanics(program)
    if rules.program_type != "points" or rules.second_visit is not None:
        raise ValidationError(
            f"{program.slug} is a {rules.program_type} program"
            f"{' with a second-visit discount' if rules.second_visit is not None else ''}; synth makes the "
            "purchases of points programs without one. Leave --program out to make a new program.",
            field="program",
        )
    locations = list(session.scalars(select(Location).where(Location.program_id == program.id)
                                     .order_by(Location.id)))
    if not locations:
        locations = [create_location(session, program, name) for name, _ in LOCATIONS]
    shares = [share for _, share in LOCATIONS][: len(locations)]
    shares += [min(shares)] * (len(locations) - len(shares))
    if options.program_slug is None:
        _, api_secret = create_api_key(session, locations[0], "synthetic till")
        credentials = Credentials(f"manager@{program.slug}.example", manager_password,
                                  f"cashier@{program.slug}.example", cashier_password, api_secret)
    cashier_id = session.scalar(select(Staff.id).where(Staff.program_id == program.id, Staff.role == "cashier",
                                                       Staff.active.is_(True)).order_by(Staff.id).limit(1))
    api_key = session.scalar(select(ApiKey).where(ApiKey.program_id == program.id, ApiKey.revoked_at.is_(None))
                             .order_by(ApiKey.id).limit(1))
    coupons = _shop_coupons(session, program, calendar)
    session.flush()
    connection = session.connection()
    plan = SynthPlan(
        options=options, now=calendar.now, dialect=connection.dialect.name,
        database_url=connection.engine.url.render_as_string(hide_password=False),
        program_id=program.id, slug=program.slug, currency=program.currency, rules=rules,
        locations=tuple(location.id for location in locations), location_shares=tuple(shares),
        cashier_id=cashier_id, api_key_id=api_key.id if api_key else None,
        api_location_id=api_key.location_id if api_key else None, coupons=coupons,
        customer_offset=session.scalar(select(func.count()).select_from(Customer)
                                       .where(Customer.program_id == program.id)) or 0,
        taken_referral_codes=frozenset(code for code in session.scalars(select(Card.referral_code)) if code),
        next_ids=None if connection.dialect.name == "postgresql" else {
            table: int(connection.exec_driver_sql(f"SELECT COALESCE(MAX(id), 0) FROM {table}").scalar_one()) + 1
            for table in ID_TABLES
        },
    )
    return plan, credentials


def _shop_coupons(session: Session, program: Program, calendar: Calendar) -> tuple[ShopCoupon, ...]:
    """The synthetic coupons as the program has them: made when missing, left as they are when present (an
    inactive or single-use code of that name is not used)."""
    span = calendar.total
    found = []
    for terms in SYNTH_COUPONS:
        row = session.scalar(select(Coupon).where(Coupon.program_id == program.id, Coupon.code == terms.code))
        if row is None:
            window = terms.window
            row = Coupon(
                program_id=program.id, code=terms.code, kind="reusable", discount_type=terms.discount_type,
                discount_value=terms.discount_value, min_basket=terms.min_basket,
                valid_from=calendar.moment(int(span * window[0])) if window else None,
                valid_until=calendar.moment(int(span * window[1])) if window else None,
                per_member_limit=terms.per_member_limit, member_only=terms.member_only, stackable=False,
                label="", active=True, created_at=calendar.moment(0),
            )
            session.add(row)
            session.flush()
        if row.active and row.kind == "reusable" and row.assigned_card_id is None:
            found.append(ShopCoupon(row.id, engine_coupon(row, {}), terms.weight))
    return tuple(found)


# --- The run -------------------------------------------------------------------------------------------------------

CUSTOMER_COLUMNS = ("id", "program_id", "name", "email", "phone", "marketing_consent", "birthday_month",
                    "birthday_day", "consent_wording_version", "consent_recorded_at", "channel", "location_id",
                    "created_at", "rollup_state")
CARD_COLUMNS = ("id", "program_id", "customer_id", "serial", "status", "points", "lifetime_spend", "tier",
                "page_token", "pass_auth_token", "stamps", "vouchers", "cashback", "purchase_count",
                "referral_code", "enrolled_device", "created_at", "updated_at")
LEDGER_COLUMNS = ("card_id", "kind", "points", "purchase_id", "staff_id", "api_key_id", "note", "created_at",
                  "rollup_state")
PURCHASE_COLUMNS = ("id", "program_id", "card_id", "location_id", "staff_id", "api_key_id", "amount", "discount",
                    "amount_due", "points_earned", "points_redeemed", "lines", "points_after", "tier_after",
                    "effects", "status", "idempotency_key", "request_fingerprint", "created_at", "voided_at",
                    "rollup_state")
COUPON_USE_COLUMNS = ("coupon_id", "card_id", "purchase_id", "discount", "used_at", "voided_at")
REFERRAL_COLUMNS = ("referrer_card_id", "referee_card_id", "self_referral", "bonus_purchase_id", "created_at")
CARD_STATE_TABLE = "synth_card_state"
CARD_STATE_COLUMNS = ("id", "points", "lifetime_spend", "tier", "purchase_count", "first_purchase_at",
                      "last_purchase_at", "updated_at")
# The tables whose rows others point at: written with their ids, reserved first (app/bulk_load.py IdReserver).
ID_TABLES = ("customers", "cards", "purchases")
# The tables a run writes, for ANALYZE afterwards.
LOADED_TABLES = ("customers", "cards", "ledger_entries", "purchases", "coupon_uses", "referrals", *ROLLUP_TABLES)
# The tables whose rows point at others, checked after the load when PostgreSQL's per-row checks were skipped.
REFERENCE_CHECKED = ("customers", "cards", "ledger_entries", "purchases", "coupon_uses", "referrals")
# Below this many rows the simulation runs in this process; above, in a process of its own, so that making the
# rows and writing them use two CPUs.
OWN_PROCESS_FROM = 200_000

CHANNELS = tuple(name for name, _ in CHANNEL_SHARES)
_TILL, _WEB, _API, _REFERRAL = (CHANNELS.index(name) for name in ("till", "web", "api", "referral"))
_NO_LOCATION = 255


def synthesize(
    session: Session,
    keys: KeyStore,
    options: SynthOptions,
    *,
    now: dt.datetime,
    progress: Progress = no_progress,
    own_process: bool | None = None,
) -> SynthReport:
    """Make the options' members and purchases (and a program, unless one is named) in the session's transaction.

    Writes on the session's connection and flushes; the caller commits (one transaction: a run that fails
    leaves nothing behind), then may run `bulk_load.analyze` on LOADED_TABLES. Nothing else may write the
    program meanwhile (its roll-ups are rebuilt from its rows at the end). `own_process` runs the simulation in
    a child process (default: for runs of OWN_PROCESS_FROM rows or more).
    """
    check_options(options)
    calendar = Calendar(now, options.days, session.connection().dialect.name)
    if calendar.total <= 0:
        raise ValidationError(f"The last {options.days} days hold no opening hours yet ({OPEN_HOUR}:00 to "
                              f"{CLOSE_HOUR}:00 UTC): give --days 2 or more.", field="days")
    started = time.perf_counter()
    plan, credentials = set_up_shop(session, keys, options, calendar)
    report = SynthReport(program_id=plan.program_id, slug=plan.slug,
                         created=credentials is not None, credentials=credentials,
                         first_day=calendar.first_day, last_day=calendar.last_day)
    report.phases.append(PhaseTiming("set-up", 1, time.perf_counter() - started))
    if own_process is None:
        own_process = options.members + options.purchases >= OWN_PROCESS_FROM
    connection = session.connection()
    checks_deferred = skip_row_reference_checks(connection)
    _write_simulation(connection, plan, report, progress, own_process)
    if checks_deferred:
        started = time.perf_counter()
        with progress("references", len(REFERENCE_CHECKED)) as advance:
            check_references(connection, [Base.metadata.tables[name] for name in REFERENCE_CHECKED])
            advance(len(REFERENCE_CHECKED))
        report.phases.append(PhaseTiming("references", report.members + report.purchases,
                                         time.perf_counter() - started))
    started = time.perf_counter()
    with progress("roll-ups", 1) as advance:
        rebuild_rollups(session, plan.program_id, now)
        session.flush()
        advance(1)
    report.phases.append(PhaseTiming("roll-ups", report.members, time.perf_counter() - started))
    return report


# --- What the simulation hands the writer ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseStart:
    name: str
    total: int


@dataclass(frozen=True)
class Rows:
    """Rows for one table, and how far they take their phase (members, purchases or cards done)."""

    table: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    done: int = 0


@dataclass(frozen=True)
class Finished:
    voided: int
    redeeming: int
    coupon_uses: int
    referrals: int
    ledger_entries: int


@dataclass(frozen=True)
class Failed:
    """The simulation's process stopped on an error: its traceback."""

    message: str


Item = PhaseStart | Rows | Finished | Failed


def _write_simulation(connection: Connection, plan: SynthPlan, report: SynthReport, progress: Progress,
                      own_process: bool) -> None:
    """Write what the simulation makes, phase by phase with a progress bar each, then bring the cards to their
    final state from the temporary table the simulation filled."""
    writer = RowWriter(connection)
    with ExitStack() as phase_stack, _simulation_items(plan, own_process) as items:
        advance: Callable[[int], None] = lambda done: None  # noqa: E731 - replaced at the first phase
        phase, phase_started, phase_rows = "", 0.0, 0

        def end_phase() -> None:
            if phase:
                phase_stack.close()
                report.phases.append(PhaseTiming(phase, phase_rows, time.perf_counter() - phase_started))

        for item in items:
            if isinstance(item, Rows):
                writer.write(item.table, item.columns, item.rows)
                if item.done:
                    advance(item.done)
                    phase_rows += item.done
            elif isinstance(item, PhaseStart):
                end_phase()
                phase, phase_started, phase_rows = item.name, time.perf_counter(), 0
                if phase == "cards":
                    _create_card_state_table(connection)
                advance = phase_stack.enter_context(progress(item.name, item.total))
            elif isinstance(item, Finished):
                _update_cards(connection)
                end_phase()
                report.members = plan.options.members
                report.purchases = plan.options.purchases
                report.voided, report.redeeming = item.voided, item.redeeming
                report.coupon_uses, report.referrals = item.coupon_uses, item.referrals
                report.ledger_entries = item.ledger_entries
                return
            else:
                raise RuntimeError(f"The simulation failed:\n{item.message}")
    raise RuntimeError("The simulation stopped before it finished.")


def _create_card_state_table(connection: Connection) -> None:
    connection.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {CARD_STATE_TABLE} (id BIGINT PRIMARY KEY, points BIGINT, lifetime_spend BIGINT,"
        " tier VARCHAR(64), purchase_count INTEGER, first_purchase_at TIMESTAMP WITH TIME ZONE,"
        " last_purchase_at TIMESTAMP WITH TIME ZONE, updated_at TIMESTAMP WITH TIME ZONE)"
    )


def _update_cards(connection: Connection) -> None:
    """Every card the purchases changed, in one UPDATE from the temporary table."""
    connection.execute(text(
        "UPDATE cards SET points = s.points, lifetime_spend = s.lifetime_spend, tier = s.tier,"
        " purchase_count = s.purchase_count, first_purchase_at = s.first_purchase_at,"
        f" last_purchase_at = s.last_purchase_at, updated_at = s.updated_at FROM {CARD_STATE_TABLE} AS s"
        " WHERE cards.id = s.id"
    ))
    connection.exec_driver_sql(f"DROP TABLE {CARD_STATE_TABLE}")


@contextmanager
def _simulation_items(plan: SynthPlan, own_process: bool) -> Iterator[Iterator[Item]]:
    """The simulation's items: made here, or in a child process that sends them through a pipe (one chunk
    ahead of the writer at most, so memory stays bounded)."""
    if not own_process:
        yield Simulation(plan).items()
        return
    context = multiprocessing.get_context("spawn")
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(target=_simulate_in_child, args=(plan, sending), name="synth-simulation", daemon=True)
    child.start()
    sending.close()

    def received() -> Iterator[Item]:
        while True:
            try:
                item: Item = receiving.recv()
            except EOFError:
                return
            yield item
            if isinstance(item, Finished | Failed):
                return

    try:
        yield received()
    finally:
        receiving.close()
        child.join(timeout=5)
        if child.is_alive():
            child.terminate()
            child.join()


def _simulate_in_child(plan: SynthPlan, sending: multiprocessing.connection.Connection) -> None:
    try:
        for item in Simulation(plan).items():
            sending.send(item)
    except BaseException:  # noqa: BLE001 - handed to the parent, which reports it
        sending.send(Failed(traceback.format_exc()))
    finally:
        sending.close()


class _Ids:
    """Row ids for the simulation: SQLite's next ones (the writer holds the write lock), or PostgreSQL's
    sequences on a connection of the simulation's own (see app/bulk_load.py IdReserver)."""

    def __init__(self, plan: SynthPlan) -> None:
        self._engine = None
        if plan.next_ids is not None:
            self._reserver = IdReserver(None, dict(plan.next_ids))
        else:
            self._engine = create_engine(plan.database_url, poolclass=NullPool)
            self._connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._reserver = IdReserver(self._connection, {})

    def take(self, table: str, count: int) -> Sequence[int]:
        return self._reserver.take(table, count)

    def close(self) -> None:
        if self._engine is not None:
            self._connection.close()
            self._engine.dispose()


class Simulation:
    """One run's members and purchases: a few numbers per member, and the heap of their next visits."""

    def __init__(self, plan: SynthPlan) -> None:
        self.plan = plan
        self.options = plan.options
        self.calendar = Calendar(plan.now, plan.options.days, plan.dialect)
        self.random = random.Random(plan.options.seed)
        self.program_id = plan.program_id
        base = plan.rules.base
        self.tiers = tuple(sorted(base.tiers, key=lambda t: t.min_spend))
        start_tier = tier_for(0, self.tiers)
        self.start_tier = start_tier.name if start_tier else None
        self.welcome_bonus = base.welcome_bonus
        count = plan.options.members
        self.enrolled = array("q")
        self.channel = bytearray(count)
        self.first_visit = array("q", [-1]) * count
        self.visits_left = array("l", [0]) * count
        self.stop = array("q", [0]) * count
        self.card_ids = array("q", [0]) * count
        self.serials: list[str] = [""] * count
        self.home = bytearray([_NO_LOCATION]) * count
        self.points = array("q", [self.welcome_bonus]) * count
        self.spend = array("q", [0]) * count
        self.committed = array("l", [0]) * count
        self.last_visit = array("q", [-1]) * count
        self.changed = bytearray(count)  # the card ends other than it was enrolled
        # referee index -> [referrer index, self-referral, purchase id that paid the bonuses (0: none yet)]
        self.referred: dict[int, list[int]] = {}
        self.coupon_uses: dict[tuple[int, int], int] = {}  # (coupon index, member) -> uses, for limited coupons
        self.ledger_entries = 0
        self.coupon_use_rows = 0

    def items(self) -> Iterator[Item]:
        """Members, then purchases, then the cards' final state and the referrals, in chunks of rows."""
        ids = _Ids(self.plan)
        try:
            self._plan_members()
            yield PhaseStart("members", self.options.members)
            yield from self._members(ids)
            visits = _Visits(self)
            yield PhaseStart("purchases", self.options.purchases)
            made = 0
            while made < self.options.purchases:
                size = min(PURCHASE_CHUNK, self.options.purchases - made)
                purchases, ledger, uses = visits.make(ids.take("purchases", size))
                made += size
                self.ledger_entries += len(ledger)
                self.coupon_use_rows += len(uses)
                yield Rows("purchases", PURCHASE_COLUMNS, purchases)
                yield Rows("ledger_entries", LEDGER_COLUMNS, ledger)
                yield Rows("coupon_uses", COUPON_USE_COLUMNS, uses, done=size)
            changed = [i for i in range(self.options.members) if self.changed[i]]
            yield PhaseStart("cards", len(changed) + len(self.referred))
            yield from self._cards(changed)
            yield Finished(voided=visits.voided if self.options.purchases else 0,
                           redeeming=visits.redeeming if self.options.purchases else 0,
                           coupon_uses=self.coupon_use_rows, referrals=len(self.referred),
                           ledger_entries=self.ledger_entries)
        finally:
            ids.close()

    # --- Who enrols when, and how much they will buy ---

    def _plan_members(self) -> None:
        rng, calendar, count = self.random, self.calendar, self.options.members
        days = len(calendar.starts)
        weights = [math.exp(math.log(GROWTH) * day / max(1, days - 1)) * calendar.lengths[day] for day in range(days)]
        channel_cum = _cumulative([share for _, share in CHANNEL_SHARES])
        for day, enrolling in enumerate(_spread(count, weights)):
            start, length = calendar.starts[day], calendar.lengths[day]
            self.enrolled.extend(sorted(start + int(rng.random() * length) for _ in range(enrolling)))
        end = calendar.total
        mean_day = end / days
        appetite = array("d", [0.0]) * count
        for i in range(count):
            channel = bisect.bisect_right(channel_cum, rng.random())
            if channel == _REFERRAL and i == 0:
                channel = _WEB  # the first member has no one to be referred by
            self.channel[i] = channel
            if rng.random() < NEVER_BUY:
                continue
            enrolled = self.enrolled[i]
            if channel in (_TILL, _API) and rng.random() < SAME_VISIT:
                first = enrolled + rng.randint(60, 600)
            else:
                first = enrolled + int(rng.expovariate(1 / (FIRST_PURCHASE_DAYS * mean_day)))
            if first >= end:
                first = enrolled + int((end - enrolled) * rng.random())
            first = min(first, end - 1)
            self.first_visit[i] = first
            stop = first + int((end - first) * rng.random()) if rng.random() < CHURN else end
            self.stop[i] = max(stop, first + 1)
            if rng.random() >= ONE_TIMERS:
                appetite[i] = min(rng.lognormvariate(0.0, APPETITE_SIGMA), APPETITE_CAP) * (stop - first) / end
        self._allocate_purchases(appetite)

    def _allocate_purchases(self, appetite: array[float]) -> None:
        """Share exactly `purchases` among the buyers: one each, and the rest by appetite."""
        buyers = [i for i in range(self.options.members) if self.first_visit[i] >= 0]
        total = self.options.purchases
        if total and not buyers:
            self.first_visit[0] = min(self.enrolled[0] + 60, self.calendar.total - 1)
            self.stop[0] = self.calendar.total
            buyers = [0]
        if total <= len(buyers):
            shares = _spread(total, [1.0] * len(buyers))
        else:
            weights = [appetite[i] for i in buyers]
            if not any(weights):
                weights = [1.0] * len(buyers)
            shares = [1 + extra for extra in _spread(total - len(buyers), weights)]
        for i, share in zip(buyers, shares, strict=True):
            self.visits_left[i] = share
            if not share:
                self.first_visit[i] = -1

    # --- Members ---

    def _members(self, ids: _Ids) -> Iterator[Item]:
        """Customers, their cards and their welcome bonuses, chunk by chunk."""
        rng, calendar, plan = self.random, self.calendar, self.plan
        count = self.options.members
        taken_codes = set(plan.taken_referral_codes)
        location_cum = _cumulative(plan.location_shares)
        api_home = plan.locations.index(plan.api_location_id) if plan.api_location_id in plan.locations else None
        program_id, welcome, tier, offset = self.program_id, self.welcome_bonus, self.start_tier, plan.customer_offset
        for chunk_start in range(0, count, MEMBER_CHUNK):
            chunk = range(chunk_start, min(count, chunk_start + MEMBER_CHUNK))
            customer_ids = ids.take("customers", len(chunk))
            card_ids = ids.take("cards", len(chunk))
            tokens = _Tokens(len(chunk), taken_codes)
            customers, cards, ledger = [], [], []
            for n, i in enumerate(chunk):
                channel = self.channel[i]
                created = calendar.text(self.enrolled[i])
                home = _NO_LOCATION
                if channel == _API and api_home is not None:
                    home = api_home
                elif channel in (_TILL, _API):
                    home = bisect.bisect_right(location_cum, rng.random())
                self.home[i] = home
                first_name, last_name = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
                # A bijection of 0..10**9-1 (3**18 is prime to 10): unique per member, not sequential-looking.
                unique = ((offset + i) * 387_420_489 + 12_345) % 1_000_000_000
                email = phone = None
                if rng.random() < EMAIL_SHARE:
                    email = f"{first_name.lower()}.{last_name.lower()}.{unique:09d}@{EMAIL_DOMAINS[unique % 3]}"
                if email is None or rng.random() < PHONE_SHARE:
                    phone = f"+999{unique:09d}"
                month = day = None
                if rng.random() < BIRTHDAY_SHARE:
                    month = rng.randint(1, 12)
                    day = rng.randint(1, _DAYS_IN_MONTH[month])
                device = None
                if channel in (_WEB, _REFERRAL):
                    device = base64.urlsafe_b64encode(rng.randbytes(16)).decode()[:22]
                if channel == _REFERRAL:
                    self.referred[i] = [rng.randrange(i), rng.random() < SELF_REFERRAL_SHARE, 0]
                customer_id, card_id = customer_ids[n], card_ids[n]
                self.card_ids[i] = card_id
                self.serials[i] = serial = tokens.serials[n]
                customers.append((
                    customer_id, program_id, f"{first_name} {last_name}", email, phone,
                    rng.random() < CONSENT_SHARE, month, day, CONSENT_WORDING_VERSION, created, CHANNELS[channel],
                    plan.locations[home] if home != _NO_LOCATION else None, created, ROLLUP_SETTLED,
                ))
                cards.append((
                    card_id, program_id, customer_id, serial, "active", welcome, 0, tier, tokens.page_tokens[n],
                    tokens.pass_tokens[n], 0, 0, 0, 0, tokens.referral_codes[n], device, created, created,
                ))
                if welcome:
                    ledger.append((card_id, "bonus", welcome, None, None, None, "Welcome bonus", created,
                                   ROLLUP_SETTLED))
            self.ledger_entries += len(ledger)
            yield Rows("customers", CUSTOMER_COLUMNS, customers)
            yield Rows("cards", CARD_COLUMNS, cards)
            yield Rows("ledger_entries", LEDGER_COLUMNS, ledger, done=len(chunk))

    # --- What the purchases left on the cards, and who referred whom ---

    def _cards(self, changed: list[int]) -> Iterator[Item]:
        """The referrals (now that the purchases that paid their bonuses have ids), and the final state of every
        card whose balance, spend or visits changed, for the writer's temporary table."""
        calendar = self.calendar
        referrals = [
            (self.card_ids[referrer], self.card_ids[i], bool(self_referral), paid or None,
             calendar.text(self.enrolled[i]))
            for i, (referrer, self_referral, paid) in sorted(self.referred.items())
        ]
        yield Rows("referrals", REFERRAL_COLUMNS, referrals, done=len(referrals))
        for start in range(0, len(changed), PURCHASE_CHUNK):
            states = []
            for i in changed[start:start + PURCHASE_CHUNK]:
                tier = tier_for(self.spend[i], self.tiers)
                bought = self.committed[i] > 0
                states.append((
                    self.card_ids[i], self.points[i], self.spend[i], tier.name if tier else None, self.committed[i],
                    calendar.text(self.first_visit[i]) if bought else None,
                    calendar.text(self.last_visit[i]) if bought else None,
                    calendar.text(max(self.last_visit[i], self.enrolled[i])),
                ))
            yield Rows(CARD_STATE_TABLE, CARD_STATE_COLUMNS, states, done=len(states))


_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # 29 February is a birthday too


class _Tokens:
    """A chunk's serials, card page tokens, pass tokens and referral codes, in the app's formats (see
    app/domain/card_code.py, cards.py, card.py and referrals.py), from os.urandom. Referral codes (40 bits) are
    checked against every code taken; serials and tokens have 64 bits or more and the unique indexes."""

    def __init__(self, count: int, taken_codes: set[str]) -> None:
        raw = os.urandom(count * (8 + 16 + 24))
        b32, b64 = base64.b32encode, base64.urlsafe_b64encode
        self.serials = [b32(raw[k * 8:k * 8 + 8]).decode()[:13] for k in range(count)]
        tokens = raw[count * 8:]
        self.page_tokens = [b64(tokens[k * 16:k * 16 + 16]).decode()[:22] for k in range(count)]
        passes = tokens[count * 16:]
        self.pass_tokens = [b64(passes[k * 24:k * 24 + 24]).decode() for k in range(count)]
        codes: list[str] = []
        alphabet = REFERRAL_CODE_ALPHABET
        while len(codes) < count:
            for chunk in _chunks(os.urandom(5 * (count - len(codes))), 5):
                bits = int.from_bytes(chunk, "big")
                code = "".join(alphabet[(bits >> shift) & 31] for shift in range(35, -1, -5))
                if code not in taken_codes:
                    taken_codes.add(code)
                    codes.append(code)
        self.referral_codes = codes


class _Priced(NamedTuple):
    """A purchase as `commit_purchase` would store it, and the ledger entries and coupon use it writes."""

    lines: str  # JSON
    discount: int
    due: int
    earned: int
    redeemed: int
    points_after: int
    tier_after: str | None
    effects: str  # JSON
    entries: list[tuple[int, str, int, str]]  # (card id, kind, points, note)
    coupon_id: int | None
    coupon_discount: int


class _Visits:
    """The purchases, in time order: take the member whose next visit is earliest, price their basket on their
    card as it stands, write the rows, move their card on, and schedule their following visit.

    The common purchase (tier discount, points redeemed, points earned) is priced here with the integer
    arithmetic of app/domain/rules.py; one with a coupon or a referral bonus by `mechanics.quote` itself.
    tests/test_synthetic.py prices every purchase of a run again with `mechanics.quote` and compares.
    """

    def __init__(self, simulation: Simulation) -> None:
        self.sim = simulation
        plan = simulation.plan
        self.rules = plan.rules
        base = plan.rules.base
        self.currency = plan.currency
        numerator, denominator = Decimal(base.points_per_unit).as_integer_ratio()
        # points = round(amount_due * numerator / divisor), as rules.points_for does in Decimal.
        self.earn_numerator: int = numerator
        self.earn_divisor: int = denominator * 10 ** currency_exponent(self.currency)
        self.rounding = base.rounding
        self.point_value = base.point_value
        self.redeem_percent = base.redeem_max_percent
        # Highest threshold first, the first of equal ones as `tier_for` takes it.
        ordered = sorted(enumerate(simulation.tiers), key=lambda item: (-item[1].min_spend, item[0]))
        self.tier_steps = tuple((t.min_spend, t.name, t.discount_bp, _tier_line_start(t)) for _, t in ordered)
        self.coupon_cum = _cumulative([c.weight for c in plan.coupons]) if plan.coupons else []
        self.location_cum = _cumulative(plan.location_shares)
        # Baskets: the quantiles of the log-normal, drawn by a uniform index (one C call instead of a
        # Box-Muller in Python).
        spread = NormalDist(math.log(BASKET_MEDIAN), BASKET_SIGMA)
        self.baskets = [min(BASKET_MAX, max(BASKET_MIN, int(math.exp(spread.inv_cdf((k + 0.5) / _BASKET_STEPS)))))
                        for k in range(_BASKET_STEPS)]
        self.idempotency_prefix = f"synth-{secrets.token_hex(3)}-"
        self.number = 0
        self.voided = 0
        self.redeeming = 0
        self.day = 0  # the calendar day of the latest visit: visits come in time order
        count = simulation.options.members
        self.shift = max(1, count.bit_length())
        self.mask = (1 << self.shift) - 1
        heap = [(simulation.first_visit[i] << self.shift) | i for i in range(count) if simulation.visits_left[i]]
        heapq.heapify(heap)
        self.heap = heap

    def _points_for(self, due: int) -> int:
        numerator, divisor = due * self.earn_numerator, self.earn_divisor
        if self.rounding == "down":
            return numerator // divisor
        if self.rounding == "up":
            return -(-numerator // divisor)
        return (2 * numerator + divisor) // (2 * divisor)  # half up

    def _tier(self, spend: int) -> tuple[int, str, int, str] | None:
        for step in self.tier_steps:
            if spend >= step[0]:
                return step
        return None

    def make(self, purchase_ids: Sequence[int]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]],
                                                         list[tuple[Any, ...]]]:
        """The next len(purchase_ids) purchases, their ledger entries and their coupon uses, as rows."""
        sim, calendar, plan = self.sim, self.sim.calendar, self.sim.plan
        rng = sim.random
        rand = rng.random
        heap, shift, mask = self.heap, self.shift, self.mask
        heappop, heapreplace = heapq.heappop, heapq.heapreplace
        end = calendar.total
        text_of = calendar.text
        day = self.day
        day_starts, day_texts, clock = calendar.starts, calendar.day_texts, calendar.clock
        day_rates, opening = calendar.seconds_per_business, OPEN_HOUR * 3600
        next_day_start = day_starts[day + 1] if day + 1 < len(day_starts) else end
        points, spend, committed = sim.points, sim.spend, sim.committed
        visits_left, stop, last_visit, home = sim.visits_left, sim.stop, sim.last_visit, sim.home
        card_ids, serials, referred, changed = sim.card_ids, sim.serials, sim.referred, sim.changed
        locations, location_cum = plan.locations, self.location_cum
        cashier, api_key, api_location = plan.cashier_id, plan.api_key_id, plan.api_location_id
        tier_of, points_for, program_id = self._tier, self._points_for, sim.program_id
        point_value, redeem_percent = self.point_value, self.redeem_percent
        baskets, basket_steps = self.baskets, float(_BASKET_STEPS)
        coupon_odds = COUPON_PURCHASES if plan.coupons else 0.0
        pays_referrals = self.rules.referral is not None
        prefix = self.idempotency_prefix
        fingerprints = rng.randbytes(32 * len(purchase_ids)).hex()
        purchases: list[tuple[Any, ...]] = []
        ledger: list[tuple[Any, ...]] = []
        uses: list[tuple[Any, ...]] = []
        for n, purchase_id in enumerate(purchase_ids):
            key = heap[0]
            visit, i = key >> shift, key & mask
            left = visits_left[i] - 1
            visits_left[i] = left
            if left:
                # The earliest of the `left` visits still to come, drawn uniformly until the member stops.
                until = stop[i] if stop[i] > visit + 1 else end
                following = visit + 1 + int((until - visit - 1) * (1.0 - rand() ** (1.0 / left)))
                heapreplace(heap, ((following if following < end else end - 1) << shift) | i)
            else:
                heappop(heap)
            while visit >= next_day_start:
                day += 1
                next_day_start = day_starts[day + 1] if day + 1 < len(day_starts) else end
            created = day_texts[day] + clock[opening + int((visit - day_starts[day]) * day_rates[day])]
            card_id = card_ids[i]
            self.number += 1
            if api_key is not None and rand() < API_PURCHASES:
                staff_id, key_id, location_id = None, api_key, api_location
            else:
                where = home[i]
                if where == _NO_LOCATION or rand() >= HOME_LOCATION:
                    where = bisect.bisect_right(location_cum, rand())
                staff_id, key_id, location_id = cashier, None, locations[where]
            amount = baskets[int(rand() * basket_steps)]
            balance, spent, count = points[i], spend[i], committed[i]
            redeem = bool(point_value) and balance >= REDEEM_FROM and rand() < REDEEMING
            referral = referred.get(i) if count == 0 and pays_referrals else None
            coupon = self._coupon_for(i, amount, visit) if coupon_odds and rand() < coupon_odds else None
            if coupon is not None or referral is not None:
                priced = self._engine_purchase(purchase_id, i, amount, visit, coupon, redeem, referral)
                lines, discount, due, earned, redeemed = (priced.lines, priced.discount, priced.due, priced.earned,
                                                          priced.redeemed)
                points_after, tier_after, effects = priced.points_after, priced.tier_after, priced.effects
                ledger.extend((card, kind, change, purchase_id, staff_id, key_id, note, created, ROLLUP_SETTLED)
                              for card, kind, change, note in priced.entries)
                if priced.coupon_id is not None:
                    uses.append((priced.coupon_id, card_id, purchase_id, priced.coupon_discount, created, None))
            else:
                due = amount
                fragments = []
                tier = tier_of(spent)
                if tier is not None and tier[2]:
                    off = (due * tier[2] + 5000) // 10000  # percent_of: half up
                    due -= off
                    fragments.append(f"{tier[3]}{off}}}")
                redeemed = 0
                if redeem:
                    most = due * redeem_percent // 100 // point_value
                    redeemed = balance if balance < most else most
                    if redeemed:
                        due -= redeemed * point_value
                        fragments.append(f'{{"kind": "points_redemption", "label": "{redeemed} points redeemed", '
                                         f'"amount": {redeemed * point_value}}}')
                        ledger.append((card_id, "redeem", -redeemed, purchase_id, staff_id, key_id, "", created,
                                       ROLLUP_SETTLED))
                lines = f"[{', '.join(fragments)}]"
                discount = amount - due
                earned = points_for(due)
                if earned:
                    ledger.append((card_id, "earn", earned, purchase_id, staff_id, key_id, "", created,
                                   ROLLUP_SETTLED))
                points_after = balance - redeemed + earned
                tier = tier_of(spent + due)
                tier_after = tier[1] if tier is not None else None
                effects = f'{{"serial": "{serials[i]}", "amount_due": {due}'
                if earned:
                    effects += f', "points_earned": {earned}'
                if redeemed:
                    effects += f', "points_redeemed": {redeemed}'
                effects += "}"
            if redeemed:
                self.redeeming += 1
            status, voided_at = "committed", None
            if count and referral is None and rand() < VOIDED:
                # Rung up by mistake and voided a minute later: the card ends as if it had never happened.
                status, voided_at = "voided", text_of(visit, later=60)
                self.voided += 1
                ledger.append((card_id, "void", redeemed - earned, purchase_id, staff_id, key_id,
                               f"Void of purchase {purchase_id}", voided_at, ROLLUP_SETTLED))
                if uses and uses[-1][2] == purchase_id:
                    uses[-1] = (*uses[-1][:5], voided_at)
                    self._give_back_coupon(uses[-1][0], i)
            else:
                points[i] = points_after
                spend[i] = spent + due
                committed[i] = count + 1
                last_visit[i] = visit
                changed[i] = 1
            purchases.append((
                purchase_id, program_id, card_id, location_id, staff_id, key_id, amount, discount, due, earned,
                redeemed, lines, points_after, tier_after, effects, status, f"{prefix}{self.number:010d}",
                fingerprints[n * 64:n * 64 + 64], created, voided_at, ROLLUP_SETTLED,
            ))
        self.day = day
        return purchases, ledger, uses

    def _coupon_for(self, i: int, amount: int, visit: int) -> int | None:
        """A coupon (its index) the member may use on this basket now, or None: then they use none."""
        sim = self.sim
        index = bisect.bisect_right(self.coupon_cum, sim.random.random())
        refusal = mechanics.check_coupon(
            sim.plan.coupons[index].engine, mechanics.CouponUse(by_member=sim.coupon_uses.get((index, i), 0)),
            mechanics.MemberFacts(serial=sim.serials[i]), amount, sim.calendar.moment(visit), currency=self.currency,
        )
        return None if refusal is not None else index

    def _give_back_coupon(self, coupon_id: int, i: int) -> None:
        """A voided purchase's coupon use no longer counts towards the member's limit."""
        for index, coupon in enumerate(self.sim.plan.coupons):
            if coupon.id == coupon_id and self.sim.coupon_uses.get((index, i)):
                self.sim.coupon_uses[index, i] -= 1

    def _engine_purchase(
        self, purchase_id: int, i: int, amount: int, visit: int, coupon: int | None, redeem: bool,
        referral: list[int] | None,
    ) -> _Priced:
        """A purchase with a coupon or a referral bonus, priced by `mechanics.quote` as the till's would be."""
        sim = self.sim
        serial = sim.serials[i]
        facts = mechanics.MemberFacts(serial=serial, points=sim.points[i], lifetime_spend=sim.spend[i],
                                      purchases_committed=sim.committed[i])
        coupons = []
        if coupon is not None:
            coupons.append((sim.plan.coupons[coupon].engine,
                            mechanics.CouponUse(by_member=sim.coupon_uses.get((coupon, i), 0))))
        engine_referral = None
        if referral is not None:
            engine_referral = mechanics.Referral(referrer_serial=sim.serials[referral[0]],
                                                 self_referral=bool(referral[1]))
        now = sim.calendar.moment(visit)
        redeem_points = 0
        if redeem:
            # As many points as the cap allows after the other discounts: price once without, then redeem.
            trial = mechanics.quote(self.rules, facts, amount, now=now, currency=self.currency, coupons=coupons,
                                    referral=engine_referral)
            redeem_points = min(facts.points, trial.amount_due * self.redeem_percent // 100 // self.point_value)
        quote = mechanics.quote(self.rules, facts, amount, now=now, currency=self.currency, coupons=coupons,
                                redeem_points=redeem_points, referral=engine_referral, strict_redemption=True)
        if quote.refusals:
            raise AssertionError(f"a coupon checked as usable was refused: {quote.refusals}")
        card_id = sim.card_ids[i]
        entries: list[tuple[int, str, int, str]] = []
        if quote.points_redeemed:
            entries.append((card_id, "redeem", -quote.points_redeemed, ""))
        if quote.points_earned:
            entries.append((card_id, "earn", quote.points_earned, ""))
        for bonus in quote.bonuses:
            if bonus.serial == serial:
                entries.append((card_id, "bonus", bonus.amount, bonus.label[:200]))
            elif referral is not None:
                referrer = referral[0]
                entries.append((sim.card_ids[referrer], "bonus", bonus.amount, bonus.label[:200]))
                sim.points[referrer] += bonus.amount
                sim.changed[referrer] = 1
        if quote.bonuses and referral is not None:
            referral[2] = purchase_id
        coupon_id, coupon_discount = None, 0
        if coupon is not None and quote.coupons_applied:
            coupon_id = sim.plan.coupons[coupon].id
            coupon_discount = next(line.amount for line in quote.lines if line.kind == "coupon")
            if sim.plan.coupons[coupon].engine.per_member_limit is not None:
                sim.coupon_uses[coupon, i] = sim.coupon_uses.get((coupon, i), 0) + 1
        lines = [{"kind": line.kind, "label": line.label, "amount": line.amount} for line in quote.lines]
        effects = effects_to_json(quote.effects(), Receipt(notices=quote.warnings))
        return _Priced(
            lines=json.dumps(lines), discount=quote.discount_total, due=quote.amount_due, earned=quote.points_earned,
            redeemed=quote.points_redeemed, points_after=quote.points_after, tier_after=quote.tier_after,
            effects=json.dumps(effects), entries=entries, coupon_id=coupon_id, coupon_discount=coupon_discount,
        )


def _tier_line_start(tier: Tier) -> str:
    """The tier discount line as JSON, up to its amount (as `commit_purchase` stores `lines`)."""
    label = json.dumps(f"{tier.name} member {mechanics.percent_text(tier.discount_bp)}")
    return f'{{"kind": "tier_discount", "label": {label}, "amount": '


# --- Small helpers --------------------------------------------------------------------------------------------------


def _spread(total: int, weights: Sequence[float]) -> list[int]:
    """`total` shared in proportion to `weights`, in whole units that add up to exactly `total`."""
    whole = sum(weights)
    if total <= 0 or whole <= 0:
        return [0] * len(weights)
    shares, running, given = [], 0.0, 0
    for k, weight in enumerate(weights):
        running += weight
        reach = total if k == len(weights) - 1 else min(total, int(total * running / whole))
        shares.append(reach - given)
        given = reach
    return shares


def _cumulative(shares: Sequence[float]) -> list[float]:
    """Cumulative shares for `bisect_right(cum, random())` to pick an index by share (the last is open-ended)."""
    whole = sum(shares)
    running, cum = 0.0, []
    for share in shares:
        running += share
        cum.append(running / whole)
    return cum[:-1] + [float("inf")]


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]
