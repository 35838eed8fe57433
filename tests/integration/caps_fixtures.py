"""Real Redis servers for the cap tests.

`private_redis` starts a redis-server of its own on a free port, so a test may FLUSHALL it
without touching anyone else's data; `shared_redis` is the server the rest of the suite uses
(OUTREACH_TEST_REDIS_URL). Locally a missing server skips; with CI=true it fails.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest
import redis

from outreach.redis_server import PrivateRedisServer, RedisServerUnavailable

POSTGRES_URL = os.environ.get(
    "OUTREACH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
from tests.conftest import IN_CI, REDIS_URL, service_missing  # noqa: E402,F401


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def libpq_url(url: str) -> str:
    """The SQLAlchemy-style URL as psycopg takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture(scope="module")
def private_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        server = PrivateRedisServer(tmp_path_factory.mktemp("redis"), port=free_port())
    except RedisServerUnavailable as error:
        service_missing("private redis-server", error)
        raise
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def private_redis(private_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(private_redis_url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def shared_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as error:
        client.close()
        service_missing("Redis", error)
    yield client
    client.close()


@pytest.fixture
def key_prefix(shared_redis: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own on the shared server, removed afterwards."""
    prefix = f"test:caps:{uuid.uuid4().hex[:12]}:"
    yield prefix
    for key in shared_redis.scan_iter(match=f"{prefix}*"):
        shared_redis.delete(key)
