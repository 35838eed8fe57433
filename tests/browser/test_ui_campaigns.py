"""Campaigns in the browser: the create form previews before anything is created, the
preview is what launching then records, launch / pause / resume / cancel from the campaign's
page (audited as from the pages), a refused transition said calmly, faults shown beside
their fields, progress as bars with the numbers in text, a viewer without write controls,
posts without a CSRF token or by a viewer refused, and hostile names shown as text."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import http_session, log_in, screenshot
from tests.factories import iso, payment_received, zone_at_local_hour
from tests.integration.test_campaigns import daytime_borrower, load_book
from tests.live import ADMIN_TOKEN, VIEWER_TOKEN, LiveService

SCRIPT_NAME = "<script>alert(1)</script>"
TEMPLATE_NAME = "{{ 7*7 }}"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def field_time(moment: dt.datetime) -> str:
    """As a datetime-local field takes it (UTC, to the minute)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M")


@pytest.fixture(scope="module")
def book(ui_live: LiveService) -> Iterator[dict[str, Any]]:
    """Borrowers in negotiation a campaign two hours ahead reaches: by day in each locale,
    one at night (held back for quiet hours), one without consent to email (withheld); and
    one early in the cadence (outside the segment)."""
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).replace(second=0, microsecond=0)
    events: list[dict[str, Any]] = []
    for index in range(6):
        events += daytime_borrower(
            f"b-c-day-{index}",
            f"l-c-day-{index}",
            timezone=zone_at_local_hour(14, start),
            locale=("zh-CN", "zh-TW", "en-US")[index % 3],
        )
    events += daytime_borrower("b-c-night", "l-c-night", timezone=zone_at_local_hour(3, start))
    events += daytime_borrower(
        "b-c-noconsent",
        "l-c-noconsent",
        email_consent=False,
        timezone=zone_at_local_hour(14, start),
    )
    events += daytime_borrower("b-c-early", "l-c-early", dpd=5)
    load_book(ui_live, events)
    yield {"start": start}


@pytest.fixture
def admin(ui_live: LiveService, page: Page) -> Page:
    log_in(page, ui_live)
    return page


def api_campaign(live: LiveService, **body: Any) -> dict[str, Any]:
    document = {
        "name": "Made through the API",
        "channel": "email",
        "template": "campaign_hardship_relief",
        "segment": {"stages": ["negotiation"]},
        "start_at": iso(dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)),
        **body,
    }
    created = live.client.post("/v1/campaigns", json=document, headers=ADMIN)
    assert created.status_code == 201, created.text
    found: dict[str, Any] = created.json()
    return found


def api_move(live: LiveService, campaign_id: str, action: str) -> dict[str, Any]:
    moved = live.client.post(f"/v1/campaigns/{campaign_id}/{action}", headers=ADMIN)
    assert moved.status_code == 200, moved.text
    found: dict[str, Any] = moved.json()
    return found


def campaign_count(live: LiveService) -> int:
    return len(live.get("/v1/campaigns").json()["items"])


def fill_campaign(page: Page, name: str, start: dt.datetime) -> None:
    """The form of a two-variant email campaign to the negotiation stage with a holdout."""
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Channel").select_option("email")
    page.get_by_label("Variant 1 name").fill("relief")
    page.get_by_label("Variant 1 template").select_option("campaign_hardship_relief")
    page.get_by_label("Variant 1 weight").fill("1")
    page.get_by_label("Variant 2 name").fill("restructure")
    page.get_by_label("Variant 2 template").select_option("campaign_restructuring_offer")
    page.get_by_label("Variant 2 weight").fill("1")
    page.get_by_label("negotiation", exact=True).check()
    page.get_by_label("Held out (%)").fill("25")
    page.get_by_label("Starts (UTC)").fill(field_time(start))
    page.get_by_label("Ends (UTC)").fill(field_time(start + dt.timedelta(days=3)))


def figures_on(page: Page) -> dict[str, int]:
    found = {}
    for item in page.locator(".plan-figures .figures > div").all():
        found[item.locator("dt").inner_text()] = int(item.locator("dd").inner_text())
    return found


