"""The app served in this process (web, worker and clock) on the test PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from tests.conftest import REDIS_URL, truncate_all
from tests.live import LiveService, start_live_service
from tests.twilio_emulator import TwilioEmulator


def serve(postgres_engine: Engine, **options: Any) -> Iterator[LiveService]:
    """A live service on an emptied database, emptied again afterwards."""
    truncate_all(postgres_engine)
    url = postgres_engine.url.render_as_string(hide_password=False)
    yield from start_live_service(url, REDIS_URL, **options)
    truncate_all(postgres_engine)


@pytest.fixture
def live(postgres_engine: Engine, redis_client: redis.Redis) -> Iterator[LiveService]:
    yield from serve(postgres_engine)


@pytest.fixture
def emulator() -> Iterator[TwilioEmulator]:
    """The loopback Twilio emulator (a module may define its own)."""
    with TwilioEmulator() as running:
        yield running
