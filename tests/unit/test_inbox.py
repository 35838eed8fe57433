"""The web process's intake, without a database: which failures are retried, how one event's
failure stays its own, and that accepted events are applied in the order they arrived."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any, cast

import pytest
from sqlalchemy.exc import OperationalError

from outreach.errors import StoreUnavailable
from outreach.service import inbox as inbox_module
from outreach.service.inbox import Intake, is_conflict


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
    """An event as the intake sees it: an id, a type, what it is about."""

    def __init__(self, id: str, type: str = "loan.updated") -> None:
        self.id = id
        self.type = type
        self.loan_id = f"l-{id}"
        self.borrower_id = f"b-{id}"


# an event id -> what the transactions holding it raise, in turn (then they succeed)
FAILURES: dict[str, list[BaseException]] = {}


def fail_for(events: Sequence[Event]) -> None:
    for event in events:
        failures = FAILURES.get(event.id)
        if failures:
            raise failures.pop(0)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[list[str]]]:
    """Every store and apply transaction the intake runs, as the ids of its events, and the
    events it marks failed."""
    seen: dict[str, list[list[str]]] = {"stored": [], "applied": [], "failed": []}

    @contextlib.contextmanager
    def transaction(_: Any) -> Iterator[None]:
        yield None

    def store_in_inbox(_: Any, events: Sequence[Event], __: Any, *, outcome: str) -> set[str]:
        assert outcome == "pending"
        seen["stored"].append([event.id for event in events])
        fail_for(events)
        return {event.id for event in events}

    def apply_stored(_: Any, __: Any, events: Sequence[Event], ___: Any, **____: Any) -> None:
        seen["applied"].append([event.id for event in events])
        fail_for(events)

    def pending_of(_: Any, ids: Sequence[str]) -> set[str]:
        return set(ids)

    def mark_failed(_: Any, event_id: str, error: BaseException, *__: Any) -> None:
        seen["failed"].append([event_id, type(error).__name__])

    monkeypatch.setattr(inbox_module, "transaction", transaction)
    monkeypatch.setattr(inbox_module, "store_in_inbox", store_in_inbox)
    monkeypatch.setattr(inbox_module, "apply_stored", apply_stored)
    monkeypatch.setattr(inbox_module, "pending_of", pending_of)
    monkeypatch.setattr(inbox_module, "mark_failed", mark_failed)
    FAILURES.clear()
    return seen


def intake() -> Intake:
    return Intake(cast(Any, None), cast(Any, None), cast(Any, lambda: None))


def store(events: list[str]) -> list[Any]:
    return intake().store([cast(Any, Event(e)) for e in events])


def apply(events: list[str]) -> None:
    intake().apply([cast(Any, Event(e)) for e in events])


def test_one_event_that_cannot_be_stored_fails_alone(calls: dict[str, list[list[str]]]) -> None:
    FAILURES["b"] = [ValueError("b cannot be stored")] * 2
    outcomes = store(["a", "b", "c"])
    assert [getattr(o, "status", None) for o in outcomes] == ["accepted", None, "accepted"]
    assert isinstance(outcomes[1], ValueError)
    assert calls["stored"] == [["a", "b", "c"], ["a"], ["b"], ["c"]]


def test_a_second_copy_in_one_batch_is_a_duplicate(calls: dict[str, list[list[str]]]) -> None:
    outcomes = store(["a", "a"])
    assert [o.status for o in outcomes] == ["accepted", "duplicate"]
    assert calls["stored"] == [["a"]]


def test_an_unreachable_store_fails_every_event_of_the_batch_once(
    calls: dict[str, list[list[str]]],
) -> None:
    FAILURES["a"] = [unavailable("08006")]
    outcomes = store(["a", "b"])
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)
    assert calls["stored"] == [["a", "b"]]


def test_a_deadlock_is_tried_again(calls: dict[str, list[list[str]]]) -> None:
    FAILURES["a"] = [unavailable("40P01")]
    outcomes = store(["a", "b"])
    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    assert calls["stored"] == [["a", "b"], ["a", "b"]]


def test_an_event_that_cannot_be_applied_is_marked_failed_alone(
    calls: dict[str, list[list[str]]],
) -> None:
    FAILURES["b"] = [KeyError("b")] * 2
    apply(["a", "b", "c"])
    assert calls["applied"] == [["a", "b", "c"], ["a"], ["b"], ["c"]]
    assert calls["failed"] == [["b", "KeyError"]]


def test_applying_while_the_store_is_unreachable_raises_and_marks_nothing(
    calls: dict[str, list[list[str]]],
) -> None:
    FAILURES["a"] = [unavailable("08006")]
    with pytest.raises(StoreUnavailable):
        apply(["a", "b"])
    assert calls["applied"] == [["a", "b"]]
    assert calls["failed"] == []


def test_accepted_events_are_applied_after_their_answer_in_arrival_order(
    calls: dict[str, list[list[str]]],
) -> None:
    async def scenario() -> list[str]:
        receiving = intake()
        results = await asyncio.gather(*(receiving.submit(cast(Any, Event(e))) for e in "abc"))
        await receiving.settle()
        return [result.status for result in results]

    assert asyncio.run(scenario()) == ["accepted"] * 3
    assert [event for batch in calls["stored"] for event in batch] == ["a", "b", "c"]
    assert [event for batch in calls["applied"] for event in batch] == ["a", "b", "c"]


def test_a_sender_faster_than_applying_waits_for_the_backlog_to_shrink(
    calls: dict[str, list[list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real_apply = inbox_module.apply_stored

    def slow_apply(*args: Any, **kwargs: Any) -> None:
        assert release.wait(10)
        real_apply(*args, **kwargs)

    monkeypatch.setattr(inbox_module, "apply_stored", slow_apply)

    async def scenario() -> tuple[list[str], list[str]]:
        receiving = Intake(
            cast(Any, None), cast(Any, None), cast(Any, lambda: None), max_batch=1, max_backlog=2
        )
        first = [asyncio.ensure_future(receiving.submit(cast(Any, Event(e)))) for e in "abc"]
        await asyncio.sleep(0.2)
        # "a" is being applied, "b" and "c" fill the backlog: "d" is not stored meanwhile
        later = asyncio.ensure_future(receiving.submit(cast(Any, Event("d"))))
        await asyncio.sleep(0.2)
        stored_before = [event for batch in calls["stored"] for event in batch]
        answered_before = [f.result().id for f in [*first, later] if f.done() and not f.exception()]
        release.set()
        await later
        await receiving.settle()
        assert stored_before == ["a", "b", "c"]
        return answered_before, [event for batch in calls["applied"] for event in batch]

    answered, applied = asyncio.run(scenario())
    assert answered == ["a", "b", "c"]
    assert applied == ["a", "b", "c", "d"]


def test_what_goes_ahead_with_a_payment_is_its_loans_and_borrowers_earlier_events() -> None:
    from outreach.service.parse import parse_event
    from tests.factories import borrower_upserted, loan_updated, payment_received

    events = [
        parse_event(borrower_upserted("b-1")),  # 0: the paying loan's borrower
        parse_event(borrower_upserted("b-2")),  # 1: someone else
        parse_event(loan_updated("l-1", "b-1", days_past_due=3)),  # 2: the paying loan
        parse_event(loan_updated("l-9", "b-1", days_past_due=3)),  # 3: its borrower's other loan
        parse_event(loan_updated("l-2", "b-2", days_past_due=3)),  # 4: someone else's
        parse_event(payment_received("l-1", amount="1.00", amount_due_after="0")),  # 5
        parse_event(loan_updated("l-1", "b-1", days_past_due=4)),  # 6: after it: stays after
    ]
    assert inbox_module.ahead_positions(events, [5]) == [0, 2, 3, 5]
    assert inbox_module.ahead_positions(events, []) == []
