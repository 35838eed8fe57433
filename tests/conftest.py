"""Shared fixtures: real PostgreSQL, real Redis, and SQLite, isolated per test.

Locally a missing PostgreSQL or Redis skips the tests that need it; in CI (CI=true) it fails
them, because a suite that silently skips the real services proves nothing.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from outreach.store.db import make_engine
from outreach.store.migrate import upgrade
from outreach.store.models import Base
from tests.support import claim_redis_database

REPO_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "OUTREACH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


REDIS_URL = os.environ.get("OUTREACH_TEST_REDIS_URL") or claim_redis_database()
# child processes of this run (spawned workers, helpers) import this module again: same database
os.environ["OUTREACH_TEST_REDIS_URL"] = REDIS_URL
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_missing(what: str, error: object) -> None:
    message = f"{what} is not reachable ({type(error).__name__}: {error})"
    if IN_CI:
        pytest.fail(f"{message}; CI requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL server, migrated, dropped at the end."""
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"outreach_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:
        admin.dispose()
        service_missing("PostgreSQL", error)
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_engine(postgres_server_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_server_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def truncate_all(engine: Engine) -> None:
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        sqlite_engine = make_engine(f"sqlite:///{tmp_path / 'outreach.db'}")
        upgrade(sqlite_engine)
        yield sqlite_engine
        sqlite_engine.dispose()
        return
    pg_engine: Engine = request.getfixturevalue("postgres_engine")
    truncate_all(pg_engine)
    yield pg_engine
    truncate_all(pg_engine)


@contextlib.contextmanager
def emptied_redis() -> Iterator[redis.Redis]:
    """A client of the real Redis server, on the run's own database, emptied before and
    after (a skip, or in CI a failure, when the server does not answer)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as error:
        client.close()
        service_missing("Redis", error)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """The real Redis server, on a database of its own, emptied before and after."""
    with emptied_redis() as client:
        yield client


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI no test may skip, whatever asked for it: a skip there is a failure."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every dependency is required: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """A module that skips itself while being collected (a module-level skip, a missing
    import) is a failure in CI too."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if IN_CI and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every dependency is required: {report.longrepr}"
