"""The simulator on a small book: what borrowers receive, read back from MESSAGES.jsonl."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from typer.testing import CliRunner

from outreach import policy as pol
from outreach.cli import app
from outreach.settings import Secret, Settings, load_settings
from outreach.sim import EventBook, SimulationStats, simulate
from outreach.sim_checks import parse_time, read_jsonl, run_checks
from tests.conftest import REDIS_URL, REPO_ROOT

T0 = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)  # a Monday, no holiday near it
DAYS = 14
SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
SPEC_FIELDS = {
    "id",
    "purpose",
    "borrower_id",
    "loan_id",
    "campaign_id",
    "stage",
    "channel",
    "template",
    "locale",
    "to",
    "segments",
    "status",
    "reason",
    "send_at",
    "sent_at",
    "events",
}


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def shanghai(day: int, hour: int, minute: int = 0) -> dt.datetime:
    """`day` days after T0's date, at a Beijing wall time."""
    return dt.datetime.combine(
        T0.date() + dt.timedelta(days=day), dt.time(hour, minute), tzinfo=SHANGHAI
    )


class Book:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, kind: str, at: dt.datetime, data: dict[str, Any]) -> None:
        self.events.append(
            {"id": f"e{len(self.events):04d}", "type": kind, "occurred_at": iso(at), "data": data}
        )

    def borrower(self, borrower_id: str, **fields: Any) -> None:
        borrower = {
            "id": borrower_id,
            "name": "王芳",
            "locale": "zh-CN",
            "phones": ["+8613812340000"],
            "email": f"{borrower_id.lower()}@mail.example",
            "timezone": "Asia/Shanghai",
            "consent": {"sms": True, "email": True},
            "tags": [],
            **fields,
        }
        self.add("borrower.upserted", T0 - dt.timedelta(days=1), {"borrower": borrower})

    def loan(self, loan_id: str, borrower_id: str, dpd: int, at: dt.datetime | None = None) -> None:
        moment = at or T0 - dt.timedelta(hours=4)
        due = moment.astimezone(SHANGHAI).date() - dt.timedelta(days=dpd)
        self.add(
            "loan.updated",
            moment,
            {
                "loan": {
                    "id": loan_id,
                    "borrower_id": borrower_id,
                    "product": "personal_loan",
                    "currency": "CNY",
                    "amount_due": "1200.00",
                    "balance": "9000.00",
                    "days_past_due": dpd,
                    "due_date": due.isoformat(),
                    "account_number": "6222020012345678",
                }
            },
        )


def story_book() -> list[dict[str, Any]]:
    """Eight borrowers, one story each, over two weeks from T0."""
    book = Book()
    # a promise kept: the reminder the day before, no broken-promise follow-up
    book.borrower("B-kept")
    book.loan("L-kept", "B-kept", dpd=3)
    book.add(
        "promise_to_pay.created",
        shanghai(1, 15),
        {
            "loan_id": "L-kept",
            "promise_id": "P-kept",
            "amount": "1200.00",
            "promised_date": (T0.date() + dt.timedelta(days=6)).isoformat(),
        },
    )
    book.add(
        "payment.received",
        shanghai(6, 14),
        {
            "loan_id": "L-kept",
            "payment_id": "pay-kept",
            "amount": "1200.00",
            "paid_at": iso(shanghai(6, 14)),
            "amount_due_after": "0",
        },
    )
    # a promise broken: the reminder the day before, the follow-up the day after
    book.borrower("B-broken", locale="zh-TW", phones=["+886912345678"], timezone="Asia/Taipei")
    book.loan("L-broken", "B-broken", dpd=3)
    book.add(
        "promise_to_pay.created",
        shanghai(1, 15),
        {
            "loan_id": "L-broken",
            "promise_id": "P-broken",
            "amount": "1200.00",
            "promised_date": (T0.date() + dt.timedelta(days=6)).isoformat(),
        },
    )
    # New York: quiet hours there, not in Beijing
    book.borrower(
        "B-ny",
        name="Alex Chen",
        locale="en-US",
        phones=["+12125550143"],
        timezone="America/New_York",
        address={"country": "US", "region": "NY", "city": "New York"},
    )
    # reported three days late at 01:00 in New York: the day-2 step, due at once, waits for
    # 08:00 there
    book.loan("L-ny", "B-ny", dpd=3, at=T0 + dt.timedelta(hours=6))
    # STOP: one confirmation, then no more SMS
    book.borrower("B-stop", phones=["+8613812340001"])
    book.loan("L-stop", "B-stop", dpd=1)
    book.add("sms.inbound", shanghai(2, 20), {"from": "+8613812340001", "body": "退订"})
    # Twilio's magic numbers
    book.borrower("B-invalid", locale="en-US", phones=["+15005550001"], timezone="America/Chicago")
    book.loan("L-invalid", "B-invalid", dpd=1)
    book.borrower(
        "B-undelivered", locale="en-US", phones=["+15005550002"], timezone="America/Chicago"
    )
    book.loan("L-undelivered", "B-undelivered", dpd=1)
    # cease contact: one confirmation, then nothing
    book.borrower("B-cease")
    book.loan("L-cease", "B-cease", dpd=16)
    book.add(
        "contact.restricted",
        shanghai(3, 11),
        {"borrower_id": "B-cease", "restriction": "cease_contact", "active": True},
    )
    # paid in full: a confirmation, then nothing more about the loan
    book.borrower("B-paid")
    book.loan("L-paid", "B-paid", dpd=1)
    book.add(
        "payment.received",
        shanghai(4, 9),
        {
            "loan_id": "L-paid",
            "payment_id": "pay-paid",
            "amount": "1200.00",
            "paid_at": iso(shanghai(4, 9)),
            "amount_due_after": "0.00",
        },
    )
    return book.events


