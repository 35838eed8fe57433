"""Messages the policy promises go out: every instalment reminder of a kept plan, and a
first SMS within three days of delinquency wherever the borrower lives (issue 16)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from outreach import policy as pol
from outreach.sim import EventBook, simulate
from outreach.sim_checks import parse_time, read_jsonl, run_checks
from tests.conftest import REPO_ROOT
from tests.factories import borrower_upserted, envelope, loan_updated, zone_at_local_hour
from tests.integration.test_simulate import SHANGHAI, T0, Book, iso, sim_settings
from tests.live import LiveService


def run(events: list[dict[str, Any]], out: Path, days: int) -> list[dict[str, Any]]:
    simulate(sim_settings(), EventBook.from_events(events), start=T0, days=days, out=out, seed=3)
    return read_jsonl(out)


def reminders_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    reminders = [m for m in messages if m["purpose"] == "instalment_reminder"]
    return sorted(reminders, key=lambda m: m["send_at"])


def kept_plan_book() -> tuple[list[dict[str, Any]], list[dt.date]]:
    """A plan of four fortnightly instalments agreed at 22 days past due, each instalment
    paid on its due date."""
    book = Book()
    book.borrower("B-plan")
    agreed = dt.datetime.combine(T0.date(), dt.time(15), tzinfo=SHANGHAI)
    book.loan("L-plan", "B-plan", dpd=22, at=agreed - dt.timedelta(hours=5))
    dues = [T0.date() + dt.timedelta(days=14 * (n + 1)) for n in range(4)]
    book.add(
        "payment_plan.created",
        agreed,
        {
            "loan_id": "L-plan",
            "plan_id": "PL-1",
            "instalments": [{"due_date": due.isoformat(), "amount": "300.00"} for due in dues],
        },
    )
    owed = Decimal("1200.00")
    for n, due in enumerate(dues):
        owed -= Decimal("300.00")
        paid_at = dt.datetime.combine(due, dt.time(12), tzinfo=SHANGHAI)
        book.add(
            "payment.received",
            paid_at,
            {
                "loan_id": "L-plan",
                "payment_id": f"pay-{n}",
                "amount": "300.00",
                "paid_at": iso(paid_at),
                "amount_due_after": f"{owed:.2f}",
            },
        )
    return book.events, dues


def test_a_kept_plan_gets_a_reminder_before_every_instalment(tmp_path: Path) -> None:
    events, dues = kept_plan_book()
    messages = run(events, tmp_path / "MESSAGES.jsonl", days=62)
    reminders = reminders_of(messages)
    assert [m["status"] for m in reminders] == ["delivered"] * 4, [
        (m["status"], m["reason"], m["send_at"]) for m in reminders
    ]
    for reminder, due in zip(reminders, dues, strict=True):
        sent = dt.datetime.fromisoformat(reminder["sent_at"]).astimezone(SHANGHAI)
        assert due - dt.timedelta(days=3) <= sent.date() < due
    # no stage dunning from the day the plan is agreed while it is kept
    dunning = [
        m["send_at"]
        for m in messages
        if m["purpose"] == "dunning"
        and m["sent_at"]
        and m["sent_at"] > iso(T0 + dt.timedelta(days=1))
    ]
    assert dunning == []


def test_a_plan_missed_stops_its_reminders_then_and_dunning_resumes(tmp_path: Path) -> None:
    events, dues = kept_plan_book()
    # the third and fourth instalments are never paid
    events = [e for e in events if e["data"].get("payment_id") not in ("pay-2", "pay-3")]
    messages = run(events, tmp_path / "MESSAGES.jsonl", days=62)
    reminders = reminders_of(messages)
    assert [m["status"] for m in reminders[:3]] == ["delivered"] * 3, [
        (m["status"], m["reason"], m["send_at"], m["events"]) for m in reminders
    ]
    [fourth] = reminders[3:]
    assert (fourth["status"], fourth["reason"]) == ("suppressed", "plan_broken")
    # stopped the day the third instalment was missed, not when the plan was made
    broken_at = dt.datetime.fromisoformat(fourth["events"][-1]["at"]).astimezone(SHANGHAI)
    assert broken_at.date() == dues[2] + dt.timedelta(days=1)
    resumed = [
        m
        for m in messages
        if m["purpose"] == "dunning"
        and m["sent_at"]
        and dt.datetime.fromisoformat(m["sent_at"]).astimezone(SHANGHAI).date() > dues[2]
    ]
    assert resumed, "stage dunning resumes once the plan is broken"


def test_the_live_service_keeps_every_reminder_of_a_plan_it_just_accepted(
    live: LiveService,
) -> None:
    live.post_event(borrower_upserted("b-plan", timezone=zone_at_local_hour(14)))
    live.post_event(loan_updated("l-plan", "b-plan", days_past_due=22))
    today = dt.datetime.now(SHANGHAI).date()
    dues = [today + dt.timedelta(days=2 + 14 * n) for n in range(4)]
    plan = envelope(
        "payment_plan.created",
        {
            "loan_id": "l-plan",
            "plan_id": "pl-live",
            "instalments": [{"due_date": due.isoformat(), "amount": "60.00"} for due in dues],
        },
    )
    assert live.post_event(plan).status_code == 202
    reminders = live.messages(loan_id="l-plan", purpose="instalment_reminder")
    assert len(reminders) == 4
    withheld = [(m["status"], m["reason"]) for m in reminders if m["status"] == "suppressed"]
    assert withheld == []
    waiting = [m for m in reminders if m["status"] in ("scheduled", "deferred")]
    assert len(waiting) >= 3  # the first may be on its way already


FAR_WEST = {
    "B-la": ("America/Los_Angeles", "+12135550142"),
    "B-hnl": ("Pacific/Honolulu", "+18085550142"),
    "B-anc": ("America/Anchorage", "+19075550142"),
}


@pytest.mark.parametrize("start", [dt.date(2026, 1, 12), dt.date(2026, 7, 13)], ids=str)
def test_far_west_borrowers_reported_late_in_their_evening_get_a_text_within_three_days(
    tmp_path: Path, start: dt.date
) -> None:
    book = Book()
    for borrower_id, (zone, phone) in FAR_WEST.items():
        book.borrower(borrower_id, timezone=zone, phones=[phone], locale="en-US")
        evening = dt.datetime.combine(start, dt.time(21, 30), tzinfo=ZoneInfo(zone))
        book.loan(f"L-{borrower_id}", borrower_id, dpd=1, at=evening)
    begin = dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC) - dt.timedelta(days=1)
    for event in book.events:
        if event["type"] == "borrower.upserted":
            event["occurred_at"] = iso(begin)
    out = tmp_path / "MESSAGES.jsonl"
    simulate(sim_settings(), EventBook.from_events(book.events), start=begin, days=6, out=out)
    messages = read_jsonl(out)
    policy = pol.load_policy(REPO_ROOT / "schedules" / "default.yaml")
    checks = run_checks(policy, book.events, messages, until=begin + dt.timedelta(days=6))
    assert all(check.passed for check in checks), [c.violations for c in checks]
    assert {c.name: c.checked for c in checks}["first_contact"] == len(FAR_WEST)
    for borrower_id, (zone, _) in FAR_WEST.items():
        texts = sorted(
            (
                m
                for m in messages
                if m["borrower_id"] == borrower_id
                and m["purpose"] == "dunning"
                and m["channel"] == "sms"
            ),
            key=lambda m: m["send_at"],
        )
        assert texts, f"{borrower_id}: no dunning text planned"
        first = texts[0]
        assert first["template"] == "early_first_notice", first
        assert first["sent_at"], (borrower_id, first["status"], first["events"])
        sent = dt.datetime.fromisoformat(first["sent_at"])
        reported = dt.datetime.combine(start, dt.time(21, 30), tzinfo=ZoneInfo(zone))
        lender_day_one = reported.astimezone(SHANGHAI).date()
        assert (sent.astimezone(SHANGHAI).date() - lender_day_one).days <= 2
        assert 8 <= sent.astimezone(ZoneInfo(zone)).hour < 21


def test_a_text_that_finds_no_allowed_day_before_the_next_text_is_suppressed_on_the_record(
    tmp_path: Path,
) -> None:
    """Holidays from the first day late through day 4: the day-1 text could only go on day
    5, when the day-5 text takes its place. It is on the log, suppressed as superseded by
    that step; the day-2 email, which no later email replaces, goes after the holidays."""
    first_day = T0.date() + dt.timedelta(days=1)
    holidays = "".join(f"    - {first_day + dt.timedelta(days=n)}\n" for n in range(4))
    text = (REPO_ROOT / "schedules" / "default.yaml").read_text()
    policy_path = tmp_path / "holidays.yaml"
    policy_path.write_text(text.replace("  CN:\n", "  CN:\n" + holidays, 1))
    book = Book()
    book.borrower("B-hol")
    book.loan("L-hol", "B-hol", dpd=1, at=dt.datetime.combine(first_day, dt.time(9), SHANGHAI))
    out = tmp_path / "MESSAGES.jsonl"
    simulate(
        sim_settings(),
        EventBook.from_events(book.events),
        start=T0,
        days=8,
        out=out,
        policy_path=policy_path,
    )
    by_template = {(m["template"], m["channel"]): m for m in read_jsonl(out)}
    first = by_template[("early_first_notice", "sms")]
    assert (first["status"], first["reason"]) == ("suppressed", "superseded")
    assert "by=d5:early_follow_up_1" in first["events"][-1]["detail"]
    assert first["sent_at"] is None
    email = by_template[("early_first_notice", "email")]
    assert email["sent_at"] is not None
    assert parse_time(email["sent_at"]).astimezone(SHANGHAI).date() == first_day + dt.timedelta(
        days=4
    )
