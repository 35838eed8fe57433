"""The webhook path, stage 2 of 4: a web process's events stored in the inbox at once (group
commit), then handed to `apply` moments later in larger batches.

A request hands its validated event to the process's `Intake` and waits only for it to be
stored: the events waiting (up to `max_batch`, in arrival order) go into the inbox in one
transaction, marked `pending`, and each request is answered from its own result — 202
accepted, or 200 duplicate. An accepted event is durable before its answer (SPEC §4).

The process then applies its accepted events in arrival order, up to `apply_batch` per
transaction (`apply.apply_stored`): state updated, messages planned or cancelled, the
outcome recorded on the inbox row, all in one transaction. Applying costs most of an event's
work, and much of that cost is per transaction, not per event: decoupled from the answer, a
burst is applied in batches as large as the burst, not as large as the number of requests in
flight. When there is no burst an event is applied a few milliseconds after its 202.

Failures. A store transaction that fails for a reason other than the store being unreachable
(a deadlock with another web process, one bad row) is retried one event per transaction, so
one event cannot fail the others; the store unreachable answers 503 for every event of the
batch, none of which was stored. An apply transaction that fails the same way is retried one
event per transaction; an event whose apply fails on its own is marked `failed` on its inbox
row with the error (ops see it on the borrower's timeline). While the store is unreachable,
applying waits and tries again. Events a process stored but did not apply (it stopped or
crashed) stay `pending`; every minute the clock applies them, and tries failed ones again
once their `retry_at` has come (1, 2, 4, 8 minutes after each failure). An event that fails
DEAD_LETTER_AFTER times, or can no longer be parsed, is a dead letter: logged once at ERROR,
not tried again until ops re-drive it (`redrive`), listed by `dead_letters`. Until an event
is applied, the final gate holds the messages of its borrower and loan (`unapplied_about`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from outreach import policy as pol
from outreach.errors import StoreUnavailable
from outreach.service.apply import IngestResult, apply_stored
from outreach.service.parse import Event, EventError, parse_event
from outreach.store import inbox as store
from outreach.store.db import transaction
from outreach.store.inbox import (
    DEAD_LETTER_OUTCOME,
    PENDING_OUTCOME,
    UNAPPLIED_OUTCOMES,
    Unapplied,
)
from outreach.store.messages import bring_held_forward

log = logging.getLogger(__name__)

MAX_BATCH = 64
APPLY_BATCH = 256
# what one apply transaction may take, about: a payment that comes meanwhile waits for it,
# so the batch shrinks when its events are costly (re-planning loans with many messages)
# and grows back to APPLY_BATCH when they are cheap
APPLY_BATCH_SECONDS = 0.5
MIN_APPLY_BATCH = 8
# accepted and not yet applied, per process, beyond which new events wait to be stored (and
# their senders for an answer): a sender faster than applying is slowed down instead of
# growing the backlog without bound
MAX_BACKLOG = 4096
# events waiting to be stored, per process, beyond which a new one is refused at once (503
# with Retry-After): what waits is held in memory and answered only once stored
MAX_WAITING = 4096
# seconds a request waits for its event to be stored (behind a full backlog, or a database
# that takes the statement and answers nothing): past it, 503 with Retry-After and the
# event is not accepted; a loan system's client waits longer than this before it gives up
STORE_WAIT_SECONDS = 10.0
# what a refused sender is told to wait before it tries again
RETRY_AFTER_SECONDS = 2
# a deadlock or serialization failure between two web processes is tried again this often
CONFLICT_ATTEMPTS = 3
# while the store is unreachable, applying is tried again after this long (doubling)
APPLY_RETRY_SECONDS = (0.5, 30.0)
# a pending event older than this was stored by a process that did not apply it
ORPHANED_AFTER = dt.timedelta(seconds=30)
ORPHAN_ROUNDS = 20
# failed applies after which an event is a dead letter; the first retry waits this long,
# each next one twice as long
DEAD_LETTER_AFTER = 5
RETRY_AFTER = dt.timedelta(minutes=1)
# a pending event this old is not one its web process is about to apply: the final gate
# holds the messages it is about
HOLD_PENDING_AFTER = dt.timedelta(seconds=5)

# events that stop or pause messages: they go ahead of a backlog, with the earlier events
# about the same loan or borrower (so that each loan's events still apply in arrival order),
# and are applied in a batch of their own — a payment must cancel its reminders in
# moments, not after the tens of thousands of a nightly batch (BENCHMARKS.md, bulk ingest)
STOPPING_EVENTS: Final = frozenset(
    {
        "payment.received",
        "loan.closed",
        "contact.restricted",
        "promise_to_pay.created",
        "payment_plan.created",
    }
)

Outcome = IngestResult | BaseException
T = TypeVar("T")


class IntakeBusy(StoreUnavailable):
    """The event was not accepted in time (the backlog is full, or the database does not
    answer): nothing the answer names as accepted is lost; the sender tries again after
    `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def is_conflict(error: BaseException) -> bool:
    """A transaction PostgreSQL rolled back to break a deadlock or a serialization failure
    (SQLSTATE class 40): trying again succeeds; the store is reachable."""
    cause = error.__cause__
    original = getattr(cause, "orig", None)
    sqlstate = getattr(original, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("40")


def store_in_inbox(
    session: Session,
    events: Sequence[Event],
    now: dt.datetime,
    *,
    outcome: str = PENDING_OUTCOME,
) -> set[str]:
    """Store each event once in the inbox, with `outcome` (PENDING_OUTCOME: stored, to be
    applied); returns the ids that were not already accepted."""
    return store.store_events(session, events, now, outcome)


class Intake:
    """The events of one web process: stored in batches as they arrive, then applied in
    batches, one at a time, in arrival order."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        policy: pol.Policy,
        clock: Callable[[], dt.datetime],
        *,
        max_batch: int = MAX_BATCH,
        apply_batch: int = APPLY_BATCH,
        max_backlog: int = MAX_BACKLOG,
        max_waiting: int = MAX_WAITING,
        wait_seconds: float = STORE_WAIT_SECONDS,
    ) -> None:
        self.sessions = sessions
        self.policy = policy
        self.clock = clock
        self.max_batch = max_batch
        self.apply_batch = apply_batch
        self.max_backlog = max_backlog
        self.max_waiting = max_waiting
        self.wait_seconds = wait_seconds
        # when the store thread took up the work it is on (None: idle)
        self._store_started: float | None = None
        self._waiting: list[tuple[Event, asyncio.Future[IngestResult]]] = []
        self._storing = False
        self._drainer: asyncio.Task[None] | None = None
        # accepted events waiting to be applied, in three lanes applied in this order: what
        # stops messages and came alone (a payment as it happens), what stops messages and
        # came in a batch, the rest; each lane in arrival order
        self._lanes: tuple[deque[Event], deque[Event], deque[Event]] = (deque(), deque(), deque())
        # seconds an event took to apply, lately (a moving average over batches)
        self._seconds_per_event = 0.0
        self._applying: asyncio.Task[None] | None = None
        # one thread each, so storing never waits behind a long apply (and a plain executor
        # hands work over more cheaply than the framework's shared thread pool)
        self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="intake-store")
        self._apply_thread = ThreadPoolExecutor(1, thread_name_prefix="intake-apply")

    @property
    def backlog(self) -> int:
        """Events accepted by this process and not applied yet."""
        return sum(len(lane) for lane in self._lanes)

    async def submit(self, event: Event) -> IngestResult:
        """Store the event with whatever else is waiting; its own result (accepted or
        duplicate), or its own error (StoreUnavailable: it was not stored; IntakeBusy: it was
        not stored in time, and may be by the time the sender tries again, which then finds
        it a duplicate)."""
        if len(self._waiting) >= self.max_waiting:
            raise IntakeBusy(f"{len(self._waiting)} events are waiting to be stored")
        if self._stuck():
            raise IntakeBusy(f"storing is stuck ({self._why_slow()})")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[IngestResult] = loop.create_future()
        # answered or not, its outcome is taken (no "exception never retrieved" for a
        # request that stopped waiting)
        future.add_done_callback(_taken)
        entry = (event, future)
        self._waiting.append(entry)
        if not self._storing:
            self._storing = True
            self._drainer = loop.create_task(self._drain())
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.wait_seconds)
        except TimeoutError:
            if entry in self._waiting:
                self._waiting.remove(entry)  # never stored: it is the sender's to send again
            raise IntakeBusy(
                f"not stored within {self.wait_seconds:g} s ({self._why_slow()})"
            ) from None

    async def submit_many(self, events: Sequence[Event]) -> list[IngestResult]:
        """Store the events of one batch together, in one transaction (a batch is already as
        large as a group commit), after what is waiting; their results in order. Raises
        StoreUnavailable when any of them could not be stored (those that were stay stored:
        sent again, they are duplicates), IntakeBusy when they were not stored in time."""
        if not events:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        while self.backlog >= self.max_backlog:
            if loop.time() >= deadline:
                raise IntakeBusy(f"not stored within {self.wait_seconds:g} s (backlog full)")
            await asyncio.sleep(0.005)
        stored = self._store_in_thread(events)
        try:
            outcomes = await asyncio.wait_for(
                asyncio.shield(stored), max(0.0, deadline - loop.time())
            )
        except TimeoutError:
            raise IntakeBusy(
                f"not stored within {self.wait_seconds:g} s ({self._why_slow()})"
            ) from None
        results: list[IngestResult] = []
        for outcome in outcomes:
            if isinstance(outcome, StoreUnavailable):
                raise outcome
            if isinstance(outcome, BaseException):
                raise StoreUnavailable(f"an event of the batch was not stored: {outcome}")
            results.append(outcome)
        return results

    def _store_in_thread(
        self, events: Sequence[Event], *, alone: bool = False
    ) -> asyncio.Future[list[Outcome]]:
        """`store(events)` on the store thread; whenever it ends (even after its requests
        stopped waiting), what it accepted is queued to be applied. Refused at once while
        the thread is stuck on a store older than a request's wait: no work piles up behind
        a database that answers nothing."""
        loop = asyncio.get_running_loop()
        if self._stuck():
            raise IntakeBusy(f"storing is stuck ({self._why_slow()})")

        def run() -> list[Outcome]:
            self._store_started = time.monotonic()
            try:
                return self.store(events)
            finally:
                self._store_started = None

        stored = loop.run_in_executor(self._store_thread, run)

        def queue_accepted(done: asyncio.Future[list[Outcome]]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            accepted = [
                event
                for event, outcome in zip(events, done.result(), strict=True)
                if isinstance(outcome, IngestResult) and outcome.status == "accepted"
            ]
            self._queue(accepted, alone=alone)
            self._start_applying()

        stored.add_done_callback(queue_accepted)
        return stored

    def _queue(self, accepted: list[Event], *, alone: bool) -> None:
        """Queue `accepted` to be applied: those that stop messages in the lane ahead
        (`alone`: sent one by one, as they happened; else in a batch), each with the events
        queued behind that lane which its loan or borrower has before it."""
        alone_lane, batched_lane, rest = self._lanes
        if not any(event.type in STOPPING_EVENTS for event in accepted):
            rest.extend(accepted)
            return
        target, sources = (alone_lane, [batched_lane, rest]) if alone else (batched_lane, [rest])
        behind = [event for source in sources for event in source]
        offset = len(behind)
        behind += accepted
        stopping = [
            offset + index for index, event in enumerate(accepted) if event.type in STOPPING_EVENTS
        ]
        chosen = ahead_positions(behind, stopping)
        taken = set(chosen)
        target.extend(behind[position] for position in chosen)
        position = 0
        for source in sources:
            kept = [
                event for index, event in enumerate(source, start=position) if index not in taken
            ]
            position += len(source)
            source.clear()
            source.extend(kept)
        rest.extend(
            event for index, event in enumerate(accepted, start=offset) if index not in taken
        )

    def _stuck(self) -> bool:
        started = self._store_started
        return started is not None and time.monotonic() - started > self.wait_seconds

    def _why_slow(self) -> str:
        if self.backlog >= self.max_backlog:
            return f"{self.backlog} accepted events wait to be applied"
        if self._store_started is not None:
            waited = time.monotonic() - self._store_started
            return f"the database has not answered for {waited:.0f} s"
        return f"{len(self._waiting)} events wait to be stored"

    async def _drain(self) -> None:
        try:
            while self._waiting:
                if self.backlog >= self.max_backlog:
                    # a full backlog slows senders down, but not the events that stop messages
                    batch = self._stopping_waiting()
                    if not batch:
                        await asyncio.sleep(0.005)
                        continue
                else:
                    batch = self._waiting[: self.max_batch]
                    del self._waiting[: self.max_batch]
                events = [event for event, _ in batch]
                try:
                    outcomes = await self._store_in_thread(events, alone=True)
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
            self._storing = False

    def _stopping_waiting(self) -> list[tuple[Event, asyncio.Future[IngestResult]]]:
        """The waiting events that stop messages, with the earlier waiting ones about the
        same loan or borrower, taken out of `_waiting` in their order."""
        events = [event for event, _ in self._waiting]
        stopping = [i for i, event in enumerate(events) if event.type in STOPPING_EVENTS]
        if not stopping:
            return []
        chosen = set(ahead_positions(events, stopping[: self.max_batch]))
        batch = [entry for position, entry in enumerate(self._waiting) if position in chosen]
        self._waiting = [
            entry for position, entry in enumerate(self._waiting) if position not in chosen
        ]
        return batch

    def _start_applying(self) -> None:
        if self.backlog and (self._applying is None or self._applying.done()):
            self._applying = asyncio.get_running_loop().create_task(self._apply_all())

    async def _apply_all(self) -> None:
        pause = APPLY_RETRY_SECONDS[0]
        while self.backlog:
            # a lane ahead goes in batches of its own, committed without waiting for a full
            # batch behind it
            lane = next(lane for lane in self._lanes if lane)
            batch = [lane.popleft() for _ in range(min(self._batch_size(), len(lane)))]
            started = time.monotonic()
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._apply_thread, self.apply, batch
                )
                pause = APPLY_RETRY_SECONDS[0]
                took = (time.monotonic() - started) / len(batch)
                self._seconds_per_event = 0.7 * self._seconds_per_event + 0.3 * took
            except Exception as error:  # the store is unreachable: the events wait
                log.warning("applying %d events waits %.1f s: %s", len(batch), pause, error)
                lane.extendleft(reversed(batch))
                await asyncio.sleep(pause)
                pause = min(pause * 2, APPLY_RETRY_SECONDS[1])

    def _batch_size(self) -> int:
        """As many events as apply in about APPLY_BATCH_SECONDS, lately."""
        if self._seconds_per_event <= 0:
            return self.apply_batch
        fitting = int(APPLY_BATCH_SECONDS / self._seconds_per_event)
        return max(min(MIN_APPLY_BATCH, self.apply_batch), min(self.apply_batch, fitting))

    async def settle(self) -> None:
        """Until every event accepted so far is applied (or failed); for an orderly stop."""
        while self._storing or self.backlog or (self._applying and not self._applying.done()):
            await asyncio.sleep(0.01)

    # -- storing ------------------------------------------------------------------------------

    def store(self, events: Sequence[Event]) -> list[Outcome]:
        """Store the events in one transaction; failing that, each in its own."""
        return _one_by_one_on_failure(self._store_once, events)

    def _store_once(self, events: Sequence[Event]) -> list[Outcome]:
        unique = list({event.id: event for event in events}.values())
        stored = _with_conflict_retries(
            self.sessions,
            lambda session: store_in_inbox(session, unique, self.clock(), outcome=PENDING_OUTCOME),
        )
        results: list[Outcome] = []
        for event in events:
            if event.id in stored:
                stored.discard(event.id)  # a second copy in the same batch is a duplicate
                results.append(IngestResult("accepted", event.id, PENDING_OUTCOME))
            else:
                results.append(IngestResult("duplicate", event.id))
        return results

    # -- applying -----------------------------------------------------------------------------

    def apply(self, events: Sequence[Event]) -> None:
        """Apply stored events (see `apply_events`)."""
        apply_events(self.sessions, self.policy, events, self.clock)


def ahead_positions(events: Sequence[Event], stopping: Iterable[int]) -> list[int]:
    """The positions in `events` (in arrival order) of the events at the `stopping`
    positions and of every earlier one about their loan or borrower, or about the loans and
    borrowers those name in turn: what goes ahead, in order."""
    by_loan: dict[str, list[int]] = {}
    by_borrower: dict[str, list[int]] = {}
    for position, event in enumerate(events):
        if event.loan_id is not None:
            by_loan.setdefault(event.loan_id, []).append(position)
        if event.borrower_id is not None:
            by_borrower.setdefault(event.borrower_id, []).append(position)
    chosen: set[int] = set()
    for start in stopping:
        chosen.add(start)
        keys = [("loan", events[start].loan_id), ("borrower", events[start].borrower_id)]
        seen: set[tuple[str, str | None]] = set()
        while keys:
            key = keys.pop()
            if key[1] is None or key in seen:
                continue
            seen.add(key)
            index = by_loan if key[0] == "loan" else by_borrower
            for position in index.get(key[1], ()):
                if position >= start or position in chosen:
                    continue
                chosen.add(position)
                keys.append(("loan", events[position].loan_id))
                keys.append(("borrower", events[position].borrower_id))
    return sorted(chosen)


def _taken(future: asyncio.Future[IngestResult]) -> None:
    if not future.cancelled():
        future.exception()


def apply_events(
    sessions: sessionmaker[Session],
    policy: pol.Policy,
    events: Sequence[Event],
    clock: Callable[[], dt.datetime],
) -> None:
    """Apply stored events, those still pending, in one transaction; failing that, each in
    its own, and an event that fails on its own is marked failed. Raises StoreUnavailable
    (nothing applied) when the store cannot be reached."""

    def apply_once(batch: Sequence[Event]) -> list[Outcome]:
        def run(session: Session) -> list[Outcome]:
            still = pending_of(session, [event.id for event in batch])
            mine = [event for event in batch if event.id in still]
            apply_stored(session, policy, mine, clock(), stored_as=PENDING_OUTCOME)
            return [IngestResult("accepted", event.id) for event in batch]

        return _with_conflict_retries(sessions, run)

    outcomes = _one_by_one_on_failure(apply_once, events)
    for event, outcome in zip(events, outcomes, strict=True):
        if isinstance(outcome, StoreUnavailable) and not is_conflict(outcome):
            raise outcome
        if isinstance(outcome, BaseException):
            mark_failed(sessions, event.id, outcome, clock())


def _with_conflict_retries(sessions: sessionmaker[Session], work: Callable[[Session], T]) -> T:
    """`work` in one transaction, tried again after a deadlock or serialization failure."""
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            with transaction(sessions) as session:
                return work(session)
        except StoreUnavailable as error:
            if not is_conflict(error) or attempt == CONFLICT_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _one_by_one_on_failure(
    attempt: Callable[[Sequence[Event]], list[Outcome]], events: Sequence[Event]
) -> list[Outcome]:
    """`attempt` on all the events; when that fails for a reason other than the store being
    unreachable, on each event alone, so one event's failure stays its own."""
    try:
        return attempt(events)
    except StoreUnavailable as error:
        if not is_conflict(error):
            return [error] * len(events)
        failure: BaseException = error
    except Exception as error:  # retried one by one below
        failure = error
    if len(events) == 1:
        return [failure]
    log.info(
        "a batch of %d events failed (%s); trying them one by one",
        len(events),
        type(failure).__name__,
    )
    outcomes: list[Outcome] = []
    for event in events:
        try:
            outcomes.append(attempt([event])[0])
        except Exception as error:  # this event's own outcome
            outcomes.append(error)
    return outcomes


def pending_of(session: Session, ids: Sequence[str]) -> set[str]:
    """Which of these inbox rows are still to be applied (pending, failed or dead-lettered
    before), locked (on PostgreSQL) until the end of the transaction, so no one else applies
    them meanwhile."""
    return store.unapplied_of(session, ids)


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def mark_failed(
    sessions: sessionmaker[Session],
    event_id: str,
    error: BaseException,
    now: dt.datetime,
    *,
    permanent: bool = False,
) -> None:
    """Record a failed apply on the event's inbox row: `failed`, to be tried again at
    `retry_at`; or, after DEAD_LETTER_AFTER failures (at once when `permanent`), a dead
    letter, logged at ERROR this once."""
    try:
        with transaction(sessions) as session:
            attempts = store.attempts_of(session, event_id)
            if attempts is None:
                return  # applied meanwhile by someone else
            attempts += 1
            dead = permanent or attempts >= DEAD_LETTER_AFTER
            retry_at = None if dead else now + RETRY_AFTER * 2 ** (attempts - 1)
            if dead:
                detail = f"dead letter after {attempts} attempt(s): {_one_line(error)}"
            else:
                detail = f"could not be applied (attempt {attempts}): {_one_line(error)}"
            store.record_failure(
                session, event_id, dead=dead, detail=detail, attempts=attempts, retry_at=retry_at
            )
    except StoreUnavailable as unreachable:  # it stays as it was; the clock tries it again
        log.warning("event %s stays unapplied: %s", event_id, unreachable)
        return
    if dead:
        log.error(
            "event %s is a dead letter after %d attempt(s); its borrower's and loan's messages "
            "are held until it is re-driven (POST /v1/events/dead/%s/retry)",
            event_id,
            attempts,
            event_id,
            exc_info=error,
        )
    else:
        log.warning(
            "event %s could not be applied (attempt %d of %d, next at %s): %s",
            event_id,
            attempts,
            DEAD_LETTER_AFTER,
            retry_at.isoformat() if retry_at else None,
            _one_line(error),
        )


def apply_orphaned(
    sessions: sessionmaker[Session],
    policy: pol.Policy,
    clock: Callable[[], dt.datetime],
    *,
    older_than: dt.timedelta = ORPHANED_AFTER,
    limit: int = APPLY_BATCH,
) -> int:
    """Apply the events stored `older_than` ago and still pending (the web process that stored
    them stopped before applying them), and try again those whose apply failed once their
    `retry_at` has come (a fix may have been deployed since; until then each try counts
    towards the dead letter). Oldest first, `limit` per transaction; returns how many were
    found (a process applying one of them at the same moment applies it once)."""
    total = 0
    now = clock()
    after: tuple[dt.datetime, str] | None = None
    # each round starts after the last row of the one before, so events that fail again
    # (they stay `failed`) are not read again ahead of the rest; bounded, so what is left
    # waits for the next call
    for _ in range(ORPHAN_ROUNDS):
        with sessions() as session:
            rows = store.due_again(session, now - older_than, now, after, limit)
        if not rows:
            break
        after = (rows[-1].received_at, rows[-1].id)
        events: list[Event] = []
        for event_id, body, _ in rows:
            try:
                events.append(parse_event(body))
            except EventError as error:  # accepted once, so only a changed parser gets here
                mark_failed(sessions, event_id, error, clock(), permanent=True)
        apply_events(sessions, policy, events, clock)
        total += len(rows)
        if len(rows) < limit:
            break
    return total


# -- what the final gate and ops read -----------------------------------------------------------


def unapplied_about(
    session: Session, borrower_ids: Iterable[str], loan_ids: Iterable[str], now: dt.datetime
) -> dict[tuple[str, str], Unapplied]:
    """The oldest event not applied about each of these borrowers and loans, keyed
    ("borrower", id) or ("loan", id): failed and dead-lettered ones, and pending ones older
    than HOLD_PENDING_AFTER (younger ones are being applied by the process that took them)."""
    return store.unapplied_about(session, borrower_ids, loan_ids, now - HOLD_PENDING_AFTER)


def redrive(
    sessions: sessionmaker[Session],
    policy: pol.Policy,
    event_id: str,
    clock: Callable[[], dt.datetime],
) -> tuple[str, str | None] | None:
    """Apply a dead letter once more, now (ops fixed its cause); its outcome and detail
    after (a failure makes it a dead letter again), or None when it is no dead letter. The
    messages held for it are brought forward, so the gate decides on them at once."""
    with sessions() as session:
        row = store.stored_event(session, event_id)
    if row is None or row.outcome != DEAD_LETTER_OUTCOME:
        return None
    try:
        apply_events(sessions, policy, [parse_event(row.body)], clock)
    except EventError as error:
        mark_failed(sessions, event_id, error, clock(), permanent=True)
    with transaction(sessions) as session:
        after = store.stored_event(session, event_id)
        if after.outcome not in UNAPPLIED_OUTCOMES:
            bring_held_forward(session, row.borrower_id, row.loan_id, clock())
    log.info("dead letter %s re-driven: %s", event_id, after.outcome)
    return after.outcome, after.detail
