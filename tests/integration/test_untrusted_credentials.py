"""Signatures, tokens and cookies as anyone on the network can send them: whatever their
length or characters, the answer is a refusal (401, 403, a redirect to log in), never a 500."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from tests.factories import borrower_upserted
from tests.live import ADMIN_TOKEN, LiveService, sign

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

NOW = str(int(time.time()))
HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "header",
    [
        f"t=²,v1={HEX}",  # a digit to str.isdigit, not to int()
        f"t=¹²³,v1={HEX}",  # a header is Latin-1: its superscript digits
        f"t={'9' * 5000},v1={HEX}",  # beyond int()'s digit limit
        f"t={NOW},v1=é{HEX[1:]}",
        f"t={NOW},v1={'é' * 64}",
        f"t={NOW},v1={HEX}{HEX}",
        f"t={NOW},v1=",
        # past the signature's 1 KiB, inside the edge's 32 KiB of headers (beyond: 431)
        f"t={NOW}," + ",".join(f"v1={HEX}" for _ in range(200)),
        "t=,v1=",
        "garbage",
    ],
)
def test_a_malformed_signature_is_401(live: LiveService, header: str) -> None:
    assert post_signed(live, header.encode("latin-1")).status_code == 401


def test_a_signature_header_of_bytes_beyond_latin_1_is_401(live: LiveService) -> None:
    assert post_signed(live, f"t={NOW},v1=签名{HEX[2:]}".encode()).status_code == 401


def post_signed(live: LiveService, signature: bytes) -> httpx.Response:
    """An event posted with this signature header, byte for byte."""
    return live.client.post(
        "/v1/events",
        content=json.dumps(borrower_upserted("b-sig")).encode(),
        headers={"Content-Type": "application/json", "X-Outreach-Signature": signature},
    )


def test_a_digest_in_uppercase_hex_is_the_same_digest(live: LiveService) -> None:
    event = borrower_upserted("b-upper")
    timestamp, digest = sign(json.dumps(event).encode()).split(",v1=")
    answer = live.post_event(event, signature=f"{timestamp},v1={digest.upper()}")
    assert answer.status_code == 202, answer.text


@pytest.mark.parametrize(
    "token",
    [
        "é" * 30,
        ADMIN_TOKEN + "é",
        "签名".encode().decode("latin-1"),
        "x" * 10_000,
        ADMIN_TOKEN[:-1],
    ],
)
def test_a_malformed_bearer_token_is_401(live: LiveService, token: str) -> None:
    answer = live.client.get(
        "/v1/messages", headers={"Authorization": f"Bearer {token}".encode("latin-1")}
    )
    assert answer.status_code == 401, answer.text


def hidden_fields(page: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))


def test_the_pages_refuse_odd_cookies_tokens_and_csrf_fields(live: LiveService) -> None:
    odd = ["é" * 40, "签名", "x" * 5000, "%ff%fe"]
    with httpx.Client(base_url=live.base_url, timeout=30) as client:
        for value in odd:
            cookie = f"outreach_session={value}".encode()
            answer = client.get("/ui/", headers={"Cookie": cookie})
            assert answer.status_code == 303, value

        for value in odd:
            form = hidden_fields(client.get("/ui/login").text)
            refused = client.post("/ui/login", data={**form, "token": value[:500]})
            assert refused.status_code == 401, value
            forged = client.post("/ui/login", data={**form, "csrf_token": value[:100]})
            assert forged.status_code == 403, value

        form = hidden_fields(client.get("/ui/login").text)
        assert client.post("/ui/login", data={**form, "token": ADMIN_TOKEN}).status_code == 303
        for value in odd:
            logout = client.post("/ui/logout", data={"csrf_token": value[:100]})
            assert logout.status_code == 403, value
