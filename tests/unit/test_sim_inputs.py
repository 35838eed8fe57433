"""EVENTS.jsonl reading and the generated books: checked up front, replayed in time order."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pytest

from outreach.service.parse import Event, SmsInbound
from outreach.sim.book import CAMPAIGN_ID, MAGIC_NUMBERS, generate_book
from outreach.sim.inputs import CampaignLaunch, EventBook
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


BODY = {"name": "Relief", "channel": "sms", "template": "campaign_hardship_relief"}


def launched(at: str, id: str | None = None, **fields: object) -> str:
    document: dict[str, object] = {
        "type": "campaign.launched",
        "occurred_at": at,
        "data": {**BODY, "start_at": at},
        **fields,
    }
    if id is not None:
        document["id"] = id
    return json.dumps(document)


def test_a_campaign_line_is_replayed_in_its_place_under_its_id_or_its_line() -> None:
    book = EventBook.from_lines(
        [
            line("loan.closed", "2026-03-02T00:00:00Z", CLOSED, "first"),
            launched("2026-03-02T01:00:00Z", id="relief"),
            launched("2026-03-02T01:00:00Z"),
            line("loan.closed", "2026-03-02T01:00:00Z", CLOSED, "after"),
        ]
    )
    cursor = book.cursor()
    assert cursor.remaining == 2 and cursor.remaining_campaigns == 2
    due = list(cursor.due(T0 + dt.timedelta(hours=1)))
    assert [number for number, _ in due] == [1, 2, 3, 4]
    first, relief, unnamed, after = (item for _, item in due)
    assert isinstance(first, Event) and isinstance(after, Event)
    assert isinstance(relief, CampaignLaunch) and isinstance(unnamed, CampaignLaunch)
    assert (relief.campaign_id, unnamed.campaign_id) == ("relief", "cmp_line3")
    assert relief.occurred_at == T0 + dt.timedelta(hours=1)
    assert relief.body["template"] == "campaign_hardship_relief"
    assert cursor.remaining == 0 and cursor.remaining_campaigns == 0


def test_a_campaign_line_read_from_a_file_is_the_same(tmp_path: Path) -> None:
    path = tmp_path / "EVENTS.jsonl"
    path.write_text("\n".join(["", launched("2026-03-02T01:00:00Z")]) + "\n")
    ((number, launch),) = list(EventBook.from_file(path).cursor().due(T0 + dt.timedelta(days=1)))
    assert number == 2 and isinstance(launch, CampaignLaunch)
    assert launch.campaign_id == "cmp_line2"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (launched("2026-03-02T01:00:00"), "occurred_at: must carry a UTC offset"),
        (launched("2026-03-02T01:00:00Z", data=[1]), "data: Input should be a valid dictionary"),
        (launched("2026-03-02T01:00:00Z", id="a campaign"), "id: must be letters, digits"),
        (launched("2026-03-02T01:00:00Z", id="x" * 41), "id: String should have at most 40"),
        (launched("2026-03-02T01:00:00Z", extra=1), "extra: is not a known field"),
        (
            json.dumps({"type": "campaign.launched", "occurred_at": "2026-03-02T01:00:00Z"}),
            "data: is required",
        ),
        (launched("2026-03-02T01:00:00Z", id="relief"), "'relief' names the campaign of line 1"),
    ],
)
def test_a_malformed_campaign_line_is_named_with_what_is_wrong(text: str, problem: str) -> None:
    good = line("loan.closed", "2026-03-02T00:00:00Z", CLOSED)
    with pytest.raises(SimulationInputError) as raised:
        EventBook.from_lines(
            [launched("2026-03-02T01:00:00Z", id="relief"), good, text, good],
            source="EVENTS.jsonl",
        )
    assert raised.value.line == 3
    assert problem in str(raised.value), str(raised.value)


def test_campaign_bodies_are_checked_as_they_are_read_first_fault_first() -> None:
    asked: list[int] = []

    def check(launch: CampaignLaunch) -> str | None:
        asked.append(launch.line)
        return "data.template: unknown template" if launch.line == 2 else None

    lines = [
        launched("2026-03-02T01:00:00Z"),
        launched("2026-03-02T01:00:00Z"),
        line("loan.closed", "yesterday", CLOSED),
    ]
    with pytest.raises(SimulationInputError) as raised:
        EventBook.from_lines(lines, check_campaign=check)
    assert raised.value.line == 2 and "data.template" in raised.value.problem
    assert asked == [1, 2]
    # read without a check, a book has its bodies checked later, all of them, in line order
    book = EventBook.from_lines(lines[:2])
    assert not book.campaigns_checked
    with pytest.raises(SimulationInputError) as later:
        book.check_campaigns(check)
    assert later.value.line == 2
    assert EventBook.from_lines(lines[:1], check_campaign=check).campaigns_checked


def test_the_demo_book_launches_one_campaign_and_has_payments_after_it() -> None:
    events = generate_book(300, 60, seed=7, campaign=True)
    without = generate_book(300, 60, seed=7)
    (campaign,) = [e for e in events if e["type"] == "campaign.launched"]
    assert campaign["id"] == CAMPAIGN_ID
    data = campaign["data"]
    assert [v["template"] for v in data["variants"]] == [
        "campaign_hardship_relief",
        "campaign_restructuring_offer",
    ]
    assert data["holdout_percent"] == 20
    assert data["segment"] == {"stages": ["negotiation", "late"]}
    # the same borrowers, and more payments: after the campaign starts
    assert [e["data"] for e in events if e["type"] == "borrower.upserted"] == [
        e["data"] for e in without if e["type"] == "borrower.upserted"
    ]
    starts = dt.datetime.fromisoformat(data["start_at"])
    payments = [e for e in events if e["type"] == "payment.received"]
    extra = len(payments) - sum(1 for e in without if e["type"] == "payment.received")
    assert extra > 10
    assert sum(dt.datetime.fromisoformat(e["occurred_at"]) > starts for e in payments) >= extra
    EventBook.from_events(events)  # every line passes the parsers
