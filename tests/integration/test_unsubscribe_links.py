"""Unsubscribe links (List-Unsubscribe, RFC 8058): keyed by OUTREACH_LINK_SECRET alone, naming
their message rather than the address, and still opening after the key is rotated."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
import redis
from sqlalchemy import Engine

from outreach.domain import Channel
from outreach.service.dispatch import unsubscribe_token
from tests.factories import borrower_upserted, loan_updated, zone_at_local_hour
from tests.integration.conftest import serve
from tests.live import LiveService

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

NEWEST_KEY = "link-key-of-this-month-0123"
OLDER_KEY = "link-key-of-last-month-4567"
# characters that never verified while the address was the token (quoted, then read back)
AWKWARD_ADDRESS = "o'brien+50%/collections@example.com"


@pytest.fixture
def rotated(postgres_engine: Engine, redis_client: redis.Redis) -> Iterator[LiveService]:
    """A live service part way through a rotation of its link key."""
    yield from serve(postgres_engine, env={"OUTREACH_LINK_SECRET": f"{NEWEST_KEY},{OLDER_KEY}"})


def emailed(live: LiveService, borrower_id: str, address: str) -> tuple[str, str]:
    """A borrower emailed about a late loan: (the message id, its unsubscribe link)."""
    live.post_event(
        borrower_upserted(borrower_id, timezone=zone_at_local_hour(14), phones=[], email=address)
    )
    live.post_event(loan_updated(f"l-{borrower_id}", borrower_id, days_past_due=2))
    sender = live.senders[Channel.EMAIL]
    outgoing = live.wait_for(lambda: [call for call in sender.calls if call.to == address])[0]
    link = outgoing.headers["List-Unsubscribe"].strip("<>")
    return outgoing.message_id, link


def opted_out(live: LiveService, borrower_id: str) -> bool:
    timeline = live.get(f"/v1/borrowers/{borrower_id}/timeline").json()["items"]
    return any(item["kind"] == "reply" and item["classification"] == "opt_out" for item in timeline)


def test_a_link_names_its_message_and_opts_out_the_address_it_went_to(
    live: LiveService,
) -> None:
    message_id, link = emailed(live, "b-awkward", AWKWARD_ADDRESS)
    token = link.rsplit("/", 1)[1]
    assert token.startswith(f"{message_id}.")
    for shown in (AWKWARD_ADDRESS, quote(AWKWARD_ADDRESS, safe=""), "brien", "example.com"):
        assert shown not in link

    assert httpx.get(link).status_code == 200  # the page for people
    assert httpx.post(link, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert opted_out(live, "b-awkward")
    withheld = live.messages(loan_id="l-b-awkward", status="suppressed")
    assert withheld and {m["reason"] for m in withheld} == {"opted_out"}


def test_links_signed_with_the_older_key_of_a_rotation_still_open(
    rotated: LiveService,
) -> None:
    message_id, link = emailed(rotated, "b-rotated", "rotated@example.com")
    base = link.rsplit("/", 1)[0]
    # the newest key signs what goes out now
    assert link == f"{base}/{unsubscribe_token(NEWEST_KEY.encode(), message_id)}"

    forged = f"{base}/{unsubscribe_token(b'a key this service never had', message_id)}"
    assert httpx.post(forged).status_code == 404
    assert not opted_out(rotated, "b-rotated")
    # a signed link of a message that does not exist opts no one out
    unknown = f"{base}/{unsubscribe_token(OLDER_KEY.encode(), 'msg_00000000000000000000000000')}"
    assert httpx.post(unknown).status_code == 404

    sent_last_month = f"{base}/{unsubscribe_token(OLDER_KEY.encode(), message_id)}"
    assert httpx.get(sent_last_month).status_code == 200
    assert httpx.post(sent_last_month).status_code == 200
    assert opted_out(rotated, "b-rotated")


@pytest.mark.parametrize(
    "token",
    [
        "preview",
        "msg_01.²²²²²²²²²²²²²²²²²²²²²²²²²²²²²²²²",
        "msg_01.0123456789abcdef0123456789abcdeｆ",
        "邮件." + "0" * 32,
        "msg_01." + "0" * 5000,
        "email:ada@example.org.0123456789abcdef0123456789abcdef",
        "%F0%9F%92%A5",
        "%ff%fe",
    ],
)
def test_a_malformed_token_is_not_found_never_an_error(live: LiveService, token: str) -> None:
    for method in ("GET", "POST"):
        answer = live.client.request(method, f"/v1/unsubscribe/{token}")
        assert answer.status_code == 404, (method, token, answer.text)
