"""What the final gate knows of the events it has not applied, and what the edge refuses:
through the live service (web, clock and worker in this process) on SQLite and on PostgreSQL.

An accepted event that fails to apply holds the messages of its borrower and loan (a payment
or a cease-contact not applied must not let dunning go on); one that keeps failing becomes a
dead letter ops can read and re-drive; values the store cannot hold are refused with a 422
naming the field; a rendered message that fails the lint is withheld for a person."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text, update

from outreach.service.inbox import (
    DEAD_LETTER_AFTER,
    HOLD_PENDING_AFTER,
    RETRY_AFTER,
    apply_orphaned,
    store_in_inbox,
    unapplied_about,
)
from outreach.service.parse import parse_event
from outreach.store import models as m
from outreach.store.db import make_session_factory, transaction
from outreach.store.inbox import PENDING_OUTCOME
from tests.conftest import REDIS_URL
from tests.factories import (
    borrower_upserted,
    envelope,
    loan_updated,
    payment_received,
    zone_at_local_hour,
)
from tests.live import ADMIN_TOKEN, VIEWER_TOKEN, LiveService, start_live_service

PROBE = "Hi 王芳😀Please pay at http://scam.example now"


@pytest.fixture
def service(engine: Engine, redis_client: redis.Redis) -> Iterator[LiveService]:
    yield from start_live_service(engine.url.render_as_string(hide_password=False), REDIS_URL)


def refuse_payments(engine: Engine, loan_id: str) -> None:
    """Make the store itself refuse this loan's payments (a fault applying can meet)."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(
                text(
                    "CREATE FUNCTION refuse_payment() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'payments of % are refused', NEW.loan_id; END $$ "
                    "LANGUAGE plpgsql"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_payment BEFORE INSERT ON payments FOR EACH ROW "
                    f"WHEN (NEW.loan_id = '{loan_id}') EXECUTE FUNCTION refuse_payment()"
                )
            )
        else:
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_payment BEFORE INSERT ON payments "
                    f"WHEN NEW.loan_id = '{loan_id}' "
                    "BEGIN SELECT RAISE(ABORT, 'payments are refused'); END"
                )
            )


def allow_payments(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("DROP TRIGGER refuse_payment" + _ON_PAYMENTS[engine.dialect.name]))
        if engine.dialect.name == "postgresql":
            connection.execute(text("DROP FUNCTION refuse_payment()"))


_ON_PAYMENTS = {"postgresql": " ON payments", "sqlite": ""}


def make_due(live: LiveService, message_id: str) -> None:
    """Bring a deferred message's time forward to now, as the clock reaching it would."""
    with transaction(live.services.runtime.sessions) as session:
        session.execute(
            update(m.Message)
            .where(m.Message.id == message_id)
            .values(send_at=live.services.dispatcher.now())
        )


def message(live: LiveService, message_id: str) -> dict[str, Any]:
    response = live.get(f"/v1/messages/{message_id}")
    response.raise_for_status()
    found: dict[str, Any] = response.json()
    return found


def held_steps(live: LiveService, message_id: str) -> list[dict[str, Any]]:
    return [
        step for step in message(live, message_id)["events"] if step["reason"] == "event_pending"
    ]


def sms_sent_to(live: LiveService, message_id: str) -> bool:
    return any(call.message_id == message_id for call in live.senders["sms"].calls)


