"""GET /v1/messages/export.csv opened in a spreadsheet: what came from outside stays text."""

from __future__ import annotations

import csv
import io

import pytest

from tests.factories import borrower_upserted, loan_updated, zone_at_local_hour
from tests.live import LiveService

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

# (borrower id, loan id): each starts with a character a spreadsheet reads as a formula
FORMULAS = [
    ('=HYPERLINK("https:evil.example","pay here")', "@SUM(1+1)"),
    ("-2+3", "\tl-tab"),
    ("+1-1", "\rl-cr"),
]


def test_cells_that_a_spreadsheet_would_read_as_formulas_are_text(live: LiveService) -> None:
    for borrower_id, loan_id in FORMULAS:
        live.post_event(
            borrower_upserted(borrower_id, timezone=zone_at_local_hour(14), phones=["+15005550006"])
        )
        live.post_event(loan_updated(loan_id, borrower_id, days_past_due=1))
    live.wait_for(lambda: len(live.messages(status="sent")) == len(FORMULAS))

    export = live.get("/v1/messages/export.csv")
    assert export.status_code == 200
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert rows
    exported = {(row["borrower_id"], row["loan_id"]) for row in rows}
    assert exported == {(f"'{borrower}", f"'{loan}") for borrower, loan in FORMULAS}
    sent = [row for row in rows if row["status"] == "sent"]
    assert {row["to"] for row in sent} == {"'+15005550006"}  # not the number 15005550006
    # what starts otherwise is as it was
    assert all(row["id"].startswith("msg_") for row in rows)
    assert all(row["send_at"][:2] == "20" for row in rows)
    assert {row["segments"] for row in sent} <= {"1", "2", "3"}
