"""The real `twilio` client against the loopback emulator: requests, errors, reconciliation."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from outreach.channels.base import (
    OutcomeUnknown,
    Outgoing,
    ProviderRejected,
    ProviderUnavailable,
)
from outreach.channels.rate_limit import SegmentRateLimiter
from outreach.channels.twilio_errors import is_final, recipient_effect
from outreach.channels.twilio_sms import (
    STATUS_CALLBACK_PATH,
    TwilioSender,
    twilio_signature_valid,
)
from outreach.domain import Channel
from outreach.errors import ConfigurationError
from tests.support import free_port
from tests.twilio_emulator import TwilioEmulator
from tests.twilio_fixtures import TWILIO_FROM, twilio_emulator, twilio_settings

__all__ = ["twilio_emulator"]  # the fixture, imported for pytest

NOW = dt.datetime(2025, 3, 3, 9, 30, tzinfo=dt.UTC)
BORROWER = "+14155550123"


def sms(to: str = BORROWER, body: str = "Your payment is 3 days late.", **kw: Any) -> Outgoing:
    return Outgoing(message_id="msg-1", channel=Channel.SMS, to=to, body=body, **kw)


@pytest.fixture
def sender(twilio_emulator: TwilioEmulator) -> Iterator[TwilioSender]:
    twilio = TwilioSender(twilio_settings(twilio_emulator), timeout=2, clock=lambda: NOW)
    yield twilio
    twilio.close()


def test_accepted_message_carries_sender_callback_and_validity(
    sender: TwilioSender, twilio_emulator: TwilioEmulator
) -> None:
    receipt = sender.send(sms(deliver_by=NOW + dt.timedelta(minutes=90)))

    assert receipt.provider_id.startswith("SM")
    assert receipt.status == "queued"
    (request,) = twilio_emulator.create_requests
    assert request.authorized
    assert request.path == f"/2010-04-01/Accounts/{twilio_emulator.account_sid}/Messages.json"
    assert request.form == {
        "To": BORROWER,
        "From": TWILIO_FROM,
        "Body": "Your payment is 3 days late.",
        "StatusCallback": "http://127.0.0.1:8000" + STATUS_CALLBACK_PATH,
        "ValidityPeriod": "5400",
    }
    assert twilio_emulator.message(receipt.provider_id).body == "Your payment is 3 days late."


def test_messaging_service_replaces_from(twilio_emulator: TwilioEmulator) -> None:
    settings = twilio_settings(
        twilio_emulator, TWILIO_FROM="", TWILIO_MESSAGING_SERVICE_SID="MG" + "1" * 32
    )
    twilio = TwilioSender(settings, clock=lambda: NOW)
    try:
        receipt = twilio.send(sms())
    finally:
        twilio.close()

    (request,) = twilio_emulator.create_requests
    assert request.form["MessagingServiceSid"] == "MG" + "1" * 32
    assert "From" not in request.form
    assert "ValidityPeriod" not in request.form  # no deadline given: Twilio's own default
    assert receipt.status == "accepted"


def test_validity_period_is_capped_at_twilios_maximum(
    sender: TwilioSender, twilio_emulator: TwilioEmulator
) -> None:
    sender.send(sms(deliver_by=NOW + dt.timedelta(days=2)))

    assert twilio_emulator.create_requests[0].form["ValidityPeriod"] == "36000"


@pytest.mark.parametrize("closed_since", [dt.timedelta(0), dt.timedelta(minutes=5)])
def test_closed_window_defers_without_calling_twilio(
    sender: TwilioSender, twilio_emulator: TwilioEmulator, closed_since: dt.timedelta
) -> None:
    with pytest.raises(ProviderUnavailable) as raised:
        sender.send(sms(deliver_by=NOW - closed_since))

    assert raised.value.code == "window_closed"
    assert twilio_emulator.requests == []


@pytest.mark.parametrize(
    ("code", "effect"),
    [
        (21211, "invalid_recipient"),
        (21610, "opt_out"),
        (21614, "invalid_recipient"),
        (21635, "invalid_recipient"),
    ],
)
def test_final_errors_are_rejections_with_their_effect(
    sender: TwilioSender, twilio_emulator: TwilioEmulator, code: int, effect: str
) -> None:
    twilio_emulator.script(BORROWER, reject_code=code)

    with pytest.raises(ProviderRejected) as raised:
        sender.send(sms())

    assert raised.value.code == str(code)
    assert raised.value.effect == effect
    assert raised.value.detail  # Twilio's message, for the timeline
    assert len(twilio_emulator.create_requests) == 1  # the client did not retry on its own
    assert twilio_emulator.messages() == []


@pytest.mark.parametrize(
    ("status", "code", "retry_after"),
    [(429, "20429", 7.0), (500, "20500", None), (503, "20503", 2.0)],
)
def test_busy_or_failing_twilio_is_unavailable_with_retry_after(
    sender: TwilioSender,
    twilio_emulator: TwilioEmulator,
    status: int,
    code: str,
    retry_after: float | None,
) -> None:
    twilio_emulator.script(BORROWER, fail_status=status, retry_after=retry_after)

    with pytest.raises(ProviderUnavailable) as raised:
        sender.send(sms())

    assert raised.value.code == code
    assert raised.value.retry_after == retry_after
    assert len(twilio_emulator.create_requests) == 1


@pytest.mark.parametrize("code", [30001, 21611])
def test_queue_full_codes_are_unavailable(
    sender: TwilioSender, twilio_emulator: TwilioEmulator, code: int
) -> None:
    twilio_emulator.script(BORROWER, reject_code=code)

    with pytest.raises(ProviderUnavailable) as raised:
        sender.send(sms())

    assert raised.value.code == str(code)


def test_unknown_client_error_is_final_without_effect(
    sender: TwilioSender, twilio_emulator: TwilioEmulator
) -> None:
    twilio_emulator.script(BORROWER, reject_code=21408)  # region not enabled for the account

    with pytest.raises(ProviderRejected) as raised:
        sender.send(sms())

    assert (raised.value.code, raised.value.effect) == ("21408", None)


def test_retries_after_500s_create_exactly_one_message(
    sender: TwilioSender, twilio_emulator: TwilioEmulator
) -> None:
    twilio_emulator.script(BORROWER, fail_status=500, fail_times=2)

    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            sender.send(sms())
    receipt = sender.send(sms())

    assert len(twilio_emulator.create_requests) == 3
    assert [m.sid for m in twilio_emulator.messages(BORROWER)] == [receipt.provider_id]


def test_wrong_credentials_wait_for_the_operator(twilio_emulator: TwilioEmulator) -> None:
    settings = twilio_settings(twilio_emulator, TWILIO_AUTH_TOKEN="not-the-token")
    twilio = TwilioSender(settings, clock=lambda: NOW)
    try:
        with pytest.raises(ProviderUnavailable) as raised:
            twilio.send(sms())
    finally:
        twilio.close()

    assert raised.value.code == "20003"
    assert twilio_emulator.create_requests[0].authorized is False


def test_timeout_after_sending_is_unknown_and_reconciles(twilio_emulator: TwilioEmulator) -> None:
    twilio = TwilioSender(twilio_settings(twilio_emulator), timeout=0.5, clock=lambda: NOW)
    twilio_emulator.script(BORROWER, delay=3)
    outgoing = sms()
    try:
        with pytest.raises(OutcomeUnknown):
            twilio.send(outgoing)
        # Twilio did create it; the reconciler finds it instead of sending a second SMS
        twilio_emulator.script(BORROWER)
        found = twilio.find_sent(outgoing, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    finally:
        twilio.close()

    (message,) = twilio_emulator.messages(BORROWER)
    assert found is not None
    assert (found.provider_id, found.status) == (message.sid, "queued")
    assert len(twilio_emulator.create_requests) == 1


def test_refused_connection_is_unavailable() -> None:
    emulator = TwilioEmulator().start()
    settings = twilio_settings(emulator)
    emulator.stop()  # nothing listens there any more
    twilio = TwilioSender(settings, timeout=2, clock=lambda: NOW)
    try:
        with pytest.raises(ProviderUnavailable) as raised:
            twilio.send(sms())
    finally:
        twilio.close()

    assert raised.value.code == "connect_failed"


def test_find_sent_matches_recipient_body_and_time(
    sender: TwilioSender, twilio_emulator: TwilioEmulator
) -> None:
    now = dt.datetime.now(dt.UTC)
    old = twilio_emulator.add_message(
        BORROWER, "Your payment is 3 days late.", created=now - dt.timedelta(hours=2)
    )
    twilio_emulator.add_message(BORROWER, "A different text.", created=now)
    twilio_emulator.add_message("+14155550999", "Your payment is 3 days late.", created=now)
    recent = twilio_emulator.add_message(
        BORROWER, "Your payment is 3 days late.", status="delivered", created=now
    )
    since = now - dt.timedelta(minutes=5)

    found = sender.find_sent(sms(), since)

    assert found is not None
    assert (found.provider_id, found.status) == (recent.sid, "delivered")
    assert found.provider_id != old.sid
    assert sender.find_sent(sms(body="Never sent."), since) is None
    # the lookup used Twilio's DateSent filter and the To filter
    lookup = next(r for r in twilio_emulator.requests if r.method == "GET")
    assert lookup.query["To"] == BORROWER
    assert lookup.query["DateSent>"] == since.strftime("%Y-%m-%dT00:00:00Z")


def test_find_sent_when_twilio_is_down_is_unavailable() -> None:
    emulator = TwilioEmulator().start()
    settings = twilio_settings(emulator)
    emulator.stop()
    twilio = TwilioSender(settings, timeout=2)
    try:
        with pytest.raises(ProviderUnavailable):
            twilio.find_sent(sms(), dt.datetime.now(dt.UTC))
    finally:
        twilio.close()


def test_missing_credentials_fail_at_construction(twilio_emulator: TwilioEmulator) -> None:
    settings = twilio_settings(twilio_emulator, OUTREACH_SMS_PROVIDER="console", TWILIO_FROM="")
    with pytest.raises(ConfigurationError, match="TWILIO_FROM"):
        TwilioSender(settings)


# -- the rate limiter in front of Twilio ---------------------------------------------------------


@pytest.mark.redis
def test_no_slot_in_time_defers_without_calling_twilio(
    twilio_emulator: TwilioEmulator, redis_client: redis.Redis
) -> None:
    limiter = SegmentRateLimiter(redis_client, rate_per_second=1, key="test:sms:rate")
    limiter.acquire(1, timeout=0)  # takes the only slot of this second
    twilio = TwilioSender(
        twilio_settings(twilio_emulator), rate_limiter=limiter, rate_wait=0.1, clock=lambda: NOW
    )
    try:
        with pytest.raises(ProviderUnavailable) as raised:
            twilio.send(sms(segments=2))
    finally:
        twilio.close()

    assert raised.value.code == "rate_limited"
    assert raised.value.retry_after is not None and 0 < raised.value.retry_after <= 1
    assert twilio_emulator.requests == []


def test_rate_limiter_without_redis_fails_closed(twilio_emulator: TwilioEmulator) -> None:
    # no retries: redis-py's default backoff would only make the test slower
    unreachable = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    limiter = SegmentRateLimiter(unreachable, rate_per_second=5)
    twilio = TwilioSender(twilio_settings(twilio_emulator), rate_limiter=limiter)
    try:
        with pytest.raises(ProviderUnavailable) as raised:
            twilio.send(sms())
    finally:
        twilio.close()
        unreachable.close()

    assert raised.value.code == "rate_limiter_unavailable"
    assert twilio_emulator.requests == []


# -- error codes the status callback endpoint also needs ----------------------------------------


def test_callback_error_codes_classify_like_create_errors() -> None:
    assert recipient_effect("30005") == "invalid_recipient"
    assert recipient_effect(30006) == "invalid_recipient"
    assert recipient_effect("21635") == "invalid_recipient"
    assert recipient_effect("30007") is None and is_final("30007")
    assert recipient_effect("21610") == "opt_out"
    assert not is_final("30003") and not is_final(None) and not is_final("20429")
    assert recipient_effect("") is None


# -- signed callbacks ----------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], str | None]]

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"])).decode()
        form = {k: v[-1] for k, v in parse_qs(raw).items()}
        self.received.append((self.path, form, self.headers.get("X-Twilio-Signature")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def callback_server() -> Iterator[tuple[str, list[tuple[str, dict[str, str], str | None]]]]:
    received: list[tuple[str, dict[str, str], str | None]] = []
    handler = type("Recorder", (_Recorder,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_status_callbacks_are_signed_like_twilios(
    twilio_emulator: TwilioEmulator,
    callback_server: tuple[str, list[tuple[str, dict[str, str], str | None]]],
) -> None:
    public_url, received = callback_server
    twilio = TwilioSender(twilio_settings(twilio_emulator, public_url=public_url))
    try:
        receipt = twilio.send(sms())
    finally:
        twilio.close()

    answer = twilio_emulator.send_status(receipt.provider_id, "undelivered", error_code=30005)

    assert answer.status_code == 204
    ((path, form, signature),) = received
    assert path == STATUS_CALLBACK_PATH
    assert form["MessageSid"] == receipt.provider_id
    assert form["MessageStatus"] == "undelivered"
    assert form["ErrorCode"] == "30005"
    url = public_url + STATUS_CALLBACK_PATH
    assert twilio_signature_valid(twilio_emulator.auth_token, url, form, signature)
    assert not twilio_signature_valid("another-token", url, form, signature)
    assert not twilio_signature_valid(
        twilio_emulator.auth_token, url, {**form, "MessageStatus": "delivered"}, signature
    )
    assert not twilio_signature_valid(twilio_emulator.auth_token, url, form, None)


def test_inbound_messages_are_signed_and_forgeable_on_request(
    twilio_emulator: TwilioEmulator,
    callback_server: tuple[str, list[tuple[str, dict[str, str], str | None]]],
) -> None:
    public_url, received = callback_server
    url = public_url + "/v1/providers/twilio/inbound"

    twilio_emulator.send_inbound(url, BORROWER, "退订")
    twilio_emulator.send_inbound(url, BORROWER, "STOP", signature="forged")

    (_, genuine, genuine_signature), (_, forged, forged_signature) = received
    assert (genuine["From"], genuine["Body"]) == (BORROWER, "退订")
    assert genuine["MessageSid"].startswith("SM")
    assert twilio_signature_valid(twilio_emulator.auth_token, url, genuine, genuine_signature)
    assert not twilio_signature_valid(twilio_emulator.auth_token, url, forged, forged_signature)