def test_a_payment_that_fails_to_apply_holds_dunning_until_it_is_applied(
    service: LiveService, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    live = service
    live.post_event(borrower_upserted("b-held", timezone=zone_at_local_hour(3)))
    live.post_event(loan_updated("l-held", "b-held", days_past_due=3))
    (waiting, *_) = live.messages(loan_id="l-held", status="deferred", purpose="dunning")
    refuse_payments(engine, "l-held")

    paid = payment_received("l-held", amount="250.00", amount_due_after="0")
    assert live.post_event(paid).status_code == 202
    assert live.outcomes([paid["id"]]) == {paid["id"]: "failed"}

    # its morning comes while the payment is not applied: the gate holds it, naming the event
    make_due(live, waiting["id"])
    live.wait_for(lambda: held_steps(live, waiting["id"]))
    held = message(live, waiting["id"])
    assert held["status"] == "deferred" and held["reason"] == "event_pending"
    assert f"event={paid['id']}" in held["events"][-1]["detail"]
    assert "outcome=failed" in held["events"][-1]["detail"]
    assert not sms_sent_to(live, waiting["id"])

    # tried again as each retry time comes; the last failure makes it a dead letter
    sessions, policy = live.services.runtime.sessions, live.services.policy
    later = live.services.dispatcher.now()
    with caplog.at_level(logging.WARNING, logger="outreach.service.inbox"):
        for attempt in range(2, DEAD_LETTER_AFTER + 1):
            later += RETRY_AFTER * 2 ** (attempt - 2)
            assert apply_orphaned(sessions, policy, lambda moment=later: moment) == 1
        assert apply_orphaned(sessions, policy, lambda: later + dt.timedelta(days=1)) == 0
    assert live.outcomes([paid["id"]]) == {paid["id"]: "dead_letter"}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and paid["id"] in r.message]
    assert len(errors) == 1, "a dead letter is logged at ERROR once"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.exc_info]
    assert warnings == [], "a failed try is one line, without a traceback"

    # ops see it, with its error on one line; readiness counts it and still answers 200
    assert live.client.get("/v1/events/dead").status_code == 401
    dead = live.get("/v1/events/dead", token=VIEWER_TOKEN).json()
    assert dead["total"] == 1
    (letter,) = dead["items"]
    assert (letter["id"], letter["type"], letter["loan_id"]) == (
        paid["id"],
        "payment.received",
        "l-held",
    )
    assert letter["attempts"] == DEAD_LETTER_AFTER
    assert letter["error"].startswith(f"dead letter after {DEAD_LETTER_AFTER} attempt(s): ")
    assert "\n" not in letter["error"]
    ready = live.client.get("/ready")
    assert ready.status_code == 200 and ready.json()["dead_letters"] == 1

    # a dead letter keeps holding the loan's dunning
    make_due(live, waiting["id"])
    live.wait_for(lambda: "outcome=dead_letter" in held_steps(live, waiting["id"])[-1]["detail"])
    assert not sms_sent_to(live, waiting["id"])

    # the fault fixed, an admin re-drives it: applied, the dunning cancelled, nothing held
    allow_payments(engine)
    retry = f"/v1/events/dead/{paid['id']}/retry"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    viewer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    assert live.client.post(retry, headers=viewer).status_code == 403
    redriven = live.client.post(retry, headers=admin)
    assert redriven.status_code == 200
    assert redriven.json()["outcome"] == "applied"
    assert message(live, waiting["id"])["status"] == "cancelled"
    assert message(live, waiting["id"])["reason"] == "loan_current"
    assert live.client.post(retry, headers=admin).status_code == 404  # no dead letter now
    assert live.client.get("/ready").json()["dead_letters"] == 0
    dunning = {item["id"] for item in live.messages(loan_id="l-held", purpose="dunning")}
    assert not any(call.message_id in dunning for call in live.senders["sms"].calls)


def test_an_event_left_pending_holds_its_borrowers_messages(service: LiveService) -> None:
    live = service
    live.post_event(borrower_upserted("b-stale", timezone=zone_at_local_hour(3)))
    live.post_event(loan_updated("l-stale", "b-stale", days_past_due=3))
    (stale, *_) = live.messages(loan_id="l-stale", status="deferred", purpose="dunning")
    # a cease-contact accepted ten seconds ago by a web process that stopped before applying it
    now = live.services.dispatcher.now()
    cease = parse_event(
        envelope(
            "contact.restricted",
            {"borrower_id": "b-stale", "restriction": "cease_contact", "active": True},
        )
    )
    with transaction(live.services.runtime.sessions) as session:
        store_in_inbox(session, [cease], now - dt.timedelta(seconds=10), outcome="pending")

    make_due(live, stale["id"])
    live.wait_for(lambda: held_steps(live, stale["id"]))
    assert f"event={cease.id}" in held_steps(live, stale["id"])[-1]["detail"]
    assert "outcome=pending" in held_steps(live, stale["id"])[-1]["detail"]
    assert not sms_sent_to(live, stale["id"])

    # the clock applies the cease: the message it held is withheld for good, never sent
    sessions, policy = live.services.runtime.sessions, live.services.policy
    apply_orphaned(sessions, policy, live.services.dispatcher.now, older_than=dt.timedelta(0))
    make_due(live, stale["id"])
    live.wait_for(lambda: message(live, stale["id"])["status"] == "suppressed")
    assert message(live, stale["id"])["reason"] == "cease_contact"
    assert not sms_sent_to(live, stale["id"])


