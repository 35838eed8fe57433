"""EVENTS.jsonl reading and the generated books: checked up front, replayed in time order."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pytest

from outreach.service.parse import SmsInbound
from outreach.sim.book import MAGIC_NUMBERS, generate_book
from outreach.sim.inputs import EventBook
from outreach.sim.results import SimulationInputError

T0 = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


def line(kind: str, at: str, data: dict[str, object], id: str | None = "e1") -> str:
    document: dict[str, object] = {"type": kind, "occurred_at": at, "data": data}
    if id is not None:
        document["id"] = id
    return json.dumps(document)


CLOSED = {"loan_id": "L1", "reason": "paid_off"}


def test_lines_are_replayed_in_time_order_whatever_the_file_order() -> None:
    book = EventBook.from_lines(
        [
            line("loan.closed", "2026-03-03T00:00:00Z", CLOSED, "late"),
            "",
            line("loan.closed", "2026-03-02T08:00:00+08:00", CLOSED, "early"),
            line("loan.closed", "2026-03-03T00:00:00Z", CLOSED, "late-too"),
        ]
    )
    cursor = book.cursor()
    assert cursor.next_at == dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    assert [event.id for _, event in cursor.due(T0)] == ["early"]
    later = [(number, event.id) for number, event in cursor.due(T0 + dt.timedelta(days=2))]
    assert later == [(1, "late"), (4, "late-too")]
    assert cursor.next_at is None and cursor.remaining == 0


def test_a_reply_needs_no_id() -> None:
    reply = line(
        "sms.inbound", "2026-03-02T00:00:00Z", {"from": "+8613812340000", "body": "退订"}, None
    )
    ((number, event),) = list(EventBook.from_lines([reply]).cursor().due(T0))
    assert number == 1 and event.id == "sms-inbound-line-1"
    assert isinstance(event.data, SmsInbound) and event.data.body == "退订"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[1, 2]", "body: must be a JSON object"),
        ('{"id": "x"', "not valid JSON"),
        (line("loan.closed", "yesterday", CLOSED), "occurred_at"),
        (line("loan.closed", "2026-03-02T00:00:00Z", {"loan_id": "L1"}), "data.reason"),
        (line("sms.inbound", "2026-03-02T00:00:00Z", {"from": "12", "body": "x"}), "data.from"),
    ],
)
def test_a_malformed_line_is_named_with_what_is_wrong(text: str, problem: str) -> None:
    good = line("loan.closed", "2026-03-02T00:00:00Z", CLOSED)
    with pytest.raises(SimulationInputError) as raised:
        EventBook.from_lines([good, good, text, good], source="EVENTS.jsonl")
    assert raised.value.line == 3
    assert str(raised.value).startswith("EVENTS.jsonl, line 3: ")
    assert problem in str(raised.value)


def test_a_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SimulationInputError, match="No such file"):
        EventBook.from_file(tmp_path / "nope.jsonl")


def test_the_generated_book_is_varied_valid_and_reproducible() -> None:
    events = generate_book(300, 60, seed=3)
    assert events == generate_book(300, 60, seed=3)
    assert events != generate_book(300, 60, seed=4)
    book = EventBook.from_events(events)  # every line passes the webhook's own parser
    assert len(book) == len(events)
    kinds = Counter(event["type"] for event in events)
    assert set(kinds) == {
        "borrower.upserted",
        "loan.updated",
        "payment.received",
        "promise_to_pay.created",
        "payment_plan.created",
        "field_visit.scheduled",
        "contact.restricted",
        "loan.closed",
        "sms.inbound",
    }
    borrowers = [e["data"]["borrower"] for e in events if e["type"] == "borrower.upserted"]
    assert {b["locale"] for b in borrowers} == {"zh-CN", "zh-TW", "en-US"}
    zones = {b.get("timezone") for b in borrowers}
    assert {"Asia/Shanghai", "Asia/Taipei", "America/New_York", "America/Los_Angeles"} <= zones
    assert any("hardship" in b["tags"] for b in borrowers)
    assert {p for b in borrowers for p in b["phones"]} & set(MAGIC_NUMBERS)
    restrictions = {e["data"]["restriction"] for e in events if e["type"] == "contact.restricted"}
    assert restrictions == {"cease_contact", "dispute"}
    replies = {e["data"]["body"] for e in events if e["type"] == "sms.inbound"}
    assert {"STOP", "退订"} <= replies


def test_the_benchmark_book_reports_every_loan_daily() -> None:
    events = generate_book(10, 60, seed=1, update_every=1, stories=False)
    kinds = Counter(event["type"] for event in events)
    assert kinds == {"borrower.upserted": 10, "loan.updated": 600}
