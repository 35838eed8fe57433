"""`GET /metrics` (SPEC §8, issue 21 §2): counts read from the database equal to a GROUP BY
whatever wrote the rows; provider requests counted where providers are called; either role,
401 without a token."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, Table, delete, func, select, text, update
from sqlalchemy.orm import Session

from outreach import meters
from outreach.domain import Channel, Status
from outreach.store import counts
from outreach.store import models as m
from outreach.store.bulk import insert_rows, update_rows
from tests.factories import borrower_upserted, loan_updated, zone_at_local_hour
from tests.integration.conftest import serve
from tests.live import ADMIN_TOKEN, VIEWER_TOKEN, LiveService
from tests.smtp_relay import Relay, running_relay
from tests.twilio_emulator import TwilioEmulator
from tests.twilio_fixtures import twilio_env

NOW = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC)
MESSAGES = cast(Table, m.Message.__table__)
INBOX = cast(Table, m.ReceivedEvent.__table__)


def message_row(index: int, rng: random.Random) -> dict[str, Any]:
    return {
        "id": f"m_{index:05d}",
        "idempotency_key": f"k{index}",
        "purpose": "dunning",
        "borrower_id": f"b{index % 7}",
        "loan_id": f"l{index % 11}",
        "stage": "early",
        "channel": rng.choice(["sms", "email"]),
        "template": "early_first_notice",
        "locale": "en-US",
        "send_at": NOW + dt.timedelta(minutes=rng.randint(-90, 90)),
        "status": rng.choice([s.value for s in Status]),
        "refs": {},
        "attempts": 0,
        "needs_human": False,
        "created_at": NOW,
        "updated_at": NOW,
    }


def event_row(index: int, rng: random.Random) -> dict[str, Any]:
    return {
        "id": f"evt-{index}",
        "type": rng.choice(["loan.updated", "borrower.upserted", "payment.received"]),
        "occurred_at": NOW,
        "received_at": NOW,
        "body": {},
        "outcome": "pending",
        "attempts": 0,
    }


def grouped(session: Session, table: Any, first: str, second: str) -> dict[tuple[str, str], int]:
    query = select(table.c[first], table.c[second], func.count()).group_by(
        table.c[first], table.c[second]
    )
    return {(a, b): int(n) for a, b, n in session.execute(query)}


def nonzero(found: dict[Any, int]) -> dict[Any, int]:
    return {pair: n for pair, n in found.items() if n}


def assert_counts_hold(engine: Engine) -> None:
    with Session(engine) as session:
        assert nonzero(counts.message_counts(session)) == grouped(
            session, MESSAGES, "status", "channel"
        )
        assert nonzero(counts.event_counts(session)) == grouped(session, INBOX, "type", "outcome")


def test_the_counts_equal_a_group_by_whatever_wrote_the_rows(engine: Engine) -> None:
    rng = random.Random(21)
    rows = [message_row(index, rng) for index in range(300)]
    with Session(engine) as session:
        insert_rows(session, MESSAGES, rows[:200])
        # one at a time, and again with duplicates skipped (ON CONFLICT DO NOTHING)
        insert_rows(session, MESSAGES, rows[200:201])
        insert_rows(session, MESSAGES, rows[150:300], conflict="idempotency_key")
        insert_rows(session, INBOX, [event_row(index, rng) for index in range(120)])
        session.commit()
    assert_counts_hold(engine)
    statuses = [s.value for s in Status]
    for round_ in range(6):
        with Session(engine) as session:
            picked = rng.sample(rows, 40)
            update_rows(
                session,
                MESSAGES,
                "id",
                [{"id": row["id"], "status": rng.choice(statuses)} for row in picked],
            )
            # a set-based move, a change of channel, a change of nothing counted, a delete
            session.execute(
                update(MESSAGES)
                .where(MESSAGES.c.status == "scheduled", MESSAGES.c.send_at <= NOW)
                .values(status="queued")
            )
            session.execute(
                update(MESSAGES).where(MESSAGES.c.id == picked[0]["id"]).values(channel="email")
            )
            session.execute(update(MESSAGES).values(updated_at=NOW + dt.timedelta(days=1)))
            session.execute(delete(MESSAGES).where(MESSAGES.c.id == picked[1]["id"]))
            update_rows(
                session,
                INBOX,
                "id",
                [
                    {"id": f"evt-{index}", "outcome": rng.choice(["applied", "failed"])}
                    for index in rng.sample(range(120), 30)
                ],
            )
            if round_ == 3:
                session.rollback()  # nothing of a rolled-back transaction is counted
            else:
                session.commit()
        assert_counts_hold(engine)
        with Session(engine) as session:
            counts.fold(session)
            session.commit()
        assert_counts_hold(engine)
    if engine.dialect.name == "postgresql":
        with Session(engine) as session:
            # folded: one row per pair, whatever the number of changes
            kept = session.execute(text("SELECT count(*) FROM message_counts")).scalar_one()
            assert kept <= len(Status) * len(Channel)
        with engine.begin() as connection:
            connection.execute(text("TRUNCATE messages CASCADE"))
        with Session(engine) as session:
            assert nonzero(counts.message_counts(session)) == {}


def test_the_due_count_is_scheduled_and_deferred_whose_time_has_come(engine: Engine) -> None:
    rng = random.Random(7)
    rows = [message_row(index, rng) for index in range(200)]
    with Session(engine) as session:
        insert_rows(session, MESSAGES, rows)
        session.commit()
        expected = sum(
            1
            for row in rows
            if row["status"] in ("scheduled", "deferred") and row["send_at"] <= NOW
        )
        assert counts.messages_due(session, NOW) == expected > 0


# -- through the running app ---------------------------------------------------------------------


@pytest.fixture
def relay() -> Iterator[Relay]:
    with running_relay("nobody@bounce.example") as running:
        yield running


@pytest.fixture
def emulator() -> Iterator[TwilioEmulator]:
    with TwilioEmulator() as running:
        yield running


@pytest.fixture
def live(
    postgres_engine: Engine,
    redis_client: redis.Redis,
    emulator: TwilioEmulator,
    relay: Relay,
) -> Iterator[LiveService]:
    # requests other tests of this process counted (never flushed) are not this test's
    meters.PROVIDERS.flush(redis_client)
    redis_client.flushdb()
    env = {
        **twilio_env(emulator),
        "OUTREACH_EMAIL_PROVIDER": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(relay.port),
        "EMAIL_FROM": "Harbor Lending <care@harborlending.example>",
        "OUTREACH_SMS_RATE": "50",
    }
    yield from serve(postgres_engine, env=env, real_senders=True)


def scrape(live: LiveService, token: str = VIEWER_TOKEN) -> dict[str, dict[tuple[Any, ...], float]]:
    """Each metric's samples: {sample name: {sorted label items: value}}."""
    response = live.get("/metrics", token=token)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    found: dict[str, dict[tuple[Any, ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


def by(samples: dict[tuple[Any, ...], float], *names: str) -> dict[tuple[str, ...], float]:
    return {tuple(dict(labels)[name] for name in names): value for labels, value in samples.items()}


def test_metrics_need_a_token_of_either_role(live: LiveService) -> None:
    assert httpx.get(f"{live.base_url}/metrics").status_code == 401
    assert live.get("/metrics", token="not-a-token").status_code == 401
    for token in (VIEWER_TOKEN, ADMIN_TOKEN):
        names = set(scrape(live, token))
        assert {
            "outreach_messages",
            "outreach_messages_due",
            "outreach_events",
            "outreach_provider_requests_total",
            "outreach_provider_request_seconds_bucket",
            "outreach_provider_request_seconds_count",
            "outreach_provider_request_seconds_sum",
            "outreach_clock_leader",
        } <= names


def test_metrics_count_the_messages_events_and_provider_requests_of_a_run(
    live: LiveService, emulator: TwilioEmulator, relay: Relay
) -> None:
    refused_number = "+15005550142"
    emulator.script(refused_number, reject_code=21211)
    zone = zone_at_local_hour(14)
    # day 1 of lateness is a text, day 2 an email (schedules/default.yaml)
    book = [
        ("b-1", "+15005550141", "ana@harbor.example", 1),
        ("b-2", refused_number, "nobody@bounce.example", 1),
        ("b-3", "+15005550143", "chen@harbor.example", 2),
        ("b-4", "+15005550144", "nobody@bounce.example", 2),
    ]
    for borrower_id, phone, address, days in book:
        assert (
            live.post_event(
                borrower_upserted(borrower_id, timezone=zone, phones=[phone], email=address)
            ).status_code
            == 202
        )
        assert (
            live.post_event(
                loan_updated(f"l-{borrower_id}", borrower_id, days_past_due=days)
            ).status_code
            == 202
        )

    live.wait_for(lambda: settled(live), timeout=60)
    metrics = scrape(live)
    with Session(live.services.runtime.engine) as session:
        assert nonzero(
            {k: int(v) for k, v in by(metrics["outreach_messages"], "status", "channel").items()}
        ) == grouped(session, MESSAGES, "status", "channel")
        assert nonzero(
            {k: int(v) for k, v in by(metrics["outreach_events"], "type", "outcome").items()}
        ) == grouped(session, INBOX, "type", "outcome")
        assert metrics["outreach_messages_due"][()] == counts.messages_due(
            session, dt.datetime.now(dt.UTC)
        )
    requests = by(metrics["outreach_provider_requests_total"], "provider", "result")
    creates = emulator.create_requests
    assert requests["twilio", "accepted"] == sum(1 for r in creates if r.status == 201) > 0
    assert requests["twilio", "rejected"] == sum(1 for r in creates if r.status == 400) > 0
    assert requests["smtp", "accepted"] == len(relay.accepted) > 0
    assert requests["smtp", "rejected"] >= 1
    counted = by(metrics["outreach_provider_request_seconds_count"], "provider")
    assert counted["twilio",] == requests["twilio", "accepted"] + requests["twilio", "rejected"]
    assert counted["smtp",] == sum(n for (p, _), n in requests.items() if p == "smtp")
    infinite = by(metrics["outreach_provider_request_seconds_bucket"], "provider", "le")
    assert infinite["twilio", "+Inf"] == counted["twilio",]
    assert list(by(metrics["outreach_clock_leader"], "clock").values()) == [1.0]


def settled(live: LiveService) -> bool:
    """Messages of both channels handed over, and none due, queued or being sent."""
    with Session(live.services.runtime.engine) as session:
        now = dt.datetime.now(dt.UTC)
        in_flight = session.execute(
            select(func.count()).where(MESSAGES.c.status.in_(["queued", "sending"]))
        ).scalar_one()
        handed = session.execute(
            select(func.count(MESSAGES.c.channel.distinct())).where(
                MESSAGES.c.status.in_(["sent", "failed", "delivered"])
            )
        ).scalar_one()
        return handed == 2 and in_flight == 0 and counts.messages_due(session, now) == 0
