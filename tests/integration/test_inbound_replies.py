"""Borrower replies through the running app, on SQLite and PostgreSQL: every reply from one
of a borrower's numbers is on that borrower's timeline, including one that arrived before
the number was theirs, and none follows a number to its next owner (issue 16 §4)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from outreach import policy as pol
from outreach.service.apply import ingest_many
from outreach.service.inbound import handle_sms_reply
from outreach.service.parse import parse_event
from outreach.store import models as m
from outreach.store.db import make_engine, make_session_factory, transaction
from outreach.store.migrate import upgrade
from tests.conftest import REDIS_URL, REPO_ROOT, truncate_all
from tests.factories import borrower_upserted, loan_updated, zone_at_local_hour
from tests.live import LiveService, start_live_service
from tests.twilio_emulator import TwilioEmulator
from tests.twilio_fixtures import twilio_env

INBOUND = "/v1/providers/twilio/inbound"


@pytest.fixture(params=["sqlite", "postgresql"])
def live(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    redis_client: redis.Redis,
    emulator: TwilioEmulator,
) -> Iterator[LiveService]:
    """The live service, signed Twilio callbacks accepted, once on each database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'outreach.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield from start_live_service(url, REDIS_URL, env=twilio_env(emulator))
        return
    postgres: Engine = request.getfixturevalue("postgres_engine")
    truncate_all(postgres)
    url = postgres.url.render_as_string(hide_password=False)
    yield from start_live_service(url, REDIS_URL, env=twilio_env(emulator))
    truncate_all(postgres)


def reply(live: LiveService, emulator: TwilioEmulator, phone: str, body: str) -> None:
    response = emulator.send_inbound(f"{live.base_url}{INBOUND}", phone, body)
    assert response.status_code == 200, response.text


def replies_on_timeline(live: LiveService, borrower_id: str) -> list[tuple[str, str]]:
    response = live.get(f"/v1/borrowers/{borrower_id}/timeline")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return [(item["from"], item["body"]) for item in items if item["kind"] == "reply"]


def upsert(live: LiveService, borrower_id: str, phones: list[str]) -> None:
    event = borrower_upserted(borrower_id, phones=phones, timezone=zone_at_local_hour(14))
    response = live.post_event(event)
    assert response.status_code == 202, response.text


def test_a_stop_that_came_before_its_number_was_known_is_on_the_borrowers_timeline(
    live: LiveService, emulator: TwilioEmulator
) -> None:
    phone = "+15005550141"
    # the reply is handled before the borrower.upserted naming its number is applied
    reply(live, emulator, phone, "STOP")
    upsert(live, "b-early", [phone])
    live.post_event(loan_updated("l-early", "b-early", days_past_due=3))

    assert replies_on_timeline(live, "b-early") == [(phone, "STOP")]
    # and the opt-out held from the start: nothing goes to the number
    withheld = live.messages(loan_id="l-early", channel="sms")
    assert withheld and {m["status"] for m in withheld} == {"suppressed"}
    assert {m["reason"] for m in withheld} == {"opted_out"}


def test_a_number_passed_on_keeps_its_replies_with_the_borrower_who_had_it(
    live: LiveService, emulator: TwilioEmulator
) -> None:
    shared, own = "+15005550142", "+15005550143"
    reply(live, emulator, shared, "who is this?")  # nobody has the number yet
    upsert(live, "b-first", [shared])
    reply(live, emulator, shared, "I lost my job")
    # the number goes to someone else, who writes from it and from a number of their own
    upsert(live, "b-first", [])
    upsert(live, "b-next", [own, shared])
    reply(live, emulator, shared, "new owner here")
    reply(live, emulator, own, "HELP")

    assert replies_on_timeline(live, "b-first") == [
        (shared, "who is this?"),
        (shared, "I lost my job"),
    ]
    assert replies_on_timeline(live, "b-next") == [(shared, "new owner here"), (own, "HELP")]


# -- a reply and the borrower.upserted that gives its number to a borrower, at the same moment --

POLICY = pol.load_policy(REPO_ROOT / "schedules" / "default.yaml")
RACED = "+15005550149"


def _upsert_in(session: Session) -> None:
    event = parse_event(json.dumps(borrower_upserted("b-race", phones=[RACED])))
    ingest_many(session, POLICY, [event], dt.datetime.now(dt.UTC))


def _reply_in(session: Session) -> None:
    now = dt.datetime.now(dt.UTC)
    handle_sms_reply(session, POLICY, sender=RACED, body="STOP", provider_id="SM-race", now=now)


def _second_waits_or_ends(engine: Engine, second: threading.Thread) -> None:
    """Until the second transaction has finished or waits for a lock the first holds."""
    waiting = text("SELECT count(*) FROM pg_locks WHERE NOT granted")
    deadline = time.monotonic() + 10
    while second.is_alive() and time.monotonic() < deadline:
        with engine.connect() as connection:
            if connection.execute(waiting).scalar():
                return
        time.sleep(0.02)


@pytest.mark.parametrize("first", ["upsert", "reply"])
def test_a_reply_racing_the_upsert_of_its_number_is_linked_either_way(
    postgres_engine: Engine, first: str
) -> None:
    truncate_all(postgres_engine)
    sessions = make_session_factory(postgres_engine)
    first_work, second_work = (
        (_upsert_in, _reply_in) if first == "upsert" else (_reply_in, _upsert_in)
    )
    errors: list[BaseException] = []

    def second_transaction() -> None:
        try:
            with transaction(sessions) as session:
                second_work(session)
        except BaseException as error:  # reported by the test below
            errors.append(error)

    with transaction(sessions) as session:
        first_work(session)
        # the second starts while the first is not committed
        second = threading.Thread(target=second_transaction)
        second.start()
        _second_waits_or_ends(postgres_engine, second)
    second.join(timeout=10)
    assert not errors and not second.is_alive()

    with sessions() as session:
        linked = session.scalars(select(m.InboundReply.borrower_id)).all()
    assert linked == ["b-race"]
    truncate_all(postgres_engine)
