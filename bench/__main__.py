"""`python -m bench` (`make bench`): the purchase benchmark on SQLite and on PostgreSQL in one run.

SQLite runs in this process on a fresh file in a temporary folder. PostgreSQL runs in a child,
`.ci/with-postgres python -m bench --only-current-db`, so the throwaway server (started with
PG_EXTRA_OPTS="", i.e. durable: fsync and synchronous_commit on) lives exactly as long as its run. The child
hands its figures back in a JSON file and this process prints one table for both.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from app import ROOT
from app.config import normalise_database_url
from bench.load import busy_fraction
from bench.report import DatabaseReport, format_table
from bench.runner import BenchOptions, run_database
from bench.server import ServerOptions

DATABASES = ("sqlite", "postgresql")
CHILD_STOP_SECONDS = 60.0
IDLE_CHECK_SECONDS = 1.0
BUSY_WARNING = 0.10
GTHREAD_THREADS = 4


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = BenchOptions()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Committed purchases against the bare reference endpoint, under gunicorn on 127.0.0.1, "
        "on SQLite and PostgreSQL. See docs/performance.md.",
    )
    parser.add_argument("--seconds", type=float, default=defaults.seconds,
                        help="measured time per endpoint and database (default %(default)s)")
    parser.add_argument("--requests", type=int, default=defaults.requests,
                        help="at most this many measured requests per endpoint and database "
                        "(default %(default)s)")
    parser.add_argument("--warmup", type=float, default=defaults.warmup,
                        help="seconds of unrecorded warm-up before each measurement (default %(default)s)")
    parser.add_argument("--clients", type=int, default=defaults.clients,
                        help="concurrent clients, each on its own connection, kept alive when the server "
                        "allows (default %(default)s)")
    parser.add_argument("--client-processes", type=int, default=defaults.client_processes,
                        help="processes the clients are spread over (default %(default)s)")
    parser.add_argument("--cards", type=int, default=defaults.cards,
                        help="enrolled cards the clients pick from at random (default %(default)s)")
    parser.add_argument("--workers", type=int, default=defaults.server.workers,
                        help="gunicorn worker processes (default %(default)s)")
    parser.add_argument("--worker-class", choices=("sync", "gthread"), default=defaults.server.worker_class,
                        help="gunicorn worker class (default %(default)s)")
    parser.add_argument("--threads", type=int,
                        help=f"threads per gthread worker (default {GTHREAD_THREADS}; sync workers have one)")
    parser.add_argument("--db", choices=(*DATABASES, "both"), default="both",
                        help="which databases to run (default %(default)s)")
    parser.add_argument("--only-current-db", action="store_true",
                        help="run once, against the empty database in DATABASE_URL "
                        "(what the PostgreSQL half runs under .ci/with-postgres)")
    parser.add_argument("--results-json", type=Path, help="also write the figures here, as JSON")
    args = parser.parse_args(argv)
    if args.worker_class == "sync":
        if args.threads not in (None, 1):
            parser.error("--threads needs --worker-class gthread (a sync worker has one thread)")
        args.threads = 1
    elif args.threads is None:
        args.threads = GTHREAD_THREADS
    for name in ("seconds", "requests", "clients", "client_processes", "cards", "workers", "threads"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be more than zero")
    if args.warmup < 0:
        parser.error("--warmup cannot be negative")
    return args


def options_from(args: argparse.Namespace) -> BenchOptions:
    return BenchOptions(
        seconds=args.seconds,
        requests=args.requests,
        warmup=args.warmup,
        clients=args.clients,
        client_processes=args.client_processes,
        cards=args.cards,
        server=ServerOptions(workers=args.workers, worker_class=args.worker_class, threads=args.threads),
    )


def passthrough(args: argparse.Namespace) -> list[str]:
    """The options that shape a run, as arguments for the PostgreSQL child."""
    return [
        "--seconds", str(args.seconds), "--requests", str(args.requests), "--warmup", str(args.warmup),
        "--clients", str(args.clients), "--client-processes", str(args.client_processes),
        "--cards", str(args.cards), "--workers", str(args.workers), "--worker-class", args.worker_class,
        "--threads", str(args.threads),
    ]


def progress(message: str) -> None:
    print(message, flush=True)


def machine_description() -> list[str]:
    """The lines docs/performance.md records about the machine."""
    cpu_model = "unknown"
    memory = "unknown"
    try:
        cpu_model = next(
            line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        kib = next(
            int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return [
        f"date     {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"CPUs     {os.cpu_count()} x {cpu_model}",
        f"memory   {memory}",
        f"system   {platform.system()} {platform.release()}",
        f"Python   {platform.python_version()}, SQLite {sqlite3.sqlite_version}",
    ]


def run_postgresql_child(args: argparse.Namespace) -> DatabaseReport:
    """Run the PostgreSQL half under .ci/with-postgres and read back its figures."""
    handle, name = tempfile.mkstemp(prefix="loyalty-bench-", suffix=".json")
    os.close(handle)
    results = Path(name)
    command = [str(ROOT / ".ci" / "with-postgres"), sys.executable, "-m", "bench", "--only-current-db",
               "--results-json", str(results), *passthrough(args)]
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env["PG_EXTRA_OPTS"] = ""  # a durable server: fsync, full_page_writes and synchronous_commit stay on
    try:
        # Its own session, so that stopping it is our decision: on Ctrl-C we pass SIGINT to its whole group
        # and wait, letting the bench stop gunicorn and with-postgres stop PostgreSQL and delete its files.
        child = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
        try:
            status = child.wait()
        except BaseException:
            _stop_child_group(child)
            raise
        if results.stat().st_size == 0:
            raise RuntimeError(f"the PostgreSQL run failed (exit status {status}); its output is above")
        (report,) = json.loads(results.read_text())
        return DatabaseReport.from_json(report)
    finally:
        results.unlink(missing_ok=True)


def _stop_child_group(child: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=CHILD_STOP_SECONDS)
            return
        except subprocess.TimeoutExpired:
            progress(f"the PostgreSQL run did not stop within {CHILD_STOP_SECONDS:.0f} s; killing it")


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_databases(args: argparse.Namespace, options: BenchOptions, reports: list[DatabaseReport]) -> None:
    """SQLite here, then PostgreSQL in a child; each report is added as soon as it is in."""
    if args.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="loyalty-bench-sqlite-") as folder:
            url = f"sqlite:///{Path(folder) / 'bench.sqlite3'}"
            reports.append(run_database(url, options, progress))
    if args.db in ("postgresql", "both"):
        progress("postgresql: starting a throwaway, durable PostgreSQL 15 with .ci/with-postgres")
        reports.append(run_postgresql_child(args))


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["passes"]:
        # Imported here so that the purchase benchmark never depends on the pass builder's imports.
        from bench.passes import main as passes_main

        return passes_main(arguments[1:])
    if arguments[:1] == ["analytics"]:
        from bench.analytics import main as analytics_main

        return analytics_main(arguments[1:])
    args = parse_args(argv)
    # A SIGTERM (from `timeout`, CI) unwinds like Ctrl-C, so every server is stopped on the way out.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # The app reads SECRET_KEY at start-up; giving one here keeps the run out of the instance folder.
    os.environ.setdefault("SECRET_KEY", secrets.token_hex(32))
    options = options_from(args)
    reports: list[DatabaseReport] = []
    idle_check: float | None = None
    status = 0
    try:
        if args.only_current_db:
            url = os.environ.get("DATABASE_URL")
            if not url:
                progress("--only-current-db needs DATABASE_URL (an empty database)")
                return 2
            reports.append(run_database(normalise_database_url(url), options, progress))
        else:
            idle_check = busy_fraction(IDLE_CHECK_SECONDS)
            if idle_check is not None and idle_check > BUSY_WARNING:
                progress(f"Warning: the CPUs were {idle_check:.0%} busy before the run started; another job "
                         "on this machine will lower every figure below.")
            run_databases(args, options, reports)
    except KeyboardInterrupt:
        progress("\nInterrupted: servers stopped, temporary files removed.")
        return 130
    except RuntimeError as error:  # gunicorn would not start or died, the PostgreSQL run failed, ...
        progress(f"\nThe benchmark failed: {error}")
        status = 1
    if args.results_json and reports:
        args.results_json.write_text(json.dumps([report.to_json() for report in reports], indent=2))
    if not args.only_current_db:
        lines = machine_description()
        if idle_check is not None:
            lines.append(f"busy     {idle_check:.0%} of all CPUs in the second before the run")
        progress("\n" + "\n".join(["Machine:", *(f"  {line}" for line in lines)]))
    if reports and not (args.only_current_db and args.results_json):  # else the parent prints it
        progress("\n" + format_table(reports))
    if not all(report.valid for report in reports):
        progress("\nThe run is not valid: some requests failed or the ledger does not balance (see above).")
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