def test_create_preview_then_create_launch_pause_resume_and_cancel(
    ui_live: LiveService, admin: Page, book: dict[str, Any]
) -> None:
    page = admin
    before = campaign_count(ui_live)
    page.goto(f"{ui_live.base_url}/ui/campaigns")
    page.get_by_role("link", name="New campaign…").click()
    expect(page.get_by_role("heading", name="New campaign")).to_be_visible()
    screenshot(page, "campaign-new")
    fill_campaign(page, "Hardship relief, by the pages", book["start"])
    page.get_by_role("button", name="Preview").click()

    # the preview, before anything is created
    expect(page.get_by_role("heading", name="Preview: what it would do")).to_be_visible()
    assert campaign_count(ui_live) == before, "a preview creates nothing"
    figures = figures_on(page)
    assert figures["Targeted"] == 8  # the six by day, the night one, the one without consent
    assert figures["Withheld"] == 1
    assert figures["Eligible"] == 7
    preview = page.locator(".plan-figures")
    expect(preview).to_contain_text("no consent for this channel")
    # the night one is held back for quiet hours, unless drawn into the holdout
    assert figures["Held back at the start"] <= 1
    samples = page.locator("article.sample")
    assert samples.count() >= 2
    expect(samples.first.locator(".subject")).not_to_be_empty()
    expect(samples.first.locator("iframe.email-html")).to_have_attribute("sandbox", "")
    expect(page.locator(".preview")).to_contain_text("relief")
    expect(page.locator(".preview")).to_contain_text("restructure")
    # the form is still filled in, to change and preview again
    expect(page.get_by_label("Name", exact=True)).to_have_value("Hardship relief, by the pages")
    expect(page.get_by_label("Variant 2 template")).to_have_value("campaign_restructuring_offer")
    preview_text = preview.inner_text()
    said_id = re.search(r"it will be campaign (cmp_\w+)", page.locator(".preview").inner_text())
    assert said_id is not None
    screenshot(page, "campaign-preview")

    page.get_by_role("button", name="Create this campaign").click()
    expect(page).to_have_url(re.compile(rf"/ui/campaigns/{said_id.group(1)}\?done=create$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Hardship relief, by the pages")
    expect(page.locator(".lead .badge")).to_have_text("draft")
    expect(page.get_by_role("status")).to_contain_text("Created as a draft")
    assert campaign_count(ui_live) == before + 1
    campaign_id = said_id.group(1)
    created = ui_live.get(f"/v1/campaigns/{campaign_id}").json()
    assert [v["name"] for v in created["variants"]] == ["relief", "restructure"]
    assert created["holdout_percent"] == 25
    assert created["segment"] == {"stages": ["negotiation"]}
    assert created["start_at"] == iso(book["start"])
    screenshot(page, "campaign-draft")

    page.get_by_role("button", name="Launch").click()
    expect(page.locator(".lead .badge")).to_have_text("scheduled")
    # what launching recorded is what the preview showed
    assert page.locator(".plan-figures").inner_text() == preview_text
    assert figures_on(page) == figures
    launched = ui_live.get(f"/v1/campaigns/{campaign_id}").json()
    assert launched["launch"]["targeted"] == figures["Targeted"]
    assert launched["launch"]["holdout"] == figures["Held out"]
    messages = sum(launched["progress"]["by_status"].values())
    assert messages == figures["Targeted"] - figures["Held out"]
    expect(page.locator("#progress").locator("..")).to_contain_text(f"of {messages} messages sent")
    screenshot(page, "campaign-launched")

    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".lead .badge")).to_have_text("paused")
    expect(page.get_by_role("status")).to_contain_text("Paused")
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    assert ui_live.get(f"/v1/campaigns/{campaign_id}").json()["status"] == "paused"
    screenshot(page, "campaign-paused")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".lead .badge")).to_have_text("scheduled")

    page.get_by_role("link", name="Cancel the campaign…").click()
    expect(page.get_by_role("heading", name="Cancel this campaign?")).to_be_visible()
    expect(page.locator("main")).to_contain_text("not sent yet will be withheld")
    screenshot(page, "campaign-cancel")
    page.get_by_role("button", name="Cancel the campaign").click()
    expect(page.locator(".lead .badge")).to_have_text("cancelled")
    expect(page.locator(".campaign-actions")).to_have_count(0)
    trail = page.locator("#trail").locator("..").locator("tbody tr")
    expect(trail).to_have_count(5)
    for row, words in zip(
        trail.all(), ("created", "launched", "paused", "resumed", "cancelled"), strict=True
    ):
        expect(row).to_contain_text(words)
    screenshot(page, "campaign-cancelled")

    # audited as the API audits, saying it came from the pages
    entries = ui_live.get("/v1/audit", target=campaign_id).json()["items"]
    assert [e["action"] for e in reversed(entries)] == [
        "campaign.create",
        "campaign.launch",
        "campaign.pause",
        "campaign.resume",
        "campaign.cancel",
    ]
    assert all(e["detail"]["via"] == "ui" and e["role"] == "admin" for e in entries)
    launch_entry = next(e for e in entries if e["action"] == "campaign.launch")
    assert launch_entry["detail"]["targeted"] == figures["Targeted"]


