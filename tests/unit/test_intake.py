"""The web process's group commit, without a database: which failures are retried, and how
one event's failure stays its own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, cast

import pytest
from sqlalchemy.exc import OperationalError

from outreach.errors import StoreUnavailable
from outreach.service import intake as intake_module
from outreach.service.ingest import IngestResult
from outreach.service.intake import Intake, is_conflict


class DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def unavailable(sqlstate: str) -> StoreUnavailable:
    try:
        try:
            raise OperationalError("statement", {}, DriverError(sqlstate))
        except OperationalError as error:
            raise StoreUnavailable("database unavailable") from error
    except StoreUnavailable as wrapped:
        return wrapped


def test_a_deadlock_or_serialization_failure_is_a_conflict_an_unreachable_store_is_not() -> None:
    assert is_conflict(unavailable("40P01"))  # deadlock detected
    assert is_conflict(unavailable("40001"))  # serialization failure
    assert not is_conflict(unavailable("08006"))  # connection failure
    assert not is_conflict(StoreUnavailable("no cause"))


class Event:
    def __init__(self, id: str) -> None:
        self.id = id


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every transaction the intake runs, as the ids of its events; FAILURES: an event id ->
    what applying the transactions holding it raise, in turn (then it applies)."""
    calls: list[list[str]] = []

    @contextlib.contextmanager
    def transaction(_: Any) -> Iterator[None]:
        yield None

    def ingest_many(_: Any, __: Any, events: Sequence[Event], ___: Any) -> list[IngestResult]:
        calls.append([event.id for event in events])
        for event in events:
            failures = FAILURES.get(event.id)
            if failures:
                raise failures.pop(0)
        return [IngestResult("accepted", event.id, "applied") for event in events]

    monkeypatch.setattr(intake_module, "transaction", transaction)
    monkeypatch.setattr(intake_module, "ingest_many", ingest_many)
    FAILURES.clear()
    return calls


FAILURES: dict[str, list[BaseException]] = {}


def store(events: list[str]) -> list[Any]:
    intake = Intake(cast(Any, None), cast(Any, None), cast(Any, lambda: None))
    return intake.store([cast(Any, Event(e)) for e in events])


def test_one_event_that_fails_fails_alone(applied: list[list[str]]) -> None:
    FAILURES["b"] = [ValueError("b cannot be applied")] * 2
    outcomes = store(["a", "b", "c"])
    assert [getattr(o, "status", None) for o in outcomes] == ["accepted", None, "accepted"]
    assert isinstance(outcomes[1], ValueError)
    assert applied == [["a", "b", "c"], ["a"], ["b"], ["c"]]


def test_an_unreachable_store_fails_every_event_of_the_batch_once(
    applied: list[list[str]],
) -> None:
    FAILURES["a"] = [unavailable("08006")]
    outcomes = store(["a", "b"])
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)
    assert applied == [["a", "b"]]


def test_a_deadlock_is_tried_again(applied: list[list[str]]) -> None:
    FAILURES["a"] = [unavailable("40P01")]
    outcomes = store(["a", "b"])
    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    assert applied == [["a", "b"], ["a", "b"]]
