"""Ingest changes the simulator relies on, on SQLite and PostgreSQL: a loan report that only
restates the loan's age re-plans nothing, and `ingest_many` applies a batch exactly as
`ingest` applies its events one by one."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from outreach import policy as pol
from outreach.service.apply import ingest, ingest_many
from outreach.service.parse import parse_event
from outreach.service.planner import PlanWork, plan_batch
from outreach.store import models as m
from outreach.store.db import make_session_factory, transaction
from tests.factories import borrower_upserted, loan_updated, payment_received

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 3, 2, 2, 0, tzinfo=dt.UTC)  # 10:00 in Beijing


def policy() -> pol.Policy:
    return pol.load_policy(REPO_ROOT / "schedules" / "default.yaml")


def apply(engine: Engine, raw: dict[str, Any], now: dt.datetime) -> Any:
    with transaction(make_session_factory(engine)) as session:
        return ingest(session, policy(), parse_event(raw), now)


def messages(engine: Engine) -> list[tuple[str, str]]:
    with make_session_factory(engine)() as session:
        return [
            (row.idempotency_key, row.status)
            for row in session.scalars(select(m.Message).order_by(m.Message.idempotency_key))
        ]


def report(days_past_due: int, at: dt.datetime, **changes: Any) -> dict[str, Any]:
    return loan_updated(
        "L1",
        "B1",
        days_past_due=days_past_due,
        occurred_at=at,
        due_date=dt.date(2026, 3, 1),
        **changes,
    )


def test_a_report_that_only_restates_the_age_replans_nothing(engine: Engine) -> None:
    apply(engine, borrower_upserted("B1", timezone="Asia/Shanghai"), T0)
    first = apply(engine, report(1, T0), T0)
    assert first.replanned
    planned = messages(engine)
    assert planned
    # the nightly report a day later: one more day past due, as aging already says
    later = T0 + dt.timedelta(days=1)
    restated = apply(engine, report(2, later), later)
    assert (restated.status, restated.outcome, restated.replanned) == ("accepted", "applied", False)
    assert messages(engine) == planned
    with make_session_factory(engine)() as session:
        loan = session.get_one(m.Loan, "L1")
        assert (loan.days_past_due, loan.state_as_of) == (2, later)
        inbox = session.get_one(m.ReceivedEvent, restated.id)
        assert (inbox.outcome, inbox.detail) == ("applied", None)
    # a report with a new amount is re-planned
    changed = apply(engine, report(2, later + dt.timedelta(hours=1), amount_due="99.00"), later)
    assert changed.replanned


def test_a_restated_report_leaves_the_plan_as_a_replan_would(engine: Engine) -> None:
    apply(engine, borrower_upserted("B1", timezone="Asia/Shanghai"), T0)
    apply(engine, report(1, T0), T0)
    # restated later the same day (what a new day brings is the clock's to plan)
    later = T0 + dt.timedelta(hours=6)
    assert not apply(engine, report(1, later), later).replanned
    before = messages(engine)
    with transaction(make_session_factory(engine)) as session:
        # as the simulator's daily re-plan asks, with when planning may next change
        outcome = plan_batch(
            session, policy(), [PlanWork(("L1",))], later, next_changes=True
        ).loans["L1"]
    assert (outcome.created, outcome.cancelled, outcome.suppressed) == (0, 0, 0)
    assert messages(engine) == before
    assert outcome.next_change is not None and outcome.next_change > later


def test_ingest_many_applies_a_batch_as_ingest_applies_each(engine: Engine, tmp_path: Path) -> None:
    events = [
        borrower_upserted("B1", timezone="Asia/Shanghai", occurred_at=T0),
        report(1, T0),
        borrower_upserted("B2", timezone="America/New_York", occurred_at=T0),
        loan_updated("L2", "B2", days_past_due=3, occurred_at=T0, due_date=dt.date(2026, 2, 27)),
        payment_received("L2", amount="250.00", amount_due_after="0", occurred_at=T0),
        report(0, T0 - dt.timedelta(hours=1)),  # older than the state: recorded, ignored
    ]
    events.append(dict(events[1]))  # the same event twice in one batch
    with transaction(make_session_factory(engine)) as session:
        results = ingest_many(session, policy(), [parse_event(e) for e in events], T0)
    assert [r.status for r in results] == ["accepted"] * 6 + ["duplicate"]
    assert results[5].outcome == "ignored_stale"
    with make_session_factory(engine)() as session:
        inbox = {row.id: row for row in session.scalars(select(m.ReceivedEvent))}
    assert len(inbox) == 6
    assert inbox[events[5]["id"]].outcome == "ignored_stale"
    assert "older than" in (inbox[events[5]["id"]].detail or "")
    assert {inbox[e["id"]].outcome for e in events[:5]} == {"applied"}
    # again, as a second delivery: every event is a duplicate and nothing changes
    batch_messages = messages(engine)
    with transaction(make_session_factory(engine)) as session:
        again = ingest_many(session, policy(), [parse_event(e) for e in events], T0)
    assert {r.status for r in again} == {"duplicate"}
    assert messages(engine) == batch_messages
    # one by one on a fresh database of the same kind, the same messages
    from tests.conftest import truncate_all

    truncate_all(engine)
    for event in events:
        apply(engine, event, T0)
    assert [key for key, _ in messages(engine)] == [key for key, _ in batch_messages]
    assert [status for _, status in messages(engine)] == [s for _, s in batch_messages]
