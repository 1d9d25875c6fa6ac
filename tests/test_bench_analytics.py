"""`python -m bench analytics` at a tiny size: it fills a database with synth, serves it with gunicorn, signs in,
times every endpoint and the incremental path, and prints the table, the generation and the machine.

On PostgreSQL (DATABASE_URL set, as .ci/run does) it runs `--only-current-db` against a scratch database made
on the test server for the test; otherwise on a SQLite file kept in --db-dir, twice, so the second run reuses it.
No figure is asserted, only that each is there and that the exit status says what the table says.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.config import normalise_database_url
from bench.__main__ import main as bench_main

SMALL = ["--members", "200", "--purchases", "1000", "--requests", "2", "--warmup", "0", "--incremental", "10"]
ENDPOINTS = ("dashboard, last 90 days", "dashboard, whole two years", "enrollments per day (API)",
             "enrollments per month (API)", "summary, last 90 days (API)", "summary, whole two years (API)")


@pytest.fixture()
def scratch_postgresql(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty database on the test PostgreSQL server, dropped afterwards; DATABASE_URL points at it."""
    server = make_url(normalise_database_url(os.environ["DATABASE_URL"]))
    name = f"bench_smoke_{secrets.token_hex(4)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    url = server.set(database=name).render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", url)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


def check_printout(out: str, database: str, status: int) -> None:
    rows = re.findall(rf"^{database} +(.+?) +(\d+) +(\d+) +(\d+) +(\d+) +300  (PASS|FAIL|ERRORS)$", out, re.MULTILINE)
    assert [row[0] for row in rows] == list(ENDPOINTS), out
    assert all(int(row[1]) == 2 for row in rows)
    assert all(int(row[2]) <= int(row[3]) <= int(row[4]) for row in rows)
    assert status == (0 if all(row[5] == "PASS" for row in rows) else 1)
    assert re.search(rf"^{database}: 200 members, 1,000 purchases \(\d{{4}}-\d\d-\d\d to ", out, re.MULTILINE)
    for phase in ("members", "purchases", "cards", "roll-ups", "analyze", "total"):
        assert re.search(rf"^  {phase} +[\d,]+ rows +\d+\.\d s +[\d,]+ rows/s$", out, re.MULTILINE), phase
    assert re.search(rf"^{database}: 10 purchases through the API in \d+\.\d s; the first dashboard after them "
                     r"\(it folds them in\) \d+ ms; the next 2: p50", out, re.MULTILINE)
    for line in ("CPUs", "memory", "disk", "system", "Python"):
        assert re.search(rf"^  {line} +\S", out, re.MULTILINE), line


@pytest.mark.skipif(not os.environ.get("DATABASE_URL"), reason="the SQLite run below covers SQLite")
def test_analytics_bench_on_postgresql(scratch_postgresql: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = bench_main(["analytics", "--only-current-db", *SMALL])
    out = capsys.readouterr().out
    check_printout(out, "postgresql", status)


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="the PostgreSQL run above covers this server")
def test_analytics_bench_on_sqlite_reuses_its_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = bench_main(["analytics", "--db", "sqlite", "--db-dir", str(tmp_path), *SMALL])
    out = capsys.readouterr().out
    check_printout(out, "sqlite", status)
    assert "reusing" not in out
    assert len(list(tmp_path.glob("analytics-m200-p1000-d730-s1.*"))) >= 3  # database, keys, credentials

    again = bench_main(["analytics", "--db", "sqlite", "--db-dir", str(tmp_path), *SMALL])
    out = capsys.readouterr().out
    assert re.search(r"^sqlite: reusing .*analytics-m200-p1000-d730-s1\.sqlite3 \(filled ", out, re.MULTILINE)
    check_printout(out, "sqlite", again)
