from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from outreach.store.db import make_engine
from outreach.store.keysets import KeyList, keys_in
from outreach.store.migrate import downgrade, is_current, upgrade
from outreach.store.models import Base, Loan, Message, MessageEvent, ReceivedEvent

NOW = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC)


def a_message(key: str, **overrides: object) -> Message:
    fields: dict[str, object] = {
        "id": "m_" + key,
        "idempotency_key": key,
        "purpose": "dunning",
        "borrower_id": "b1",
        "loan_id": "l1",
        "stage": "early",
        "channel": "sms",
        "template": "early_first_notice",
        "locale": "en-US",
        "send_at": NOW,
        "status": "scheduled",
        "refs": {},
        "created_at": NOW,
        "updated_at": NOW,
    }
    fields.update(overrides)
    return Message(**fields)


def a_loan(loan_id: str, **overrides: object) -> Loan:
    fields: dict[str, object] = {
        "id": loan_id,
        "borrower_id": "b1",
        "product": "personal",
        "currency": "USD",
        "amount_due": Decimal("10.00"),
        "balance": Decimal("100.00"),
        "days_past_due": 0,
        "due_date": dt.date(2026, 11, 1),
        "account_number": "1234567890",
        "state_as_of": NOW,
        "created_at": NOW,
        "updated_at": NOW,
    }
    fields.update(overrides)
    return Loan(**fields)


def test_migrations_round_trip(engine: Engine) -> None:
    assert is_current(engine)
    downgrade(engine, "base")
    assert not inspect(engine).has_table("messages")
    assert not is_current(engine)
    upgrade(engine)
    assert is_current(engine)
    assert {"borrowers", "loans", "messages", "message_events", "received_events"} <= set(
        inspect(engine).get_table_names()
    )


def test_amounts_and_instants_come_back_exact_and_aware(engine: Engine) -> None:
    local = dt.datetime(2026, 3, 8, 1, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    with Session(engine) as session:
        session.add(
            a_loan(
                "l1",
                amount_due=Decimal("1234.56"),
                balance=Decimal("98765.4321"),
                days_past_due=-3,
                due_date=dt.date(2026, 3, 11),
                state_as_of=local,
            )
        )
        session.commit()
    with Session(engine) as session:
        loan = session.get_one(Loan, "l1")
        assert loan.amount_due == Decimal("1234.56")
        assert str(loan.amount_due) == "1234.56"
        assert loan.balance == Decimal("98765.4321")
        assert loan.state_as_of == local
        assert loan.state_as_of.tzinfo is not None
        assert loan.due_date == dt.date(2026, 3, 11)
        # amounts compare numerically in SQL on both databases
        found = session.scalars(select(Loan.id).where(Loan.amount_due > Decimal("999.99")))
        assert list(found) == ["l1"]
        none = session.scalars(select(Loan.id).where(Loan.amount_due > Decimal("2000")))
        assert list(none) == []


def test_a_message_key_is_unique(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(a_message("dunning:l1:early:1"))
        session.commit()
        session.add(a_message("dunning:l1:early:1", id="m_other"))
        with pytest.raises(IntegrityError):
            session.commit()


def test_an_event_id_is_stored_once(engine: Engine) -> None:
    event = {"id": "evt-1", "type": "loan.updated", "occurred_at": NOW.isoformat(), "data": {}}
    with Session(engine) as session:
        session.add(
            ReceivedEvent(
                id="evt-1",
                type="loan.updated",
                occurred_at=NOW,
                received_at=NOW,
                body=event,
                outcome="applied",
            )
        )
        session.commit()
        session.add(
            ReceivedEvent(
                id="evt-1",
                type="loan.updated",
                occurred_at=NOW,
                received_at=NOW,
                body=event,
                outcome="applied",
            )
        )
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
        stored = session.get_one(ReceivedEvent, "evt-1")
        assert stored.body["type"] == "loan.updated"


def test_a_message_keeps_its_timeline_in_order(engine: Engine) -> None:
    with Session(engine) as session:
        message = a_message("k1")
        message.events = [
            MessageEvent(at=NOW, status="scheduled", reason="planned", detail=None),
            MessageEvent(
                at=NOW + dt.timedelta(minutes=1),
                status="deferred",
                reason="quiet_hours",
                detail="until=2026-11-24T00:00:00+00:00",
            ),
        ]
        session.add(message)
        session.commit()
    with Session(engine) as session:
        stored = session.get_one(Message, "m_k1")
        assert [(e.status, e.reason) for e in stored.events] == [
            ("scheduled", "planned"),
            ("deferred", "quiet_hours"),
        ]


def test_migrations_build_the_schema_the_models_declare(engine: Engine) -> None:
    # an index a model declares (or one it dropped) and the migrations left out shows here
    with engine.connect() as connection:
        differences = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": False}), Base.metadata
        )
    assert differences == []


def test_a_key_list_finds_the_rows_an_in_list_finds(engine: Engine) -> None:
    """`keys_in` binds a list of ids as one parameter (json_each on SQLite, an IN list on
    PostgreSQL); it must select exactly what a literal IN list selects, whatever the number
    of keys, with quotes, non-ASCII and repeated keys."""
    ids = ["L1", "L2", 'L"3', "L'4", "贷款5", "L6"]
    with Session(engine) as session:
        for index, loan_id in enumerate(ids):
            session.add(a_loan(loan_id, days_past_due=index))
        session.commit()
    query = select(Loan.id, Loan.days_past_due).where(keys_in(Loan.id, "ids")).order_by(Loan.id)
    with engine.connect() as connection:
        for wanted in ([], ["L1"], ["L2", "missing", 'L"3', "L'4"], ["贷款5", "L6", "L6"], ids):
            found = connection.execute(query, {"ids": wanted}).all()
            literal = select(Loan.id, Loan.days_past_due).where(Loan.id.in_(wanted))
            assert found == connection.execute(literal.order_by(Loan.id)).all()
            assert {row.id for row in found} == set(wanted) - {"missing"}


def test_a_key_list_refuses_keys_that_are_not_text() -> None:
    with pytest.raises(TypeError, match="text keys only"):
        KeyList().process_bind_param([1, 2], None)


def test_the_embedded_sqlite_syncs_every_commit_to_disk(tmp_path: Path) -> None:
    # the served store (`outreach run`): an event answered 202 is on disk, power cut or not
    engine = make_engine(f"sqlite:///{tmp_path / 'outreach.db'}")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    finally:
        engine.dispose()
