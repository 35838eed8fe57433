"""The pipeline through HTTP against a running app on PostgreSQL and Redis."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from sqlalchemy import Engine

from tests.factories import (
    borrower_upserted,
    loan_updated,
    payment_received,
    zone_at_local_hour,
)
from tests.integration.conftest import serve
from tests.live import VIEWER_TOKEN, LiveService, sign


def only_message(live: LiveService, **filters: Any) -> dict[str, Any]:
    items = live.messages(**filters)
    assert len(items) == 1, items
    return items[0]


def test_daytime_borrower_gets_the_first_message_within_a_tick(live: LiveService) -> None:
    zone = zone_at_local_hour(14)
    assert live.post_event(borrower_upserted("b-day", timezone=zone)).status_code == 202
    accepted = live.post_event(loan_updated("l-day", "b-day", days_past_due=1))
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "accepted"

    sent = live.wait_for(
        lambda: [m for m in live.messages(loan_id="l-day") if m["status"] == "sent"], timeout=5
    )
    message = sent[0]
    assert message["stage"] == "early"
    assert message["channel"] == "sms"
    assert message["purpose"] == "dunning"
    assert message["to"] == "+15005550006"
    assert "Alex Chen" in message["body"] or message["body"]
    assert [call.message_id for call in live.senders["sms"].calls] == [message["id"]]
    statuses = [event["status"] for event in message["events"]]
    assert statuses[0] == "scheduled"
    assert statuses[-3:] == ["queued", "sending", "sent"]


def test_a_3am_borrower_waits_for_8am_and_a_payment_cancels(live: LiveService) -> None:
    zone = zone_at_local_hour(3)
    live.post_event(borrower_upserted("b-night", timezone=zone))
    # three days late: the day-2 step (10:00 yesterday) is due now, at 3 a.m. local
    live.post_event(loan_updated("l-night", "b-night", days_past_due=3))

    message = only_message(live, loan_id="l-night", status="deferred")
    assert message["reason"] == "quiet_hours"
    assert message["stage"] == "early"
    local_send = dt.datetime.fromisoformat(message["send_at"]).astimezone(ZoneInfo(zone))
    assert (local_send.hour, local_send.minute) == (8, 0)
    assert local_send - dt.datetime.now(ZoneInfo(zone)) < dt.timedelta(hours=6)
    deferral = message["events"][-1]
    assert deferral["status"] == "deferred" and deferral["reason"] == "quiet_hours"
    assert "until=" in (deferral["detail"] or "")
    planned_later = live.messages(loan_id="l-night", status="scheduled")
    assert planned_later, "the rest of the stage's cadence is planned ahead"

    paid = live.post_event(
        payment_received("l-night", amount="250.00", amount_due_after="0"), settle=False
    )
    assert paid.status_code == 202
    accepted_at = time.monotonic()
    live.wait_for(
        lambda: all(
            m["status"] == "cancelled" for m in live.messages(loan_id="l-night", purpose="dunning")
        ),
        timeout=1,
    )
    assert time.monotonic() - accepted_at < 1
    for cancelled in live.messages(loan_id="l-night", status="cancelled"):
        assert cancelled["reason"] == "loan_current"
    assert live.messages(loan_id="l-night", status="deferred,scheduled,queued") == [
        m
        for m in live.messages(loan_id="l-night", status="deferred,scheduled,queued")
        if m["purpose"] == "payment_confirmation"
    ]
    assert live.senders["sms"].calls == [] or all(
        call.message_id not in {m["id"] for m in live.messages(purpose="dunning")}
        for call in live.senders["sms"].calls
    )


def test_duplicate_and_replayed_events_create_nothing_twice(live: LiveService) -> None:
    zone = zone_at_local_hour(3)
    borrower = borrower_upserted("b-dup", timezone=zone)
    loan = loan_updated("l-dup", "b-dup", days_past_due=1)
    assert live.post_event(borrower).status_code == 202
    first = live.post_event(loan)
    assert first.status_code == 202
    again = live.post_event(loan)
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "id": loan["id"]}
    # replayed later with a fresh signature: still the same event
    body = json.dumps(loan).encode()
    replay = live.post_event(loan, signature=sign(body, at=time.time() + 5))
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    before = live.messages(loan_id="l-dup")
    planned_keys = [m["events"][0]["detail"] for m in before]
    assert before and len(planned_keys) == len(set(planned_keys))
    assert live.post_event(loan_updated("l-dup", "b-dup", days_past_due=1)).status_code == 202
    assert [m["id"] for m in live.messages(loan_id="l-dup")] == [m["id"] for m in before]
    # a second planning pass (the clock's re-evaluation) creates nothing new either
    live.clock.lock.refresh()
    live.clock.replan_all(force=True)
    after = live.messages(loan_id="l-dup")
    assert [m["id"] for m in after] == [m["id"] for m in before]


def test_an_out_of_order_loan_update_does_not_move_the_loan_back(live: LiveService) -> None:
    now = dt.datetime.now(dt.UTC)
    live.post_event(borrower_upserted("b-ooo", timezone=zone_at_local_hour(3)))
    newer = loan_updated("l-ooo", "b-ooo", days_past_due=20, occurred_at=now)
    older = loan_updated(
        "l-ooo",
        "b-ooo",
        days_past_due=2,
        occurred_at=now - dt.timedelta(hours=2),
        due_date=(now - dt.timedelta(days=20)).date(),
    )
    assert live.post_event(newer).status_code == 202
    assert live.post_event(older).status_code == 202
    pending = live.messages(loan_id="l-ooo", status="scheduled,deferred")
    assert pending and {m["stage"] for m in pending} == {"negotiation"}
    timeline = live.get("/v1/borrowers/b-ooo/timeline").json()
    outcomes = {
        item["event_id"]: item["outcome"] for item in timeline["items"] if item["kind"] == "event"
    }
    assert outcomes[newer["id"]] == "applied"
    assert outcomes[older["id"]] == "ignored_stale"


def test_webhook_rejections(live: LiveService) -> None:
    event = borrower_upserted("b-rej")
    body = json.dumps(event).encode()
    assert live.post_event(event, signature="").status_code == 401
    assert live.post_event(event, signature=sign(body, secret="wrong")).status_code == 401
    stale = sign(body, at=time.time() - 301)
    assert live.post_event(event, signature=stale).status_code == 401
    bad = borrower_upserted("b-rej")
    bad["data"]["borrower"]["phones"] = ["555-0100"]
    response = live.post_event(bad)
    assert response.status_code == 422
    assert "data.borrower.phones.0" in response.json()["detail"]
    unknown = dict(event, type="loan.exploded")
    response = live.post_event(unknown)
    assert response.status_code == 422 and "type" in response.json()["detail"]
    big = dict(event)
    big["data"] = {"borrower": dict(event["data"]["borrower"], name="x" * (1024 * 1024))}
    assert live.post_event(big).status_code == 413
    # streamed in chunks with no declared length, the limit still holds
    streamed = [b"x" * (256 * 1024)] * 5
    response = live.client.post(
        "/v1/events",
        content=iter(streamed),
        headers={"X-Outreach-Signature": sign(b"".join(streamed))},
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "body larger than 1 MiB"}
    assert live.client.get("/v1/events").status_code == 405
    # nothing was stored by any of those
    assert live.get("/v1/borrowers/b-rej/timeline").status_code == 404


def test_tokens_roles_and_cursor_pages(live: LiveService) -> None:
    assert live.client.get("/v1/messages").status_code == 401
    assert live.get("/v1/messages", token="not-a-token").status_code == 401
    assert live.get("/v1/messages", token=VIEWER_TOKEN).status_code == 200

    zone = zone_at_local_hour(3)
    for index in range(9):
        live.post_event(borrower_upserted(f"b-page-{index}", timezone=zone))
        live.post_event(loan_updated(f"l-page-{index}", f"b-page-{index}", days_past_due=1))
    everything = live.messages(limit=500)
    assert len(everything) >= 9

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        page = live.get("/v1/messages", **params).json()
        seen.extend(item["id"] for item in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == -(-len(everything) // 4)
    assert len(seen) == len(set(seen)) == len(everything)
    assert seen == [m["id"] for m in everything]
    assert live.get("/v1/messages", limit=501).status_code == 422
    assert live.get("/v1/messages", cursor="garbage!").status_code == 422

    target = next(m["id"] for m in everything if m["status"] in ("scheduled", "deferred"))
    target_status = live.get(f"/v1/messages/{target}").json()["status"]
    viewer_cancel = live.client.post(
        f"/v1/messages/{target}/cancel", headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}
    )
    assert viewer_cancel.status_code == 403
    assert live.get(f"/v1/messages/{target}").json()["status"] == target_status
    admin_cancel = live.client.post(
        f"/v1/messages/{target}/cancel",
        headers={"Authorization": "Bearer admin-token-for-tests"},
        json={"note": "borrower called in"},
    )
    assert admin_cancel.status_code == 200
    cancelled = live.get(f"/v1/messages/{target}").json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["reason"] == "ops_cancelled"


def test_export_and_filters(live: LiveService) -> None:
    zone = zone_at_local_hour(3)
    live.post_event(borrower_upserted("b-exp", timezone=zone, name="Mei Lin"))
    live.post_event(loan_updated("l-exp", "b-exp", days_past_due=1))
    everything = live.messages(borrower_id="b-exp")
    scheduled = live.messages(status="scheduled", channel="sms", stage="early")
    assert scheduled and all(m["status"] == "scheduled" for m in scheduled)
    assert live.messages(status="sent") == []
    assert live.messages(channel="email") == []
    assert len(live.messages(q="early_follow_up")) == len(
        [m for m in everything if "early_follow_up" in m["template"]]
    )
    assert live.get("/v1/messages", status="exploded").status_code == 422
    export = live.get("/v1/messages/export.csv", borrower_id="b-exp")
    assert export.status_code == 200
    lines = export.text.strip().splitlines()
    assert lines[0].startswith("id,purpose,borrower_id")
    assert len(lines) == 1 + len(everything)
    assert all("b-exp" in line for line in lines[1:])
    spec = live.client.get("/openapi.json").json()
    for path in (
        "/v1/events",
        "/v1/messages",
        "/v1/messages/{message_id}",
        "/v1/messages/export.csv",
        "/v1/borrowers/{borrower_id}/timeline",
        "/v1/policy",
        "/v1/templates/preview",
    ):
        assert path in spec["paths"], path


@pytest.fixture
def live_without_worker(
    postgres_engine: Engine, redis_client: redis.Redis
) -> Iterator[LiveService]:
    yield from serve(postgres_engine, run_worker=False)


def test_a_released_batch_is_sent_once_each_and_a_payment_after_release_still_stops_one(
    live_without_worker: LiveService,
) -> None:
    live = live_without_worker
    sender = live.senders["sms"]
    zone = zone_at_local_hour(14)
    for number in range(6):
        live.post_event(borrower_upserted(f"b-batch{number}", timezone=zone))
        live.post_event(loan_updated(f"l-batch{number}", f"b-batch{number}", days_past_due=1))
    queued = live.wait_for(
        lambda: (found := live.messages(status="queued")) and len(found) == 6 and found
    )
    ids = [message["id"] for message in queued]
    paid_id = next(m["id"] for m in queued if m["loan_id"] == "l-batch0")
    # the payment lands after the clock released the message, before a worker takes it
    live.post_event(payment_received("l-batch0", amount="250.00", amount_due_after="0"))

    outcomes = live.services.dispatcher.dispatch_many(ids)

    assert outcomes[paid_id] == "skipped:cancelled"
    assert sorted(i for i, outcome in outcomes.items() if outcome == "sent") == sorted(
        i for i in ids if i != paid_id
    )
    assert sorted(call.message_id for call in sender.calls) == sorted(
        i for i in ids if i != paid_id
    )
    # redelivered by the broker: nothing is sent again
    again = live.services.dispatcher.dispatch_many(ids)
    assert set(again.values()) == {"skipped:sent", "skipped:cancelled"}
    assert len(sender.calls) == 5
    for message_id in ids:
        message = live.get(f"/v1/messages/{message_id}").json()
        statuses = [event["status"] for event in message["events"]]
        if message_id == paid_id:
            assert message["status"] == "cancelled" and "sending" not in statuses
            continue
        assert message["status"] == "sent"
        assert message["provider_id"] == f"rec-{message_id}"
        assert message["sent_at"] is not None
        assert statuses[-3:] == ["queued", "sending", "sent"]
        assert statuses.count("sending") == 1
        assert message["body"] and message["to"]
