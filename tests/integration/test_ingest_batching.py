"""Webhook events posted together, through HTTP against a running app on PostgreSQL and
Redis: a web process stores the events that arrive while its previous transaction commits in
one transaction (group commit) and applies what it accepted in batches, in arrival order;
each request still gets its own answer, and the SPEC §4 contract holds for every event."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine, select, text

from outreach.service import apply as applying
from outreach.service.inbox import RETRY_AFTER, apply_orphaned, store_in_inbox
from outreach.service.parse import Event, parse_event
from outreach.store import models as m
from outreach.store.db import transaction
from tests.conftest import POSTGRES_URL
from tests.factories import borrower_upserted, loan_updated, payment_received, zone_at_local_hour
from tests.live import LiveService, sign


def post(live: LiveService, event: dict[str, Any], *, settle: bool = True) -> httpx.Response:
    """One request on a connection of its own, as concurrent senders make them; with
    `settle`, returns once an accepted event is applied too."""
    body = json.dumps(event).encode()
    with httpx.Client(base_url=live.base_url, timeout=60) as client:
        response = client.post(
            "/v1/events",
            content=body,
            headers={"Content-Type": "application/json", "X-Outreach-Signature": sign(body)},
        )
    if settle and response.status_code == 202:
        live.wait_applied([event["id"]])
    return response


def post_together(live: LiveService, events: list[dict[str, Any]]) -> list[httpx.Response]:
    """Post concurrently; returns once every accepted one is applied too."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda event: post(live, event, settle=False), events))
    live.wait_applied([r.json()["id"] for r in responses if r.status_code == 202])
    return responses


def stored_ids(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(select(m.ReceivedEvent.id)).scalars())


def plan_of(live: LiveService, loan_id: str) -> list[tuple[str, str, str, str]]:
    return sorted(
        (item["purpose"], item["template"], item["channel"], item["status"])
        for item in live.messages(loan_id=loan_id, limit=500)
    )


class HeldBatch:
    """Holds the web process's intake inside one event's apply step, so the events accepted
    meanwhile wait to be applied together; `release` lets everything go on."""

    def __init__(self, live: LiveService, monkeypatch: pytest.MonkeyPatch) -> None:
        self.live = live
        self.entered = threading.Event()
        self.release_event = threading.Event()
        real = applying.APPLY["payment.received"]
        self.hold_id = "pay-hold"
        self.posted: list[str] = []

        def apply(session: Any, event: Event, now: Any) -> str:
            if event.data.payment_id == self.hold_id:
                self.entered.set()
                assert self.release_event.wait(60), "the held batch was never released"
            return real(session, event, now)

        monkeypatch.setitem(applying.APPLY, "payment.received", apply)
        holder = payment_received("l-hold", amount="1.00", amount_due_after="0")
        holder["data"]["payment_id"] = self.hold_id
        assert post(live, holder, settle=False).status_code == 202  # answered once stored
        self.posted.append(holder["id"])
        assert self.entered.wait(30), "the holder was never applied"

    @property
    def intake(self) -> Any:
        return self.live.app.state.intake

    def post_waiting(self, events: list[dict[str, Any]]) -> list[httpx.Response]:
        """Post the events one after another; each is answered once stored, and all of
        them wait, together and in this order, to be applied."""
        responses = []
        for event in events:
            responses.append(post(self.live, event, settle=False))
            if responses[-1].status_code == 202:
                self.posted.append(event["id"])
        assert self.intake.backlog == len(self.posted) - 1
        return responses

    def release(self) -> None:
        self.release_event.set()
        self.live.wait_applied(self.posted, timeout=60)


@pytest.fixture
def held(live: LiveService, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], HeldBatch]]:
    made: list[HeldBatch] = []

    def make() -> HeldBatch:
        made.append(HeldBatch(live, monkeypatch))
        return made[-1]

    yield make
    for batch in made:
        batch.release_event.set()


def test_many_events_posted_together_are_all_accepted_and_applied(live: LiveService) -> None:
    zone = zone_at_local_hour(3)
    # one loan alone first: what each of the others must end up with
    assert post(live, borrower_upserted("b-ref", timezone=zone)).status_code == 202
    assert post(live, loan_updated("l-ref", "b-ref", days_past_due=3)).status_code == 202
    reference = plan_of(live, "l-ref")
    assert reference

    count = 40
    borrowers = [borrower_upserted(f"b-many-{i}", timezone=zone) for i in range(count)]
    loans = [loan_updated(f"l-many-{i}", f"b-many-{i}", days_past_due=3) for i in range(count)]
    for responses, events in (
        (post_together(live, borrowers), borrowers),
        (post_together(live, loans), loans),
    ):
        assert [r.status_code for r in responses] == [202] * count
        assert [r.json() for r in responses] == [
            {"status": "accepted", "id": event["id"]} for event in events
        ]
    for i in range(count):
        assert plan_of(live, f"l-many-{i}") == reference, i
    timeline = live.get("/v1/borrowers/b-many-7/timeline").json()
    outcomes = [item["outcome"] for item in timeline["items"] if item["kind"] == "event"]
    assert outcomes == ["applied", "applied"]