def sim_settings(**changes: Any) -> Settings:
    settings = load_settings({"OUTREACH_POLICY": str(REPO_ROOT / "schedules" / "default.yaml")})
    return dataclasses.replace(settings, templates_dir=REPO_ROOT / "templates", **changes)


@dataclasses.dataclass
class Run:
    events: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    stats: SimulationStats
    out: Path

    def of(self, borrower_id: str, **match: str) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages
            if m["borrower_id"] == borrower_id and all(m[k] == v for k, v in match.items())
        ]

    def sent(self, borrower_id: str, **match: str) -> list[dict[str, Any]]:
        return [m for m in self.of(borrower_id, **match) if m["sent_at"]]


def run_book(
    events: list[dict[str, Any]], out: Path, *, settings: Settings | None = None, **options: Any
) -> Run:
    # shuffled on purpose: the file need not be sorted
    shuffled = list(reversed(events))
    result = simulate(
        settings or sim_settings(),
        EventBook.from_events(shuffled),
        start=T0,
        days=DAYS,
        out=out,
        **options,
    )
    return Run(events, read_jsonl(out), result.stats, out)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    out = tmp_path_factory.mktemp("sim") / "MESSAGES.jsonl"
    yield run_book(story_book(), out, seed=11)


def test_every_line_carries_the_fields_of_spec_section_10(story: Run) -> None:
    assert story.messages
    for message in story.messages:
        assert set(message) >= SPEC_FIELDS, SPEC_FIELDS - set(message)
        if message["channel"] == "sms" and message["sent_at"]:
            assert message["body"] and message["segments"] >= 1
        if message["channel"] == "email" and message["sent_at"]:
            assert message["subject"] and message["text"]
        for key in ("send_at", "sent_at"):
            if message[key] is not None:
                assert message[key].endswith("Z")
                assert parse_time(message[key]).tzinfo is not None
        for step in message["events"]:
            assert set(step) == {"at", "status", "reason", "detail"}
            assert step["at"].endswith("Z")
        # sent_at: the instant it was handed to the provider (the `sending` step)
        if message["sent_at"]:
            sending = [s for s in message["events"] if s["status"] == "sending"]
            assert sending and sending[-1]["at"] == message["sent_at"]
        else:
            assert "sent" not in {s["status"] for s in message["events"]}


def test_the_compliance_checks_pass_on_the_output(story: Run) -> None:
    policy = pol.load_policy(REPO_ROOT / "schedules" / "default.yaml")
    results = run_checks(policy, story.events, story.messages)
    assert all(result.passed for result in results), [
        (r.name, r.violations) for r in results if not r.passed
    ]
    assert {r.name for r in results if r.checked} >= {
        "contact_window",
        "frequency_caps",
        "after_payment",
        "after_opt_out",
        "after_restriction",
        "sent_once",
    }


