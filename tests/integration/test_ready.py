"""`GET /ready` checks each dependency itself: the broker by a round trip of its own, not by
the Redis client's ping (issue 16 §6)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine

from outreach.api.app import create_app
from outreach.runtime import Runtime
from outreach.settings import load_settings
from outreach.wiring import Services
from outreach.worker import build_broker
from tests.conftest import REDIS_URL, REPO_ROOT
from tests.support import free_port

with warnings.catch_warnings():
    # starlette asks for `httpx2`; the deprecated path through httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.fixture
def services(postgres_engine: Engine, redis_client: redis.Redis) -> Iterator[Services]:
    settings = load_settings(
        {
            "OUTREACH_DATABASE_URL": postgres_engine.url.render_as_string(hide_password=False),
            "OUTREACH_REDIS_URL": REDIS_URL,
            "OUTREACH_WEBHOOK_SECRET": "ready-test-secret",
            "OUTREACH_OPS_TOKENS": "ready-test-token:admin",
            "OUTREACH_POLICY": str(REPO_ROOT / "schedules" / "default.yaml"),
        }
    )
    runtime = Runtime.start(settings)
    try:
        yield Services.build(runtime)
    finally:
        runtime.close()


def ready(services: Services, broker_url: str) -> tuple[int, dict[str, str]]:
    broker = build_broker(broker_url)
    try:
        with TestClient(create_app(services, broker)) as client:
            response = client.get("/ready")
    finally:
        broker.close()
    return response.status_code, response.json()["checks"]


def test_ready_names_the_broker_when_its_redis_is_unreachable(services: Services) -> None:
    # the broker's Redis is a port nothing listens on; the caps' and locks' Redis answers
    status, checks = ready(services, f"redis://127.0.0.1:{free_port()}/0")
    assert status == 503
    assert checks["redis"] == "ok" and checks["database"] == "ok"
    assert checks["broker"].startswith("unreachable: ")
    # the same service with a broker that answers is ready
    assert ready(services, REDIS_URL) == (200, {"database": "ok", "redis": "ok", "broker": "ok"})


def services_on(database_url: str, redis_url: str) -> Services:
    settings = load_settings(
        {
            "OUTREACH_DATABASE_URL": database_url,
            "OUTREACH_REDIS_URL": redis_url,
            "OUTREACH_WEBHOOK_SECRET": "ready-test-secret",
            "OUTREACH_OPS_TOKENS": "ready-test-token:admin",
            "OUTREACH_POLICY": str(REPO_ROOT / "schedules" / "default.yaml"),
        }
    )
    return Services.build(Runtime.start(settings))


def test_ready_names_redis_when_it_is_unreachable(postgres_engine: Engine) -> None:
    # caps, locks, the reply journal and the broker all on a Redis nothing listens on
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    services = services_on(postgres_engine.url.render_as_string(hide_password=False), dead_redis)
    try:
        status, checks = ready(services, dead_redis)
    finally:
        services.runtime.close()
    assert status == 503
    assert checks["database"] == "ok"
    assert checks["redis"].startswith("unreachable: ")
    assert checks["broker"].startswith("unreachable: ")


def test_ready_names_the_database_when_it_is_unreachable(redis_client: redis.Redis) -> None:
    dead_database = f"postgresql://postgres@127.0.0.1:{free_port()}/outreach"
    services = services_on(dead_database, REDIS_URL)
    try:
        status, checks = ready(services, REDIS_URL)
    finally:
        services.runtime.close()
    assert status == 503
    assert checks["database"].startswith("unreachable: ")
    assert checks["redis"] == "ok" and checks["broker"] == "ok"
