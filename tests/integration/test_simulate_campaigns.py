"""Campaigns in the simulator: a `campaign.launched` line launches its campaign on the
virtual clock, and MESSAGES.jsonl shows what it sent, to whom, and what it withheld."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from outreach import policy as pol
from outreach.cli import app
from outreach.service.campaigns import arm_of, parse_campaign
from outreach.sim import EventBook, SimulationInputError, shards, simulate
from outreach.sim.engine import compiled_renderer
from outreach.sim.shards import simulate_file
from outreach.sim_checks import parse_time, read_jsonl, run_checks
from tests.conftest import REPO_ROOT
from tests.integration.test_simulate import T0, Book, iso, shanghai, sim_settings

DAYS = 6
NEGOTIATING = [f"N{index:02d}" for index in range(60)]
EARLY = [f"E{index}" for index in range(6)]
NEW_YORK = [f"Y{index}" for index in range(4)]
# en-US borrowers in Shanghai: the short campaign's segment reaches them with New York's
ENGLISH_IN_SHANGHAI = ["S0", "S1"]
LAUNCHED_AT = shanghai(1, 9)
RELIEF: dict[str, Any] = {
    "name": "Relief offer",
    "channel": "sms",
    "segment": {"stages": ["negotiation"]},
    "variants": [
        {"name": "relief", "template": "campaign_hardship_relief", "weight": 1},
        {"name": "restructure", "template": "campaign_restructuring_offer", "weight": 1},
    ],
    "holdout_percent": 20,
    "start_at": iso(shanghai(1, 10)),
}
# 12:00 UTC on 4 March: 20:00 in Beijing, 07:00 in New York (quiet until 08:00, after the end)
SHORT_STARTS = dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)
SHORT_ENDS = SHORT_STARTS + dt.timedelta(minutes=30)
SHORT: dict[str, Any] = {
    "name": "Half an hour",
    "channel": "sms",
    "template": "campaign_restructuring_offer",
    "segment": {"locales": ["en-US"]},
    "start_at": iso(SHORT_STARTS),
    "end_at": iso(SHORT_ENDS),
}


@pytest.fixture(scope="module")
def policy() -> pol.Policy:
    return pol.load_policy(REPO_ROOT / "schedules" / "default.yaml")


def arms(policy: pol.Policy, body: dict[str, Any], campaign_id: str) -> dict[str, tuple[str, bool]]:
    """The service's own draw, for each borrower: (variant, held out)."""
    spec = parse_campaign(body, policy, compiled_renderer(REPO_ROOT / "templates"), LAUNCHED_AT)
    everyone = NEGOTIATING + EARLY + NEW_YORK + ENGLISH_IN_SHANGHAI
    return {
        borrower: (variant.name, held)
        for borrower in everyone
        for variant, held in [arm_of(spec, campaign_id, borrower)]
    }


def payment(book: Book, loan_id: str, at: dt.datetime) -> None:
    book.add(
        "payment.received",
        at,
        {
            "loan_id": loan_id,
            "payment_id": f"pay-{loan_id}",
            "amount": "200.00",
            "paid_at": iso(at),
            "amount_due_after": "1000.00",
        },
    )


