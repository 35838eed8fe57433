"""A poison message in the worker (issue 21 §5): a broker message whose dispatch fails on an
error retrying cannot cure no longer fails its whole batch nor comes back every 2 minutes
forever; the message at fault is tried a bounded number of times, then dead-lettered with
its reason, in the log and the metrics."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine, text

from outreach import worker
from outreach.channels.twilio_sms import DEFAULT_RATE_WAIT_SECONDS, REQUEST_TIMEOUT_SECONDS
from outreach.domain import Channel
from tests.factories import borrower_upserted, loan_updated, zone_at_local_hour
from tests.integration.conftest import serve
from tests.live import LiveService


@pytest.fixture
def idle(postgres_engine: Engine, redis_client: redis.Redis) -> Iterator[LiveService]:
    """The live service without its worker: the test is the worker."""
    yield from serve(postgres_engine, run_worker=False)


def queued_sms(live: LiveService, name: str) -> str:
    borrower = borrower_upserted(f"b-{name}", timezone=zone_at_local_hour(14))
    assert live.post_event(borrower).status_code == 202
    assert (
        live.post_event(loan_updated(f"l-{name}", f"b-{name}", days_past_due=1)).status_code == 202
    )
    found = live.wait_for(
        lambda: live.messages(borrower_id=f"b-{name}", status="queued", channel="sms"), timeout=20
    )
    return str(found[0]["id"])


def row(engine: Engine, message_id: str) -> tuple[str, str | None, bool]:
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT status, reason, needs_human FROM messages WHERE id = :id"),
            {"id": message_id},
        ).one()
    return found[0], found[1], bool(found[2])


def test_a_poison_message_fails_alone_and_is_dead_lettered_after_a_few_attempts(
    idle: LiveService, postgres_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    poison, good = queued_sms(idle, "poison"), queued_sms(idle, "good")
    # a row the code cannot read (as a bad migration or a hand edit leaves one)
    with postgres_engine.begin() as connection:
        connection.execute(
            text("UPDATE messages SET purpose = 'no_such_purpose' WHERE id = :id"), {"id": poison}
        )
    worker.declare(idle.broker, idle.services)

    with caplog.at_level(logging.WARNING, logger="outreach.worker"):
        worker.send_messages([poison, good])  # before: raised, and the good one waited too
        assert row(postgres_engine, good)[0] == "sent"
        assert row(postgres_engine, poison)[0] == "queued"
        worker.send_messages([poison])
        assert row(postgres_engine, poison)[0] == "queued"
        worker.send_messages([poison])
    assert row(postgres_engine, poison) == ("failed", "dispatch_failed", True)
    dead = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(dead) == 1 and poison in dead[0].getMessage()
    assert "dead letter after 3 failed dispatches" in dead[0].getMessage()
    with postgres_engine.connect() as connection:
        detail = connection.execute(
            text(
                "SELECT detail FROM message_events WHERE message_id = :id ORDER BY id DESC LIMIT 1"
            ),
            {"id": poison},
        ).scalar()
    assert "dispatch failed 3 times" in str(detail)

    # never enqueued again: it is no longer queued, and one more delivery changes nothing
    worker.send_messages([poison])
    assert row(postgres_engine, poison)[0] == "failed"
    metrics = idle.get("/metrics").text
    assert f'outreach_dispatch_dead_letters_total{{channel="{Channel.SMS.value}"}} 1.0' in metrics


def test_the_time_limit_outlasts_the_longest_paced_batch() -> None:
    per_message = DEFAULT_RATE_WAIT_SECONDS + REQUEST_TIMEOUT_SECONDS
    longest = worker.IDS_PER_BROKER_MESSAGE * per_message
    broker = worker.build_broker("redis://127.0.0.1:1/0")
    try:
        (limit,) = [m for m in broker.middleware if type(m).__name__ == "TimeLimit"]
        assert limit.time_limit / 1000 > longest  # type: ignore[attr-defined]
    finally:
        broker.close()
