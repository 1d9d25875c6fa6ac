"""Writing millions of generated rows fast, on SQLite and on PostgreSQL, inside the caller's transaction.

What `flask --app wsgi synth` (app/synthetic.py) writes with. Rows are plain tuples in the order of the columns
named, with values already in the form the database keeps (timestamps as text, see `timestamp_text`): no ORM
objects and no per-row type processing, which would cost more than the database's own work.

- SQLite: executemany of the tuples (Core's `exec_driver_sql`), chunk by chunk.
- PostgreSQL: COPY ... FROM STDIN through psycopg 3, whose row formatting is in C.

Row ids that other rows point at are reserved first (`IdReserver`): under SQLite's write lock the next ones
after the largest, on PostgreSQL from the table's own sequence, so rows the app inserts meanwhile never collide
with them. Every constraint and index stays in place. References are checked row by row as any insert's are,
except on PostgreSQL when the role may skip the foreign-key triggers for its own transaction
(`skip_row_reference_checks`): they cost two thirds of a COPY's time there, so the load checks every reference
of the tables it filled afterwards, set-based, in a few scans (`check_references`), before it commits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Table, text
from sqlalchemy.exc import DBAPIError

# PostgreSQL hands out reserved ids in blocks of at most this many (one round trip each).
_ID_BLOCK = 100_000


def timestamp_text(dialect: str) -> tuple[str, str]:
    """(between date and time, after the time): how a UTC timestamp is written as text for this database.

    SQLite keeps what SQLAlchemy writes, "YYYY-MM-DD HH:MM:SS.ffffff", and the app compares those strings;
    PostgreSQL parses "YYYY-MM-DD HH:MM:SS+00" into a timestamptz.
    """
    return (" ", ".000000") if dialect == "sqlite" else (" ", "+00")


class IdReserver:
    """Ids for rows inserted with their id given, reserved so that nothing else takes them.

    SQLite (`next_ids`, the first free id of each table): the load holds the write lock (BEGIN IMMEDIATE) from
    before it read them until it commits, so the ids after the largest stay free. PostgreSQL (`reserving`, a
    connection in autocommit beside the load's own): `nextval` of the table's sequence, so the app's own inserts
    meanwhile get other ids; they come in increasing order, not always contiguous.
    """

    def __init__(self, reserving: Connection | None, next_ids: dict[str, int]) -> None:
        self._reserving = reserving
        self._next = next_ids

    def take(self, table: str, count: int) -> Sequence[int]:
        """`count` ids of `table`, in increasing order."""
        if count <= 0:
            return ()
        if self._reserving is not None:
            ids: list[int] = []
            while len(ids) < count:
                block = min(_ID_BLOCK, count - len(ids))
                ids.extend(self._reserving.execute(
                    text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"),
                    {"table": table, "n": block},
                ).scalars())
            return ids
        first = self._next[table]
        self._next[table] = first + count
        return range(first, first + count)


class RowWriter:
    """Inserts chunks of tuples into a table on one connection: COPY on PostgreSQL, executemany on SQLite."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.dialect = connection.dialect.name

    def write(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        names = ", ".join(columns)
        if self.dialect == "postgresql":
            cursor = self._connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            finally:
                cursor.close()
            return
        marks = ", ".join("?" for _ in columns)
        self._connection.exec_driver_sql(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(rows))


def skip_row_reference_checks(connection: Connection) -> bool:
    """On PostgreSQL, stop checking foreign keys row by row for the rest of this transaction, if this role may
    (session_replication_role is a superuser's setting, or one granted with GRANT SET). True when it did: then
    `check_references` must run before the commit. False on SQLite, and when the role may not.
    """
    if connection.dialect.name != "postgresql":
        return False
    try:
        with connection.begin_nested():
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
    except DBAPIError:
        return False
    return True


class DanglingReference(RuntimeError):
    """A loaded row points at a row that does not exist."""


def check_references(connection: Connection, tables: Sequence[Table]) -> None:
    """Check every foreign key of `tables` over all their rows, one anti-join each, and turn the row-by-row
    checks back on; raise DanglingReference naming the first key with a row that points nowhere."""
    connection.exec_driver_sql("SET LOCAL session_replication_role = origin")
    for table in tables:
        for key in sorted(table.foreign_keys, key=lambda k: k.parent.name):
            column, target = key.parent.name, key.column
            dangling = connection.exec_driver_sql(
                f"SELECT x.{column} FROM {table.name} AS x WHERE x.{column} IS NOT NULL AND NOT EXISTS "
                f"(SELECT 1 FROM {target.table.name} AS r WHERE r.{target.name} = x.{column}) LIMIT 1"
            ).first()
            if dangling is not None:
                raise DanglingReference(f"{table.name}.{column} = {dangling[0]} names no {target.table.name} row")


# SQLite settings for a load, on a connection outside any transaction: no fsync until the end (a crash mid-load
# loses the load, which is rolled back anyway), and a page cache large enough for the indexes being filled.
_SQLITE_LOAD_PRAGMAS = {"synchronous": "OFF", "cache_size": "-1048576", "temp_store": "MEMORY"}


@contextmanager
def sqlite_load_settings(connection: Connection) -> Iterator[None]:
    """Set SQLite's load-time pragmas on this connection for the block and restore the previous values after.

    Must be entered before the connection begins its transaction (SQLite refuses to change `synchronous` inside
    one); the journal stays WAL, as app/db.py sets it. Does nothing on other databases.
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    raw = connection.connection.driver_connection
    assert raw is not None
    before = {name: raw.execute(f"PRAGMA {name}").fetchone()[0] for name in _SQLITE_LOAD_PRAGMAS}
    for name, value in _SQLITE_LOAD_PRAGMAS.items():
        raw.execute(f"PRAGMA {name}={value}")
    try:
        yield
    finally:
        if raw.in_transaction:
            # Left in a transaction by an error: SQLite would refuse to restore `synchronous`, so the pool must
            # not hand this connection out again.
            connection.invalidate()
        else:
            for name, value in before.items():
                raw.execute(f"PRAGMA {name}={value}")


def analyze(connection: Connection, tables: Sequence[str], *, vacuum: bool) -> None:
    """Fresh planner statistics for the tables a load filled, so the first queries after it plan well.

    On PostgreSQL with `vacuum`, VACUUM ANALYZE, which also sets the visibility map (index-only scans) and needs
    a connection outside any transaction (autocommit); without it, ANALYZE in the current transaction. SQLite
    reads every index in full (a few seconds for ten million purchases): with `analysis_limit` its sample of a
    one-program database's first entries made `program_id` look selective, and the newest-members query sorted a
    million customers instead of reading ten from the end of the `created_at` index.
    """
    if connection.dialect.name == "postgresql":
        if vacuum:
            autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
            for table in tables:
                autocommit.exec_driver_sql(f"VACUUM (ANALYZE) {table}")
        else:
            for table in tables:
                connection.exec_driver_sql(f"ANALYZE {table}")
        return
    for table in tables:
        connection.exec_driver_sql(f"ANALYZE {table}")


def truncate_wal(connection: Connection) -> None:
    """SQLite: finish copying the write-ahead log into the database and empty the file, which after a load of
    gigabytes holds as many. Outside any transaction; does nothing on other databases."""
    if connection.dialect.name != "sqlite":
        return
    raw = connection.connection.driver_connection
    assert raw is not None
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
