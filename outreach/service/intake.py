"""Group commit for webhook events: one transaction for the events a web process receives
while its previous transaction commits.

A request hands its validated event to the process's `Intake` and waits for that event's own
result. The intake applies the events waiting (up to `max_batch`, in the order they arrived)
with `ingest_many` in one transaction on a thread, then answers each request from its event's
result. So every event is still stored, applied and planned in one transaction before its
202, as SPEC §4 asks, and a burst costs one commit and a few statements per batch instead of
per event. When there is no burst a batch holds one event and nothing waits.

A batch whose transaction fails for a reason other than the store being unreachable (a
deadlock with another web process, one event whose apply fails) is retried one event per
transaction, so one event cannot fail the others; the store unreachable answers 503 for every
event of the batch, none of which was stored.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Sequence

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from outreach import policy as pol
from outreach.errors import StoreUnavailable
from outreach.service.events import Event
from outreach.service.ingest import IngestResult, ingest_many
from outreach.store.db import transaction

log = logging.getLogger(__name__)

MAX_BATCH = 64
# a deadlock or serialization failure between two web processes is tried again this often
CONFLICT_ATTEMPTS = 3

Outcome = IngestResult | BaseException


def is_conflict(error: BaseException) -> bool:
    """A transaction PostgreSQL rolled back to break a deadlock or a serialization failure
    (SQLSTATE class 40): trying again succeeds; the store is reachable."""
    cause = error.__cause__
    original = getattr(cause, "orig", None)
    sqlstate = getattr(original, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("40")


class Intake:
    """The events of one web process, applied in batches (one at a time, in arrival order)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        policy: pol.Policy,
        clock: Callable[[], dt.datetime],
        *,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.sessions = sessions
        self.policy = policy
        self.clock = clock
        self.max_batch = max_batch
        self._waiting: list[tuple[Event, asyncio.Future[IngestResult]]] = []
        self._draining = False

    async def submit(self, event: Event) -> IngestResult:
        """Store and apply the event with whatever else is waiting; its own result, or its
        own error (StoreUnavailable: it was not stored)."""
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((event, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                try:
                    outcomes = await run_in_threadpool(self.store, [e for e, _ in batch])
                except Exception as error:  # every waiter learns of it
                    outcomes = [error] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._draining = False

    def store(self, events: Sequence[Event]) -> list[Outcome]:
        """Apply the events in one transaction; failing that, each in its own."""
        try:
            return list(self._attempt(events))
        except StoreUnavailable as error:
            if not is_conflict(error):
                return [error] * len(events)
            failure: BaseException = error
        except Exception as error:  # retried one by one below
            failure = error
        if len(events) == 1:
            return [failure]
        log.info(
            "a batch of %d events failed (%s); applying them one by one",
            len(events),
            type(failure).__name__,
        )
        outcomes: list[Outcome] = []
        for event in events:
            try:
                outcomes.append(self._attempt([event])[0])
            except Exception as error:  # this event's own answer
                outcomes.append(error)
        return outcomes

    def _attempt(self, events: Sequence[Event]) -> list[IngestResult]:
        """One transaction, tried again after a deadlock or serialization failure."""
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                with transaction(self.sessions) as session:
                    return ingest_many(session, self.policy, events, self.clock())
            except StoreUnavailable as error:
                if not is_conflict(error) or attempt == CONFLICT_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")