def test_a_kept_promise_gets_its_reminder_the_day_before_and_no_follow_up(story: Run) -> None:
    promised = T0.date() + dt.timedelta(days=6)
    (reminder,) = story.sent("B-kept", purpose="promise_reminder")
    sent = parse_time(reminder["sent_at"]).astimezone(SHANGHAI)
    assert sent.date() == promised - dt.timedelta(days=1)
    assert sent.hour == 10
    assert story.sent("B-kept", purpose="broken_promise") == []
    for follow_up in story.of("B-kept", purpose="broken_promise"):
        assert follow_up["status"] in ("cancelled", "suppressed")
    # the payment is confirmed, and the loan is left alone after it
    assert story.sent("B-kept", purpose="payment_confirmation")
    paid_at = shanghai(6, 14)
    later = [
        m
        for m in story.sent("B-kept")
        if parse_time(m["sent_at"]) > paid_at and m["purpose"] != "payment_confirmation"
    ]
    assert later == []


def test_a_broken_promise_gets_its_follow_up_the_day_after(story: Run) -> None:
    promised = T0.date() + dt.timedelta(days=6)
    taipei = ZoneInfo("Asia/Taipei")
    (reminder,) = story.sent("B-broken", purpose="promise_reminder")
    assert parse_time(reminder["sent_at"]).astimezone(taipei).date() == promised - dt.timedelta(
        days=1
    )
    (follow_up,) = story.sent("B-broken", purpose="broken_promise")
    sent = parse_time(follow_up["sent_at"]).astimezone(taipei)
    assert sent.date() == promised + dt.timedelta(days=1)
    assert (sent.hour, follow_up["template"], follow_up["locale"]) == (
        10,
        "broken_promise",
        "zh-TW",
    )
    # dunning paused while the promise was open
    promise_made = shanghai(1, 15)
    paused = [
        m
        for m in story.sent("B-broken", purpose="dunning")
        if promise_made < parse_time(m["sent_at"]) <= shanghai(7, 23, 59)
    ]
    assert paused == []


def test_new_york_hours_are_kept(story: Run) -> None:
    sent = story.sent("B-ny")
    assert sent
    for message in sent:
        local = parse_time(message["sent_at"]).astimezone(NEW_YORK)
        assert 8 <= local.hour < 21, message
    # the step due at once at 01:00 New York time: deferred to 08:00 there
    first = min(story.of("B-ny", purpose="dunning"), key=lambda m: m["send_at"])
    deferral = [s for s in first["events"] if s["status"] == "deferred"]
    assert [s["reason"] for s in deferral] == ["quiet_hours"]
    assert parse_time(first["sent_at"]).astimezone(NEW_YORK).time() == dt.time(8, 0)


def test_stop_gets_one_confirmation_and_nothing_after(story: Run) -> None:
    stop_at = shanghai(2, 20)
    after = [m for m in story.sent("B-stop", channel="sms") if parse_time(m["sent_at"]) >= stop_at]
    assert [m["purpose"] for m in after] == ["optout_confirmation"]
    # it answered at once, at 20:00 Beijing
    assert parse_time(after[0]["sent_at"]) == stop_at
    # email still reaches the borrower
    assert [m for m in story.sent("B-stop", channel="email") if parse_time(m["sent_at"]) > stop_at]


def test_magic_numbers_fail_and_go_undelivered_as_twilio_says(story: Run) -> None:
    (failed, *_) = story.of("B-invalid", channel="sms", status="failed")
    assert failed["reason"] == "provider_error"
    assert any("code=21211" in (s["detail"] or "") for s in failed["events"])
    # the number is marked invalid: later SMS steps fall back to email or are suppressed
    later_sms = [m for m in story.of("B-invalid", channel="sms") if m is not failed]
    assert all(m["status"] in ("suppressed", "cancelled", "scheduled") for m in later_sms)
    (undelivered, *_) = story.of("B-undelivered", channel="sms", status="undelivered")
    step = undelivered["events"][-1]
    assert step["status"] == "undelivered" and "code=30003" in step["detail"]
    # the outcome arrives 5 s after the hand-over
    assert parse_time(step["at"]) - parse_time(undelivered["sent_at"]) == dt.timedelta(seconds=5)


