"""State applied by a batch of events, read back, on SQLite and on PostgreSQL: borrowers and
loans are held as plain records in a batch and written back by what changed, their phone
numbers replaced when they change."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select

from outreach import policy as pol
from outreach.service.apply import ingest_many
from outreach.service.parse import parse_event
from outreach.store import models as m
from outreach.store.borrowers import load_borrowers, load_loans
from outreach.store.db import make_session_factory, transaction
from tests.conftest import REPO_ROOT
from tests.factories import borrower_upserted, loan_updated

T0 = dt.datetime(2026, 11, 23, 2, tzinfo=dt.UTC)  # 10:00 in Shanghai
POLICY = pol.load_policy(REPO_ROOT / "schedules" / "default.yaml")


def apply(engine: Engine, documents: list[dict[str, Any]], now: dt.datetime) -> list[str]:
    events = [parse_event(json.dumps(document)) for document in documents]
    with transaction(make_session_factory(engine)) as session:
        results = ingest_many(session, POLICY, events, now)
    return [result.outcome or result.status for result in results]


def phones_table(engine: Engine) -> dict[str, list[tuple[int, str]]]:
    table = m.BorrowerPhone.__table__
    found: dict[str, list[tuple[int, str]]] = {}
    with engine.connect() as connection:
        query = select(table).order_by(table.c.borrower_id, table.c.position)
        for row in connection.execute(query):
            found.setdefault(row.borrower_id, []).append((row.position, row.phone))
    return found


def test_a_batch_of_borrowers_and_their_numbers_is_written_and_rewritten(engine: Engine) -> None:
    first = [
        borrower_upserted("b1", phones=["+8613800138001", "+8613800138002"], occurred_at=T0),
        borrower_upserted("b2", phones=["+8613800138003"], tags=["hardship"], occurred_at=T0),
        borrower_upserted("b3", phones=[], email="b3@mail.example", occurred_at=T0),
    ]
    assert apply(engine, first, T0) == ["applied"] * 3
    assert phones_table(engine) == {
        "b1": [(0, "+8613800138001"), (1, "+8613800138002")],
        "b2": [(0, "+8613800138003")],
    }

    later = T0 + dt.timedelta(hours=1)
    second = [
        # the numbers in another order, one gone, one new; the name changed
        borrower_upserted(
            "b1", phones=["+8613800138002", "+8613800138009"], name="王芳", occurred_at=later
        ),
        # every number gone
        borrower_upserted("b2", phones=[], tags=["hardship"], occurred_at=later),
        # a number added to one who had none
        borrower_upserted(
            "b3", phones=["+8613800138004"], email="b3@mail.example", occurred_at=later
        ),
        # older than what b3 has: recorded, not applied
        borrower_upserted("b3", phones=[], occurred_at=T0 - dt.timedelta(days=1)),
    ]
    assert apply(engine, second, later) == ["applied", "applied", "applied", "ignored_stale"]
    assert phones_table(engine) == {
        "b1": [(0, "+8613800138002"), (1, "+8613800138009")],
        "b3": [(0, "+8613800138004")],
    }
    with make_session_factory(engine)() as session:
        states = load_borrowers(session, ["b1", "b2", "b3"])
    assert states["b1"].name == "王芳"
    assert states["b1"].phones == ("+8613800138002", "+8613800138009")
    assert states["b2"].phones == () and states["b2"].tags == frozenset({"hardship"})
    assert states["b3"].phones == ("+8613800138004",) and states["b3"].email == "b3@mail.example"


def test_a_batch_of_loan_reports_changes_only_what_they_change(engine: Engine) -> None:
    assert apply(engine, [borrower_upserted("b1", occurred_at=T0)], T0) == ["applied"]
    reports = [loan_updated(f"l{i}", "b1", days_past_due=i, occurred_at=T0) for i in range(1, 4)]
    assert apply(engine, reports, T0) == ["applied"] * 3
    tomorrow = T0 + dt.timedelta(days=1)
    nightly = [
        loan_updated(f"l{i}", "b1", days_past_due=i + 1, occurred_at=tomorrow) for i in range(1, 4)
    ]
    nightly[0]["data"]["loan"]["amount_due"] = "10.05"
    stale = loan_updated("l2", "b1", days_past_due=40, occurred_at=T0 - dt.timedelta(days=3))
    assert apply(engine, [*nightly, stale], tomorrow) == ["applied"] * 3 + ["ignored_stale"]
    with make_session_factory(engine)() as session:
        loans = load_loans(session, ["l1", "l2", "l3"])
    assert [loans[f"l{i}"].days_past_due for i in range(1, 4)] == [2, 3, 4]
    assert loans["l1"].amount_due == Decimal("10.05")
    assert {loan.as_of for loan in loans.values()} == {tomorrow}
