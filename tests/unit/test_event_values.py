"""Values the store cannot hold, or no loan system means, are refused at the edge with the
field they are in (SPEC §4: 422 naming the field), not accepted and then failed."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from outreach.service.parse import EventError, parse_event
from tests.factories import borrower_upserted, envelope, loan_updated, payment_received


def refused(event: dict[str, Any]) -> EventError:
    with pytest.raises(EventError) as raised:
        parse_event(json.dumps(event).encode())
    return raised.value


def with_loan(**fields: Any) -> dict[str, Any]:
    event = loan_updated("l1", "b1", days_past_due=3)
    event["data"]["loan"].update(fields)
    return event


@pytest.mark.parametrize(
    ("fields", "field", "problem"),
    [
        ({"amount_due": "1e30"}, "data.loan.amount_due", "out of range"),
        ({"balance": "-1000000000000.01"}, "data.loan.balance", "out of range"),
        ({"amount_due": "12.34567"}, "data.loan.amount_due", "more than 4 decimal places"),
        ({"days_past_due": 36501}, "data.loan.days_past_due", "less than or equal to 36500"),
        ({"days_past_due": -36501}, "data.loan.days_past_due", "greater than or equal to -36500"),
        ({"days_past_due": 10**30}, "data.loan.days_past_due", "integer"),
        ({"due_date": "9999-12-31"}, "data.loan.due_date", "out of range"),
        ({"due_date": "0001-01-01"}, "data.loan.due_date", "out of range"),
        ({"product": "personal\u0000loan"}, "data.loan.product", "NUL"),
    ],
)
def test_loan_values_the_store_cannot_hold(
    fields: dict[str, Any], field: str, problem: str
) -> None:
    error = refused(with_loan(**fields))
    assert error.field == field
    assert problem in error.problem


def test_sane_values_at_the_bounds_are_accepted() -> None:
    event = with_loan(amount_due="1000000000000", balance="0.0001", days_past_due=36500)
    assert parse_event(json.dumps(event).encode()).data.loan.days_past_due == 36500
    parse_event(json.dumps(with_loan(amount_due="1E+3", due_date="1900-01-01")).encode())


def test_a_nul_anywhere_in_the_document_is_refused_with_its_path() -> None:
    event = payment_received("l1", amount="10.00", amount_due_after="0")
    event["data"]["note"] = ["ok", "a\u0000b"]  # an extra field the model ignores, still stored
    assert refused(event).field == "data.note.1"
    event = payment_received("l1", amount="10.00", amount_due_after="0")
    event["data"]["bad\u0000key"] = 1
    assert refused(event).field == "data.bad\u0000key"


def test_absurd_instants_are_refused() -> None:
    event = payment_received("l1", amount="10.00", amount_due_after="0")
    event["data"]["paid_at"] = "9999-12-31T23:59:59Z"
    assert refused(event).field == "data.paid_at"
    event = copy.deepcopy(event)
    event["data"]["paid_at"] = "2026-11-23T09:00:00Z"
    event["occurred_at"] = "0001-01-01T00:00:00Z"
    assert refused(event).field == "occurred_at"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("Hi 王芳😀Please pay at http://scam.example now", "link"),
        ("Visit www.pay-now.example", "link"),
        ("pay.scam.com", "link"),
        ("write to me@scam.example", "link"),
        ("Alex\nReply YES to pay", "U+000A"),
        ("Alex\u2028Chen", "U+2028"),
        ("Alex \u202eneehC", "U+202E"),
        ("Alex\u200bChen", "U+200B"),
        ("   ", "blank"),
        ("A" * 101, "longer than 100"),
    ],
)
def test_borrower_names_that_would_change_the_message_are_refused(name: str, problem: str) -> None:
    error = refused(borrower_upserted("b1", name=name))
    assert error.field == "data.borrower.name"
    assert problem in error.problem


@pytest.mark.parametrize(
    "name",
    ["王芳", "Alex Chen", "J. R. R. Tolkien", "O'Brien-Smith", "Zoë 👩\u200d👩\u200d👧", "A" * 100],
)
def test_ordinary_names_are_accepted(name: str) -> None:
    assert parse_event(json.dumps(borrower_upserted("b1", name=name))).data.borrower.name == name


def test_collector_names_are_held_to_the_same_rules() -> None:
    visit = {
        "loan_id": "l1",
        "visit_id": "v1",
        "visit_at": "2026-11-25T02:00:00Z",
        "collector_name": "Officer Lee, call http://scam.example",
        "collector_id": "c1",
    }
    error = refused(envelope("field_visit.scheduled", visit))
    assert error.field == "data.collector_name" and "link" in error.problem
    visit["collector_name"] = "李警官"
    assert parse_event(json.dumps(envelope("field_visit.scheduled", visit))).data.collector_name


def test_text_longer_than_its_column_is_refused() -> None:
    event = borrower_upserted("b1", address={"country": "US", "city": "x" * 101})
    assert refused(event).field == "data.borrower.address.city"
    event = borrower_upserted("b1", address={"country": "US", "postal_code": "9" * 21})
    assert refused(event).field == "data.borrower.address.postal_code"
