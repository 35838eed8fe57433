"""Who may see and do what on the ops pages: logging in and out, no page without a session,
the session cookie and its idle expiry, CSRF tokens, a viewer's limits, the security
headers, all in headless Chromium against the live service."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import Page, expect

from tests.browser.conftest import http_session, log_in, screenshot
from tests.conftest import REDIS_URL
from tests.factories import borrower_upserted, loan_updated, zone_at_local_hour
from tests.live import ADMIN_TOKEN, VIEWER_TOKEN, LiveService

PAGES = (
    "/ui/",
    "/ui/messages",
    "/ui/messages/msg-x",
    "/ui/borrowers/b-x",
    "/ui/campaigns",
    "/ui/campaigns/new",
    "/ui/campaigns/cmp-x",
)


@pytest.fixture(scope="module")
def pending(ui_live: LiveService) -> Iterator[dict[str, Any]]:
    """A message held for quiet hours (3 a.m. where the borrower is): one that may be
    cancelled."""
    ui_live.post_event(borrower_upserted("b-acc", timezone=zone_at_local_hour(3)))
    ui_live.post_event(loan_updated("l-acc", "b-acc", days_past_due=3))
    found = ui_live.wait_for(
        lambda: [m for m in ui_live.messages(loan_id="l-acc") if m["status"] == "deferred"]
    )
    yield found[0]


def audit(live: LiveService, **filters: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = live.get("/v1/audit", **filters).json()["items"]
    return items


def test_without_a_session_every_page_sends_you_to_log_in(ui_live: LiveService) -> None:
    with httpx.Client(base_url=ui_live.base_url) as client:
        assert client.get("/").headers["location"] == "/ui/"
        for path in PAGES:
            answer = client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/ui/login"), path
        for path in ("/ui/messages/msg-x/cancel", "/ui/campaigns", "/ui/campaigns/cmp-x/pause"):
            posted = client.post(path, data={"csrf_token": "x"})
            assert posted.status_code == 303, path
        # the page asked for is where logging in leads back to
        assert client.get("/ui/borrowers/b-x").headers["location"] == (
            "/ui/login?next=%2Fui%2Fborrowers%2Fb-x"
        )


def test_logging_in_and_out_in_the_browser(ui_live: LiveService, page: Page) -> None:
    page.goto(f"{ui_live.base_url}/ui/messages")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    screenshot(page, "login")
    page.get_by_label("Ops token").fill(ADMIN_TOKEN)
    page.get_by_label("Ops token").press("Enter")
    # back where it was going
    expect(page).to_have_url(re.compile(r"/ui/messages$"))
    expect(page.get_by_role("navigation", name="Main")).to_contain_text("Campaigns")
    expect(page.locator(".who")).to_contain_text("admin")
    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    screenshot(page, "overview")

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    page.goto(f"{ui_live.base_url}/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    actions = [(e["action"], e["outcome"], e["role"]) for e in audit(ui_live)[:2]]
    assert actions == [("ui.logout", "ok", "admin"), ("ui.login", "ok", "admin")]


def test_a_wrong_token_is_refused_and_recorded(ui_live: LiveService, page: Page) -> None:
    page.goto(f"{ui_live.base_url}/ui/login")
    page.get_by_label("Ops token").fill("not-a-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    assert page.context.cookies() == [] or all(
        cookie["name"] != "outreach_session" for cookie in page.context.cookies()
    )
    refused = audit(ui_live, action="ui.login")[0]
    assert (refused["actor"], refused["outcome"]) == ("unknown", "refused")
    assert "not-a-token" not in str(refused)


def test_the_session_cookie_and_the_security_headers(ui_live: LiveService, page: Page) -> None:
    log_in(page, ui_live)
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "outreach_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # served over plain http here
    assert cookie["expires"] == -1  # the server decides when it ends
    # script cannot read it
    assert "outreach_session" not in page.evaluate("document.cookie")

    answer = page.goto(f"{ui_live.base_url}/ui/messages")
    assert answer is not None
    headers = answer.headers
    policy = headers["content-security-policy"]
    script_src = re.search(r"script-src ([^;]*)", policy)
    assert script_src and script_src.group(1).strip() == "'self'"
    assert "'unsafe-inline'" not in policy
    assert "frame-ancestors 'none'" in policy
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"

    # behind a proxy that says the request came over https, the cookie is Secure
    with httpx.Client(base_url=ui_live.base_url, headers={"X-Forwarded-Proto": "https"}) as client:
        form = client.get("/ui/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert csrf is not None
        cookie_header = form.headers["set-cookie"]
        token = cookie_header.split("=", 1)[1].split(";", 1)[0]
        logged_in = client.post(
            "/ui/login",
            data={"csrf_token": csrf.group(1), "token": ADMIN_TOKEN, "next": "/ui/"},
            headers={"Cookie": f"outreach_login={token}"},
        )
        assert logged_in.status_code == 303
        flags = logged_in.headers["set-cookie"].lower()
        assert "outreach_session=" in flags
        assert "httponly" in flags and "samesite=strict" in flags and "secure" in flags


def test_a_session_ends_after_eight_hours_without_a_request(ui_live: LiveService) -> None:
    store = redis.Redis.from_url(REDIS_URL)
    with http_session(ui_live) as (client, _), store:
        key = ui_live.app.state.ui_sessions.key(client.cookies["outreach_session"])
        assert 8 * 3600 - 60 < store.ttl(key) <= 8 * 3600
        # an hour idle, then a request: its eight hours start again
        store.expire(key, 7 * 3600)
        assert client.get("/ui/").status_code == 200
        assert store.ttl(key) > 8 * 3600 - 60
        # the eight hours run out
        store.pexpire(key, 1)
        time.sleep(0.05)
        answer = client.get("/ui/")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/login")


def test_a_post_without_its_csrf_token_is_refused(
    ui_live: LiveService, pending: dict[str, Any]
) -> None:
    with http_session(ui_live) as (client, csrf):
        cancel = f"/ui/messages/{pending['id']}/cancel"
        assert client.post(cancel, data={"note": "forged"}).status_code == 403
        assert client.post(cancel, data={"csrf_token": csrf[:-2] + "xx"}).status_code == 403
        assert client.post("/ui/logout").status_code == 403
        assert ui_live.get(f"/v1/messages/{pending['id']}").json()["status"] == "deferred"
        refused = audit(ui_live, action="ui.post")[0]
        assert (refused["outcome"], refused["detail"]) == ("forbidden", {"why": "csrf"})
        # the session itself is still good, and the form's own token works
        assert client.get("/ui/messages").status_code == 200
        assert client.post("/ui/logout", data={"csrf_token": csrf}).status_code == 303


def test_a_viewer_sees_no_write_controls_and_a_forged_write_is_refused(
    ui_live: LiveService, page: Page, pending: dict[str, Any]
) -> None:
    log_in(page, ui_live, VIEWER_TOKEN)
    expect(page.locator(".who")).to_contain_text("viewer")
    page.goto(f"{ui_live.base_url}/ui/messages/{pending['id']}")
    expect(page.get_by_role("heading", name="Timeline")).to_be_visible()
    expect(page.get_by_role("link", name=re.compile("Cancel"))).to_have_count(0)
    expect(page.locator("form[action$='/cancel']")).to_have_count(0)
    page.goto(f"{ui_live.base_url}/ui/messages/{pending['id']}/cancel")
    expect(page.get_by_role("alert")).to_contain_text("Only an admin")
    screenshot(page, "viewer-refused")

    with http_session(ui_live, VIEWER_TOKEN) as (client, csrf):
        forged = client.post(f"/ui/messages/{pending['id']}/cancel", data={"csrf_token": csrf})
    assert forged.status_code == 403
    assert "Only an admin" in forged.text
    assert ui_live.get(f"/v1/messages/{pending['id']}").json()["status"] == "deferred"
    refused = audit(ui_live, action="ui.post")[0]
    assert (refused["role"], refused["detail"]) == ("viewer", {"why": "role"})