def test_the_gate_holds_for_failed_and_dead_events_and_pending_ones_a_few_seconds_old(
    engine: Engine,
) -> None:
    now = dt.datetime(2026, 11, 23, 2, tzinfo=dt.UTC)
    sessions = make_session_factory(engine)
    about = {
        "young": (PENDING_OUTCOME, HOLD_PENDING_AFTER - dt.timedelta(seconds=1)),
        "old": (PENDING_OUTCOME, HOLD_PENDING_AFTER + dt.timedelta(seconds=1)),
        "failed": ("failed", dt.timedelta(0)),
        "dead": ("dead_letter", dt.timedelta(0)),
        "done": ("applied", dt.timedelta(hours=1)),
    }
    for name, (outcome, age) in about.items():
        event = parse_event(borrower_upserted(f"b-{name}"))
        with transaction(sessions) as session:
            store_in_inbox(session, [event], now - age, outcome=outcome)
    payment = parse_event(payment_received("l-paid", amount="1.00", amount_due_after="0"))
    with transaction(sessions) as session:
        store_in_inbox(session, [payment], now - dt.timedelta(minutes=1), outcome="failed")
    with sessions() as session:
        found = unapplied_about(
            session, [f"b-{name}" for name in about], ["l-paid", "l-other"], now
        )
    assert {key: event.outcome for key, event in found.items()} == {
        ("borrower", "b-old"): "pending",
        ("borrower", "b-failed"): "failed",
        ("borrower", "b-dead"): "dead_letter",
        ("loan", "l-paid"): "failed",
    }
    assert found[("loan", "l-paid")].id == payment.id


def test_values_the_store_cannot_hold_are_refused_naming_the_field(service: LiveService) -> None:
    live = service
    live.post_event(borrower_upserted("b-edge", timezone=zone_at_local_hour(14)))

    def loan_with(**fields: Any) -> dict[str, Any]:
        event = loan_updated("l-edge", "b-edge", days_past_due=3)
        event["data"]["loan"].update(fields)
        return event

    nul = borrower_upserted("b-edge")
    nul["data"]["borrower"]["address"] = {"country": "US", "city": "Spring\u0000field"}
    refused = {
        "data.loan.amount_due": loan_with(amount_due="1e30"),
        "data.loan.balance": loan_with(balance="0.000001"),
        "data.loan.due_date": loan_with(due_date="9999-12-31"),
        "data.loan.days_past_due": loan_with(days_past_due=99999),
        "data.borrower.address.city": nul,
        "data.borrower.name": borrower_upserted("b-edge", name=PROBE),
    }
    for field, event in refused.items():
        response = live.post_event(event)
        assert response.status_code == 422, (field, response.text)
        assert response.json()["field"] == field
        assert response.json()["detail"].startswith(field)
    assert live.outcomes([event["id"] for event in refused.values()]) == {}
    assert live.get("/v1/events/dead").json()["total"] == 0


def test_a_rendered_message_that_fails_the_lint_is_withheld_for_a_person(
    service: LiveService,
) -> None:
    live = service
    live.post_event(borrower_upserted("b-probe", timezone=zone_at_local_hour(14)))
    # a name stored before names were checked at the edge
    with transaction(live.services.runtime.sessions) as session:
        session.execute(update(m.Borrower).where(m.Borrower.id == "b-probe").values(name=PROBE))
    live.post_event(loan_updated("l-probe", "b-probe", days_past_due=1))

    def rejected() -> list[dict[str, Any]]:
        return live.messages(loan_id="l-probe", reason="content_rejected")

    (withheld,) = live.wait_for(rejected)
    assert withheld["status"] == "suppressed"
    step = withheld["events"][-1]
    assert step["status"] == "suppressed" and step["reason"] == "content_rejected"
    assert "foreign_link" in step["detail"] and "http://scam.example" in step["detail"]
    # what it would have said is kept for the person who reviews it
    assert PROBE in withheld["body"]
    assert [item["id"] for item in live.messages(needs_human="true")] == [withheld["id"]]
    assert live.senders["sms"].calls == []
    assert live.messages(loan_id="l-probe", status="sent,sending,queued") == []
