"""Engines and sessions for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from outreach.errors import StoreUnavailable


def json_text(value: Any) -> str:
    """A JSON column's value as stored: orjson writes it ten times faster than the standard
    library (the inbox stores every event); keys that are not strings are written as
    strings, as the standard library writes them."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


# how every engine writes and reads JSON columns
JSON_CODEC: dict[str, Any] = {"json_serializer": json_text, "json_deserializer": orjson.loads}


def make_engine(database_url: str, *, pool_size: int = 10) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_pre_ping=True,
            **JSON_CODEC,
        )
        event.listen(engine, "connect", _configure_sqlite)
        # pysqlite's own transaction handling defers BEGIN; take the write lock at BEGIN instead
        # so two writers never deadlock on a lock upgrade.
        event.listen(engine, "begin", _begin_immediate)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        **JSON_CODEC,
    )


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


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
    except (OperationalError, InterfaceError) as error:
        session.rollback()
        raise StoreUnavailable(f"database unavailable: {type(error.orig).__name__}") from error
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