def campaign_book(policy: pol.Policy) -> list[dict[str, Any]]:
    book = Book()
    for index, borrower in enumerate(NEGOTIATING):
        book.borrower(borrower, phones=[f"+861391234{index:04d}"])
        book.loan(f"L-{borrower}", borrower, dpd=20)
    for index, borrower in enumerate(EARLY):
        book.borrower(borrower, phones=[f"+861381235{index:04d}"])
        book.loan(f"L-{borrower}", borrower, dpd=3)
    for index, borrower in enumerate(NEW_YORK):
        book.borrower(
            borrower,
            name="Alex Chen",
            locale="en-US",
            phones=[f"+121255501{index:02d}"],
            timezone="America/New_York",
            address={"country": "US", "region": "NY", "city": "New York"},
        )
        book.loan(f"L-{borrower}", borrower, dpd=20)
    for index, borrower in enumerate(ENGLISH_IN_SHANGHAI):
        book.borrower(borrower, name="Sam Lee", locale="en-US", phones=[f"+861371234{index:04d}"])
        book.loan(f"L-{borrower}", borrower, dpd=20)
    # a dispute before the launch: targeted, and withheld
    book.add(
        "contact.restricted",
        shanghai(0, 15),
        {"borrower_id": "N59", "restriction": "dispute", "active": True},
    )
    # payments two days after the launch: three from borrowers written to, two held out
    drawn = arms(policy, RELIEF, "relief")
    written = [b for b in NEGOTIATING[:-1] if not drawn[b][1]][:3]
    held = [b for b in NEGOTIATING if drawn[b][1]][:2]
    for borrower in written + held:
        payment(book, f"L-{borrower}", shanghai(3, 15))
    book.events.append(
        {
            "id": "relief",
            "type": "campaign.launched",
            "occurred_at": iso(LAUNCHED_AT),
            "data": RELIEF,
        }
    )
    # no id: named after its line
    book.events.append(
        {
            "type": "campaign.launched",
            "occurred_at": iso(shanghai(2, 9)),
            "data": SHORT,
        }
    )
    return book.events


def write(events: list[dict[str, Any]], path: Path) -> Path:
    path.write_text("".join(json.dumps(event, ensure_ascii=False) + "\n" for event in events))
    return path


def short_id(events: list[dict[str, Any]]) -> str:
    (line,) = [
        number
        for number, event in enumerate(events, start=1)
        if event["type"] == "campaign.launched" and "id" not in event
    ]
    return f"cmp_line{line}"


@pytest.fixture(scope="module")
def events(policy: pol.Policy) -> list[dict[str, Any]]:
    return campaign_book(policy)


@pytest.fixture(scope="module")
def runs(events: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> dict[int, Any]:
    directory = tmp_path_factory.mktemp("campaigns")
    book = write(events, directory / "EVENTS.jsonl")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shards, "SHARD_MIN_EVENTS", 0)
        return {
            jobs: simulate_file(
                sim_settings(),
                book,
                start=T0,
                days=DAYS,
                out=directory / f"MESSAGES-{jobs}.jsonl",
                seed=9,
                jobs=jobs,
            )
            for jobs in (1, 2)
        }


@pytest.fixture(scope="module")
def messages(runs: dict[int, Any]) -> list[dict[str, Any]]:
    return read_jsonl(runs[1].out)


def report(runs: dict[int, Any], campaign_id: str, jobs: int = 1) -> dict[str, Any]:
    (found,) = [c for c in runs[jobs].stats.campaigns if c["id"] == campaign_id]
    return found


def test_a_launched_campaign_writes_to_its_segment_under_its_id(
    messages: list[dict[str, Any]], runs: dict[int, Any], policy: pol.Policy
) -> None:
    relief = [m for m in messages if m["campaign_id"] == "relief"]
    assert relief and all(m["purpose"] == "campaign" for m in relief)
    reached = {m["borrower_id"] for m in relief}
    assert len(reached) == len(relief)  # one message per borrower
    segment = set(NEGOTIATING + NEW_YORK + ENGLISH_IN_SHANGHAI)
    assert reached <= segment  # nobody in the early stage
    drawn = arms(policy, RELIEF, "relief")
    held = {borrower for borrower in segment if drawn[borrower][1]}
    assert held and not held & reached  # the holdout gets nothing
    assert reached == segment - held
    progress = report(runs, "relief")["progress"]
    assert progress["targeted"] == len(segment)
    assert progress["holdout"] == len(held)
    sent = [m for m in relief if m["sent_at"]]
    assert sent
    for message in sent:
        assert parse_time(message["sent_at"]) >= shanghai(1, 10)
    # withheld, with the reason, for the borrower in dispute
    (disputed,) = [m for m in relief if m["borrower_id"] == "N59"]
    assert (disputed["status"], disputed["reason"]) == ("suppressed", "dispute")


