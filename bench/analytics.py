"""`python -m bench analytics` (`make bench-analytics`): the dashboard and the stats API at a chain's size.

For each database: fill it with `flask --app wsgi synth`'s data (1,000,000 members and 10,000,000 purchases
over two years unless told otherwise), serve the app with gunicorn on 127.0.0.1 (bench/server.py), sign in as
the program's manager through the sign-in form, and time each page and API call `--requests` times after a
warm-up: p50, p95 and max, against the issue's 300 ms. Then the incremental path, honestly: 1,000 purchases
through POST /api/v1/purchases, the first dashboard after them (which folds them into the roll-ups) and the
ones that follow.

SQLite runs in this process, on a file in a temporary folder or, with --db-dir, on a cached one that a rerun
reuses (its incremental purchases stay in it). PostgreSQL runs in a child under `.ci/with-postgres` with a
durable server (fsync and synchronous_commit on) and the memory settings a deployment would give it
(--pg-settings), and hands its figures back as JSON. Exits 1 when any p95 is at or over the target, or a
request failed. docs/performance.md ("Analytics at scale") records the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import create_engine, func, select, text

from app import ROOT, create_app
from app.cli_synth import load_synthetic
from app.config import normalise_database_url
from app.db import get_session
from app.domain.cards import card_code
from app.keys import get_keys
from app.migrate import upgrade
from app.models import Card
from app.synthetic import PhaseTiming, Progress, SynthOptions
from bench.load import busy_fraction
from bench.report import percentile
from bench.runner import describe_database
from bench.server import RunningServer, ServerOptions, gunicorn_server, tail

TARGET_MS = 300.0
INCREMENTAL_PURCHASES = 1_000
# What a deployment gives PostgreSQL on a machine like this one (23 GB of memory); durability is left on.
PG_SETTINGS = ("-c shared_buffers=2GB -c effective_cache_size=12GB -c work_mem=64MB "
               "-c maintenance_work_mem=1GB -c max_wal_size=8GB")
CHILD_STOP_SECONDS = 60.0
BUSY_WARNING = 0.10
PROGRESS_STEPS = 10  # progress lines per generation phase


def progress(message: str) -> None:
    print(message, flush=True)


# --- The figures --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointTiming:
    """One page or API call: what was asked, and how long each timed request took (ms, client side)."""

    name: str
    path: str
    samples_ms: list[float]
    errors: list[str] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return percentile(sorted(self.samples_ms), 0.50)

    @property
    def p95(self) -> float:
        return percentile(sorted(self.samples_ms), 0.95)

    @property
    def max(self) -> float:
        return max(self.samples_ms, default=0.0)

    @property
    def passed(self) -> bool:
        return bool(self.samples_ms) and not self.errors and self.p95 < TARGET_MS


@dataclass(frozen=True)
class Incremental:
    """1,000 purchases through the API after the load, and the dashboards that follow them."""

    purchases: int
    seconds: float
    first_dashboard_ms: float
    following: EndpointTiming


@dataclass(frozen=True)
class DatabaseResult:
    database: str
    version: str
    settings: str
    members: int
    purchases: int
    first_day: str
    last_day: str
    generation: list[dict[str, Any]]  # PhaseTiming as dicts
    generated_at: str
    cached: bool
    database_bytes: int
    endpoints: list[EndpointTiming]
    incremental: Incremental | None

    @property
    def passed(self) -> bool:
        return all(endpoint.passed for endpoint in self.endpoints) and (
            self.incremental is None or not self.incremental.following.errors)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for endpoint, source in zip(data["endpoints"], self.endpoints, strict=True):
            endpoint.update(p50_ms=source.p50, p95_ms=source.p95, max_ms=source.max, passed=source.passed)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatabaseResult:
        def timing(item: dict[str, Any]) -> EndpointTiming:
            return EndpointTiming(item["name"], item["path"], item["samples_ms"], item["errors"])

        incremental = data["incremental"]
        return cls(**{
            **data,
            "endpoints": [timing(item) for item in data["endpoints"]],
            "incremental": Incremental(**{**incremental, "following": timing(incremental["following"])})
            if incremental else None,
        })


# --- Talking to the app over HTTP ----------------------------------------------------------------------------------


class Browser:
    """Requests to the served app, one connection at a time, keeping its cookies like a browser."""

    def __init__(self, server: RunningServer) -> None:
        self.host, self.port = server.host, server.port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes, float]:
        """(status, headers, body, milliseconds from sending to the last byte)."""
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        connection = http.client.HTTPConnection(self.host, self.port, timeout=600)
        try:
            started = time.perf_counter()
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            content = response.read()
            elapsed = (time.perf_counter() - started) * 1000
            for header in response.headers.get_all("Set-Cookie") or []:
                for name, morsel in SimpleCookie(header).items():
                    self.cookies[name] = morsel.value
            return response.status, dict(response.headers.items()), content, elapsed
        finally:
            connection.close()

    def sign_in(self, email: str, password: str) -> None:
        status, _, page, _ = self.request("GET", "/login")
        token = re.search(rb'name="csrf_token" value="([^"]+)"', page)
        if status != 200 or token is None:
            raise RuntimeError(f"GET /login answered {status} without a sign-in form")
        form = urlencode({"csrf_token": token.group(1).decode(), "email": email, "password": password}).encode()
        status, headers, _, _ = self.request("POST", "/login", form,
                                             {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 303 or not headers.get("Location", "").endswith("/manager"):
            raise RuntimeError(f"signing in as {email} answered {status}, not a redirect to /manager")


def time_endpoint(browser: Browser, name: str, path: str, headers: dict[str, str], warmup: int,
                  requests: int) -> EndpointTiming:
    """`warmup` unrecorded requests, then `requests` timed ones; a non-200 answer is recorded as an error."""
    samples: list[float] = []
    errors: list[str] = []
    for number in range(warmup + requests):
        status, _, body, elapsed = browser.request("GET", path, headers=headers)
        if status != 200:
            errors.append(f"{status}: {body[:200].decode(errors='replace')}")
        elif number >= warmup:
            samples.append(elapsed)
    return EndpointTiming(name, path, samples, errors)


# --- One database --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    """A filled database and how to sign in to it (kept as JSON beside a cached SQLite file)."""

    manager_email: str
    manager_password: str
    api_key: str
    first_day: str
    last_day: str
    generation: list[dict[str, Any]]
    generated_at: str
    fingerprint: str = ""  # filled_by() when it was filled


def printing_progress(database: str) -> Progress:
    """A synth progress callback that prints a line per tenth of each phase."""

    @contextmanager
    def phase(label: str, total: int) -> Iterator[Callable[[int], None]]:
        started = time.perf_counter()
        done, shown = 0, 0

        def advance(count: int) -> None:
            nonlocal done, shown
            done += count
            step = done * PROGRESS_STEPS // max(total, 1)
            if step > shown:
                shown = step
                progress(f"{database}: {label} {done:,} of {total:,} ({time.perf_counter() - started:.0f} s)")

        yield advance

    return phase


def generate(url: str, keys_dir: Path, options: SynthOptions, database: str) -> Generated:
    """Migrate the database and fill it with `synth`'s data, as the command does."""
    fingerprint = filled_by()  # of the files as they are read now: a later edit makes the next run fill again
    upgrade(url)
    app = create_app({"DATABASE_URL": url, "SIGNING_KEYS_DIR": str(keys_dir)})
    try:
        with app.app_context():
            report = load_synthetic(options, printing_progress(database))
    finally:
        app.extensions["db"].dispose()
    credentials = report.credentials
    assert credentials is not None, "a new program comes with its credentials"
    return Generated(
        manager_email=credentials.manager_email, manager_password=credentials.manager_password,
        api_key=credentials.api_key, first_day=report.first_day.isoformat(), last_day=report.last_day.isoformat(),
        generation=[{**asdict(phase), "rate": phase.rate} for phase in report.phases],
        generated_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), fingerprint=fingerprint,
    )