def test_delivery_comes_five_seconds_after_sending(story: Run) -> None:
    delivered = [m for m in story.messages if m["status"] == "delivered"]
    assert delivered
    for message in delivered:
        step = message["events"][-1]
        assert step["status"] == "delivered"
        assert parse_time(step["at"]) - parse_time(message["sent_at"]) == dt.timedelta(seconds=5)


def test_cease_contact_allows_exactly_one_confirmation(story: Run) -> None:
    ceased_at = shanghai(3, 11)
    after = [m for m in story.sent("B-cease") if parse_time(m["sent_at"]) >= ceased_at]
    assert [m["purpose"] for m in after] == ["cease_confirmation"]
    withheld = [m for m in story.of("B-cease") if m["reason"] == "cease_contact"]
    assert withheld and all(m["status"] == "suppressed" for m in withheld)


def test_payment_in_full_is_confirmed_and_cancels_the_rest(story: Run) -> None:
    paid_at = shanghai(4, 9)
    (confirmation,) = story.sent("B-paid", purpose="payment_confirmation")
    assert parse_time(confirmation["sent_at"]) >= paid_at
    assert [m for m in story.sent("B-paid") if parse_time(m["sent_at"]) >= paid_at] == [
        confirmation
    ]
    cancelled = story.of("B-paid", status="cancelled")
    assert cancelled and {m["reason"] for m in cancelled} == {"loan_current"}


def test_the_same_seed_gives_the_same_output(story: Run, tmp_path: Path) -> None:
    again = run_book(story_book(), tmp_path / "again.jsonl", seed=11)
    assert again.out.read_text() == story.out.read_text()


def test_another_policy_changes_what_is_sent(story: Run, tmp_path: Path) -> None:
    # the same book under a policy whose contact window is 12:00–18:00
    text = (REPO_ROOT / "schedules" / "default.yaml").read_text()
    stricter = tmp_path / "noon.yaml"
    stricter.write_text(
        text.replace(
            'contact_window: {start: "08:00", end: "21:00"}',
            'contact_window: {start: "12:00", end: "18:00"}',
        )
    )
    other = run_book(story_book(), tmp_path / "noon.jsonl", policy_path=stricter, seed=11)
    policy = pol.load_policy(stricter)
    assert all(result.passed for result in run_checks(policy, other.events, other.messages))
    for message in other.messages:
        if message["sent_at"] and message["purpose"] not in ("optout_confirmation",):
            local = parse_time(message["sent_at"]).astimezone(SHANGHAI)
            if message["borrower_id"] in ("B-kept", "B-paid", "B-cease"):
                assert 12 <= local.hour < 18, message
    assert other.out.read_text() != story.out.read_text()


def test_a_shared_redis_is_left_as_it_was(tmp_path: Path, redis_client: redis.Redis) -> None:
    settings = sim_settings(redis_url=Secret(REDIS_URL))
    redis_client.set("someone-else", "1")
    run = run_book(story_book()[:4], tmp_path / "shared.jsonl", settings=settings)
    assert run.stats.dispatches["sent"] > 0  # so the caps were used
    assert redis_client.keys("outreach:sim:*") == []
    assert redis_client.get("someone-else") == b"1"


# -- the command line -------------------------------------------------------------------------


def write_events(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(event, ensure_ascii=False) + "\n" for event in events))
    return path


