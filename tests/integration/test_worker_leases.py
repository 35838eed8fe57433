"""Worker leases on the real Redis: a message held by a live worker is never reconciled, however
long its batch takes; once its worker stops beating it is, and what the worker would still
do with it is refused (outreach/worker_leases.py).

The dispatcher is the simulator's (SQLite, virtual clock, simulated provider) with a lease of
a fraction of a second, so that "gone for a whole lease" passes in real seconds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
import redis

from outreach.channels.base import Outgoing, Receipt, Sender, ensure_still_held
from outreach.channels.smtp_email import SmtpSender
from outreach.domain import Channel
from outreach.service.apply import ingest_many
from outreach.service.dispatch import Dispatcher
from outreach.service.parse import parse_event
from outreach.settings import Secret, load_settings
from outreach.sim.engine import SimulationEnvironment as Environment
from outreach.sim.engine import environment
from outreach.store import models as m
from outreach.store.db import transaction
from outreach.store.messages import claim_due
from outreach.worker_leases import LeaseWatch, WorkerLease
from tests.conftest import REDIS_URL, REPO_ROOT
from tests.factories import borrower_upserted, loan_updated

TTL = 0.6
SHANGHAI = ZoneInfo("Asia/Shanghai")
START = dt.datetime(2026, 3, 10, 14, 0, tzinfo=SHANGHAI).astimezone(dt.UTC)


class PacedProvider:
    """Waits, like a rate-limited provider, until `go` is set; then hands over, unless the
    worker's lease lapsed meanwhile (as TwilioSender checks after its wait)."""

    hands_over_at_once = False
    hand_over_run = 1

    def __init__(self, inner: Sender, *, finds_sent: bool = True) -> None:
        self.inner = inner
        self.channel = inner.channel
        self.provider = inner.channel.value
        self.finds_sent = finds_sent
        self.waiting = threading.Event()
        self.go = threading.Event()
        self.handed_over: list[str] = []
        self.asked: list[str] = []

    def send(self, outgoing: Outgoing) -> Receipt:
        self.waiting.set()
        self.go.wait(timeout=30)
        ensure_still_held(outgoing)
        self.handed_over.append(outgoing.message_id)
        return self.inner.send(outgoing)

    def find_sent(self, outgoing: Outgoing, since: dt.datetime) -> Receipt | None:
        self.asked.append(outgoing.message_id)
        return self.inner.find_sent(outgoing, since)


class Beats:
    """Renews a lease until stopped, as the worker's lease thread does; stopping it is the
    worker dying (its keys are left to expire)."""

    def __init__(self, lease: WorkerLease) -> None:
        self.lease = lease
        self.dead = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.dead.wait(TTL / 6):
            self.lease.beat()

    def __enter__(self) -> Beats:
        self.lease.beat()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.dead.set()
        self.thread.join(timeout=5)


@pytest.fixture
def env(redis_client: redis.Redis) -> Iterator[Environment]:
    settings = dataclasses.replace(
        load_settings({"OUTREACH_POLICY": str(REPO_ROOT / "schedules" / "default.yaml")}),
        templates_dir=REPO_ROOT / "templates",
        redis_url=Secret(REDIS_URL),
    )
    with environment(settings, START) as running:
        yield running


def due_message(env: Environment, phones: list[str] | None = None, email: str | None = None) -> str:
    events = [
        borrower_upserted(
            "b-lease", timezone="Asia/Shanghai", phones=phones, email=email, occurred_at=START
        ),
        loan_updated("l-lease", "b-lease", days_past_due=1, occurred_at=START),
    ]
    with transaction(env.sessions) as session:
        ingest_many(
            session, env.policy, [parse_event(json.dumps(e).encode()) for e in events], START
        )
    with transaction(env.sessions) as session:
        ids = claim_due(session, START)
    assert len(ids) == 1
    return ids[0]


def row(env: Environment, message_id: str) -> m.Message:
    with env.sessions() as session:
        found = session.get_one(m.Message, message_id)
        session.expunge(found)
        return found


def reconcile_for(dispatcher: Dispatcher, watch: LeaseWatch, seconds: float) -> None:
    deadline = threading.Event()
    timer = threading.Timer(seconds, deadline.set)
    timer.start()
    while not deadline.wait(TTL / 4):
        dispatcher.reconcile_orphaned(watch)


