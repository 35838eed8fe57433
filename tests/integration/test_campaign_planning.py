"""Planning a campaign decides once for borrowers alike in everything the final gate reads:
on a varied book, that gives exactly what deciding for each borrower on its own state gives."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from sqlalchemy import Engine, update

from outreach.domain import Channel
from outreach.policy import load_policy
from outreach.render import Renderer
from outreach.service import campaigns
from outreach.service.apply import ingest_many
from outreach.service.parse import parse_event
from outreach.store.db import make_session_factory, transaction
from outreach.store.models import Message
from tests.conftest import REPO_ROOT, truncate_all
from tests.factories import borrower_upserted, envelope, iso, loan_updated, payment_received

POLICY = load_policy(REPO_ROOT / "schedules" / "default.yaml")
ZONES = [None, "Asia/Shanghai", "Asia/Taipei", "America/New_York", "America/Los_Angeles"]
PHONES = ["+8613800138{:03d}", "+886912345{:03d}", "+1212555{:04d}", "+1415555{:04d}"]


def varied_book(rng: random.Random, count: int, now: dt.datetime) -> list[dict[str, Any]]:
    """Borrowers in few zones, so many are alike, and every way of differing."""
    events: list[dict[str, Any]] = []
    for index in range(count):
        borrower_id, loan_id = f"b-{index:04d}", f"l-{index:04d}"
        phones = [rng.choice(PHONES).format(index)] if rng.random() < 0.9 else []
        if rng.random() < 0.1:
            phones.append(rng.choice(PHONES).format(index + 5000))
        address = None
        if rng.random() < 0.3:
            address = rng.choice(
                [
                    {"country": "US", "region": "MA", "city": "Boston", "postal_code": "02108"},
                    {"country": "US", "region": "CA", "city": "Oakland"},
                    {"country": "TW", "city": "Taipei"},
                ]
            )
        events.append(
            borrower_upserted(
                borrower_id,
                timezone=rng.choice(ZONES),
                phones=phones,
                email=f"{borrower_id}@example.com" if rng.random() < 0.85 else None,
                locale=rng.choice(["zh-CN", "zh-TW", "en-US"]),
                sms=rng.random() < 0.9,
                email_consent=rng.random() < 0.8,
                address=address,
                occurred_at=now - dt.timedelta(days=3),
            )
        )
        events.append(loan_updated(loan_id, borrower_id, days_past_due=rng.randrange(16, 90)))
        roll = rng.random()
        if roll < 0.05:
            events.append(
                envelope(
                    "contact.restricted",
                    {
                        "borrower_id": borrower_id,
                        "restriction": rng.choice(["dispute", "cease_contact", "attorney"]),
                        "active": True,
                    },
                )
            )
        elif roll < 0.08:
            events.append(
                envelope(
                    "contact.restricted",
                    {
                        "borrower_id": borrower_id,
                        "restriction": "inconvenient_times",
                        "active": True,
                        "windows": [{"start": "12:00", "end": "14:00"}],
                    },
                )
            )
        elif roll < 0.12:
            events.append(
                envelope(
                    "promise_to_pay.created",
                    {
                        "loan_id": loan_id,
                        "promise_id": f"p-{index}",
                        "amount": "50.00",
                        "promised_date": (now + dt.timedelta(days=4)).date().isoformat(),
                    },
                )
            )
        elif roll < 0.14:
            events.append(payment_received(loan_id, amount="10.00", amount_due_after="240.00"))
    return events


def test_borrowers_alike_are_decided_as_each_would_be_on_its_own(
    postgres_engine: Engine,
) -> None:
    truncate_all(postgres_engine)
    sessions = make_session_factory(postgres_engine)
    renderer = Renderer(REPO_ROOT / "templates")
    now = dt.datetime.now(dt.UTC)
    with transaction(sessions) as session:
        ingest_many(
            session,
            POLICY,
            [parse_event(event) for event in varied_book(random.Random(7), 400, now)],
            now,
        )
        # a third of the borrowers had a message a few hours ago: the caps hold theirs
        sent_at = now - dt.timedelta(hours=3)
        session.execute(
            update(Message)
            .where(
                Message.borrower_id.in_([f"b-{i:04d}" for i in range(0, 400, 3)]),
                Message.status == "scheduled",
            )
            .values(status="sent", sent_at=sent_at, cap_reserved_at=sent_at)
        )
    try:
        for channel in (Channel.SMS, Channel.EMAIL):
            for start in (now + dt.timedelta(hours=3), now + dt.timedelta(hours=11)):
                spec = campaigns.parse_campaign(
                    {
                        "name": "x",
                        "channel": channel.value,
                        "template": "campaign_hardship_relief",
                        "start_at": iso(start),
                        "end_at": iso(start + dt.timedelta(days=2)),
                        "holdout_percent": 10,
                    },
                    POLICY,
                    renderer,
                    now,
                )
                with sessions() as session:
                    targets = list(campaigns.targets(session, POLICY, spec.segment, now))
                    memory = campaigns.PlanMemory()
                    planned: list[campaigns.PlannedTarget] = []
                    for offset in range(0, len(targets), 150):
                        planned += campaigns.plan_targets(
                            session,
                            POLICY,
                            spec,
                            "cmp_x",
                            targets[offset : offset + 150],
                            now,
                            0,
                            memory,
                        )
                    alone = campaigns.plan_targets(
                        session, POLICY, spec, "cmp_x", targets, now, 0, alike=False
                    )
                assert len(memory.decided) < len(planned) / 2, "many are decided alike"
                assert len(planned) == len(alone) == 400
                assert any(p.message.reason == "frequency_cap" for p in planned)
                for shared, own in zip(planned, alone, strict=True):
                    assert shared.held_out == own.held_out
                    assert shared.message.row() | {"id": None} == own.message.row() | {
                        "id": None
                    }, own.message.borrower_id
                    assert [
                        {k: v for k, v in step.items() if k != "message_id"}
                        for step in shared.message.steps
                    ] == [
                        {k: v for k, v in step.items() if k != "message_id"}
                        for step in own.message.steps
                    ]
    finally:
        truncate_all(postgres_engine)