def card_codes(url: str, keys_dir: Path, count: int) -> list[str]:
    """Signed codes of `count` members picked at random, as their phones would show them."""
    app = create_app({"DATABASE_URL": url, "SIGNING_KEYS_DIR": str(keys_dir)})
    try:
        with app.app_context():
            session = get_session()
            cards = session.scalars(select(Card).where(Card.status == "active").order_by(func.random())
                                    .limit(count)).all()
            return [card_code(session, card, get_keys()) for card in cards]
    finally:
        app.extensions["db"].dispose()


def endpoints(first_day: str, last_day: str) -> list[tuple[str, str, bool]]:
    """(name, path, API rather than page) of every timed request."""
    whole = f"from={first_day}&to={last_day}"
    return [
        ("dashboard, last 90 days", "/manager", False),
        ("dashboard, whole two years", f"/manager?{whole}", False),
        ("enrollments per day (API)", "/api/v1/stats/enrollments?period=day", True),
        ("enrollments per month (API)", "/api/v1/stats/enrollments?period=month", True),
        ("summary, last 90 days (API)", "/api/v1/stats/summary", True),
        ("summary, whole two years (API)", f"/api/v1/stats/summary?{whole}", True),
    ]


def run_database(url: str, args: argparse.Namespace, workdir: Path, cache: Path | None) -> DatabaseResult:
    """Fill (or reuse) the database, serve it, and time every endpoint and the incremental path."""
    name, version, settings = describe_database(url)
    options = SynthOptions(members=args.members, purchases=args.purchases, days=args.days, seed=args.seed)
    keys_dir = (cache.with_suffix(".keys") if cache else workdir / "signing-keys")
    meta = cache.with_suffix(".json") if cache else None
    cached = meta is not None and meta.exists() and cache is not None and cache.exists()
    if cached:
        assert cache is not None and meta is not None
        generated = Generated(**json.loads(meta.read_text()))
        if generated.fingerprint != filled_by():
            progress(f"{name}: {cache} was filled before the schema, the roll-ups or synth changed; filling it again")
            remove_cached(cache)
            cached = False
        else:
            progress(f"{name}: reusing {cache} (filled {generated.generated_at})")
    if not cached:
        progress(f"{name}: {version} ({settings}); filling it with {args.members:,} members and "
                 f"{args.purchases:,} purchases over {args.days} days")
        generated = generate(url, keys_dir, options, name)
        if meta is not None:
            meta.write_text(json.dumps(asdict(generated), indent=2))
    env = {**os.environ, "DATABASE_URL": url, "SIGNING_KEYS_DIR": str(keys_dir), "SECRET_KEY": os.environ["SECRET_KEY"],
           "PASS_UPDATE_WORKER": "0"}
    log_path = workdir / "gunicorn.log"
    api_headers = {"Authorization": f"Bearer {generated.api_key}"}
    with gunicorn_server(env, ServerOptions(workers=args.workers), log_path) as server, _log_on_failure(log_path):
        browser = Browser(server)
        browser.sign_in(generated.manager_email, generated.manager_password)
        timings = []
        for title, path, is_api in endpoints(generated.first_day, generated.last_day):
            timing = time_endpoint(browser, title, path, api_headers if is_api else {}, args.warmup, args.requests)
            timings.append(timing)
            progress(f"{name}: {title}: p50 {timing.p50:.0f} ms, p95 {timing.p95:.0f} ms, max {timing.max:.0f} ms"
                     + (f", {len(timing.errors)} errors: {timing.errors[0]}" if timing.errors else ""))
        incremental = None
        if args.incremental:
            incremental = run_incremental(browser, url, keys_dir, api_headers, args, name)
        server.check_alive()
    if any(t.errors for t in timings):
        progress(f"{name}: gunicorn's log ends:\n{tail(log_path)}")
    return DatabaseResult(
        database=name, version=version, settings=settings, members=args.members, purchases=args.purchases,
        first_day=generated.first_day, last_day=generated.last_day, generation=generated.generation,
        generated_at=generated.generated_at, cached=cached, database_bytes=database_bytes(url),
        endpoints=timings, incremental=incremental,
    )