def test_faults_are_shown_beside_their_fields_and_nothing_is_created(
    ui_live: LiveService, admin: Page, book: dict[str, Any]
) -> None:
    page = admin
    before = campaign_count(ui_live)
    page.goto(f"{ui_live.base_url}/ui/campaigns/new")
    page.get_by_label("Name", exact=True).fill("Faulty")
    page.get_by_label("Days past due, at least").fill("40")
    page.get_by_label("Days past due, at most").fill("10")
    page.get_by_label("Held out (%)").fill("80")
    page.get_by_label("Variant 1 name").fill("holdout")
    page.get_by_label("Variant 1 weight").fill("0")
    start = book["start"]
    page.get_by_label("Starts (UTC)").fill(field_time(start))
    page.get_by_label("Ends (UTC)").fill(field_time(start - dt.timedelta(hours=1)))
    answer: list[int] = []
    page.on("response", lambda r: answer.append(r.status) if r.url.endswith("/preview") else None)
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_role("alert")).to_contain_text("nothing was created")
    assert answer == [422]
    expect(page.locator("#f-dpd_min-fault")).to_contain_text("greater than dpd_max")
    expect(page.locator("#f-holdout_percent-fault")).to_contain_text("between 0 and 50")
    expect(page.locator("#f-end_at-fault")).to_contain_text("after start_at")
    expect(page.locator("#f-variant_0_name-fault")).to_contain_text("names the holdout group")
    expect(page.locator("#f-variant_0_weight-fault")).to_contain_text("positive number")
    expect(page.locator("#f-variant_0_template-fault")).to_contain_text("Must name a template")
    expect(page.get_by_label("Days past due, at least")).to_have_attribute("aria-invalid", "true")
    # refilled as typed
    expect(page.get_by_label("Name", exact=True)).to_have_value("Faulty")
    expect(page.get_by_label("Days past due, at least")).to_have_value("40")
    expect(page.get_by_label("Variant 1 name")).to_have_value("holdout")
    # the summary links to each field
    page.get_by_role("alert").get_by_role("link", name="Held out (%)").click()
    expect(page).to_have_url(re.compile(r"#f-holdout_percent$"))
    expect(page.get_by_role("heading", name="Preview: what it would do")).to_have_count(0)
    screenshot(page, "campaign-new-faults")

    # no template and no variants; a channel the form does not offer, posted as is
    with http_session(ui_live) as (client, csrf):
        posted = client.post(
            "/ui/campaigns",
            data={
                "csrf_token": csrf,
                "name": "x",
                "channel": "fax",
                "start_at": field_time(start),
            },
        )
    assert posted.status_code == 422
    assert "must be sms or email" in posted.text.lower()
    assert "is required unless variants are given" in posted.text.lower()
    assert campaign_count(ui_live) == before


