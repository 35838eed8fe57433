"""The simulator and the live service decide the same for the same events.

One book goes through the simulator, and through the live service's own entry points on a
fresh database (SQLite and PostgreSQL) and the real Redis: every event POSTed, signed, to
the webhook of the real app; replies handled as the Twilio inbound route handles them;
provider outcomes recorded as the status callback records them; the clock's `replan_all` and
`release_due`, with the worker's `dispatch` as the queue. The live run's clock is virtual
too, and it acts at the instants the live clock would act at: when an event arrives, when a
message falls due, when a provider reports, and at each day boundary for the re-plan (the
live clock re-plans every hour; a re-plan between those instants finds nothing to change).
Every message must come out the same: purpose, stage, channel, template, text, send_at,
status, reason, sent_at and its whole timeline.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import json
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from outreach.api.app import create_app
from outreach.channels.simulated import SimulatedSender
from outreach.clock import Clock
from outreach.redis_client import RedisHandle
from outreach.runtime import Runtime
from outreach.service.delivery_status import record_status
from outreach.service.inbound import handle_sms_reply
from outreach.service.messages import as_record, seeded_ids
from outreach.settings import load_settings
from outreach.sim import VirtualClock
from outreach.sim.engine import SIMULATION_LINK_KEY
from outreach.store import models as m
from outreach.store.db import make_session_factory, transaction
from outreach.store.messages import DUE_STATUSES
from outreach.wiring import Services
from tests.conftest import REDIS_URL, REPO_ROOT
from tests.integration.test_simulate import DAYS, T0, Run, run_book, story_book
from tests.live import WEBHOOK_SECRET, sign

with warnings.catch_warnings():
    # starlette asks for `httpx2`; the deprecated path through httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SEED = 23
# what may differ between two runs that decided alike: identifiers drawn at random
UNCOMPARED = {"id", "provider_id"}


def settings_for(database_url: str) -> Any:
    settings = load_settings(
        {
            "OUTREACH_DATABASE_URL": database_url,
            "OUTREACH_REDIS_URL": REDIS_URL,
            "OUTREACH_WEBHOOK_SECRET": WEBHOOK_SECRET,
            # the simulator's own key: the same unsubscribe links in both runs' text
            "OUTREACH_LINK_SECRET": SIMULATION_LINK_KEY.decode(),
            "OUTREACH_SMS_PROVIDER": "simulated",
            "OUTREACH_EMAIL_PROVIDER": "simulated",
            "OUTREACH_POLICY": str(REPO_ROOT / "schedules" / "default.yaml"),
        }
    )
    return dataclasses.replace(settings, templates_dir=REPO_ROOT / "templates")


def comparable(messages: list[dict[str, Any]]) -> list[str]:
    """Each message as canonical JSON without its random identifiers (and the provider's,
    which count in the order messages due at one instant happen to be handed over)."""
    rows = []
    for message in messages:
        kept = {k: v for k, v in message.items() if k not in UNCOMPARED}
        kept["events"] = [
            {**step, "detail": re.sub(r"provider_id=\S+", "provider_id=…", step["detail"] or "")}
            for step in message["events"]
        ]
        rows.append(json.dumps(kept, sort_keys=True, ensure_ascii=False))
    return sorted(rows)


def wait_applied(sessions: sessionmaker[Session], timeout: float = 10) -> None:
    """Until no event the app accepted is still pending."""
    deadline = time.monotonic() + timeout
    query = select(func.count()).where(m.ReceivedEvent.outcome == "pending")
    while True:
        with sessions() as session:
            if not session.scalar(query):
                return
        assert time.monotonic() < deadline, "accepted events were not applied"
        time.sleep(0.005)


def day_boundary_after(moment: dt.datetime, services: Services) -> dt.datetime:
    zone = services.policy.day_boundary_zone
    next_day = moment.astimezone(zone).date() + dt.timedelta(days=1)
    return dt.datetime.combine(next_day, dt.time(), tzinfo=zone).astimezone(dt.UTC)


def live_run(engine: Engine, tmp_path: Path, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    settings = settings_for(engine.url.render_as_string(hide_password=False))
    sessions = make_session_factory(engine)
    handle = RedisHandle(REDIS_URL, tmp_path)
    runtime = Runtime(settings, engine, sessions, handle)
    clock = VirtualClock(T0)
    services = Services.build(runtime, clock=clock)
    # the caps on the virtual clock, as in any simulation (the live service uses Redis time)
    services.dispatcher.virtual_time = True
    senders = services.dispatcher.senders
    assert all(isinstance(sender, SimulatedSender) for sender in senders.values())
    dispatcher = services.dispatcher
    scheduler = Clock(services, lambda ids: [dispatcher.dispatch(i) for i in ids])
    assert scheduler.lock.refresh()
    ordered = sorted(events, key=lambda event: event["occurred_at"])
    end = T0 + dt.timedelta(days=DAYS)
    next_replan = day_boundary_after(T0, services)
    try:
        with TestClient(create_app(services)) as api:
            while True:
                now = clock.now
                while (
                    ordered
                    and dt.datetime.fromisoformat(ordered[0]["occurred_at"].replace("Z", "+00:00"))
                    <= now
                ):
                    event = ordered.pop(0)
                    if event["type"] == "sms.inbound":
                        with transaction(sessions) as session:
                            handle_sms_reply(
                                session,
                                services.policy,
                                sender=event["data"]["from"],
                                body=event["data"]["body"],
                                provider_id=event["id"],
                                now=now,
                            )
                        continue
                    body = json.dumps(event).encode()
                    response = api.post(
                        "/v1/events",
                        content=body,
                        headers={
                            "Content-Type": "application/json",
                            "X-Outreach-Signature": sign(body),
                        },
                    )
                    assert response.status_code == 202, response.text
                    # applied moments after its 202, at the virtual time then: before it moves
                    wait_applied(sessions)
                for sender in senders.values():
                    assert isinstance(sender, SimulatedSender)
                    for provider_id, status, code in sender.due_outcomes(now):
                        with transaction(sessions) as session:
                            record_status(
                                session,
                                provider="twilio",
                                provider_id=provider_id,
                                status=status,
                                error_code=code,
                                now=now,
                            )
                if now >= next_replan:
                    scheduler.replan_all(force=True)
                    next_replan = day_boundary_after(now, services)
                while scheduler.release_due():
                    pass
                candidates = [next_replan]
                if ordered:
                    candidates.append(
                        dt.datetime.fromisoformat(ordered[0]["occurred_at"].replace("Z", "+00:00"))
                    )
                for sender in senders.values():
                    assert isinstance(sender, SimulatedSender)
                    if (at := sender.next_outcome_at()) is not None:
                        candidates.append(at)
                with sessions() as session:
                    due = session.scalar(
                        select(func.min(m.Message.send_at)).where(
                            m.Message.status.in_(DUE_STATUSES)
                        )
                    )
                if due is not None:
                    candidates.append(due)
                upcoming = min(candidates)
                if upcoming <= now:
                    upcoming = now + dt.timedelta(seconds=1)
                if upcoming >= end:
                    break
                clock.now = upcoming
        with sessions() as session:
            rows = session.scalars(select(m.Message).order_by(m.Message.created_at, m.Message.id))
            return [as_record(row) for row in rows]
    finally:
        scheduler.lock.release()
        handle.close()


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    out = tmp_path_factory.mktemp("parity") / "MESSAGES.jsonl"
    settings = settings_for("sqlite:///unused.db")
    yield run_book(
        story_book(), out, settings=dataclasses.replace(settings, redis_url=None), seed=SEED
    )


def test_the_simulator_decides_as_the_live_service(
    simulated: Run, engine: Engine, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with seeded_ids(SEED):
        live = live_run(engine, tmp_path, story_book())
    live_rows, simulated_rows = comparable(live), comparable(simulated.messages)
    assert live_rows == simulated_rows, first_difference(live_rows, simulated_rows)
    # and the book exercised what matters: sends, deferrals, suppressions, failures
    statuses = {message["status"] for message in live}
    assert {"delivered", "undelivered", "failed", "suppressed", "cancelled"} <= statuses
    reasons = {step["reason"] for message in live for step in message["events"]}
    assert {
        "quiet_hours",
        "provider_error",
        "opted_out",
        "cease_contact",
        "loan_current",
    } <= reasons


def first_difference(left: list[str], right: list[str]) -> str:
    """The first message that differs, as a diff of the two runs' JSON."""
    for one, other in zip(left, right, strict=False):
        if one != other:
            return "\n".join(
                difflib.unified_diff(
                    json.dumps(json.loads(one), indent=1, ensure_ascii=False).splitlines(),
                    json.dumps(json.loads(other), indent=1, ensure_ascii=False).splitlines(),
                    "live",
                    "simulated",
                    lineterm="",
                )
            )
    return f"{len(left)} messages live, {len(right)} simulated"
