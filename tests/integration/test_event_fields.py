"""Addresses and ids the service could not use safely are refused at the webhook (422 naming
the field; `invalid` naming it in a batch), not stored and failed later."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.factories import borrower_upserted, envelope, loan_updated
from tests.live import LiveService, sign

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


def with_email(address: str) -> dict[str, Any]:
    return borrower_upserted("b-mail", email=address)


@pytest.mark.parametrize(
    "address",
    [
        "ada@example.com\r\nBcc: everyone@example.net",
        "ada@example.com\nBcc:everyone@example.net",
        "ada@example.com\r",
        "ada@example.com\n",
        "ada\r@example.com",
    ],
)
def test_an_email_address_with_a_line_break_is_refused(live: LiveService, address: str) -> None:
    answer = live.post_event(with_email(address), settle=False)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "data.borrower.email"
    assert "line break" in answer.json()["detail"]


def loan_event(**fields: str) -> dict[str, Any]:
    event = loan_updated("l-1", "b-1", days_past_due=3)
    event["data"]["loan"].update(fields)
    return event


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (borrower_upserted("b/1"), "data.borrower.id"),
        (loan_event(id="l/1"), "data.loan.id"),
        (loan_event(borrower_id="../b-1"), "data.loan.borrower_id"),
        (
            envelope(
                "payment.received",
                {
                    "loan_id": "l-1",
                    "payment_id": "p/1",
                    "amount": "1.00",
                    "paid_at": "2026-01-01T00:00:00Z",
                    "amount_due_after": "0.00",
                },
            ),
            "data.payment_id",
        ),
        (
            envelope(
                "field_visit.scheduled",
                {
                    "loan_id": "l-1",
                    "visit_id": "v-1",
                    "visit_at": "2026-01-01T00:00:00Z",
                    "collector_name": "Wang Wei",
                    "collector_id": "team/7",
                },
            ),
            "data.collector_id",
        ),
        (
            envelope("contact.restricted", {"borrower_id": "b/1", "restriction": "dispute"}),
            "data.borrower_id",
        ),
    ],
)
def test_an_id_with_a_slash_is_refused(
    live: LiveService, event: dict[str, Any], field: str
) -> None:
    if event["type"] == "contact.restricted":
        event["data"]["active"] = True
    answer = live.post_event(event, settle=False)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    assert "'/'" in answer.json()["detail"]


def test_a_batch_names_the_field_of_each_refused_event(live: LiveService) -> None:
    events = [borrower_upserted("b/1"), with_email("x@example.com\r\nBcc: y@example.com")]
    events.append(borrower_upserted("b-fine", email="fine@example.com"))
    body = json.dumps({"events": events}).encode()
    answer = live.client.post(
        "/v1/events/batch",
        content=body,
        headers={"Content-Type": "application/json", "X-Outreach-Signature": sign(body)},
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["invalid", "invalid", "accepted"]
    assert [r["error"]["field"] for r in results[:2]] == ["data.borrower.id", "data.borrower.email"]
