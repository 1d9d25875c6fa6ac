"""Bringing a program's analytics roll-ups up to date before a page, an API call or a command reads them.

The folding itself is domain code (app/domain/analytics_rollups.py); this module gives it the transaction it
needs: its own, at REPEATABLE READ on PostgreSQL (retried when a concurrent void makes it fail to serialize),
BEGIN IMMEDIATE on SQLite, and nothing at all when there is nothing to fold, so reading a dashboard does not
take SQLite's write lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.db import begin_reading, get_db
from app.domain.analytics_rollups import has_pending, rebuild_rollups, refresh_isolation, refresh_rollups
from app.models import utcnow

T = TypeVar("T")

ATTEMPTS = 3
# PostgreSQL's "could not serialize access" and "deadlock detected": the refresh met a concurrent change.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def fresh_rollups(program_id: int, reader: Session | None = None) -> bool:
    """Fold the program's newest rows in; True when there were any.

    `reader` is the request's session that will read the figures next: its read transaction is ended, so on
    SQLite its next query sees what the refresh committed.
    """
    database = get_db()
    if database.pinned_session is not None:
        # Tests: the one pinned session holds everything the test wrote, uncommitted to other connections.
        session = database.pinned_session
        folded = refresh_rollups(session, program_id, utcnow())
        if folded:
            session.commit()
        return folded
    with database.sessionmaker() as probe:
        begin_reading(probe)
        if not has_pending(probe, program_id):
            return False
    folded = _in_own_transaction(lambda session: refresh_rollups(session, program_id, utcnow()))
    if reader is not None and reader.in_transaction():
        reader.commit()
        begin_reading(reader)
    return folded


def rebuild(program_id: int) -> None:
    """Recompute the program's roll-ups from all of its rows, in a transaction of its own."""
    database = get_db()
    if database.pinned_session is not None:
        rebuild_rollups(database.pinned_session, program_id, utcnow())
        database.pinned_session.commit()
        return
    _in_own_transaction(lambda session: rebuild_rollups(session, program_id, utcnow()))


def _in_own_transaction(work: Callable[[Session], T]) -> T:
    """Run `work` in a transaction that sees one snapshot, retried when PostgreSQL cannot serialize it."""
    database = get_db()
    for attempt in range(1, ATTEMPTS + 1):
        with database.sessionmaker() as session:
            isolation = refresh_isolation(session.get_bind().dialect.name)
            if isolation:
                session.connection(execution_options={"isolation_level": isolation})
            try:
                result = work(session)
                session.commit()
                return result
            except OperationalError as error:
                session.rollback()
                if getattr(error.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES or attempt == ATTEMPTS:
                    raise
    raise AssertionError("unreachable")  # pragma: no cover
