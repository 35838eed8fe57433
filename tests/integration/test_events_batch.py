"""POST /v1/events/batch and `outreach events post` (SPEC §4, §9), through the running
service on PostgreSQL and Redis: results in the order sent, invalid events named and not
stored, duplicates idempotent, whole-body refusals storing nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from outreach.store.models import Borrower, Loan, ReceivedEvent
from tests.factories import (
    borrower_upserted,
    envelope,
    loan_updated,
    payment_received,
    zone_at_local_hour,
)
from tests.live import WEBHOOK_SECRET, LiveService, sign

REPO_ROOT = Path(__file__).resolve().parents[2]


def post_batch(live: LiveService, body: Any, *, signature: str | None = None) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return live.client.post(
        "/v1/events/batch",
        content=raw,
        headers={
            "Content-Type": "application/json",
            "X-Outreach-Signature": signature if signature is not None else sign(raw),
        },
    )


def stored_ids(live: LiveService) -> set[str]:
    with live.services.runtime.sessions() as session:
        return set(session.scalars(select(ReceivedEvent.id)))


def wait_all_applied(live: LiveService, timeout: float = 120) -> None:
    """Until no stored event is pending (asked rarely: the service runs in this process)."""

    def none_pending() -> bool:
        with live.services.runtime.sessions() as session:
            pending = select(func.count()).where(ReceivedEvent.outcome == "pending")
            return session.scalar(pending) == 0

    live.wait_for(none_pending, timeout=timeout, interval=0.25)


def book(prefix: str, count: int) -> list[dict[str, Any]]:
    """A borrower and an overdue loan each, the borrower in daytime."""
    events: list[dict[str, Any]] = []
    zone = zone_at_local_hour(11)
    for index in range(count):
        borrower = f"{prefix}-b{index}"
        events.append(borrower_upserted(borrower, timezone=zone, phones=[f"+1415555{index:04d}"]))
        events.append(loan_updated(f"{prefix}-l{index}", borrower, days_past_due=5))
    return events


def test_a_batch_is_stored_applied_and_answered_in_order(live: LiveService) -> None:
    events = book("order", 20)
    response = post_batch(live, {"events": events})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["id"] for r in results] == [e["id"] for e in events]
    assert {r["status"] for r in results} == {"accepted"}
    live.wait_applied([e["id"] for e in events])
    with live.services.runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Borrower)) == 20
        loans = session.scalars(select(Loan.id).where(Loan.id.like("order-l%"))).all()
    assert len(loans) == 20
    # the loan's first dunning step was planned from the batch, as from single events
    planned = live.messages(borrower_id="order-b3")
    assert planned and all(m["loan_id"] == "order-l3" for m in planned)

    again = post_batch(live, {"events": [*events[:5], events[0]]})
    assert again.status_code == 200
    assert [r["status"] for r in again.json()["results"]] == ["duplicate"] * 6


def test_an_invalid_event_is_named_not_stored_and_stops_nothing(live: LiveService) -> None:
    good = book("mixed", 2)
    bad_amount = loan_updated("mixed-l9", "mixed-b0", days_past_due=3)
    bad_amount["data"]["loan"]["amount_due"] = "twelve"
    unknown_type = envelope("loan.exploded", {"loan_id": "x"})
    no_id = envelope("loan.closed", {"loan_id": "mixed-l0", "reason": "paid_off"})
    del no_id["id"]
    same_twice = good[0]
    events: list[Any] = [good[0], bad_amount, good[1], unknown_type, "text", no_id]
    events += [good[2], good[3], same_twice]
    response = post_batch(live, {"events": events})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [
        "accepted",
        "invalid",
        "accepted",
        "invalid",
        "invalid",
        "invalid",
        "accepted",
        "accepted",
        "duplicate",
    ]
    assert results[1]["id"] == bad_amount["id"]
    assert results[1]["error"]["field"] == "data.loan.amount_due"
    assert "amount_due" in results[1]["error"]["detail"]
    assert results[3]["error"]["field"] == "type"
    assert results[4] == {
        "id": None,
        "status": "invalid",
        "error": {"field": "body", "detail": "body: must be a JSON object"},
    }
    assert results[5]["id"] is None and results[5]["error"]["field"] == "id"
    stored = stored_ids(live)
    assert {e["id"] for e in good} <= stored
    assert bad_amount["id"] not in stored and unknown_type["id"] not in stored


def test_refusals_of_the_whole_body_store_nothing(live: LiveService) -> None:
    events = book("refused", 3)
    body = json.dumps({"events": events}).encode()
    unsigned = post_batch(live, body, signature="t=1,v1=00")
    assert unsigned.status_code == 401
    wrong_secret = post_batch(live, body, signature=sign(body, secret="not-the-secret"))
    assert wrong_secret.status_code == 401

    not_a_list = post_batch(live, {"events": {"id": "x"}})
    assert not_a_list.status_code == 422
    assert not_a_list.json()["field"] == "events"
    not_an_object = post_batch(live, [events[0]])
    assert not_an_object.status_code == 422
    not_json = post_batch(live, b"{events: nope")
    assert not_json.status_code == 422 and not_json.json()["field"] == "body"

    too_many = post_batch(live, {"events": book("many", 501)})  # 1,002 events
    assert too_many.status_code == 422
    assert "at most 1000" in too_many.json()["detail"]

    padding = "x" * (5 * 1024 * 1024)
    too_large = post_batch(live, {"events": events, "padding": padding})
    assert too_large.status_code == 413

    assert stored_ids(live) == set()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_post(live: LiveService, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "outreach",
            "events",
            "post",
            str(path),
            "--url",
            live.base_url,
            *extra,
        ],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "OUTREACH_WEBHOOK_SECRET": WEBHOOK_SECRET},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_events_post_sends_a_file_and_names_each_invalid_line(
    live: LiveService, tmp_path: Path
) -> None:
    # more than one batch: 1,040 events go in two
    events = book("file", 520)
    bad = loan_updated("file-lx", "file-b1", days_past_due=-5)
    bad["data"]["loan"]["currency"] = 12
    lines = [json.dumps(e) for e in events[:700]]
    lines += ["{not json", json.dumps(bad), ""]
    lines += [json.dumps(e) for e in events[700:]]
    path = write_lines(tmp_path / "EVENTS.jsonl", lines)

    first = run_post(live, path)
    assert first.returncode == 1, first.stderr
    assert "1040 accepted, 0 duplicate, 2 invalid (2 batches" in first.stdout
    assert "line 701: body: not valid JSON" in first.stderr
    assert f"line 702 ({bad['id']}): data.loan.currency" in first.stderr
    wait_all_applied(live)
    assert {e["id"] for e in events} <= stored_ids(live)

    # sent again (a rerun after a crash): nothing is applied twice
    clean = write_lines(tmp_path / "clean.jsonl", [json.dumps(e) for e in events[:50]])
    second = run_post(live, clean)
    assert second.returncode == 0, second.stderr
    assert "0 accepted, 50 duplicate, 0 invalid" in second.stdout


def test_events_post_without_a_secret_or_with_the_wrong_one_fails_clearly(
    live: LiveService, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "EVENTS.jsonl", [json.dumps(e) for e in book("secret", 1)])
    wrong = run_post(live, path, "--secret", "wrong")
    assert wrong.returncode == 1
    assert "answered 401" in wrong.stderr
    # in a directory where `outreach run` keeps no secret of its own either
    missing = subprocess.run(
        [sys.executable, "-m", "outreach", "events", "post", str(path), "--url", live.base_url],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2
    assert "no webhook secret" in missing.stderr
    assert stored_ids(live) == set()


def test_a_payment_goes_ahead_of_a_backlog_with_its_own_loans_events(live: LiveService) -> None:
    zone = zone_at_local_hour(11)
    live.post_event(borrower_upserted("ahead-b", timezone=zone, phones=["+14155550999"]))
    live.post_event(loan_updated("ahead-l", "ahead-b", days_past_due=5))
    assert live.messages(loan_id="ahead-l", status="scheduled,deferred")
    # a backlog of 3,000 events (1,500 loans to plan), with one more update of the loan to
    # be paid in the middle of it: that one must apply before the payment, the rest after
    backlog = book("ahead", 1500)
    update = loan_updated("ahead-l", "ahead-b", days_past_due=6)
    backlog.insert(1700, update)
    for start in range(0, len(backlog), 1000):
        assert post_batch(live, {"events": backlog[start : start + 1000]}).status_code == 200
    paid = payment_received("ahead-l", amount="1800.00", amount_due_after="0.00")
    assert live.post_event(paid, settle=False).status_code == 202

    def applied_then_behind() -> int | None:
        """Once the payment is applied: how many of the backlog are still pending."""
        with live.services.runtime.sessions() as session:
            if session.get(ReceivedEvent, paid["id"]).outcome == "pending":
                return None
            return (
                int(
                    session.scalar(
                        select(func.count()).where(
                            ReceivedEvent.outcome == "pending",
                            ReceivedEvent.id.in_([e["id"] for e in backlog]),
                        )
                    )
                    or 0
                )
                + 1
            )  # +1: a wait_for result of 0 would read as "not yet"

    behind = live.wait_for(applied_then_behind, timeout=60, interval=0.02) - 1
    # its loan's pending reminders went with it, before the backlog was through
    assert not live.messages(
        loan_id="ahead-l", purpose="dunning", status="scheduled,deferred,queued"
    )
    with live.services.runtime.sessions() as session:
        assert session.get(ReceivedEvent, update["id"]).outcome == "applied"
    assert behind, "the payment waited for the whole backlog"
    wait_all_applied(live)
    # and no reminder of the loan was planned again after it was paid
    assert not live.messages(loan_id="ahead-l", purpose="dunning", status="scheduled,deferred")