def test_a_refused_transition_is_said_calmly(
    ui_live: LiveService, admin: Page, book: dict[str, Any]
) -> None:
    campaign = api_campaign(ui_live, name="Refused")
    api_move(ui_live, campaign["id"], "launch")
    page = admin
    page.goto(f"{ui_live.base_url}/ui/campaigns/{campaign['id']}")
    expect(page.get_by_role("button", name="Pause")).to_be_visible()
    # cancelled behind the page's back: its Pause button is out of date
    api_move(ui_live, campaign["id"], "cancel")
    answers: list[int] = []
    page.on("response", lambda r: answers.append(r.status) if r.url.endswith("/pause") else None)
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_have_text(
        "This campaign is cancelled; it cannot be paused."
    )
    assert answers == [409]
    expect(page.locator(".lead .badge")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    screenshot(page, "campaign-refused")
    refused = ui_live.get("/v1/audit", target=campaign["id"], action="campaign.pause").json()
    (entry,) = refused["items"]
    assert entry["outcome"] == "refused"
    assert entry["detail"] == {"status": "cancelled", "via": "ui"}
    expect(page.locator("#trail").locator("..")).to_contain_text("tried to pause: refused")


def test_progress_shows_sends_deliveries_and_payments_per_arm(
    ui_live: LiveService, admin: Page, book: dict[str, Any]
) -> None:
    """A campaign that starts now: its messages go out, a payment comes in on one loan."""
    campaign = api_campaign(
        ui_live,
        name="Going out now",
        start_at=iso(dt.datetime.now(dt.UTC)),
        segment={"stages": ["negotiation"], "locales": ["zh-CN", "zh-TW"]},
    )
    launched = api_move(ui_live, campaign["id"], "launch")
    assert launched["launch"]["eligible"] == 4

    def all_sent() -> list[dict[str, Any]] | None:
        items = ui_live.messages(campaign_id=campaign["id"])
        return items if items and all(m["status"] == "sent" for m in items) else None

    sent = ui_live.wait_for(all_sent, timeout=20)
    paid = sent[0]
    ui_live.post_event(payment_received(paid["loan_id"], amount="80.00", amount_due_after="170.00"))

    page = admin
    page.goto(f"{ui_live.base_url}/ui/campaigns")
    row = page.locator("table.log tbody tr").filter(has_text=campaign["id"])
    expect(row.locator(".bar-words")).to_contain_text(f"{len(sent)} of {len(sent)} sent (100%)")
    expect(row.locator("svg.bar rect.bar-sent title")).to_have_text(f"sent: {len(sent)} (100%)")
    expect(row.locator("svg.bar rect.bar-sent")).to_have_attribute("width", "100.0")
    screenshot(page, "campaigns")

    row.get_by_role("link", name="Going out now").click()
    arm = page.locator("table.arms tbody tr").filter(has_text="default")
    cells = arm.locator("td.num")
    expect(cells.nth(0)).to_have_text(str(len(sent)))  # messages
    expect(cells.nth(1)).to_have_text(str(len(sent)))  # sent
    expect(cells.nth(3)).to_have_text("1")  # paid
    expect(arm).to_contain_text("$80.00")
    expect(page.locator(".bar-words")).to_contain_text(f"{len(sent)} of {len(sent)} messages sent")
    expect(page.locator(".legend")).to_contain_text(f"sent {len(sent)}")
    progress = ui_live.get(f"/v1/campaigns/{campaign['id']}").json()["progress"]
    assert progress["variants"]["default"]["paid"] == 1
    expect(page.locator(".comparison")).to_have_text(
        re.compile(r"no comparison yet|leads|no arm leads")
    )
    screenshot(page, "campaign-progress")


def test_a_viewer_sees_no_write_controls_and_its_posts_are_refused(
    ui_live: LiveService, page: Page, book: dict[str, Any]
) -> None:
    draft = api_campaign(ui_live, name="For the viewer")
    running = api_campaign(ui_live, name="Running, for the viewer")
    api_move(ui_live, running["id"], "launch")
    log_in(page, ui_live, VIEWER_TOKEN)
    page.goto(f"{ui_live.base_url}/ui/campaigns")
    expect(page.get_by_role("link", name="New campaign…")).to_have_count(0)
    for campaign in (draft, running):
        page.goto(f"{ui_live.base_url}/ui/campaigns/{campaign['id']}")
        expect(page.get_by_role("heading", name="Audit trail")).to_be_visible()
        expect(page.locator("main form")).to_have_count(0)
        expect(
            page.get_by_role("button", name=re.compile("Launch|Pause|Resume|Cancel"))
        ).to_have_count(0)
        expect(page.get_by_role("link", name=re.compile("Cancel"))).to_have_count(0)
    screenshot(page, "campaign-viewer")
    page.goto(f"{ui_live.base_url}/ui/campaigns/new")
    expect(page.get_by_role("alert")).to_contain_text("Only an admin can create a campaign")
    page.goto(f"{ui_live.base_url}/ui/campaigns/{running['id']}/cancel")
    expect(page.get_by_role("alert")).to_contain_text("Only an admin can cancel a campaign")

    before = campaign_count(ui_live)
    with http_session(ui_live, VIEWER_TOKEN) as (client, csrf):
        for path, data in (
            (f"/ui/campaigns/{draft['id']}/launch", {}),
            (f"/ui/campaigns/{running['id']}/pause", {}),
            (f"/ui/campaigns/{running['id']}/cancel", {}),
            ("/ui/campaigns", {"name": "forged", "channel": "sms"}),
            ("/ui/campaigns/preview", {"name": "forged", "channel": "sms"}),
        ):
            forged = client.post(path, data={"csrf_token": csrf, **data})
            assert forged.status_code == 403, path
            assert "Only an admin" in forged.text
    assert ui_live.get(f"/v1/campaigns/{draft['id']}").json()["status"] == "draft"
    assert ui_live.get(f"/v1/campaigns/{running['id']}").json()["status"] == "scheduled"
    assert campaign_count(ui_live) == before
    refused = ui_live.get("/v1/audit", action="ui.post").json()["items"][0]
    assert (refused["role"], refused["detail"]) == ("viewer", {"why": "role"})


def test_a_post_without_its_csrf_token_is_refused(
    ui_live: LiveService, book: dict[str, Any]
) -> None:
    draft = api_campaign(ui_live, name="Without a token")
    before = campaign_count(ui_live)
    with http_session(ui_live) as (client, csrf):
        assert client.post(f"/ui/campaigns/{draft['id']}/launch").status_code == 403
        wrong = {"csrf_token": csrf[:-2] + "xx"}
        assert client.post(f"/ui/campaigns/{draft['id']}/launch", data=wrong).status_code == 403
        body = {"name": "no token", "channel": "sms", "template": "campaign_hardship_relief"}
        assert client.post("/ui/campaigns", data=body).status_code == 403
        assert client.post("/ui/campaigns/preview", data=body).status_code == 403
    assert ui_live.get(f"/v1/campaigns/{draft['id']}").json()["status"] == "draft"
    assert campaign_count(ui_live) == before
    refused = ui_live.get("/v1/audit", action="ui.post").json()["items"][0]
    assert (refused["outcome"], refused["detail"]) == ("forbidden", {"why": "csrf"})


@pytest.mark.parametrize("name", [SCRIPT_NAME, TEMPLATE_NAME])
def test_hostile_campaign_names_show_as_text(
    ui_live: LiveService, admin: Page, book: dict[str, Any], name: str
) -> None:
    page = admin
    page.goto(f"{ui_live.base_url}/ui/campaigns/new")
    fill_campaign(page, name, book["start"])
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_label("Name", exact=True)).to_have_value(name)
    page.get_by_role("button", name="Create this campaign").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    assert page.title().startswith(f"Campaign {name}")
    page.goto(f"{ui_live.base_url}/ui/campaigns")
    expect(page.locator("table.log").get_by_role("link", name=name, exact=True)).to_have_count(1)
    # nothing ran (the `page` fixture fails on a dialog) and no element was made of it
    assert page.locator("main script").count() == 0
    screenshot(page, "campaigns-hostile-names")


def test_on_a_tablet_the_campaign_pages_fit_the_screen(
    ui_live: LiveService, browser: Browser, book: dict[str, Any]
) -> None:
    campaign = api_campaign(ui_live, name="On a tablet")
    tablet = browser.new_context(viewport={"width": 820, "height": 1180})
    page = tablet.new_page()
    try:
        log_in(page, ui_live)
        for path, name in (
            ("/ui/campaigns", "tablet-campaigns"),
            ("/ui/campaigns/new", "tablet-campaign-new"),
            (f"/ui/campaigns/{campaign['id']}", "tablet-campaign"),
        ):
            page.goto(f"{ui_live.base_url}{path}")
            # nothing sticks out sideways: wide tables scroll inside their own box
            assert page.evaluate("document.documentElement.scrollWidth") <= 820, path
            screenshot(page, name)
    finally:
        tablet.close()
