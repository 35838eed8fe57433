"""Two workers handed the same messages: a broker redelivery, or the clock re-enqueueing rows
that a slow batch still holds. Each message reaches the provider once, and no borrower gets
more than the caps of schedules/default.yaml allow, counted over what the provider received.

Two dispatchers, each on its own connections, share one PostgreSQL and one Redis, and send
through the real `twilio` client to the loopback emulator; the first is slowed down by
holding its first provider call until the test lets it go.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import yaml
from sqlalchemy import Engine, select

from outreach.channels.base import Outgoing, Receipt, Sender
from outreach.clock import Clock
from outreach.domain import Channel
from outreach.runtime import Runtime
from outreach.service.apply import ingest_many
from outreach.service.dispatch import STALE_QUEUED_AFTER
from outreach.service.parse import parse_event
from outreach.settings import load_settings
from outreach.store import models as m
from outreach.store.db import transaction
from outreach.store.messages import claim_due
from outreach.wiring import Services
from tests.conftest import REDIS_URL, REPO_ROOT, truncate_all
from tests.factories import borrower_upserted, loan_updated, zone_at_local_hour
from tests.twilio_emulator import EmulatedMessage, TwilioEmulator
from tests.twilio_fixtures import twilio_env

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

POLICY = REPO_ROOT / "schedules" / "default.yaml"
# purposes that count against no cap (SPEC §5: direct replies and payment confirmations)
UNCAPPED = {"optout_confirmation", "optin_confirmation", "help_reply", "payment_confirmation"}
WINDOWS = {"day": dt.timedelta(days=1), "week": dt.timedelta(days=7)}
HOLD_SECONDS = 30


class HeldSender:
    """The wrapped provider, except that the call for `held_id` waits until `let_go`."""

    hands_over_at_once = False
    hand_over_run = 1
    finds_sent = True

    def __init__(self, inner: Sender, held_id: str) -> None:
        self.inner = inner
        self.channel = inner.channel
        self.provider = inner.channel.value
        self.held_id = held_id
        self.entered = threading.Event()
        self.let_go = threading.Event()

    def send(self, outgoing: Outgoing) -> Receipt:
        if outgoing.message_id == self.held_id:
            self.entered.set()
            assert self.let_go.wait(HOLD_SECONDS), "the test never let the held send go"
        return self.inner.send(outgoing)

    def find_sent(self, outgoing: Outgoing, since: dt.datetime) -> Receipt | None:
        return self.inner.find_sent(outgoing, since)


@dataclasses.dataclass
class Ahead:
    """A clock running `by` ahead of the real one (the clock process's view, minutes on)."""

    by: dt.timedelta = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.by


@dataclasses.dataclass
class Workers:
    first: Services
    second: Services
    second_clock: Ahead
    emulator: TwilioEmulator

    def ingest(self, *events: dict[str, Any]) -> None:
        now = dt.datetime.now(dt.UTC)
        parsed = [parse_event(json.dumps(event).encode()) for event in events]
        with transaction(self.first.runtime.sessions) as session:
            ingest_many(session, self.first.policy, parsed, now)

    def claim(self) -> list[str]:
        with transaction(self.first.runtime.sessions) as session:
            return claim_due(session, dt.datetime.now(dt.UTC))

    def message_of_loan(self, loan_id: str, ids: list[str]) -> str:
        with self.first.runtime.sessions() as session:
            found = session.scalars(
                select(m.Message.id).where(m.Message.loan_id == loan_id, m.Message.id.in_(ids))
            ).all()
        [message_id] = found
        return message_id

    def hold_first_send_of(self, message_id: str) -> HeldSender:
        dispatcher = self.first.dispatcher
        held = HeldSender(dispatcher.senders[Channel.SMS], message_id)
        dispatcher.senders = {**dispatcher.senders, Channel.SMS: held}
        return held

    def rows(self) -> list[m.Message]:
        with self.first.runtime.sessions() as session:
            return list(session.scalars(select(m.Message)).all())


@pytest.fixture
def workers(postgres_engine: Engine, redis_client: redis.Redis) -> Iterator[Workers]:
    truncate_all(postgres_engine)
    with TwilioEmulator() as emulator:
        settings = load_settings(
            {
                "OUTREACH_DATABASE_URL": postgres_engine.url.render_as_string(hide_password=False),
                "OUTREACH_REDIS_URL": REDIS_URL,
                "OUTREACH_WEBHOOK_SECRET": "duplicate-delivery",
                "OUTREACH_POLICY": str(POLICY),
                "OUTREACH_SMS_RATE": "50",
                **twilio_env(emulator),
            }
        )
        settings = dataclasses.replace(settings, templates_dir=REPO_ROOT / "templates")
        runtimes = [Runtime.start(settings), Runtime.start(settings)]
        second_clock = Ahead()
        try:
            yield Workers(
                Services.build(runtimes[0]),
                Services.build(runtimes[1], clock=second_clock),
                second_clock,
                emulator,
            )
        finally:
            for runtime in runtimes:
                runtime.close()
    truncate_all(postgres_engine)


def in_background(work: Callable[[], dict[str, str]]) -> Callable[[], dict[str, str]]:
    """Run `work` in a thread now; the returned call waits for it and gives its result."""
    result: dict[str, dict[str, str]] = {}
    thread = threading.Thread(target=lambda: result.update(outcomes=work()), daemon=True)
    thread.start()

    def join() -> dict[str, str]:
        thread.join(HOLD_SECONDS + 30)
        assert not thread.is_alive(), "the slow worker did not finish"
        return result["outcomes"]

    return join


def cap_breaches(workers: Workers) -> list[str]:
    """Every rolling window in which a borrower was handed more than a cap of the policy file
    allows, counting the messages the provider received (read from the file itself, not from
    the code that enforces it)."""
    caps = yaml.safe_load(POLICY.read_text())["caps"]
    rows = {row.provider_id: row for row in workers.rows() if row.provider_id}
    handed: dict[str, list[tuple[str, dt.datetime]]] = {}
    for received in workers.emulator.messages():
        row = rows[received.sid]
        if row.purpose not in UNCAPPED:
            handed.setdefault(row.borrower_id, []).append((row.channel, received.date_created))
    breaches = []
    for rule, limit in caps.items():
        scope, unit = re.fullmatch(r"(\w+)_per_(day|week)", rule).groups()  # type: ignore[union-attr]
        for borrower_id, sends in handed.items():
            times = sorted(at for channel, at in sends if scope in ("any", channel))
            for index, start in enumerate(times):
                within = [at for at in times[index:] if at < start + WINDOWS[unit]]
                if len(within) > limit:
                    breaches.append(f"{borrower_id}: {len(within)} > {rule} {limit}")
    return breaches


def handed_over_once(workers: Workers) -> dict[str, int]:
    """How many times the provider received each message it received (by the row's sid
    and recipient)."""
    by_sid: dict[str, EmulatedMessage] = {r.sid: r for r in workers.emulator.messages()}
    counts: dict[str, int] = {}
    for row in workers.rows():
        received = [
            r for r in by_sid.values() if r.to == row.recipient and r.sid == row.provider_id
        ]
        if received:
            counts[row.id] = len(received)
    return counts


def test_a_duplicate_delivery_in_a_slow_batch_leaves_the_senders_cap_slot_held(
    workers: Workers,
) -> None:
    zone = zone_at_local_hour(14)
    workers.ingest(
        borrower_upserted("b-ahead", timezone=zone, phones=["+15005550101"]),
        loan_updated("l-ahead", "b-ahead", days_past_due=1),
        borrower_upserted("b-capped", timezone=zone, phones=["+15005550102"]),
        loan_updated("l-capped", "b-capped", days_past_due=1),
    )
    due = workers.claim()
    ahead = workers.message_of_loan("l-ahead", due)
    capped = workers.message_of_loan("l-capped", due)
    held = workers.hold_first_send_of(ahead)

    # the first worker's batch: `ahead` is handed over slowly, `capped` waits its turn
    first = in_background(lambda: workers.first.dispatcher.dispatch_many([ahead, capped]))
    assert held.entered.wait(HOLD_SECONDS), "the first worker never reached its provider call"
    # meanwhile the second worker is handed `capped` too (a redelivery)
    workers.second.dispatcher.dispatch_many([capped])
    held.let_go.set()
    first()

    # a second loan of the same borrower: its first notice asks for the day's one SMS
    workers.ingest(loan_updated("l-capped-2", "b-capped", days_past_due=1))
    later = workers.claim()
    assert later, "the second loan's first notice is due now"
    workers.second.dispatcher.dispatch_many(later)

    assert cap_breaches(workers) == []
    assert len(workers.emulator.create_requests) == len(workers.emulator.messages())
    counts = handed_over_once(workers)
    assert counts[ahead] == 1 and counts[capped] == 1
    assert set(counts.values()) == {1}
    [waiting] = [row for row in workers.rows() if row.id in later]
    assert (waiting.status, waiting.reason) == ("deferred", "frequency_cap")


def test_the_clock_does_not_re_enqueue_what_a_slow_batch_still_holds(workers: Workers) -> None:
    zone = zone_at_local_hour(14)
    workers.ingest(
        *[
            event
            for name in ("ahead", "behind", "lost")
            for event in (
                borrower_upserted(f"b-{name}", timezone=zone, phones=[f"+1500555020{len(name)}"]),
                loan_updated(f"l-{name}", f"b-{name}", days_past_due=1),
            )
        ]
    )
    due = workers.claim()
    ahead, behind, lost = (
        workers.message_of_loan(f"l-{n}", due) for n in ("ahead", "behind", "lost")
    )
    held = workers.hold_first_send_of(ahead)
    first = in_background(lambda: workers.first.dispatcher.dispatch_many([ahead, behind]))
    assert held.entered.wait(HOLD_SECONDS), "the first worker never reached its provider call"

    # the clock's housekeeping, minutes on: `behind` and `lost` have both been queued too long,
    # but only `lost` (whose broker message never reached a worker) is nobody's
    workers.second_clock.by = STALE_QUEUED_AFTER + dt.timedelta(minutes=1)
    requeued: list[str] = []
    clock = Clock(workers.second, requeued.extend)
    try:
        assert clock.lock.refresh()
        clock.housekeeping()
    finally:
        clock.lock.release()
    assert requeued == [lost]

    held.let_go.set()
    outcomes = first()
    assert outcomes == {ahead: "sent", behind: "sent"}
    workers.second.dispatcher.dispatch_many(requeued)
    assert handed_over_once(workers) == {ahead: 1, behind: 1, lost: 1}
    assert cap_breaches(workers) == []
