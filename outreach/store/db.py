"""Engines and sessions for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson
from sqlalchemy import Engine, Select, Table, bindparam, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from outreach.errors import StoreUnavailable

Q = TypeVar("Q", bound=Select[Any])


def json_text(value: Any) -> str:
    """A JSON column's value as stored: orjson writes it ten times faster than the standard
    library (the inbox stores every event); keys that are not strings are written as
    strings, as the standard library writes them."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


# how every engine writes and reads JSON columns
JSON_CODEC: dict[str, Any] = {"json_serializer": json_text, "json_deserializer": orjson.loads}


# how a served store's SQLite runs: durable (WAL, fsync at every commit: "stored before the
# 202" must survive a power cut, which NORMAL's fsync only at checkpoints does not promise),
# any number of readers
DURABLE_SQLITE = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)
# how a simulation's throw-away SQLite runs: one writer, nothing to survive a crash; pages that
# hold a message row with its rendered email whole (with the default 4 KiB each such row
# spills into overflow pages that every later status change rewrites)
THROWAWAY_SQLITE = (
    "PRAGMA page_size=8192",
    "PRAGMA journal_mode=MEMORY",
    "PRAGMA synchronous=OFF",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA cache_size=-16384",
    "PRAGMA foreign_keys=ON",
)


# seconds to reach PostgreSQL and be let in: past it, a connection attempt fails (503) instead
# of waiting on a server that does not answer
DEFAULT_CONNECT_TIMEOUT = 5.0
# seconds one statement may run on PostgreSQL (0: unbounded); generous, the longest of the
# service's own (a campaign's segment read on a large book) take a few seconds
DEFAULT_STATEMENT_TIMEOUT = 60.0
# seconds sent data may stay unacknowledged, and keepalive probes on an idle connection: a
# server whose packets are dropped (a blackhole, a vanished host) is noticed on a pooled
# connection in seconds, not after the kernel's 15 minutes of retransmissions
TCP_USER_TIMEOUT = 15.0
KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
# seconds a request waits for a pooled connection while every one is busy
POOL_TIMEOUT = 10.0

# what a database that cannot be reached (or cannot answer in time) raises through SQLAlchemy
UNREACHABLE = (OperationalError, InterfaceError, PoolTimeout)


def postgres_connect_args(
    connect_timeout: float, statement_timeout: float, url_options: str | None = None
) -> dict[str, Any]:
    """libpq's connection parameters: the timeouts above (`statement_timeout` as a session
    setting of every connection), after any `options` the URL itself gives (a search path,
    say: a connect argument would replace them)."""
    args: dict[str, Any] = {
        "connect_timeout": max(1, round(connect_timeout)),
        "tcp_user_timeout": int(TCP_USER_TIMEOUT * 1000),
        **KEEPALIVE,
    }
    options = [url_options] if url_options else []
    if statement_timeout > 0:
        options.append(f"-c statement_timeout={int(statement_timeout * 1000)}")
    if options:
        args["options"] = " ".join(options)
    return args


def _url_options(url: URL) -> str | None:
    given = url.query.get("options")
    if isinstance(given, tuple):
        return " ".join(given)
    return given


def make_engine(
    database_url: str,
    *,
    pool_size: int = 10,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        return sqlite_engine(
            url,
            DURABLE_SQLITE,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_pre_ping=True,
            hide_parameters=True,
        )
    return create_engine(
        url,
        # a statement's parameters (phone numbers, names, message text) stay out of the
        # errors that reach logs and answers
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_timeout=POOL_TIMEOUT,
        connect_args=postgres_connect_args(connect_timeout, statement_timeout, _url_options(url)),
        **JSON_CODEC,
    )


def sqlite_engine(url: URL | str, pragmas: Sequence[str], **options: Any) -> Engine:
    """The one SQLite set-up: these pragmas on every connection, and the write lock taken at
    BEGIN (pysqlite's own transaction handling defers BEGIN; taking the lock then means two
    writers never deadlock on a lock upgrade)."""
    engine = create_engine(url, **options, **JSON_CODEC)

    def configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    event.listen(engine, "connect", configure)
    event.listen(engine, "begin", _begin_immediate)
    return engine


def _begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on any error.

    A database that cannot be reached surfaces as StoreUnavailable, so callers answer 503 or
    retry rather than pretend something was stored.
    """
    session = factory()
    try:
        yield session
        session.commit()
    except UNREACHABLE as error:
        session.rollback()
        cause = getattr(error, "orig", None) or error
        raise StoreUnavailable(f"database unavailable: {type(cause).__name__}") from error
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def takes_row_locks(session: Session) -> bool:
    """Whether SELECT … FOR UPDATE means anything here: PostgreSQL locks rows; SQLite takes
    the whole database's write lock at BEGIN (`_begin_immediate`), so there is nothing to add."""
    return session.get_bind().dialect.name == "postgresql"


class Lockable(Generic[Q]):
    """A query and its FOR UPDATE twin, both built once: the one way to lock rows.

    The two are kept apart rather than built per call because a statement's compiled form is
    cached by its identity and shape; `.of(session)` picks the one the store can honour."""

    __slots__ = ("locked", "plain")

    def __init__(self, query: Q) -> None:
        self.plain = query
        self.locked: Q = query.with_for_update()

    def of(self, session: Session, *, lock: bool = True) -> Q:
        return self.locked if lock and takes_row_locks(session) else self.plain


class InsertIgnoringDuplicates:
    """INSERT … ON CONFLICT (key) DO NOTHING [RETURNING …], built once per dialect: the one
    upsert builder. Parameters are bound by column name, so many rows go to the driver's
    executemany as one prepared statement."""

    def __init__(
        self,
        table: Table,
        columns: Sequence[str],
        key: Sequence[str],
        returning: Sequence[str] = (),
    ) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.key = tuple(key)
        self.returning = tuple(returning)
        self._built: dict[str, Any] = {}

    def of(self, session: Session) -> Any:
        dialect = session.get_bind().dialect.name
        statement = self._built.get(dialect)
        if statement is None:
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            statement = (
                insert(self.table)
                .values({name: bindparam(name) for name in self.columns})
                .on_conflict_do_nothing(index_elements=list(self.key))
            )
            if self.returning:
                statement = statement.returning(*(self.table.c[n] for n in self.returning))
            self._built[dialect] = statement
        return statement
