"""A worker killed mid-send: nothing is sent twice, nothing is lost (issues 5 and 16).

Workers are real `outreach worker` processes; the web process and the clock run in the test
process (tests/live.py), all on the test PostgreSQL and Redis, SMS through the real `twilio`
client against the loopback emulator. The workers' lease is the shortest allowed, so that a
dead one is known in seconds rather than the production default's minute.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select

from outreach.store import models as m
from outreach.worker import enqueue
from tests.conftest import REDIS_URL, REPO_ROOT
from tests.factories import borrower_upserted, loan_updated, zone_at_local_hour
from tests.integration.conftest import serve
from tests.live import LINK_SECRET, WEBHOOK_SECRET, LiveService
from tests.support import OUTREACH, clean_env
from tests.twilio_emulator import TwilioEmulator
from tests.twilio_fixtures import twilio_env

PHONE = "+15005550199"
LEASE_SECONDS = "8"
# SMS segments per second across all workers: a batch of 20 is paced over a few seconds, so a
# worker is killed while it still holds messages it has not handed over
SMS_RATE = "10"


@pytest.fixture
def emulator() -> Iterator[TwilioEmulator]:
    with TwilioEmulator() as running:
        yield running


def service_env(emulator: TwilioEmulator) -> dict[str, str]:
    return {
        **twilio_env(emulator),
        "OUTREACH_WORKER_LEASE_SECONDS": LEASE_SECONDS,
        "OUTREACH_SMS_RATE": SMS_RATE,
    }


@pytest.fixture
def live_without_worker(
    postgres_engine: Engine, redis_client: redis.Redis, emulator: TwilioEmulator
) -> Iterator[LiveService]:
    yield from serve(
        postgres_engine, env=service_env(emulator), real_senders=True, run_worker=False
    )


def start_worker_process(
    live: LiveService, emulator: TwilioEmulator, threads: int = 2
) -> subprocess.Popen[bytes]:
    settings = live.services.runtime.settings
    env = clean_env(
        OUTREACH_DATABASE_URL=settings.database_url.reveal(),
        OUTREACH_REDIS_URL=REDIS_URL,
        OUTREACH_WEBHOOK_SECRET=WEBHOOK_SECRET,
        OUTREACH_LINK_SECRET=LINK_SECRET,
        OUTREACH_PUBLIC_URL=settings.public_url,
        **service_env(emulator),
    )
    return subprocess.Popen(
        [*OUTREACH, "worker", "--processes", "1", "--threads", str(threads)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def post_all(live: LiveService, events: list[dict[str, Any]]) -> None:
    for event in events:
        assert live.post_event(event, settle=False).status_code == 202
    live.wait_applied([event["id"] for event in events], timeout=60)


def statuses(live: LiveService, due_by: dt.datetime) -> dict[str, str]:
    """message id -> status of every message due by `due_by` (the later steps of each cadence
    are planned too)."""
    table = m.Message.__table__
    query = select(table.c.id, table.c.status).where(table.c.send_at <= due_by)
    with live.services.runtime.sessions() as session:
        return {message_id: status for message_id, status in session.execute(query)}


def test_a_worker_killed_mid_send_does_not_call_the_provider_again(
    live_without_worker: LiveService, emulator: TwilioEmulator
) -> None:
    live = live_without_worker
    # the provider takes its time answering: the worker dies while it waits
    emulator.script(PHONE, delay=30)
    live.post_event(borrower_upserted("b-crash", timezone=zone_at_local_hour(14), phones=[PHONE]))
    live.post_event(loan_updated("l-crash", "b-crash", days_past_due=1))

    first = start_worker_process(live, emulator)
    try:
        live.wait_for(lambda: len(emulator.create_requests) == 1, timeout=30)
        message = live.wait_for(
            lambda: next(iter(live.messages(loan_id="l-crash", status="sending")), None),
            timeout=10,
        )
    finally:
        kill(first)
    assert live.get(f"/v1/messages/{message['id']}").json()["status"] == "sending"

    second = start_worker_process(live, emulator)
    try:
        # the broker redelivers the unacknowledged job to the new worker
        enqueue(live.broker, [message["id"]])
        enqueue(live.broker, [message["id"]])
        # the clock learns that the first worker is gone and asks the provider, which has it
        reconciled = live.wait_for(
            lambda: (
                found
                if (found := live.get(f"/v1/messages/{message['id']}").json())["status"]
                != "sending"
                else None
            ),
            timeout=60,
        )
        assert reconciled["status"] == "sent"
        assert reconciled["reason"] == "reconciled"
        assert reconciled["provider_id"] == emulator.messages(PHONE)[0].sid
        assert len(emulator.create_requests) == 1
    finally:
        stop(second)


def test_every_borrower_gets_exactly_one_sms_when_a_worker_is_killed_mid_batch(
    live_without_worker: LiveService, emulator: TwilioEmulator
) -> None:
    live = live_without_worker
    phones = [f"+1500555{1000 + index:04d}" for index in range(200)]
    zone = zone_at_local_hour(14)
    post_all(
        live,
        [
            borrower_upserted(f"b-{index}", timezone=zone, phones=[phone])
            for index, phone in enumerate(phones)
        ],
    )
    post_all(
        live,
        [loan_updated(f"l-{index}", f"b-{index}", days_past_due=1) for index in range(200)],
    )
    # all 200 first notices are due now; the clock releases them before any worker runs
    due_by = dt.datetime.now(dt.UTC)
    live.wait_for(lambda: len(statuses(live, due_by)) == 200, timeout=30)

    # alone at first, so that every message `sending` when it dies is its own
    doomed = start_worker_process(live, emulator)
    survivor: subprocess.Popen[bytes] | None = None
    try:
        live.wait_for(lambda: len(emulator.create_requests) >= 20, timeout=60, interval=0.01)
        live.wait_for(
            lambda: "sending" in statuses(live, due_by).values(), timeout=30, interval=0.01
        )
        kill(doomed)
        held_at_death = {
            message_id
            for message_id, status in statuses(live, due_by).items()
            if status == "sending"
        }
        assert held_at_death
        # the survivor paces the rest over half a minute, while the clock reconciles what
        # the dead worker held: its own messages, held by a live worker, are left to it
        survivor = start_worker_process(live, emulator)
        live.wait_for(
            lambda: set(statuses(live, due_by).values()) == {"sent"}, timeout=180, interval=0.5
        )
    finally:
        if doomed.poll() is None:
            kill(doomed)
        if survivor is not None:
            stop(survivor)

    sms_per_phone = Counter(message.to for message in emulator.messages())
    assert sorted(sms_per_phone) == sorted(phones)
    assert set(sms_per_phone.values()) == {1}
    assert len(emulator.create_requests) == 200
    # what the dead worker left `sending` was reconciled: not failed, not left `sending`
    for message_id in held_at_death:
        reconciled = live.get(f"/v1/messages/{message_id}").json()
        assert reconciled["status"] == "sent"
        assert "reconciled" in [step["reason"] for step in reconciled["events"]]
