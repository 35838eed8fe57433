"""What the edge bounds and says before any route runs (issue 21 §5): body sizes and Twilio's
content type, rates per client address, the security headers of every answer, and no
Swagger UI fetched from a CDN."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from sqlalchemy import Engine

from outreach.api import limits
from outreach.settings import load_settings
from tests.integration.conftest import serve
from tests.live import ADMIN_TOKEN, VIEWER_TOKEN, LiveService, sign
from tests.support import free_port

TWILIO_STATUS = "/v1/providers/twilio/status"
TWILIO_INBOUND = "/v1/providers/twilio/inbound"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TIGHT_LIMITS = {
    "OUTREACH_RATE_LIMIT_WEBHOOK": "6/60",
    "OUTREACH_RATE_LIMIT_UNSIGNED": "3/60",
    "OUTREACH_RATE_LIMIT_UNSUBSCRIBE": "4/60",
    "OUTREACH_RATE_LIMIT_LOGIN_FAILURES": "3/900",
    "OUTREACH_RATE_LIMIT_OPS_TOKEN": "5/60",
}


@pytest.fixture
def tight(postgres_engine: Engine, redis_client: redis.Redis) -> Iterator[LiveService]:
    """The live service with small limits, to reach them in a few requests."""
    yield from serve(postgres_engine, env=TIGHT_LIMITS, run_worker=False)


def test_twilio_callbacks_refuse_large_bodies_and_other_encodings_before_reading_them(
    live: LiveService,
) -> None:
    url = live.base_url
    for path in (TWILIO_STATUS, TWILIO_INBOUND):
        # 1,000 fields of 1 MB would be parsed (and spilled to disk) before the signature
        big = httpx.post(url + path, content=b"Body=" + b"x" * (65 * 1024), headers=FORM)
        assert big.status_code == 413, big.text
        assert big.json()["detail"].startswith("the body is larger than")
        many = "&".join(f"f{index}=1" for index in range(500)).encode()
        assert httpx.post(url + path, content=many, headers=FORM).status_code == 413
        parts = {"files": {"Body": ("a.txt", b"STOP", "text/plain")}}
        multipart = httpx.post(url + path, **parts)  # type: ignore[arg-type]
        assert multipart.status_code == 415, multipart.text
        as_json = httpx.post(url + path, json={"MessageSid": "SM1", "MessageStatus": "sent"})
        assert as_json.status_code == 415
        # a form of the right kind and size reaches the signature check
        unsigned = httpx.post(url + path, content=b"MessageSid=SM1&From=%2B1", headers=FORM)
        assert unsigned.status_code == 403


def test_every_body_the_service_reads_is_bounded(live: LiveService) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    huge = json.dumps({"name": "x" * (2 * 1024 * 1024)}).encode()
    for path in ("/v1/campaigns", "/v1/templates/preview", "/v1/messages/m-1/cancel"):
        answer = httpx.post(live.base_url + path, content=huge, headers=admin, timeout=30)
        assert answer.status_code == 413, (path, answer.status_code)
    # a page's form, before its CSRF token or session is looked at
    form = httpx.post(live.base_url + "/ui/login", content=b"token=" + b"x" * (2 << 20))
    assert form.status_code == 413
    # declared larger than allowed: refused without waiting for the body
    host, port = live.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST /v1/campaigns HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {5 << 20}\r\n\r\n".encode()
        )
        assert connection.recv(4096).startswith(b"HTTP/1.1 413 ")
    # and every header together, on any route
    big_header = {"X-Padding": "x" * (40 * 1024)}
    assert live.client.get("/health", headers=big_header).status_code == 431
    assert live.client.post("/v1/events", content=b"{}", headers=big_header).status_code == 431
    # the webhook keeps its own bounds (SPEC §4: 1 MiB, 5 MiB)
    body = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    one = live.client.post("/v1/events", content=body, headers={"X-Outreach-Signature": sign(body)})
    assert one.status_code == 413


def test_every_answer_carries_the_security_headers(live: LiveService) -> None:
    answers = {
        "/v1/messages": live.get("/v1/messages"),
        "/v1/policy": live.get("/v1/policy"),
        "/health": live.client.get("/health"),
        "/ui/login": live.client.get("/ui/login"),
        "/v1/unsubscribe/x": live.client.get("/v1/unsubscribe/not-a-token"),
        "/v1/events": live.client.post("/v1/events", content=b"{}"),
    }
    for path, answer in answers.items():
        headers = answer.headers
        assert headers["cache-control"] == "no-store", path
        assert headers["x-frame-options"] == "DENY", path
        assert headers["referrer-policy"] == "no-referrer", path
        assert headers["x-content-type-options"] == "nosniff", path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
    assert (
        answers["/v1/messages"].headers["content-security-policy"].startswith("default-src 'none'")
    )
    # the pages keep their own policy: their files, never inline script
    assert "script-src 'self'" in answers["/ui/login"].headers["content-security-policy"]
    static = live.client.get("/ui/static/ui.css")
    assert static.status_code == 200 and "no-store" not in static.headers.get("cache-control", "")


def test_no_swagger_ui_is_fetched_from_a_cdn_and_the_document_stays(live: LiveService) -> None:
    assert live.client.get("/docs").status_code == 404
    assert live.client.get("/redoc").status_code == 404
    document = live.client.get("/openapi.json")
    assert document.status_code == 200
    assert "/v1/messages" in document.json()["paths"]


def retry_after(answer: httpx.Response) -> int:
    assert answer.status_code == 429, answer.text
    seconds = int(answer.headers["Retry-After"])
    assert 0 < seconds <= 900
    return seconds


def test_failed_logins_from_one_address_are_refused_for_a_while(tight: LiveService) -> None:
    with httpx.Client(base_url=tight.base_url, timeout=30) as client:

        def attempt(token: str) -> httpx.Response:
            page = client.get("/ui/login").text
            fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
            return client.post("/ui/login", data={**fields, "token": token})

        for _ in range(3):
            assert attempt("not-the-token-at-all").status_code == 401
        assert retry_after(attempt("not-the-token-at-all")) > 60
        # the right token too: the address is refused, not the guess
        blocked = attempt(ADMIN_TOKEN)
        retry_after(blocked)
        assert "Too many failed logins" in blocked.text
    audit = tight.get("/v1/audit", action="ui.login").json()["items"]
    assert [row["outcome"] for row in audit] == ["refused"] * 3


def test_public_routes_are_limited_per_address(tight: LiveService) -> None:
    url = tight.base_url
    for _ in range(4):
        assert httpx.get(f"{url}/v1/unsubscribe/not-a-token").status_code == 404
    retry_after(httpx.get(f"{url}/v1/unsubscribe/not-a-token"))

    # refused signatures count: after 3, this address is refused before its body is read
    for _ in range(3):
        assert httpx.post(f"{url}/v1/events", content=b"{}").status_code == 401
    refused = httpx.post(f"{url}/v1/events", content=b"{}")
    assert retry_after(refused) <= 60
    assert refused.json()["detail"].startswith("too many requests")


def test_a_signed_sender_keeps_its_whole_rate_up_to_the_flood_guard(tight: LiveService) -> None:
    from tests.factories import borrower_upserted

    answers = [tight.post_event(borrower_upserted(f"b-{n}"), settle=False) for n in range(6)]
    assert [answer.status_code for answer in answers] == [202] * 6
    retry_after(tight.post_event(borrower_upserted("b-7"), settle=False))


def test_the_ops_api_is_limited_per_token(tight: LiveService) -> None:
    def messages(token: str) -> httpx.Response:
        return httpx.get(
            f"{tight.base_url}/v1/messages", headers={"Authorization": f"Bearer {token}"}
        )

    assert [messages(ADMIN_TOKEN).status_code for _ in range(5)] == [200] * 5
    refused = messages(ADMIN_TOKEN)
    assert retry_after(refused) <= 60
    # another token from the same address keeps its own count; no token is simply refused
    assert messages(VIEWER_TOKEN).status_code == 200
    assert httpx.get(f"{tight.base_url}/v1/messages").status_code == 401


def test_limits_are_read_from_the_environment() -> None:
    settings = load_settings({"OUTREACH_RATE_LIMIT_LOGIN_FAILURES": "5/60"})
    assert (
        settings.rate_limits.login_failures.count,
        settings.rate_limits.login_failures.seconds,
    ) == (
        5,
        60,
    )
    assert not load_settings({"OUTREACH_RATE_LIMIT_WEBHOOK": "off"}).rate_limits.webhook.limited
    with pytest.raises(Exception, match="OUTREACH_RATE_LIMIT_TWILIO"):
        load_settings({"OUTREACH_RATE_LIMIT_TWILIO": "ten"})


def test_limits_let_everything_through_while_redis_cannot_count() -> None:
    # the counts' Redis is a port nothing listens on
    counter = limits.RateCounter(f"redis://127.0.0.1:{free_port()}/0")
    rule = limits.Rule("webhook", load_settings({}).rate_limits.webhook)
    started = time.monotonic()
    assert counter.check(rule, "127.0.0.1") is None
    assert counter.check(rule, "127.0.0.1") is None  # left alone a while: answered at once
    assert time.monotonic() - started < 2