def test_the_variants_split_the_segment_as_the_service_draws_them(
    messages: list[dict[str, Any]], runs: dict[int, Any], policy: pol.Policy
) -> None:
    drawn = arms(policy, RELIEF, "relief")
    templates = {v["name"]: v["template"] for v in RELIEF["variants"]}
    relief = [m for m in messages if m["campaign_id"] == "relief"]
    for message in relief:
        assert message["variant"] == drawn[message["borrower_id"]][0]
        assert message["template"] == templates[message["variant"]]
    split = Counter(message["variant"] for message in relief)
    assert set(split) == set(templates)
    assert min(split.values()) >= len(relief) / 4  # weights 1:1, ~50 borrowers
    variants = report(runs, "relief")["progress"]["variants"]
    assert {name: arm["messages"] for name, arm in variants.items()} == dict(split)


def test_payments_after_the_messages_are_attributed_per_arm_and_to_the_holdout(
    runs: dict[int, Any],
) -> None:
    progress = report(runs, "relief")["progress"]
    assert sum(arm["paid"] for arm in progress["variants"].values()) == 3
    assert progress["holdout_paid"] == 2
    assert progress["holdout_paid_amount"] == {"CNY": "400.00"}
    comparison = progress["comparison"]
    assert comparison is not None and 0 <= comparison["p_value"] <= 1


def test_a_campaign_with_an_end_sends_nothing_after_it_and_withholds_the_rest(
    events: list[dict[str, Any]], messages: list[dict[str, Any]], runs: dict[int, Any]
) -> None:
    campaign_id = short_id(events)
    short = {m["borrower_id"]: m for m in messages if m["campaign_id"] == campaign_id}
    assert set(short) == set(NEW_YORK + ENGLISH_IN_SHANGHAI)
    for borrower in ENGLISH_IN_SHANGHAI:
        sent_at = short[borrower]["sent_at"]
        assert sent_at and SHORT_STARTS <= parse_time(sent_at) < SHORT_ENDS
    for borrower in NEW_YORK:
        message = short[borrower]
        assert message["sent_at"] is None
        assert (message["status"], message["reason"]) == ("suppressed", "campaign_ended")
        assert parse_time(message["events"][-1]["at"]) <= SHORT_ENDS
    found = report(runs, campaign_id)
    assert found["status"] == "completed"
    assert parse_time(found["finished_at"]) <= SHORT_ENDS
    assert found["progress"]["by_reason"]["campaign_ended"] == len(NEW_YORK)


def test_the_compliance_checks_cover_the_campaign_messages(
    events: list[dict[str, Any]], messages: list[dict[str, Any]], policy: pol.Policy
) -> None:
    results = run_checks(policy, events, messages, until=T0 + dt.timedelta(days=DAYS))
    assert all(result.passed for result in results), [
        (r.name, r.violations) for r in results if not r.passed
    ]
    checked = {result.name: result.checked for result in results}
    assert checked["campaign_window"] == sum(1 for m in messages if m["campaign_id"])


def test_two_processes_write_what_one_writes(runs: dict[int, Any]) -> None:
    one, two = runs[1], runs[2]
    assert two.stats.processes == 3
    assert one.out.read_text() == two.out.read_text()
    for campaign in one.stats.campaigns:
        merged = report(runs, campaign["id"], jobs=2)
        assert merged["progress"] == campaign["progress"]
        assert merged["launch"] == campaign["launch"]
        assert merged["status"] == campaign["status"]


def test_the_same_book_gives_the_same_campaign_ids_and_messages(
    events: list[dict[str, Any]], runs: dict[int, Any], tmp_path: Path
) -> None:
    again = simulate_file(
        sim_settings(),
        write(events, tmp_path / "EVENTS.jsonl"),
        start=T0,
        days=DAYS,
        out=tmp_path / "MESSAGES.jsonl",
        seed=9,
        jobs=1,
    )
    assert again.out.read_text() == runs[1].out.read_text()
    assert [c["id"] for c in again.stats.campaigns] == ["relief", short_id(events)]