def test_events_waiting_together_are_applied_in_one_batch_in_order(
    live: LiveService, held: Callable[[], HeldBatch]
) -> None:
    zone = zone_at_local_hour(3)
    batch = held()
    newer = loan_updated("l-order", "b-order", days_past_due=20)
    older = loan_updated("l-order", "b-order", days_past_due=2)
    older["occurred_at"] = "2020-01-01T00:00:00Z"
    waiting = batch.post_waiting(
        [
            borrower_upserted("b-order", timezone=zone),
            loan_updated("l-order-2", "b-order", days_past_due=1),
            newer,
            older,
        ]
    )
    assert [response.status_code for response in waiting] == [202] * 4
    batch.release()
    timeline = live.get("/v1/borrowers/b-order/timeline").json()
    outcomes = {
        item["event_id"]: item["outcome"] for item in timeline["items"] if item["kind"] == "event"
    }
    assert outcomes[newer["id"]] == "applied"
    assert outcomes[older["id"]] == "ignored_stale"
    pending = live.messages(loan_id="l-order", status="scheduled,deferred")
    assert pending and {item["stage"] for item in pending} == {"negotiation"}
    assert live.messages(loan_id="l-order-2", status="scheduled,deferred")


def test_copies_of_one_event_posted_together_are_accepted_once(
    live: LiveService, held: Callable[[], HeldBatch]
) -> None:
    zone = zone_at_local_hour(3)
    assert post(live, borrower_upserted("b-copies", timezone=zone)).status_code == 202
    loan = loan_updated("l-copies", "b-copies", days_past_due=3)

    # copies racing each other over separate connections
    statuses = sorted(r.status_code for r in post_together(live, [loan] * 12))
    assert statuses == [200] * 11 + [202]
    planned = plan_of(live, "l-copies")
    assert planned

    # copies waiting for the same batch
    batch = held()
    again = loan_updated("l-copies", "b-copies", days_past_due=4)
    answers = batch.post_waiting([again] * 6)
    batch.release()
    assert sorted(a.status_code for a in answers) == [200] * 5 + [202]
    assert {a.json()["status"] for a in answers if a.status_code == 200} == {"duplicate"}
    keys = [item["events"][0]["detail"] for item in live.messages(loan_id="l-copies", limit=500)]
    assert len(keys) == len(set(keys))


def test_one_event_that_fails_does_not_fail_the_others_and_is_tried_again(
    live: LiveService, held: Callable[[], HeldBatch]
) -> None:
    zone = zone_at_local_hour(3)
    assert post(live, borrower_upserted("b-fail", timezone=zone)).status_code == 202
    assert post(live, loan_updated("l-fail", "b-fail", days_past_due=3)).status_code == 202
    batch = held()
    real = applying.APPLY["payment.received"]

    def explode(session: Any, event: Event, now: Any) -> str:
        if event.data.payment_id == "pay-explodes":
            raise RuntimeError("this event's apply fails")
        return real(session, event, now)

    applying.APPLY["payment.received"] = explode  # restored by the monkeypatch of `held`
    bad = payment_received("l-fail", amount="250.00", amount_due_after="0")
    bad["data"]["payment_id"] = "pay-explodes"
    events = [
        borrower_upserted("b-fail-2", timezone=zone),
        loan_updated("l-fail-2", "b-fail-2", days_past_due=3),
        bad,
        borrower_upserted("b-fail-3", timezone=zone),
    ]
    # every one is stored before its answer, the one that will fail included
    assert [r.status_code for r in batch.post_waiting(events)] == [202] * 4
    batch.release()
    outcomes = live.outcomes([event["id"] for event in events])
    assert outcomes == {
        events[0]["id"]: "applied",
        events[1]["id"]: "applied",
        bad["id"]: "failed",
        events[3]["id"]: "applied",
    }
    timeline = live.get("/v1/borrowers/b-fail/timeline").json()
    failed = [item for item in timeline["items"] if item.get("event_id") == bad["id"]]
    assert failed and failed[0]["outcome"] == "failed"
    assert "RuntimeError" in failed[0]["detail"]
    assert live.messages(loan_id="l-fail-2", status="scheduled,deferred")
    assert live.messages(loan_id="l-fail", status="scheduled,deferred")  # nothing half-applied
    # redelivered, it is the same event: a duplicate, not a second payment
    assert post(live, bad).status_code == 200

    # once the fault is gone, the clock's first sweep after its retry time applies it
    applying.APPLY["payment.received"] = real
    assert live.clock.apply_orphaned_events() == 0  # not before its retry time
    retry_time = live.services.dispatcher.now() + RETRY_AFTER
    sessions, policy = live.services.runtime.sessions, live.services.policy
    assert apply_orphaned(sessions, policy, lambda: retry_time) >= 1
    assert live.outcomes([bad["id"]]) == {bad["id"]: "applied"}
    assert all(
        item["status"] == "cancelled" for item in live.messages(loan_id="l-fail", purpose="dunning")
    )