def reconcile_until(
    dispatcher: Dispatcher, watch: LeaseWatch, env: Environment, message_id: str
) -> m.Message:
    for _ in range(int(10 / (TTL / 4))):
        dispatcher.reconcile_orphaned(watch)
        current = row(env, message_id)
        if current.status != "sending":
            return current
        threading.Event().wait(TTL / 4)
    raise AssertionError("still `sending` 10 s after its worker died")


def sending_under_lease(
    env: Environment, redis_client: redis.Redis, message_id: str, paced: PacedProvider
) -> tuple[WorkerLease, threading.Thread, dict[str, str]]:
    """Starts the batch in a thread of its own; returns once it waits for the provider."""
    lease = WorkerLease(redis_client, TTL)
    env.dispatcher.lease = lease
    env.dispatcher.senders = {**env.dispatcher.senders, paced.channel: paced}
    outcomes: dict[str, str] = {}
    batch = threading.Thread(
        target=lambda: outcomes.update(env.dispatcher.dispatch_many([message_id]))
    )
    return lease, batch, outcomes


def test_a_live_workers_slow_batch_is_left_alone_and_a_dead_ones_goes_back_to_the_gate(
    env: Environment, redis_client: redis.Redis
) -> None:
    message_id = due_message(env)
    paced = PacedProvider(env.dispatcher.senders[Channel.SMS])
    lease, batch, outcomes = sending_under_lease(env, redis_client, message_id, paced)
    watch = LeaseWatch(redis_client, TTL)
    env.clock.now += dt.timedelta(minutes=30)  # long past any fixed timer
    with Beats(lease):
        batch.start()
        assert paced.waiting.wait(timeout=10)
        assert row(env, message_id).worker_lease == lease.token
        # five leases long, its worker alive and holding it: nobody touches it
        reconcile_for(env.dispatcher, watch, 5 * TTL)
        assert row(env, message_id).status == "sending"
        assert paced.asked == []
    # the worker is gone: the provider is asked, has no record, and the gate gets it back
    reconciled = reconcile_until(env.dispatcher, watch, env, message_id)
    assert paced.asked == [message_id]
    assert (reconciled.status, reconciled.reason) == ("deferred", "reconciled")
    assert reconciled.send_at <= env.clock.now and reconciled.worker_lease is None
    # what the dead worker would still have done is refused: its lease lapsed
    paced.go.set()
    batch.join(timeout=10)
    assert paced.handed_over == []
    assert outcomes == {message_id: "skipped"}
    # released again, it goes out once, through the gate, on the latest state
    env.dispatcher.lease = None
    with transaction(env.sessions) as session:
        assert claim_due(session, env.clock.now) == [message_id]
    assert env.dispatcher.dispatch_many([message_id]) == {message_id: "sent"}
    assert paced.handed_over == [message_id]


def test_a_dead_workers_email_is_not_sent_again_and_waits_for_a_person(
    env: Environment, redis_client: redis.Redis
) -> None:
    message_id = due_message(env, phones=[], email="alex@example.com")
    smtp = SmtpSender(load_settings({"EMAIL_FROM": "Collections <c@lender.example>"}))
    paced = PacedProvider(env.dispatcher.senders[Channel.EMAIL], finds_sent=smtp.finds_sent)
    lease, batch, outcomes = sending_under_lease(env, redis_client, message_id, paced)
    watch = LeaseWatch(redis_client, TTL)
    with Beats(lease):
        batch.start()
        assert paced.waiting.wait(timeout=10)
    reconciled = reconcile_until(env.dispatcher, watch, env, message_id)
    # SMTP cannot be asked; the relay may have it: counted sent, never resent, not failed
    assert paced.asked == []
    assert (reconciled.status, reconciled.reason) == ("sent", "outcome_unknown")
    assert reconciled.needs_human and reconciled.sent_at is not None
    paced.go.set()
    batch.join(timeout=10)
    assert paced.handed_over == [] and outcomes == {message_id: "skipped"}


def test_a_lease_that_missed_its_renewals_is_never_taken_up_again(
    redis_client: redis.Redis,
) -> None:
    lease = WorkerLease(redis_client, TTL)
    assert lease.beat()
    with lease.holding(["m-1"]) as token:
        assert lease.may_hand_over(token)
        threading.Event().wait(TTL / 2)
        # frozen past half its lease: the clock may already count it dead
        assert not lease.may_hand_over(token)
        assert lease.beat()
        assert lease.token != token
        assert not lease.may_hand_over(token) and lease.may_hand_over(lease.token)
        held = redis_client.smembers(f"outreach:workers:held:{lease.token}")
        assert held == {b"m-1"}
