"""Providers through the running app: the real twilio client against a loopback emulator,
signed callbacks back to the app, SMTP on loopback, and borrower replies (issue 6)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
import redis
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, text

from tests.conftest import REDIS_URL, truncate_all
from tests.factories import borrower_upserted, loan_updated, zone_at_local_hour
from tests.integration.conftest import serve
from tests.live import LiveService, start_live_service
from tests.support import free_port
from tests.twilio_emulator import TwilioEmulator, segments_of
from tests.twilio_fixtures import twilio_env


class Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 OK"


@pytest.fixture
def emulator() -> Iterator[TwilioEmulator]:
    with TwilioEmulator() as running:
        yield running


@pytest.fixture
def smtp_inbox() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def live(
    postgres_engine: Engine,
    redis_client: redis.Redis,
    emulator: TwilioEmulator,
    smtp_inbox: tuple[Inbox, int],
) -> Iterator[LiveService]:
    env = {
        **twilio_env(emulator),
        "OUTREACH_EMAIL_PROVIDER": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_inbox[1]),
        "EMAIL_FROM": "Harbor Lending <care@harborlending.example>",
        "OUTREACH_SMS_RATE": "50",
    }
    yield from serve(postgres_engine, env=env, real_senders=True)


def daytime_borrower(live: LiveService, borrower_id: str, phone: str, **kwargs: Any) -> None:
    zone = kwargs.pop("timezone", zone_at_local_hour(14))
    response = live.post_event(
        borrower_upserted(borrower_id, timezone=zone, phones=[phone], **kwargs)
    )
    assert response.status_code == 202, response.text


def first_sms(live: LiveService, loan_id: str, *statuses: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for message in live.messages(loan_id=loan_id, channel="sms"):
            if message["status"] in statuses:
                return message
        return None

    result: dict[str, Any] = live.wait_for(found, timeout=30)
    return result


def test_a_message_goes_queued_sent_delivered_and_late_callbacks_change_nothing(
    live: LiveService, emulator: TwilioEmulator
) -> None:
    daytime_borrower(live, "b-ok", "+15005550101")
    live.post_event(loan_updated("l-ok", "b-ok", days_past_due=1))
    message = first_sms(live, "l-ok", "sent")
    sid = message["provider_id"]
    assert sid.startswith("SM")
    create = emulator.create_requests[0]
    assert create.form["StatusCallback"] == f"{live.base_url}/v1/providers/twilio/status"
    assert 0 < int(create.form["ValidityPeriod"]) <= 36000

    assert emulator.send_status(sid, "sent").status_code == 200
    assert emulator.send_status(sid, "delivered").status_code == 200
    assert live.get(f"/v1/messages/{message['id']}").json()["status"] == "delivered"
    # a late `sent`, and a duplicate `delivered`, change nothing
    emulator.send_status(sid, "sent")
    emulator.send_status(sid, "delivered")
    shown = live.get(f"/v1/messages/{message['id']}").json()
    assert shown["status"] == "delivered"
    statuses = [event["status"] for event in shown["events"]]
    assert statuses[-3:] == ["sending", "sent", "delivered"]
    assert statuses.count("delivered") == 1

    forged = emulator.send_status(sid, "undelivered", 30003, signature="forged")
    assert forged.status_code == 403
    assert live.get(f"/v1/messages/{message['id']}").json()["status"] == "delivered"


@pytest.mark.parametrize(("code", "reason"), [(21211, "invalid_address"), (21610, "opted_out")])
def test_final_errors_are_not_retried_and_have_their_effect(
    live: LiveService, emulator: TwilioEmulator, code: int, reason: str
) -> None:
    phone = "+15005550102"
    emulator.script(phone, reject_code=code)
    daytime_borrower(live, "b-bad", phone)
    live.post_event(loan_updated("l-bad", "b-bad", days_past_due=1))
    failed = first_sms(live, "l-bad", "failed")
    assert failed["reason"] == "provider_error"
    assert f"code={code}" in failed["events"][-1]["detail"]
    time.sleep(1.5)  # several clock ticks: nothing is retried
    assert len(emulator.create_requests) == 1
    # the rest of the borrower's cadence is withheld for the same cause
    pending = live.messages(loan_id="l-bad", status="scheduled,deferred")
    assert pending == []
    withheld = live.messages(loan_id="l-bad", status="suppressed")
    assert withheld and {m["reason"] for m in withheld} == {reason}


@pytest.mark.parametrize("fail_status", [429, 500])
def test_busy_provider_is_retried_and_the_message_sent_once(
    live: LiveService, emulator: TwilioEmulator, fail_status: int
) -> None:
    phone = "+15005550103"
    emulator.script(phone, fail_status=fail_status, fail_times=2)
    daytime_borrower(live, "b-busy", phone)
    live.post_event(loan_updated("l-busy", "b-busy", days_past_due=1))
    sent = first_sms(live, "l-busy", "sent")
    assert len(emulator.create_requests) == 3
    assert len(emulator.messages(phone)) == 1
    retries = [e for e in sent["events"] if e["reason"] == "provider_retry"]
    assert len(retries) == 2
    assert all(f"code={fail_status}" in e["detail"] or "code=" in e["detail"] for e in retries)


def test_email_over_smtp_with_one_click_unsubscribe(
    live: LiveService, smtp_inbox: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp_inbox
    live.post_event(
        borrower_upserted(
            "b-mail",
            timezone=zone_at_local_hour(14),
            phones=[],
            email="mei@example.com",
            locale="zh-CN",
            name="林美",
        )
    )
    live.post_event(loan_updated("l-mail", "b-mail", days_past_due=2, currency="CNY"))
    live.wait_for(lambda: inbox.messages, timeout=10)
    received = inbox.messages[0]
    assert received["To"] == "mei@example.com"
    assert received.get_content_type() == "multipart/alternative"
    assert {part.get_content_type() for part in received.iter_parts()} == {
        "text/plain",
        "text/html",
    }
    unsubscribe = received["List-Unsubscribe"].strip("<>")
    assert unsubscribe.startswith(f"{live.base_url}/v1/unsubscribe/")
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # the worker records the acceptance once the SMTP transaction is over: the mail can
    # arrive a moment before the log says so
    sent = live.wait_for(lambda: live.messages(loan_id="l-mail", status="sent"), timeout=10)[0]
    assert sent["provider_id"] == received["Message-ID"]

    # a mail client's one-click POST (RFC 8058)
    clicked = httpx.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})
    assert clicked.status_code == 200
    assert httpx.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    withheld = live.messages(loan_id="l-mail", status="suppressed")
    assert withheld and {m["reason"] for m in withheld} == {"opted_out"}
    confirmation = live.wait_for(
        lambda: live.messages(borrower_id="b-mail", purpose="optout_confirmation", status="sent"),
        timeout=10,
    )
    assert len(confirmation) == 1
    timeline = live.get("/v1/borrowers/b-mail/timeline").json()["items"]
    assert any(item["kind"] == "reply" and item["classification"] == "opt_out" for item in timeline)
    assert httpx.get(unsubscribe.rsplit(".", 1)[0] + ".forged").status_code == 404


INBOUND = "/v1/providers/twilio/inbound"


@pytest.mark.parametrize(
    ("body", "locale"),
    [
        ("STOP", "en-US"),
        ("退订", "zh-CN"),
        ("please stop texting me", "en-US"),
        ("不要再發了", "zh-TW"),
    ],
)
def test_inbound_opt_out_confirms_once_and_start_opts_back_in(
    live: LiveService, emulator: TwilioEmulator, body: str, locale: str
) -> None:
    phone = "+15005550104"
    daytime_borrower(live, "b-stop", phone, timezone=zone_at_local_hour(3), locale=locale)
    live.post_event(loan_updated("l-stop", "b-stop", days_past_due=3))
    assert live.messages(loan_id="l-stop", status="deferred")

    response = emulator.send_inbound(f"{live.base_url}{INBOUND}", phone, body)
    assert response.status_code == 200
    withheld = live.messages(loan_id="l-stop", status="suppressed")
    assert withheld and {m["reason"] for m in withheld} == {"opted_out"}
    # the confirmation goes at once, even at 3 a.m., and only once
    live.wait_for(lambda: emulator.messages(phone), timeout=10)
    emulator.send_inbound(f"{live.base_url}{INBOUND}", phone, "STOP")
    time.sleep(1.2)
    confirmations = live.messages(borrower_id="b-stop", purpose="optout_confirmation")
    assert len(confirmations) == 1 and confirmations[0]["status"] == "sent"
    assert len(emulator.messages(phone)) == 1

    emulator.send_inbound(f"{live.base_url}{INBOUND}", phone, "START")
    live.wait_for(
        lambda: live.messages(borrower_id="b-stop", purpose="optin_confirmation", status="sent"),
        timeout=10,
    )
    timeline = live.get("/v1/borrowers/b-stop/timeline").json()["items"]
    replies = [item["classification"] for item in timeline if item["kind"] == "reply"]
    assert replies == ["opt_out", "opt_out", "opt_in"]


def test_help_is_answered_at_3am_and_other_replies_go_to_a_person(
    live: LiveService, emulator: TwilioEmulator
) -> None:
    phone = "+15005550105"
    daytime_borrower(live, "b-help", phone, timezone=zone_at_local_hour(3))
    emulator.send_inbound(f"{live.base_url}{INBOUND}", phone, "HELP")
    reply = live.wait_for(
        lambda: live.messages(borrower_id="b-help", purpose="help_reply", status="sent"),
        timeout=10,
    )[0]
    assert "Harbor Lending" in reply["body"]
    assert "STOP" in reply["body"]
    sent = emulator.messages(phone)
    assert len(sent) == 1

    emulator.send_inbound(f"{live.base_url}{INBOUND}", phone, "I lost my job, can we talk?")
    flagged = live.messages(needs_human="true")
    assert [m["id"] for m in flagged] == [reply["id"]]
    assert flagged[0]["events"][-1]["reason"] == "needs_human"
    time.sleep(1)
    assert len(emulator.messages(phone)) == 1  # a person answers that, not a bot

    forged = emulator.send_inbound(f"{live.base_url}{INBOUND}", phone, "STOP", signature="forged")
    assert forged.status_code == 403
    timeline = live.get("/v1/borrowers/b-help/timeline").json()["items"]
    assert [i["body"] for i in timeline if i["kind"] == "reply"] == [
        "HELP",
        "I lost my job, can we talk?",
    ]


def test_sends_pace_to_the_configured_segment_rate(
    postgres_engine: Engine, redis_client: redis.Redis, emulator: TwilioEmulator
) -> None:
    truncate_all(postgres_engine)
    url = postgres_engine.url.render_as_string(hide_password=False)
    env = {**twilio_env(emulator), "OUTREACH_SMS_RATE": "5"}
    service = start_live_service(url, REDIS_URL, env=env, real_senders=True)
    live = next(service)
    try:
        zone = zone_at_local_hour(14)
        for index in range(100):
            borrower = f"b-rate-{index}"
            live.post_event(
                borrower_upserted(borrower, timezone=zone, phones=[f"+1500555{1000 + index:04d}"])
            )
            live.post_event(loan_updated(f"l-rate-{index}", borrower, days_past_due=1))
        try:
            live.wait_for(lambda: len(emulator.messages()) >= 100, timeout=240, interval=0.5)
        except AssertionError:
            import collections

            counts = collections.Counter(
                (m["status"], m["reason"])
                for m in live.messages(limit=500)
                if m["stage"] and m["status"] != "scheduled"
            )
            raise AssertionError(f"{len(emulator.messages())} sent; {counts}") from None
        sent = sorted(emulator.messages(), key=lambda message: message.date_created)
        stamps = [message.date_created for message in sent]
        segments = [segments_of(message.body) for message in sent]
        # each send holds the next back by its own segments / rate. The emulator stamps a
        # request when it arrives, a moment after its slot: one that arrives late (a worker's
        # first send, a busy machine) shortens the gap after it by what it lengthened the one
        # before, so each two consecutive gaps are held to the slots of their sends.
        for index in range(2, len(sent)):
            span = (stamps[index] - stamps[index - 2]).total_seconds()
            slots = (segments[index - 2] + segments[index - 1]) / 5
            assert span >= slots - 0.05, (index, span, slots)
        for index, start in enumerate(stamps):
            in_window = [
                segments[other]
                for other in range(index, len(stamps))
                if stamps[other] < start + dt.timedelta(seconds=1)
            ]
            assert sum(in_window) <= 5 + max(segments), f"{sum(in_window)} segments in 1 s"
        elapsed = (stamps[-1] - stamps[0]).total_seconds()
        assert sum(segments[:-1]) / elapsed <= 5 * 1.02
    finally:
        for _ in service:
            pass
        truncate_all(postgres_engine)


def test_statuses_that_overtake_the_acceptance_are_applied_once_it_is_recorded(
    live: LiveService, emulator: TwilioEmulator, postgres_engine: Engine
) -> None:
    # Twilio calls back `sent` and `delivered` before it answers the create: the worker has
    # not recorded the sid yet, and the statuses must wait for it, not be lost
    emulator.script("+15005550131", call_back_first=("sent", "delivered"))
    daytime_borrower(live, "b-fast", "+15005550131")
    live.post_event(loan_updated("l-fast", "b-fast", days_past_due=1))

    delivered = first_sms(live, "l-fast", "delivered")
    steps = live.get(f"/v1/messages/{delivered['id']}").json()["events"]
    assert [step["status"] for step in steps][-3:] == ["sending", "sent", "delivered"]
    assert "provider_status=delivered" in steps[-1]["detail"]
    with postgres_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM parked_callbacks")).scalar() == 0

    # one for no message of ours stays parked, changes nothing, and is dropped after a day
    emulator.script("+15005550132")
    daytime_borrower(live, "b-late", "+15005550132")
    live.post_event(loan_updated("l-late", "b-late", days_past_due=1))
    sent = first_sms(live, "l-late", "sent")
    stranger = {"MessageSid": "SM" + "f" * 32, "MessageStatus": "failed", "ErrorCode": "30003"}
    url = f"{live.base_url}/v1/providers/twilio/status"
    answer = httpx.post(
        url, data=stranger, headers={"X-Twilio-Signature": emulator.sign(url, stranger)}
    )
    assert answer.status_code == 200 and answer.json() == {"status": "parked"}
    assert live.get(f"/v1/messages/{sent['id']}").json()["status"] == "sent"
    clock = live.clock
    clock.apply_parked_statuses()
    with postgres_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM parked_callbacks")).scalar() == 1
    live.services.dispatcher.now = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    clock.apply_parked_statuses()
    with postgres_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM parked_callbacks")).scalar() == 0


def test_a_status_callback_with_fields_twilio_never_sends_is_refused_naming_the_field(
    live: LiveService, emulator: TwilioEmulator, postgres_engine: Engine
) -> None:
    url = f"{live.base_url}/v1/providers/twilio/status"
    for field, form in (
        ("MessageStatus", {"MessageSid": "SM" + "a" * 32, "MessageStatus": "x" * 300}),
        ("MessageSid", {"MessageSid": "SM" + "a" * 300, "MessageStatus": "failed"}),
        (
            "ErrorCode",
            {"MessageSid": "SM" + "a" * 32, "MessageStatus": "failed", "ErrorCode": "3000x"},
        ),
    ):
        answer = httpx.post(
            url, data=form, headers={"X-Twilio-Signature": emulator.sign(url, form)}
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == field
    with postgres_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM parked_callbacks")).scalar() == 0
        assert connection.execute(text("SELECT count(*) FROM provider_callbacks")).scalar() == 0
