"""The database engine and the per-request session.

Views get the request's session from `get_session()`, call one domain function and commit once; the domain
code itself only flushes. On SQLite every transaction starts with BEGIN IMMEDIATE: the driver's default
deferred transaction lets two writers read the same balance and lose an update, and SQLite has no
SELECT ... FOR UPDATE to stop it.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, g, has_request_context, request
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
        _make_sqlite_transactional(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, **kwargs)


def _make_sqlite_transactional(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (the BEGIN below), not to the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE unless the caller declared the transaction read-only (see `begin_reading`).
        mode = connection.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")


SQLITE_BEGIN = "sqlite_begin"


class Database:
    """The engine and session factory of one app, kept in `app.extensions["db"]`."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.sessionmaker = sessionmaker(bind=self.engine, expire_on_commit=False)
        # Tests pin one session (joined to a transaction they roll back) for every request to share.
        self.pinned_session: Session | None = None

    def dispose(self) -> None:
        self.engine.dispose()


def init_app(app: Flask) -> None:
    app.extensions["db"] = Database(app.config["DATABASE_URL"])
    app.teardown_appcontext(_close_session)


def get_db() -> Database:
    db: Database = current_app.extensions["db"]
    return db


def get_session() -> Session:
    """The session of the current request or CLI command, opened on first use.

    A GET (or HEAD) never writes, so its session is declared read-only: on SQLite it then never holds the
    database's one write lock, and a dashboard's aggregates do not keep the tills waiting.
    """
    if "db_session" not in g:
        db = get_db()
        g.db_session = db.pinned_session or db.sessionmaker()
        if has_request_context() and request.method in _READ_ONLY_METHODS:
            begin_reading(g.db_session)
    session: Session = g.db_session
    return session


_READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def begin_reading(session: Session) -> None:
    """Declare that the session's transaction will only read, until `start_writing`.

    On SQLite it then begins DEFERRED and takes no write lock: readers never wait for the one database-wide
    write lock, and a purchase holds it only for its writes. Other engines are not affected.
    """
    if _is_sqlite(session) and not session.in_transaction():
        session.connection(execution_options={SQLITE_BEGIN: "DEFERRED"})


def start_writing(session: Session) -> None:
    """End a read-only transaction so the next statement begins a write transaction (BEGIN IMMEDIATE on SQLite).

    On PostgreSQL, which locks rows rather than the database, the transaction simply goes on.
    """
    if _is_sqlite(session) and session.in_transaction():
        session.commit()


def _is_sqlite(session: Session) -> bool:
    # A test's pinned session lives inside one outer transaction that must stay whole.
    return session.get_bind().dialect.name == "sqlite" and session is not get_db().pinned_session


def _close_session(_exc: BaseException | None) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is None:
        return
    if session is get_db().pinned_session:
        session.rollback()  # what the request left uncommitted, as closing would; the session lives on
    else:
        session.close()