@contextmanager
def _log_on_failure(log_path: Path) -> Iterator[None]:
    try:
        yield
    except RuntimeError:
        progress(f"gunicorn's log ends:\n{tail(log_path)}")
        raise


# What decides what a filled database holds: a cached one filled before any of them changed is filled again.
FILLED_BY = ("migrations/versions", "app/models", "app/synthetic.py", "app/bulk_load.py",
             "app/domain/analytics_rollups.py")


def filled_by() -> str:
    """A fingerprint of the files in FILLED_BY."""
    digest = hashlib.sha256()
    for name in FILLED_BY:
        path = ROOT / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(ROOT).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def remove_cached(cache: Path) -> None:
    """A cached database, its keys and its credentials."""
    for path in cache.parent.glob(cache.stem + ".*"):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def run_incremental(browser: Browser, url: str, keys_dir: Path, api_headers: dict[str, str],
                    args: argparse.Namespace, name: str) -> Incremental:
    """Purchases through the API after the load; then the first dashboard (it folds them in) and the next ones."""
    codes = card_codes(url, keys_dir, args.incremental)
    amounts = random.Random(args.seed)
    started = time.perf_counter()
    for code in codes:
        cents = amounts.randint(300, 6000)
        body = json.dumps({"code": code, "amount": f"{cents // 100}.{cents % 100:02d}"}).encode()
        status, _, answer, _ = browser.request("POST", "/api/v1/purchases", body, {
            **api_headers, "Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())})
        if status not in (200, 201):
            raise RuntimeError(f"POST /api/v1/purchases answered {status}: {answer[:300]!r}")
    seconds = time.perf_counter() - started
    status, _, _, first = browser.request("GET", "/manager")
    if status != 200:
        raise RuntimeError(f"the first dashboard after the purchases answered {status}")
    following = time_endpoint(browser, "dashboard after the purchases", "/manager", {}, 0, args.requests)
    progress(f"{name}: {len(codes):,} purchases through the API in {seconds:.1f} s; the first dashboard after "
             f"them {first:.0f} ms, then p50 {following.p50:.0f} ms, p95 {following.p95:.0f} ms")
    return Incremental(len(codes), seconds, first, following)


def database_bytes(url: str) -> int:
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
    finally:
        engine.dispose()


# --- Both databases, the table, the machine ----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench analytics",
        description="The manager's dashboard and the stats API at a chain's size, on SQLite and PostgreSQL, "
                    "against a 300 ms p95. See docs/performance.md.",
    )
    parser.add_argument("--members", type=int, default=1_000_000, help="members to make (default %(default)s)")
    parser.add_argument("--purchases", type=int, default=10_000_000, help="purchases (default %(default)s)")
    parser.add_argument("--days", type=int, default=730, help="days they spread over (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="synth's seed (default %(default)s)")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per endpoint (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="unrecorded requests first (default %(default)s)")
    parser.add_argument("--incremental", type=int, default=INCREMENTAL_PURCHASES,
                        help="purchases through the API after the load, 0 for none (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers (default %(default)s)")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both",
                        help="which databases (default %(default)s)")
    parser.add_argument("--db-dir", type=Path,
                        help="keep the SQLite database here and reuse it when it was made with the same "
                             "--members, --purchases, --days and --seed")
    parser.add_argument("--pg-settings", default=PG_SETTINGS,
                        help="PostgreSQL server settings (PG_EXTRA_OPTS of .ci/with-postgres; "
                             "default: %(default)s)")
    parser.add_argument("--only-current-db", action="store_true",
                        help="run once against the empty database in DATABASE_URL (what the PostgreSQL half "
                             "runs under .ci/with-postgres)")
    parser.add_argument("--results-json", type=Path, help="also write the figures here, as JSON")
    args = parser.parse_args(argv)
    for name in ("members", "requests", "days"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be 1 or more")
    for name in ("purchases", "warmup", "incremental"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} cannot be negative")
    return args


def passthrough(args: argparse.Namespace) -> list[str]:
    return ["--members", str(args.members), "--purchases", str(args.purchases), "--days", str(args.days),
            "--seed", str(args.seed), "--requests", str(args.requests), "--warmup", str(args.warmup),
            "--incremental", str(args.incremental), "--workers", str(args.workers)]


def run_postgresql_child(args: argparse.Namespace) -> DatabaseResult:
    """The PostgreSQL half under .ci/with-postgres, in a session of its own so Ctrl-C stops all of it."""
    handle, name = tempfile.mkstemp(prefix="loyalty-bench-analytics-", suffix=".json")
    os.close(handle)
    results = Path(name)
    command = [str(ROOT / ".ci" / "with-postgres"), sys.executable, "-m", "bench", "analytics", "--only-current-db",
               "--results-json", str(results), *passthrough(args)]
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env["PG_EXTRA_OPTS"] = args.pg_settings
    try:
        child = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
        try:
            status = child.wait()
        except BaseException:
            _stop_group(child)
            raise
        if results.stat().st_size == 0:
            raise RuntimeError(f"the PostgreSQL run failed (exit status {status}); its output is above")
        return DatabaseResult.from_json(json.loads(results.read_text()))
    finally:
        results.unlink(missing_ok=True)


def _stop_group(child: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(child.pid, sig)
            child.wait(timeout=CHILD_STOP_SECONDS)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def machine(results: Sequence[DatabaseResult], folder: Path) -> list[str]:
    """What docs/performance.md records about the machine."""
    cpu, memory, disk = "unknown", "unknown", "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    usage = shutil.disk_usage(folder)
    mount = max((line.split() for line in Path("/proc/mounts").read_text().splitlines()
                 if str(folder.resolve()).startswith(line.split()[1])), key=lambda fields: len(fields[1]),
                default=None) if Path("/proc/mounts").exists() else None
    if mount is not None:
        device = mount[0].rsplit("/", 1)[-1]
        rotational = Path(f"/sys/block/{device}/queue/rotational")
        kind = ("SSD" if rotational.read_text().strip() == "0" else "disk") if rotational.exists() else "disk"
        disk = f"{kind} {mount[0]} ({mount[2]}), {usage.total / 2**30:.0f} GiB, {usage.free / 2**30:.0f} GiB free"
    versions = "".join(f"; {r.version}" for r in results if r.database != "sqlite")
    return [
        f"date     {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"CPUs     {os.cpu_count()} x {cpu}",
        f"memory   {memory}",
        f"disk     {disk}",
        f"system   {platform.system()} {platform.release()} ({platform.platform(terse=True)})",
        f"Python   {platform.python_version()}, SQLite {sqlite3.sqlite_version}{versions}",
    ]


def format_generation(result: DatabaseResult) -> list[str]:
    phases = [PhaseTiming(p["name"], p["rows"], p["seconds"]) for p in result.generation]
    total = sum(p.seconds for p in phases)
    rows = result.members + result.purchases
    made = f"{'cached, ' if result.cached else ''}made {result.generated_at}"
    lines = [f"{result.database}: {result.members:,} members, {result.purchases:,} purchases "
             f"({result.first_day} to {result.last_day}; {made}; {result.database_bytes / 2**30:.1f} GiB)"]
    lines += [f"  {p.name:<11} {p.rows:>12,} rows {p.seconds:>8.1f} s {p.rate:>12,.0f} rows/s" for p in phases]
    lines.append(f"  {'total':<11} {rows:>12,} rows {total:>8.1f} s {rows / total if total else 0:>12,.0f} rows/s")
    return lines


def format_table(results: Sequence[DatabaseResult]) -> str:
    lines = [f"{'database':<11}{'endpoint':<34}{'requests':>9}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}"
             f"{'target':>8}  result"]
    for result in results:
        for timing in result.endpoints:
            verdict = "PASS" if timing.passed else ("ERRORS" if timing.errors else "FAIL")
            lines.append(f"{result.database:<11}{timing.name:<34}{len(timing.samples_ms):>9}{timing.p50:>9.0f}"
                         f"{timing.p95:>9.0f}{timing.max:>9.0f}{TARGET_MS:>8.0f}  {verdict}")
    for result in results:
        inc = result.incremental
        if inc is not None:
            lines.append(f"{result.database}: {inc.purchases:,} purchases through the API in {inc.seconds:.1f} s; "
                         f"the first dashboard after them (it folds them in) {inc.first_dashboard_ms:.0f} ms; the "
                         f"next {len(inc.following.samples_ms)}: p50 {inc.following.p50:.0f} ms, p95 "
                         f"{inc.following.p95:.0f} ms, max {inc.following.max:.0f} ms")
    return "\n".join(lines)


def cache_path(args: argparse.Namespace) -> Path | None:
    if args.db_dir is None:
        return None
    folder = Path(args.db_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"analytics-m{args.members}-p{args.purchases}-d{args.days}-s{args.seed}.sqlite3"


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM (from `timeout`, CI) unwinds like Ctrl-C, so gunicorn and PostgreSQL are stopped on the way out.
    before = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, before)


def _run(args: argparse.Namespace) -> int:
    os.environ.setdefault("SECRET_KEY", secrets.token_hex(32))
    results: list[DatabaseResult] = []
    with tempfile.TemporaryDirectory(prefix="loyalty-bench-analytics-") as folder:
        workdir = Path(folder)
        try:
            if args.only_current_db:
                url = os.environ.get("DATABASE_URL")
                if not url:
                    progress("--only-current-db needs DATABASE_URL (an empty database)")
                    return 2
                results.append(run_database(normalise_database_url(url), args, workdir, None))
            else:
                busy = busy_fraction(1.0)
                if busy is not None and busy > BUSY_WARNING:
                    progress(f"Warning: the CPUs were {busy:.0%} busy before the run started; another job on "
                             "this machine will slow every figure below.")
                if args.db in ("sqlite", "both"):
                    cache = cache_path(args)
                    if cache is not None and not cache.with_suffix(".json").exists():
                        remove_cached(cache)  # a fill that did not finish
                    path = cache or workdir / "analytics.sqlite3"
                    results.append(run_database(f"sqlite:///{path}", args, workdir, cache))
                if args.db in ("postgresql", "both"):
                    progress("postgresql: starting a throwaway, durable PostgreSQL 15 with .ci/with-postgres "
                             f"({args.pg_settings})")
                    results.append(run_postgresql_child(args))
        except KeyboardInterrupt:
            progress("\nInterrupted: servers stopped, temporary files removed.")
            return 130
        except RuntimeError as error:
            progress(f"\nThe benchmark failed: {error}")
            return 1
        if args.results_json:
            args.results_json.write_text(json.dumps({
                "machine": machine(results, workdir) if not args.only_current_db else [],
                "target_ms": TARGET_MS,
                "databases": [result.to_json() for result in results],
            }, indent=2) if not args.only_current_db else json.dumps([r.to_json() for r in results][0]))
        if args.only_current_db and args.results_json:
            return 0 if all(result.passed for result in results) else 1
        lines = ["", "Generation:"]
        for result in results:
            lines += format_generation(result)
        lines += ["", format_table(results), "", "Machine:", *(f"  {line}" for line in machine(results, workdir))]
        progress("\n".join(lines))
    failed = [r.database for r in results if not r.passed]
    if failed:
        progress(f"\nOver the {TARGET_MS:.0f} ms target (p95) or failing on: {', '.join(failed)}.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
