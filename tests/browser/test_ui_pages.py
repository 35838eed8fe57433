"""Reading the log in the browser: filtering it, following a message to its text and
timeline, a borrower's timeline with what is in force, the export of a view, an admin's
cancellation, and hostile names shown as text."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import SCREENSHOTS, log_in, screenshot
from tests.factories import borrower_upserted, envelope, loan_updated, zone_at_local_hour
from tests.live import ADMIN_TOKEN, LiveService

SCRIPT_NAME = "<script>alert(1)</script>"
TEMPLATE_NAME = "{{ 7*7 }}"


@pytest.fixture(scope="module")
def book(ui_live: LiveService) -> Iterator[dict[str, Any]]:
    """Borrowers whose messages went out (an SMS, an email), one held for quiet hours, one
    with a dispute, a promise and a plan, and two with hostile names."""
    day = zone_at_local_hour(14)
    night = zone_at_local_hour(3)
    live = ui_live
    live.post_event(borrower_upserted("b-sms", timezone=day, name="Mei Lin"))
    live.post_event(loan_updated("l-sms", "b-sms", days_past_due=1))
    live.post_event(
        borrower_upserted(
            "b-mail", timezone=day, phones=[], email="alex@example.org", name="Alex Chen"
        )
    )
    live.post_event(loan_updated("l-mail", "b-mail", days_past_due=16))
    live.post_event(borrower_upserted("b-night", timezone=night, name="Wen Huang"))
    live.post_event(loan_updated("l-night", "b-night", days_past_due=3))
    live.post_event(borrower_upserted("b-script", timezone=day, name=SCRIPT_NAME))
    live.post_event(loan_updated("l-script", "b-script", days_past_due=1))
    live.post_event(borrower_upserted("b-curly", timezone=night, name=TEMPLATE_NAME))
    live.post_event(loan_updated("l-curly", "b-curly", days_past_due=3))
    live.post_event(borrower_upserted("b-deal", timezone=night, name="Jordan Lee"))
    live.post_event(loan_updated("l-deal-1", "b-deal", days_past_due=20))
    live.post_event(loan_updated("l-deal-2", "b-deal", days_past_due=20))
    today = dt.datetime.now(dt.UTC).date()
    in_a_week = (today + dt.timedelta(days=7)).isoformat()
    for event in (
        envelope(
            "promise_to_pay.created",
            {
                "loan_id": "l-deal-1",
                "promise_id": "p-1",
                "amount": "120.00",
                "promised_date": in_a_week,
            },
        ),
        envelope(
            "payment_plan.created",
            {
                "loan_id": "l-deal-2",
                "plan_id": "plan-1",
                "instalments": [
                    {"due_date": (today + dt.timedelta(days=d)).isoformat(), "amount": "50.00"}
                    for d in (10, 40, 70)
                ],
            },
        ),
        envelope(
            "contact.restricted",
            {"borrower_id": "b-deal", "restriction": "dispute", "active": True},
        ),
    ):
        assert live.post_event(event).status_code == 202

    def all_sent() -> dict[str, dict[str, Any]] | None:
        found = {}
        for loan in ("l-sms", "l-mail", "l-script"):
            sent = [m for m in live.messages(loan_id=loan) if m["status"] == "sent"]
            if not sent:
                return None
            found[loan] = sent[0]
        return found

    sent = live.wait_for(all_sent)
    night_message = next(m for m in live.messages(loan_id="l-night") if m["status"] == "deferred")
    yield {"sent": sent, "night": night_message, "day": day, "night_zone": night}


@pytest.fixture
def admin(ui_live: LiveService, page: Page) -> Page:
    log_in(page, ui_live)
    return page


def test_filtering_the_log_and_following_a_message_to_its_timeline(
    ui_live: LiveService, admin: Page, book: dict[str, Any]
) -> None:
    page = admin
    page.goto(f"{ui_live.base_url}/ui/messages")
    screenshot(page, "messages")
    page.get_by_label("sent", exact=True).check()
    page.get_by_label("Channel").select_option("sms")
    page.get_by_label("Borrower id").fill("b-sms")
    page.get_by_role("button", name="Show").click()
    # the view is in the URL, to share
    expect(page).to_have_url(re.compile(r"status=sent.*channel=sms.*borrower_id=b-sms"))
    rows = page.locator("table.log tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".badge")).to_have_text("sent")
    expect(page.get_by_label("sent", exact=True)).to_be_checked()
    expect(page.get_by_label("Borrower id")).to_have_value("b-sms")
    screenshot(page, "messages-filtered")

    message = book["sent"]["l-sms"]
    rows.first.get_by_role("link", name=message["id"]).click()
    expect(page).to_have_url(re.compile(f"/ui/messages/{message['id']}$"))
    expect(page.locator(".sms-text")).to_have_text(message["body"])
    expect(page.get_by_text(f"{message['segments']} segment")).to_contain_text(message["encoding"])
    # the recipient masked as account numbers are: its last four digits
    expect(page.locator(".facts")).to_contain_text("****0006")
    expect(page.locator(".facts")).not_to_contain_text("+15005550006")
    expect(page.locator(".facts")).to_contain_text(message["template_version"])
    timeline = page.locator("ol.timeline > li")
    expect(timeline).to_have_count(len(message["events"]))
    expect(timeline.last).to_contain_text("sent")
    # every step on the borrower's clock too
    expect(timeline.first).to_contain_text(book["day"])
    screenshot(page, "message-sms")


def test_a_held_message_says_why_in_plain_words(
    ui_live: LiveService, admin: Page, book: dict[str, Any]
) -> None:
    page = admin
    message = book["night"]
    page.goto(f"{ui_live.base_url}/ui/messages/{message['id']}")
    zone = book["night_zone"]
    expect(page.locator("ol.timeline")).to_contain_text(
        re.compile(rf"deferred — quiet hours until 08:00 {re.escape(zone)}, \w{{3}} \d+ \w{{3}}")
    )


def test_an_email_is_shown_with_its_html_sandboxed(
    ui_live: LiveService, admin: Page, book: dict[str, Any]
) -> None:
    page = admin
    message = book["sent"]["l-mail"]
    assert message["channel"] == "email"
    page.goto(f"{ui_live.base_url}/ui/messages/{message['id']}")
    expect(page.locator(".subject")).to_contain_text(message["subject"])
    expect(page.locator(".email-text")).to_contain_text("Alex Chen")
    expect(page.locator(".facts")).to_contain_text("a***@example.org")
    frame = page.locator("iframe.email-html")
    expect(frame).to_have_attribute("sandbox", "")
    expect(page.frame_locator("iframe.email-html").locator("body")).to_contain_text("Alex Chen")
    screenshot(page, "message-email")
    frame.screenshot(path=str(SCREENSHOTS / "message-email-html.png"))


def test_the_log_pages_by_cursor_and_exports_exactly_the_view(
    ui_live: LiveService, admin: Page, book: dict[str, Any]
) -> None:
    page = admin
    page.goto(f"{ui_live.base_url}/ui/messages?status=sent&limit=1")
    first = page.locator("table.log tbody tr").first.inner_text()
    page.get_by_role("link", name="Older messages").click()
    expect(page).to_have_url(re.compile(r"cursor="))
    expect(page.locator("table.log tbody tr")).to_have_count(1)
    assert page.locator("table.log tbody tr").first.inner_text() != first
    expect(page.get_by_role("link", name="Newest")).to_be_visible()

    page.goto(f"{ui_live.base_url}/ui/messages?status=sent,deferred&channel=sms")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export this view as CSV").click()
    path = download.value.path()
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    expected = ui_live.messages(status="sent,deferred", channel="sms", limit=500)
    assert [row["id"] for row in rows] == [m["id"] for m in expected]
    assert {row["status"] for row in rows} == {"sent", "deferred"}


def test_a_bad_filter_is_named(ui_live: LiveService, admin: Page) -> None:
    answer = admin.goto(f"{ui_live.base_url}/ui/messages?status=lost")
    assert answer is not None and answer.status == 422
    expect(admin.get_by_role("alert")).to_contain_text("status: 'lost' is not a status")


def test_the_borrower_page_summarises_what_is_in_force_above_one_timeline(
    ui_live: LiveService, admin: Page, book: dict[str, Any]
) -> None:
    page = admin
    page.goto(f"{ui_live.base_url}/ui/borrowers/b-deal")
    expect(page.get_by_role("heading", name="Jordan Lee")).to_be_visible()
    summary = page.locator(".summary")
    expect(summary).to_contain_text("dispute")
    expect(summary).to_contain_text(re.compile(r"\$120\.00 by \d{4}-\d\d-\d\d"))
    expect(summary).to_contain_text(re.compile(r"3 of 3 instalments to pay, next \S*\$50\.00"))
    expect(summary).to_contain_text("****0006")
    timeline = page.locator("ol.timeline")
    for kind in (
        "borrower.upserted",
        "loan.updated",
        "promise_to_pay.created",
        "payment_plan.created",
        "contact.restricted",
    ):
        expect(timeline).to_contain_text(kind)
    screenshot(page, "borrower")

    # a message step links to the message
    page.goto(f"{ui_live.base_url}/ui/borrowers/b-sms")
    page.locator("ol.timeline a").first.click()
    expect(page).to_have_url(re.compile(r"/ui/messages/msg"))


def test_hostile_names_show_as_text(
    ui_live: LiveService, admin: Page, book: dict[str, Any]
) -> None:
    page = admin
    page.goto(f"{ui_live.base_url}/ui/borrowers/b-script")
    expect(page.get_by_role("heading", level=1)).to_have_text(SCRIPT_NAME)
    page.goto(f"{ui_live.base_url}/ui/borrowers/b-curly")
    expect(page.get_by_role("heading", level=1)).to_have_text(TEMPLATE_NAME)
    screenshot(page, "borrower-hostile-name")
    message = book["sent"]["l-script"]
    page.goto(f"{ui_live.base_url}/ui/messages/{message['id']}")
    expect(page.locator(".facts")).to_contain_text(SCRIPT_NAME)
    if message["body"]:
        expect(page.locator(".sms-text")).to_have_text(message["body"])
    page.goto(f"{ui_live.base_url}/ui/messages?q=%3Cscript%3E")
    expect(page.get_by_label("Text search")).to_have_value("<script>")
    # nothing ran: no dialog opened (the `page` fixture fails the test on one), and no
    # element was made from the names
    assert page.locator("script").count() == 0


def test_an_admin_cancels_a_message_from_its_page(
    ui_live: LiveService, admin: Page, book: dict[str, Any]
) -> None:
    page = admin
    pending = next(m for m in ui_live.messages(loan_id="l-curly") if m["status"] == "deferred")
    page.goto(f"{ui_live.base_url}/ui/messages/{pending['id']}")
    page.get_by_role("link", name="Cancel this message…").click()
    expect(page.get_by_role("heading", name="Cancel this message?")).to_be_visible()
    expect(page.locator("main")).to_contain_text(TEMPLATE_NAME)
    screenshot(page, "message-cancel")
    page.get_by_label("Why").fill("borrower called, paying today")
    page.get_by_role("button", name="Cancel the message").click()
    expect(page).to_have_url(re.compile(f"/ui/messages/{pending['id']}$"))
    expect(page.locator(".lead .badge")).to_have_text("cancelled")
    expect(page.locator("ol.timeline > li").last).to_contain_text(
        "cancelled — cancelled by ops (borrower called, paying today)"
    )
    expect(page.get_by_role("link", name="Cancel this message…")).to_have_count(0)
    assert ui_live.get(f"/v1/messages/{pending['id']}").json()["status"] == "cancelled"
    entry = ui_live.get("/v1/audit", action="message.cancel").json()["items"][0]
    assert (entry["target"], entry["outcome"]) == (pending["id"], "ok")
    assert entry["detail"] == {"note": "borrower called, paying today", "via": "ui"}


def test_the_campaigns_list_links_each_to_its_messages(
    ui_live: LiveService, admin: Page, book: dict[str, Any]
) -> None:
    body = {
        "name": SCRIPT_NAME,
        "channel": "email",
        "template": "campaign_hardship_relief",
        "segment": {"stages": ["negotiation"]},
        "start_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
    }
    created = ui_live.client.post(
        "/v1/campaigns", json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert created.status_code == 201, created.text
    page = admin
    page.get_by_role("link", name="Campaigns").click()
    row = page.locator("table.log tbody tr").filter(has_text=created.json()["id"])
    expect(row).to_contain_text(SCRIPT_NAME)
    expect(row.locator(".badge").first).to_have_text("draft")
    screenshot(page, "campaigns")
    row.get_by_role("link", name="Its messages").click()
    expect(page.get_by_label("Campaign id")).to_have_value(created.json()["id"])


def test_on_a_tablet_the_pages_fit_the_screen(
    ui_live: LiveService, browser: Browser, book: dict[str, Any]
) -> None:
    tablet = browser.new_context(viewport={"width": 820, "height": 1180})
    page = tablet.new_page()
    try:
        log_in(page, ui_live)
        for path, name in (
            ("/ui/messages", "tablet-messages"),
            (f"/ui/messages/{book['night']['id']}", "tablet-message"),
            ("/ui/borrowers/b-deal", "tablet-borrower"),
        ):
            page.goto(f"{ui_live.base_url}{path}")
            # nothing sticks out sideways: wide tables scroll inside their own box
            assert page.evaluate("document.documentElement.scrollWidth") <= 820, path
            screenshot(page, name)
    finally:
        tablet.close()


def test_the_pages_work_from_the_keyboard(ui_live: LiveService, page: Page) -> None:
    page.goto(f"{ui_live.base_url}/ui/login")
    # the token field has the focus (once the page has given it: typing sooner loses keys)
    expect(page.get_by_label("Ops token")).to_be_focused()
    page.keyboard.type(ADMIN_TOKEN)
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Log in")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to the content")).to_be_focused()
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Messages", exact=True)).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Messages")).to_be_visible()


def test_a_time_range_from_the_form_is_read_in_utc(
    ui_live: LiveService, admin: Page, book: dict[str, Any]
) -> None:
    page = admin
    page.goto(f"{ui_live.base_url}/ui/messages")
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    since, until = now - dt.timedelta(hours=1), now + dt.timedelta(hours=1)
    page.get_by_label("Due from (UTC)").fill(since.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("Due before (UTC)").fill(until.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("Borrower id").fill("b-sms")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"since=\d{4}-\d\d-\d\dT\d\d%3A\d\d&until="))
    expected = [
        m
        for m in ui_live.messages(borrower_id="b-sms")
        if since <= dt.datetime.fromisoformat(m["send_at"]) < until
    ]
    assert expected, "the message sent just now is in the range"
    expect(page.locator("table.log tbody tr")).to_have_count(len(expected))
    expect(page.get_by_label("Due from (UTC)")).to_have_value(since.strftime("%Y-%m-%dT%H:%M"))
