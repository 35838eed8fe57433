"""A batch is gated together, then sent one message at a time: a provider call that takes
long enough for the borrower's allowed window to close stops the rest of the batch from
going out after it closed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from zoneinfo import ZoneInfo

import redis

from outreach.channels.base import Outgoing, Receipt, Sender
from outreach.domain import Channel
from outreach.service.apply import ingest_many
from outreach.service.parse import parse_event
from outreach.settings import Secret, load_settings
from outreach.sim.engine import VirtualClock, environment
from outreach.store import models as m
from outreach.store.db import transaction
from outreach.store.messages import claim_due
from tests.conftest import REDIS_URL, REPO_ROOT
from tests.factories import borrower_upserted, loan_updated

SHANGHAI = ZoneInfo("Asia/Shanghai")
# 20:59 in Shanghai: one minute of the 08:00–21:00 window left
START = dt.datetime(2026, 3, 10, 20, 59, tzinfo=SHANGHAI).astimezone(dt.UTC)


class SlowProvider:
    """Accepts like the wrapped sender, but its first call takes three minutes."""

    hands_over_at_once = False
    hand_over_run = 1
    finds_sent = True

    def __init__(self, inner: Sender, clock: VirtualClock) -> None:
        self.inner = inner
        self.channel = inner.channel
        self.provider = inner.channel.value
        self.clock = clock
        self.calls: list[str] = []

    def send(self, outgoing: Outgoing) -> Receipt:
        self.calls.append(outgoing.message_id)
        receipt = self.inner.send(outgoing)
        if len(self.calls) == 1:
            self.clock.now += dt.timedelta(minutes=3)
        return receipt

    def find_sent(self, outgoing: Outgoing, since: dt.datetime) -> Receipt | None:
        return self.inner.find_sent(outgoing, since)


def test_a_message_whose_window_closed_while_its_batch_was_sending_waits_for_morning(
    redis_client: redis.Redis,
) -> None:
    settings = dataclasses.replace(
        load_settings({"OUTREACH_POLICY": str(REPO_ROOT / "schedules" / "default.yaml")}),
        templates_dir=REPO_ROOT / "templates",
        redis_url=Secret(REDIS_URL),
    )
    with environment(settings, START) as env:
        events = []
        for number in (1, 2):
            events.append(
                borrower_upserted(
                    f"b-late{number}",
                    timezone="Asia/Shanghai",
                    phones=[f"+861380013800{number}"],
                    occurred_at=START,
                )
            )
            events.append(
                loan_updated(
                    f"l-late{number}", f"b-late{number}", days_past_due=1, occurred_at=START
                )
            )
        with transaction(env.sessions) as session:
            ingest_many(
                session, env.policy, [parse_event(json.dumps(e).encode()) for e in events], START
            )
        with transaction(env.sessions) as session:
            ids = claim_due(session, START)
        assert len(ids) == 2, "each loan's first message is due at 20:59"
        slow = SlowProvider(env.dispatcher.senders[Channel.SMS], env.clock)
        env.dispatcher.senders = {**env.dispatcher.senders, Channel.SMS: slow}

        outcomes = env.dispatcher.dispatch_many(ids)

        assert sorted(outcomes.values()) == ["deferred:quiet_hours", "sent"]
        assert len(slow.calls) == 1
        waiting = next(i for i, outcome in outcomes.items() if outcome != "sent")
        with env.sessions() as session:
            row = session.get_one(m.Message, waiting)
            assert row.status == "deferred" and row.reason == "quiet_hours"
            assert row.send_at.astimezone(SHANGHAI) == dt.datetime(
                2026, 3, 11, 8, 0, tzinfo=SHANGHAI
            )
