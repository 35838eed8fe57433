"""The overview in the browser: the chart of sends per day draws exactly the log's messages
of each day (its bars' titles and heights, and the table beneath, agree with what was
stored), what was withheld and what is deferred by reason in words, replies waiting for a
person, what is due within the hour, the clock's lead and the queues."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from outreach.domain import Reason, Status
from outreach.service.messages import new_id
from outreach.store.db import transaction
from outreach.store.messages import MessageRow, insert_new
from outreach.store.models import InboundReply
from outreach.ui.charts import day_words
from tests.browser.conftest import log_in, screenshot
from tests.factories import borrower_upserted
from tests.live import LiveService

SCRIPT_NAME = "<script>alert(1)</script>"
_keys = itertools.count(1)
# (days ago, channel, status, reason, how many): the log's final messages of past days
PAST = (
    (3, "sms", Status.DELIVERED, Reason.PROVIDER_STATUS, 3),
    (3, "sms", Status.FAILED, Reason.PROVIDER_ERROR, 1),
    (3, "email", Status.SENT, Reason.ACCEPTED, 2),
    (3, "email", Status.SUPPRESSED, Reason.OPTED_OUT, 1),
    (10, "email", Status.DELIVERED, Reason.PROVIDER_STATUS, 4),
    (10, "sms", Status.CANCELLED, Reason.OPS_CANCELLED, 2),
    (29, "sms", Status.UNDELIVERED, Reason.PROVIDER_STATUS, 1),
    # a day before the thirty: not in the chart
    (30, "sms", Status.DELIVERED, Reason.PROVIDER_STATUS, 5),
)


def a_message(
    send_at: dt.datetime, channel: str, status: Status, reason: Reason, now: dt.datetime
) -> MessageRow:
    message = MessageRow(
        id=new_id("msg_", send_at),
        idempotency_key=f"overview-test:{next(_keys)}",
        purpose="dunning",
        borrower_id="b-ov",
        loan_id=None,
        campaign_id=None,
        stage="early",
        channel=channel,
        template="early_first_notice",
        locale="en-US",
        recipient="+15005550006" if channel == "sms" else "ov@example.org",
        send_at=send_at,
        status=Status.SCHEDULED.value,
        reason=Reason.PLANNED.value,
        fallback_from=None,
        refs={},
        created_at=send_at,
        updated_at=send_at,
    )
    message.move(Status.SCHEDULED, Reason.PLANNED, send_at)
    if status in (Status.SENT, Status.DELIVERED, Status.UNDELIVERED):
        message.sent_at = send_at
    message.move(status, reason, min(send_at + dt.timedelta(minutes=1), now))
    return message


@pytest.fixture(scope="module")
def seeded(ui_live: LiveService) -> Iterator[dict[str, Any]]:
    """A borrower without loans (so nothing of the cadence is sent to them) and messages of
    known statuses on known days; one deferred for quiet hours, one due in half an hour; a
    reply for a person."""
    live = ui_live
    live.post_event(borrower_upserted("b-ov", name="Sam Wu"))
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    rows = []
    expected: Counter[tuple[dt.date, str, str]] = Counter()
    for days_ago, channel, status, reason, count in PAST:
        day = today - dt.timedelta(days=days_ago)
        noon = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
        for _ in range(count):
            rows.append(a_message(noon, channel, status, reason, now))
        if days_ago < 30:
            expected[(day, channel, status.value)] += count
    deferred = a_message(now + dt.timedelta(hours=5), "sms", Status.SCHEDULED, Reason.PLANNED, now)
    deferred.move(Status.DEFERRED, Reason.QUIET_HOURS, now)
    due = a_message(now + dt.timedelta(minutes=30), "email", Status.SCHEDULED, Reason.PLANNED, now)
    rows += [deferred, due]
    with transaction(live.services.runtime.sessions) as session:
        insert_new(session, rows)
        session.add(
            InboundReply(
                channel="sms",
                sender="+15005550006",
                body=f"Who is this? {SCRIPT_NAME}",
                borrower_id="b-ov",
                classification="other",
                needs_human=True,
                received_at=now - dt.timedelta(minutes=5),
            )
        )
    yield {"expected": expected, "today": today}


@pytest.fixture
def overview(ui_live: LiveService, page: Page, seeded: dict[str, Any]) -> Page:
    log_in(page, ui_live)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    return page


def number(value: str | None) -> float:
    assert value is not None
    return float(value)


def test_the_chart_draws_each_days_messages(
    ui_live: LiveService, overview: Page, seeded: dict[str, Any]
) -> None:
    page = overview
    expected: Counter[tuple[dt.date, str, str]] = seeded["expected"]
    chart = page.locator("svg.day-chart")
    expect(chart.locator("g.day-bar")).to_have_count(60)  # 30 days, two channels
    screenshot(page, "overview")

    day = seeded["today"] - dt.timedelta(days=3)
    sms = chart.locator(f"g.day-bar[data-day='{day.isoformat()}'][data-channel='sms']")
    expect(sms.locator(":scope > title")).to_have_text(
        f"{day_words(day)}, SMS: 4 (delivered 3, failed 1)"
    )
    delivered = sms.locator("rect[data-status='delivered']")
    failed = sms.locator("rect[data-status='failed']")
    expect(delivered.locator("title")).to_have_text(f"{day_words(day)}, SMS, delivered: 3")
    expect(failed.locator("title")).to_have_text(f"{day_words(day)}, SMS, failed: 1")
    # heights in proportion to the counts, on one scale for every bar
    high = number(delivered.get_attribute("height"))
    assert high == pytest.approx(3 * number(failed.get_attribute("height")))
    other = seeded["today"] - dt.timedelta(days=10)
    four = chart.locator(f"g.day-bar[data-day='{other.isoformat()}'][data-channel='email'] rect")
    expect(four).to_have_count(1)
    assert number(four.get_attribute("height")) == pytest.approx(high * 4 / 3)
    # stacked: the failed stretch sits on the delivered one
    assert number(failed.get_attribute("y")) + number(failed.get_attribute("height")) == (
        pytest.approx(number(delivered.get_attribute("y")))
    )

    # every bar and every cell of the table beneath is what was stored, no more
    drawn: Counter[tuple[dt.date, str, str]] = Counter()
    for rect in chart.locator("g.day-bar rect").all():
        bar = rect.locator("xpath=..")
        key = (
            dt.date.fromisoformat(bar.get_attribute("data-day") or ""),
            bar.get_attribute("data-channel") or "",
            rect.get_attribute("data-status") or "",
        )
        drawn[key] += int(rect.get_attribute("data-count") or 0)
    assert drawn == expected
    table: Counter[tuple[dt.date, str, str]] = Counter()
    for cell in page.locator("table.days tbody td[data-status]").all():
        count = int(cell.inner_text())
        if count:
            row = cell.locator("xpath=..")
            key = (
                dt.date.fromisoformat(row.get_attribute("data-day") or ""),
                cell.get_attribute("data-channel") or "",
                cell.get_attribute("data-status") or "",
            )
            table[key] = count
    assert table == expected
    row = page.locator(f"table.days tr[data-day='{day.isoformat()}']")
    expect(row.locator("td.total").last).to_have_text("7")
    # a day's row opens the log on that day, which lists the same messages
    row.get_by_role("link", name=day_words(day)).click()
    expect(page.locator("table.log tbody tr")).to_have_count(7)


def test_what_was_held_what_waits_and_the_health_of_the_queues(
    ui_live: LiveService, overview: Page
) -> None:
    page = overview
    withheld = page.locator("#withheld").locator("..")
    expect(withheld.locator("tr").filter(has_text="the borrower opted out")).to_contain_text("1")
    expect(withheld.locator("tr").filter(has_text="cancelled by ops")).to_contain_text("2")
    deferred = page.locator("#deferred").locator("..")
    expect(deferred.locator("tr").filter(has_text="quiet hours")).to_contain_text("1")
    due = page.locator("#due").locator("..")
    expect(due).to_contain_text("1 message scheduled or deferred fall due by")
    expect(due.locator("tr").filter(has_text="email").locator("td").nth(2)).to_have_text("1")
    replies = page.locator("#replies").locator("..")
    expect(replies).to_contain_text("1 reply since")
    # the borrower's words as text, the sender masked
    expect(replies.locator(".reply")).to_have_text(f"Who is this? {SCRIPT_NAME}")
    expect(replies).to_contain_text("****0006")
    expect(replies).not_to_contain_text("+15005550006")
    health = page.locator("#health").locator("..")
    expect(health.locator(".clock .badge")).to_have_text("leading")
    expect(health.locator(".broker")).to_contain_text("waiting for a worker")
    expect(health.locator(".queued")).to_contain_text("0 queued, 0 being handed over")
    assert page.locator("main script").count() == 0

    # the clock's lease gone (its heartbeat held back meanwhile): no clock leads
    ui_live.clock.scheduler.pause()
    ui_live.clock.lock.release()
    try:
        page.reload()
        expect(health.locator(".clock .badge")).to_have_text("none")
    finally:
        ui_live.clock.lock.refresh()
        ui_live.clock.scheduler.resume()
    page.get_by_role("link", name="1 message", exact=True).click()
    expect(page.locator("table.log tbody tr")).to_have_count(1)


def test_on_a_tablet_the_overview_fits_the_screen(
    ui_live: LiveService, browser: Browser, seeded: dict[str, Any]
) -> None:
    tablet = browser.new_context(viewport={"width": 820, "height": 1180})
    page = tablet.new_page()
    try:
        log_in(page, ui_live)
        # the chart and the table scroll inside their own boxes
        assert page.evaluate("document.documentElement.scrollWidth") <= 820
        expect(page.locator("svg.day-chart")).to_be_visible()
        screenshot(page, "tablet-overview")
    finally:
        tablet.close()