def test_a_campaign_line_before_the_run_is_launched_at_its_start(tmp_path: Path) -> None:
    # checked as of its own instant (its start then ahead), launched when the run starts
    body = dict(
        SHORT, start_at=iso(T0 - dt.timedelta(hours=2)), end_at=iso(T0 + dt.timedelta(days=1))
    )
    line = {
        "type": "campaign.launched",
        "occurred_at": iso(T0 - dt.timedelta(hours=3)),
        "data": body,
    }
    book = Book()
    book.borrower("S0", name="Sam Lee", locale="en-US")
    book.loan("L-S0", "S0", dpd=20)
    result = simulate(
        sim_settings(),
        EventBook.from_events([*book.events, line]),
        start=T0,
        days=2,
        out=tmp_path / "MESSAGES.jsonl",
    )
    (found,) = result.stats.campaigns
    assert found["id"] == "cmp_line3" and found["launched_at"] == iso(T0)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_malformed_campaign_line_is_named_with_its_line(
    events: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    monkeypatch.setattr(shards, "SHARD_MIN_EVENTS", 0)
    broken = [dict(event) for event in events]
    index = next(i for i, event in enumerate(broken) if event.get("id") == "relief")
    broken[index] = dict(
        broken[index],
        data=dict(RELIEF, variants=[{"name": "a", "template": "no_such_template"}]),
    )
    out = tmp_path / "MESSAGES.jsonl"

    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--events",
            str(write(broken, tmp_path / "EVENTS.jsonl")),
            "--start",
            iso(T0),
            "--days",
            "2",
            "--out",
            str(out),
            "--jobs",
            str(jobs),
        ],
    )

    assert result.exit_code != 0, result.output
    (line,) = result.output.strip().splitlines()
    assert f"line {index + 1}:" in line and "data.variants[0].template" in line, line
    assert "no_such_template" in line
    assert not out.exists()


def test_a_campaign_body_is_checked_against_the_run_when_the_book_was_read_without(
    tmp_path: Path,
) -> None:
    book = Book()
    book.borrower("S0")
    book.loan("L-S0", "S0", dpd=20)
    wrong = dict(RELIEF, segment={"stages": ["nowhere"]}, holdout_percent=80)
    line = {"type": "campaign.launched", "occurred_at": iso(LAUNCHED_AT), "data": wrong}
    with pytest.raises(SimulationInputError) as raised:
        simulate(
            sim_settings(),
            EventBook.from_events([*book.events, line]),
            start=T0,
            days=2,
            out=tmp_path / "MESSAGES.jsonl",
        )
    assert raised.value.line == 3
    assert "data.segment.stages: unknown stage 'nowhere'" in raised.value.problem
    assert "data.holdout_percent" in raised.value.problem


def test_a_throttled_campaign_runs_the_book_in_one_process_at_its_pace(
    events: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shards, "SHARD_MIN_EVENTS", 0)
    throttled = [
        dict(event, data=dict(RELIEF, throttle_per_minute=5))
        if event.get("id") == "relief"
        else event
        for event in events
    ]
    result = simulate_file(
        sim_settings(),
        write(throttled, tmp_path / "EVENTS.jsonl"),
        start=T0,
        days=DAYS,
        out=tmp_path / "MESSAGES.jsonl",
        seed=9,
        jobs=2,
    )
    assert result.stats.processes == 1
    # the throttle counts hand-overs in whole milliseconds, the virtual clock in microseconds
    sent = [
        moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        for m in read_jsonl(result.out)
        if m["campaign_id"] == "relief" and m["sent_at"]
        for moment in [parse_time(m["sent_at"])]
    ]
    assert len(sent) > 20
    for first in sent:
        assert sum(first <= at < first + dt.timedelta(minutes=1) for at in sent) <= 5