def test_a_store_outage_answers_503_and_loses_nothing_it_accepted(
    live: LiveService, postgres_engine: Engine
) -> None:
    zone = zone_at_local_hour(3)
    before = [borrower_upserted(f"b-out-{i}", timezone=zone) for i in range(5)]
    assert [r.status_code for r in post_together(live, before)] == [202] * 5

    database = postgres_engine.url.database
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    during = [loan_updated(f"l-out-{i}", f"b-out-{i}", days_past_due=3) for i in range(5)]
    try:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database},
            )
        outage = post_together(live, during)
        assert [r.status_code for r in outage] == [503] * 5
        assert all("retry" in r.json()["detail"] for r in outage)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
        admin.dispose()

    postgres_engine.dispose()  # its connections were ended with the others
    stored = stored_ids(postgres_engine)
    assert {event["id"] for event in before} == stored  # every 202 kept, no 503 stored
    with postgres_engine.connect() as connection:
        assert connection.execute(select(m.Loan.id)).first() is None  # nothing half-applied

    # the loan system retries: now each is accepted once and applied
    assert [r.status_code for r in post_together(live, during)] == [202] * 5
    assert stored_ids(postgres_engine) == {e["id"] for e in before + during}
    for i in range(5):
        assert live.messages(loan_id=f"l-out-{i}", status="scheduled,deferred")


def test_events_a_stopped_process_accepted_are_applied_by_the_clock(live: LiveService) -> None:
    zone = zone_at_local_hour(3)
    assert post(live, borrower_upserted("b-orphan", timezone=zone)).status_code == 202
    now = live.services.dispatcher.now()
    # accepted (stored, answered 202) by a web process that stopped before applying them
    crashed = parse_event(loan_updated("l-orphan", "b-orphan", days_past_due=3))
    just_now = parse_event(loan_updated("l-orphan-2", "b-orphan", days_past_due=3))
    with transaction(live.services.runtime.sessions) as session:
        store_in_inbox(session, [crashed], now - dt.timedelta(minutes=2), outcome="pending")
        # one stored moments ago may still be applied by the process that took it
        store_in_inbox(session, [just_now], now, outcome="pending")
    assert live.messages(loan_id="l-orphan") == []

    assert live.clock.apply_orphaned_events() == 1
    assert live.outcomes([crashed.id, just_now.id]) == {
        crashed.id: "applied",
        just_now.id: "pending",
    }
    assert live.messages(loan_id="l-orphan", status="scheduled,deferred")
    assert live.messages(loan_id="l-orphan-2") == []
    # applying is idempotent: a second sweep finds nothing of it to do
    assert live.clock.apply_orphaned_events() == 0
    planned = plan_of(live, "l-orphan")
    live.clock.apply_orphaned_events()
    assert plan_of(live, "l-orphan") == planned


def test_events_that_fail_again_do_not_hold_back_the_ones_behind_them(
    live: LiveService, monkeypatch: pytest.MonkeyPatch
) -> None:
    zone = zone_at_local_hour(3)
    assert post(live, borrower_upserted("b-behind", timezone=zone)).status_code == 202
    assert post(live, loan_updated("l-behind", "b-behind", days_past_due=3)).status_code == 202
    real = applying.APPLY["payment.received"]

    def explode(session: Any, event: Event, now: Any) -> str:
        if event.data.payment_id.startswith("pay-still-failing"):
            raise RuntimeError("still failing")
        return real(session, event, now)

    monkeypatch.setitem(applying.APPLY, "payment.received", explode)
    now = live.services.dispatcher.now()
    failing = []
    for index in range(3):
        event = payment_received("l-behind", amount="1.00", amount_due_after="500.00")
        event["data"]["payment_id"] = f"pay-still-failing-{index}"
        failing.append(parse_event(event))
    orphan = parse_event(loan_updated("l-behind-2", "b-behind", days_past_due=3))
    with transaction(live.services.runtime.sessions) as session:
        store_in_inbox(session, failing, now - dt.timedelta(minutes=5), outcome="failed")
        store_in_inbox(session, [orphan], now - dt.timedelta(minutes=2), outcome="pending")

    # one row per round: the failing ones are tried once each, then the one behind them
    found = apply_orphaned(
        live.services.runtime.sessions, live.services.policy, live.services.dispatcher.now, limit=1
    )
    assert found == 4
    outcomes = live.outcomes([event.id for event in [*failing, orphan]])
    assert outcomes == {**{event.id: "failed" for event in failing}, orphan.id: "applied"}
    assert live.messages(loan_id="l-behind-2", status="scheduled,deferred")
