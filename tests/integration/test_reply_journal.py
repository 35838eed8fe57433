"""Borrower replies and delivery statuses while PostgreSQL is unreachable for the app: kept in
the Redis journal and answered 200, applied in order once the database is back, and no SMS
goes to a number whose reply is not applied yet (issue 16 §5)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from outreach.service.apply import ingest_many
from outreach.service.dispatch import release_due
from outreach.service.journal import SMS_REPLY, JournalEntry
from outreach.service.parse import parse_event
from outreach.store.db import transaction
from tests.conftest import REDIS_URL, truncate_all
from tests.factories import borrower_upserted, loan_updated, zone_at_local_hour
from tests.live import LiveService, start_live_service
from tests.tcp_proxy import TcpProxy
from tests.twilio_emulator import TwilioEmulator
from tests.twilio_fixtures import twilio_env

INBOUND = "/v1/providers/twilio/inbound"
STATUS = "/v1/providers/twilio/status"


@pytest.fixture
def database_proxy(postgres_engine: Engine) -> Iterator[TcpProxy]:
    url = postgres_engine.url
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        yield proxy


@pytest.fixture
def redis_proxy() -> Iterator[TcpProxy]:
    url = urlsplit(REDIS_URL)
    with TcpProxy(url.hostname or "127.0.0.1", url.port or 6379) as proxy:
        yield proxy


@pytest.fixture
def live(
    postgres_engine: Engine,
    redis_client: redis.Redis,
    emulator: TwilioEmulator,
    database_proxy: TcpProxy,
    redis_proxy: TcpProxy,
) -> Iterator[LiveService]:
    """The live service, sending through the Twilio emulator, reaching the test's PostgreSQL
    database and Redis through proxies the test can cut."""
    truncate_all(postgres_engine)
    database_url = make_url(postgres_engine.url).set(host="127.0.0.1", port=database_proxy.port)
    redis_url = REDIS_URL.replace(f":{urlsplit(REDIS_URL).port}/", f":{redis_proxy.port}/")
    yield from start_live_service(
        database_url.render_as_string(hide_password=False),
        redis_url,
        env={**twilio_env(emulator), "OUTREACH_SMS_RATE": "50"},
        real_senders=True,
    )
    truncate_all(postgres_engine)


def post_signed(
    live: LiveService, emulator: TwilioEmulator, path: str, params: dict[str, str]
) -> httpx.Response:
    url = f"{live.base_url}{path}"
    headers = {"X-Twilio-Signature": emulator.sign(url, params)}
    return httpx.post(url, data=params, headers=headers, timeout=30)


def inbound(live: LiveService, emulator: TwilioEmulator, phone: str, body: str, sid: str) -> Any:
    params = {"MessageSid": sid, "SmsSid": sid, "From": phone, "To": "+15005550006", "Body": body}
    return post_signed(live, emulator, INBOUND, params)


def borrower_with_a_loan(live: LiveService, name: str, phone: str, local_hour: int) -> None:
    event = borrower_upserted(f"b-{name}", phones=[phone], timezone=zone_at_local_hour(local_hour))
    assert live.post_event(event).status_code == 202
    assert (
        live.post_event(loan_updated(f"l-{name}", f"b-{name}", days_past_due=3)).status_code == 202
    )


def replies(live: LiveService, borrower_id: str) -> list[tuple[str, str]]:
    items = live.get(f"/v1/borrowers/{borrower_id}/timeline").json()["items"]
    return [(item["body"], item["classification"]) for item in items if item["kind"] == "reply"]


def sent_confirmations(live: LiveService, borrower_id: str) -> Callable[[], list[Any]]:
    def found() -> list[Any]:
        return live.messages(
            borrower_id=borrower_id, purpose="optout_confirmation", status="sent,delivered"
        )

    return found


def test_replies_and_statuses_kept_while_the_database_is_down_are_applied_when_it_is_back(
    live: LiveService,
    emulator: TwilioEmulator,
    database_proxy: TcpProxy,
    redis_proxy: TcpProxy,
) -> None:
    opt_outs = {"cn": "退订", "td": "TD", "free": "please stop texting me"}
    phones = {"cn": "+15005550161", "td": "+15005550162", "free": "+15005550163"}
    phones |= {"order": "+15005550164", "day": "+15005550165"}
    for name in (*opt_outs, "order"):
        # 3 a.m. for them: their dunning SMS waits for the morning
        borrower_with_a_loan(live, name, phones[name], local_hour=3)
        assert {m["status"] for m in live.messages(loan_id=f"l-{name}", channel="sms")} >= {
            "deferred"
        }
    borrower_with_a_loan(live, "day", phones["day"], local_hour=14)
    sent = live.wait_for(lambda: live.messages(loan_id="l-day", status="sent"), timeout=30)[0]

    database_proxy.cut()
    ready = live.client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("unreachable")

    for index, (name, body) in enumerate(opt_outs.items()):
        answer = inbound(live, emulator, phones[name], body, f"SM{index:032d}")
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/xml")
        assert answer.text == "<Response/>"
    # the same webhook twice (a retry by anything on the way) is still one reply
    assert inbound(live, emulator, phones["cn"], "退订", f"SM{0:032d}").status_code == 200
    assert inbound(live, emulator, phones["order"], "STOP", "SM-order-1").status_code == 200
    assert inbound(live, emulator, phones["order"], "START", "SM-order-2").status_code == 200
    delivered = {"MessageSid": sent["provider_id"], "MessageStatus": "delivered"}
    answer = post_signed(live, emulator, STATUS, delivered)
    assert answer.status_code == 200 and answer.json() == {"status": "journaled"}
    assert live.client.get("/ready").json()["detail"]["replies_journaled"] == 7

    database_proxy.restore()
    live.wait_for(lambda: live.client.get("/ready").status_code == 200, timeout=30)
    live.wait_for(
        lambda: live.client.get("/ready").json()["detail"]["replies_journaled"] == 0, timeout=30
    )
    for name, body in opt_outs.items():
        assert replies(live, f"b-{name}") == [(body, "opt_out")]
        dunning = live.messages(loan_id=f"l-{name}", channel="sms")
        assert dunning and {(m["status"], m["reason"]) for m in dunning} == {
            ("suppressed", "opted_out")
        }
        # the borrower is told, once, that the opt-out took effect
        confirmations = live.wait_for(sent_confirmations(live, f"b-{name}"), timeout=30)
        assert len(confirmations) == 1
    # applied in the order they came: STOP, then START, leaves the number opted in
    assert replies(live, "b-order") == [("STOP", "opt_out"), ("START", "opt_in")]
    live.wait_for(
        lambda: live.messages(borrower_id="b-order", purpose="optin_confirmation"), timeout=30
    )
    assert live.get(f"/v1/messages/{sent['id']}").json()["status"] == "delivered"

    # with Redis down the database alone takes a reply, as before there was a journal; with
    # both down nothing can keep it, and the answer says so
    redis_proxy.cut()
    assert inbound(live, emulator, phones["day"], "HELP", "SM-day-1").status_code == 200
    assert replies(live, "b-day") == [("HELP", "help")]
    database_proxy.cut()
    assert inbound(live, emulator, phones["day"], "退订", "SM-day-2").status_code == 503
    database_proxy.restore()
    redis_proxy.restore()
    live.wait_for(lambda: live.client.get("/ready").status_code == 200, timeout=30)
    assert replies(live, "b-day") == [("HELP", "help")]


# -- dispatch while a reply waits in the journal ------------------------------------------------


def test_no_sms_goes_to_a_number_whose_reply_is_not_applied(
    postgres_engine: Engine, redis_client: redis.Redis
) -> None:
    """The clock is paused here, so the journal is drained only when the test says."""
    truncate_all(postgres_engine)
    url = postgres_engine.url.render_as_string(hide_password=False)
    phones = {"held": "+15005550181", "stuck": "+15005550182", "other": "+15005550183"}
    service = start_live_service(url, REDIS_URL, run_worker=False)
    live = next(service)
    try:
        live.clock.scheduler.pause()
        live.clock.lock.release()  # no longer the leader: no job of it drains the journal
        services = live.services
        sessions = services.runtime.sessions
        events = []
        for name, phone in phones.items():
            zone = zone_at_local_hour(14)
            events.append(borrower_upserted(f"b-{name}", phones=[phone], timezone=zone))
            events.append(loan_updated(f"l-{name}", f"b-{name}", days_past_due=1))
        now = services.dispatcher.now()
        with transaction(sessions) as session:
            ingest_many(session, services.policy, [parse_event(json.dumps(e)) for e in events], now)
        # replies the web process kept while the database was unreachable for it: one that
        # PostgreSQL can never store (a NUL in its text), then a 退订
        journal = services.replies.journal
        for phone, body in ((phones["stuck"], "STOP\x00"), (phones["held"], "退订")):
            journal.append(JournalEntry(SMS_REPLY, {"From": phone, "Body": body}, now))

        def dispatch_due() -> dict[str, str]:
            due = release_due(sessions, services.dispatcher.now())
            return services.dispatcher.dispatch_many(due) if due else {}

        outcomes = dispatch_due()
        sms = live.senders["sms"]
        assert [call.to for call in sms.calls] == [phones["other"]]
        assert sorted(outcomes.values()) == ["deferred:check_unavailable"] * 2 + ["sent"]

        # the one that cannot be applied is set aside and does not stop the other
        assert services.replies.drain() == 2
        detail = live.client.get("/ready").json()["detail"]
        assert (detail["replies_journaled"], detail["replies_set_aside"]) == (0, 1)
        held = live.messages(loan_id="l-held", channel="sms")
        assert held and {(m["status"], m["reason"]) for m in held} == {("suppressed", "opted_out")}
        assert replies(live, "b-held") == [("退订", "opt_out")]
        # and its number stays held: its message comes due again and still waits
        stuck = live.messages(loan_id="l-stuck", status="deferred")[0]["id"]
        seen: dict[str, str] = {}

        def stuck_dispatched() -> bool:
            seen.update(dispatch_due())
            return stuck in seen

        live.wait_for(stuck_dispatched, timeout=15, interval=0.5)
        assert seen[stuck] == "deferred:check_unavailable"
        assert phones["stuck"] not in {call.to for call in sms.calls}
    finally:
        service.close()
        truncate_all(postgres_engine)
