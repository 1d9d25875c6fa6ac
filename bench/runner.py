"""One database's benchmark: seed it, serve it with gunicorn, load both endpoints, audit the ledger."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app import ROOT
from app.db import make_engine
from bench.load import PURCHASES, REFERENCE, LoadPlan, run_load
from bench.report import DatabaseReport, EndpointFigures
from bench.seed import seed_database
from bench.server import ServerOptions, gunicorn_server, tail


@dataclass(frozen=True)
class BenchOptions:
    """Everything a run is told on the command line, passed on unchanged to the PostgreSQL run."""

    seconds: float = 20.0
    requests: int = 20_000
    warmup: float = 3.0
    clients: int = 16
    client_processes: int = 4
    cards: int = 1_000
    server: ServerOptions = ServerOptions()


def describe_database(database_url: str) -> tuple[str, str, str]:
    """(short name, version, the durability settings that matter) of the database at `database_url`.

    Read through the app's own engine, so SQLite shows the pragmas app/db.py sets on every connection.
    """
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                journal = connection.exec_driver_sql("PRAGMA journal_mode").scalar_one()
                synchronous = connection.exec_driver_sql("PRAGMA synchronous").scalar_one()
                level = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(int(synchronous), synchronous)
                return "sqlite", f"SQLite {sqlite3.sqlite_version}", f"journal_mode={journal}, synchronous={level}"
            version = connection.exec_driver_sql("SHOW server_version").scalar()
            settings = ", ".join(
                f"{name}={connection.exec_driver_sql(f'SHOW {name}').scalar()}"
                for name in ("fsync", "synchronous_commit", "full_page_writes")
            )
            return "postgresql", f"PostgreSQL {version}", settings
    finally:
        engine.dispose()


def run_database(database_url: str, options: BenchOptions, progress: Callable[[str], None]) -> DatabaseReport:
    """The whole benchmark on one empty database; temporary files are removed whatever happens."""
    name, version, settings = describe_database(database_url)
    workdir = Path(tempfile.mkdtemp(prefix=f"loyalty-bench-{name}-"))
    try:
        progress(f"{name}: {version} ({settings}); migrating and enrolling {options.cards:,} cards")
        seed = seed_database(database_url, workdir / "signing-keys", options.cards)
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SIGNING_KEYS_DIR": str(workdir / "signing-keys"),
            "SECRET_KEY": os.environ["SECRET_KEY"],
            "BENCH_REFERENCE_ENDPOINT": "1",
        }
        log_path = workdir / "gunicorn.log"
        progress(f"{name}: starting {options.server.describe()} on 127.0.0.1")
        figures: dict[str, EndpointFigures] = {}
        with gunicorn_server(env, options.server, log_path) as server:
            for endpoint in (PURCHASES, REFERENCE):
                plan = LoadPlan(
                    endpoint=endpoint,
                    host=server.host,
                    port=server.port,
                    api_key=seed.api_key,
                    cards=seed.cards,
                    clients=options.clients,
                    processes=options.client_processes,
                    warmup_seconds=options.warmup,
                    seconds=options.seconds,
                    max_requests=options.requests,
                )
                progress(f"{name}: {endpoint}: {options.warmup:g} s warm-up, then up to "
                         f"{options.requests:,} requests or {options.seconds:g} s, {options.clients} clients")
                result = run_load(plan, progress, server.pid)
                server.check_alive()
                figures[endpoint] = EndpointFigures.from_load(result)
                f = figures[endpoint]
                progress(f"{name}: {endpoint}: {f.rate:.1f} req/s, p50 {f.p50_ms:.1f} ms, "
                         f"p99 {f.p99_ms:.1f} ms, {f.errors} errors")
        if any(f.errors or f.warmup_errors for f in figures.values()):
            progress(f"{name}: gunicorn's log ends:\n{tail(log_path)}")
        progress(f"{name}: flask --app wsgi ledger check")
        ledger = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "ledger", "check"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False,
        )
        ledger_output = (ledger.stdout + ledger.stderr).strip()
        progress(f"{name}: {ledger_output} (exit status {ledger.returncode})")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return DatabaseReport(
        database=name,
        version=version,
        settings=settings,
        server=options.server.describe(),
        clients=options.clients,
        cards=options.cards,
        endpoints=figures,
        ledger_ok=ledger.returncode == 0,
        ledger_output=ledger_output,
    )
