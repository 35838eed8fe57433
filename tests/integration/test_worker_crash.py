"""A worker killed mid-send never leads to a second provider call (issue 5)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine

from outreach.worker import enqueue
from tests.conftest import REDIS_URL, REPO_ROOT
from tests.factories import borrower_upserted, loan_updated, zone_at_local_hour
from tests.integration.conftest import serve
from tests.live import WEBHOOK_SECRET, LiveService
from tests.support import OUTREACH, clean_env
from tests.twilio_emulator import TwilioEmulator
from tests.twilio_fixtures import twilio_env

PHONE = "+15005550199"


@pytest.fixture
def emulator() -> Iterator[TwilioEmulator]:
    with TwilioEmulator() as running:
        yield running


@pytest.fixture
def live_without_worker(
    postgres_engine: Engine, redis_client: redis.Redis, emulator: TwilioEmulator
) -> Iterator[LiveService]:
    yield from serve(postgres_engine, env=twilio_env(emulator), real_senders=True, run_worker=False)


def start_worker_process(live: LiveService, emulator: TwilioEmulator) -> subprocess.Popen[bytes]:
    settings = live.services.runtime.settings
    env = clean_env(
        OUTREACH_DATABASE_URL=settings.database_url.reveal(),
        OUTREACH_REDIS_URL=REDIS_URL,
        OUTREACH_WEBHOOK_SECRET=WEBHOOK_SECRET,
        OUTREACH_PUBLIC_URL=settings.public_url,
        **twilio_env(emulator),
    )
    return subprocess.Popen(
        [*OUTREACH, "worker", "--processes", "1", "--threads", "2"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


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
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL
    assert live.get(f"/v1/messages/{message['id']}").json()["status"] == "sending"

    second = start_worker_process(live, emulator)
    try:
        # the broker redelivers the unacknowledged job to the new worker
        enqueue(live.broker, [message["id"]])
        enqueue(live.broker, [message["id"]])
        time.sleep(4)
        assert len(emulator.create_requests) == 1
        assert live.get(f"/v1/messages/{message['id']}").json()["status"] == "sending"

        # the clock's reconciler asks the provider instead of sending again
        live.services.dispatcher.stuck_after = live.services.dispatcher.stuck_after * 0
        assert live.services.dispatcher.reconcile_stuck() == 1
        reconciled = live.get(f"/v1/messages/{message['id']}").json()
        assert reconciled["status"] == "sent"
        assert reconciled["reason"] == "reconciled"
        assert reconciled["provider_id"] == emulator.messages(PHONE)[0].sid
        assert len(emulator.create_requests) == 1
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