def test_outreach_simulate_writes_messages_jsonl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTREACH_REDIS_URL", raising=False)
    events = write_events(tmp_path / "EVENTS.jsonl", story_book()[:6])
    out = tmp_path / "out" / "MESSAGES.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--events",
            str(events),
            "--start",
            "2026-03-02T00:00:00Z",
            "--days",
            "3",
            "--out",
            str(out),
            "--seed",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "messages" in result.output and str(out) in result.output
    lines = out.read_text().splitlines()
    assert lines and all(set(json.loads(line)) >= SPEC_FIELDS for line in lines)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        (
            '{"id": "x", "type": "loan.updated", "occurred_at": "2026-03-02T00:00:00Z", '
            '"data": {}}',
            "data.loan: is required",
        ),
        (
            '{"id": "x", "type": "loan.exploded", "occurred_at": "2026-03-02T00:00:00Z", '
            '"data": {}}',
            "unknown event type",
        ),
        (
            '{"id": "x", "type": "sms.inbound", "occurred_at": "2026-03-02T00:00:00", '
            '"data": {"from": "+8613812340000", "body": "STOP"}}',
            "occurred_at",
        ),
    ],
)
def test_a_malformed_line_fails_with_its_number(tmp_path: Path, line: str, problem: str) -> None:
    good = [json.dumps(event) for event in story_book()[:3]]
    path = tmp_path / "EVENTS.jsonl"
    path.write_text("\n".join([*good, "", line, *good[:1]]) + "\n")
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--events",
            str(path),
            "--start",
            "2026-03-02T00:00:00Z",
            "--days",
            "1",
            "--out",
            str(tmp_path / "MESSAGES.jsonl"),
        ],
    )
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "line 5" in lines[0] and problem in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "MESSAGES.jsonl").exists()


def test_a_start_without_an_offset_is_refused(tmp_path: Path) -> None:
    events = write_events(tmp_path / "EVENTS.jsonl", story_book()[:2])
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--events",
            str(events),
            "--start",
            "2026-03-02T00:00:00",
            "--days",
            "1",
            "--out",
            str(tmp_path / "MESSAGES.jsonl"),
        ],
    )
    assert result.exit_code != 0
    assert "UTC offset" in result.output


def test_outreach_demo_reports_and_passes_its_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTREACH_REDIS_URL", raising=False)
    result = CliRunner().invoke(
        app, ["demo", "--borrowers", "40", "--days", "21", "--keep", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    report = result.output
    for section in (
        "Messages by stage and status",
        "Messages by channel and status",
        "Suppressed and cancelled, by reason",
        "Deferrals, by reason",
        "Compliance checks",
    ):
        assert section in report
    for check in ("contact_window", "frequency_caps", "after_payment", "after_opt_out"):
        assert f"PASS  {check}" in report
    assert "FAIL" not in report and "All compliance checks passed." in report
    assert (tmp_path / "EVENTS.jsonl").exists() and (tmp_path / "MESSAGES.jsonl").exists()


def test_outreach_demo_exits_non_zero_when_a_check_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import outreach.sim.demo as demo_module
    from outreach.sim_checks import CheckResult

    def failing(*_: Any, **__: Any) -> list[CheckResult]:
        broken = CheckResult("contact_window", "sent inside the window", checked=1)
        broken.fail("msg_1 (dunning, sms to +1, borrower B1, sent …): 03:00 in America/New_York")
        return [broken]

    monkeypatch.setattr(demo_module, "run_checks", failing)
    result = CliRunner().invoke(app, ["demo", "--borrowers", "20", "--days", "2"])
    assert result.exit_code == 1
    assert "FAIL  contact_window" in result.output and "03:00 in America/New_York" in result.output


def test_replanning_only_what_may_change_decides_as_replanning_every_loan_daily(
    tmp_path: Path,
) -> None:
    """The simulator re-plans a loan when the policy says its plan may change (or when
    something happened to it), not every day as the live clock does: same output."""
    from outreach.sim.book import DEMO_START, generate_book

    events = generate_book(60, 24, seed=9, start=DEMO_START)  # over the Golden Week
    outputs = []
    for every in (False, True):
        out = tmp_path / f"every-{every}.jsonl"
        result = simulate(
            sim_settings(),
            EventBook.from_events(events),
            start=DEMO_START,
            days=24,
            out=out,
            seed=4,
            replan_every_loan=every,
        )
        outputs.append((result.stats.replans, normalised(read_jsonl(out))))
    (fewer, adaptive), (daily, every_day) = outputs
    assert fewer < daily / 2
    assert adaptive == every_day


def normalised(messages: list[dict[str, Any]]) -> list[str]:
    """Messages without their random ids (which depend on how often planning ran)."""
    rows = []
    for message in messages:
        kept = {k: v for k, v in message.items() if k not in ("id", "provider_id")}
        kept["events"] = [
            {**s, "detail": re.sub(r"provider_id=\S+", "", s["detail"] or "")}
            for s in message["events"]
        ]
        rows.append(json.dumps(kept, sort_keys=True, ensure_ascii=False))
    return sorted(rows)
