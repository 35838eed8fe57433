"""The simulator: the live service's code on a virtual clock (SPEC §10).

Nothing here decides anything about a message. Events go through the webhook's inbox and
apply stages (`ingest_many`), replies through the inbound handler, campaign launches through
the ops API's create and launch (`outreach.sim.campaigns`), due messages through the clock's
`claim_due` and the worker's `Dispatcher`, provider outcomes through the status-callback
code; open loans are re-planned by `replan_loan` at every day boundary and campaigns moved
by `campaigns.advance` as the clock does both. What the simulator adds is time: instead of
ticking every second it jumps to the next instant at which anything can happen (the next
event, the next due message, the next provider outcome, the next daily re-plan, a
campaign's start or end), which is why weeks run in seconds.

The store is a throw-away SQLite database migrated like any other (durability switched off,
as nothing needs to survive the run); the caps are an embedded Redis under the same temporary
directory, or OUTREACH_REDIS_URL under a key prefix of the run's own, removed afterwards.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import logging
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson
import redis as redis_lib
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from outreach import policy as pol
from outreach.campaign_control import CampaignControl
from outreach.channels.base import Sender
from outreach.channels.simulated import SimulatedSender
from outreach.domain import Channel
from outreach.message_leases import MessageLeases
from outreach.redis_server import PrivateRedisServer, RedisServerUnavailable
from outreach.render import Renderer
from outreach.service import campaigns
from outreach.service.apply import ingest_many
from outreach.service.delivery_status import StatusReport, record_statuses
from outreach.service.dispatch import Dispatcher
from outreach.service.inbound import handle_sms_reply
from outreach.service.messages import records_of, seeded_ids
from outreach.service.parse import Event, SmsInbound
from outreach.service.planner import PlanWork, loans_of_many, plan_batch
from outreach.settings import Settings
from outreach.sim import campaigns as sim_campaigns
from outreach.sim.inputs import CampaignLaunch, EventBook
from outreach.sim.results import (
    ProgressBar,
    SimulationError,
    SimulationResult,
    SimulationStats,
    peak_memory,
)
from outreach.store import models as m
from outreach.store.db import THROWAWAY_SQLITE, make_session_factory, sqlite_engine, transaction
from outreach.store.keysets import keys_in
from outreach.store.messages import DUE_STATUSES, claim_due
from outreach.store.migrate import upgrade
from outreach.wiring import cap_reserver

log = logging.getLogger(__name__)

# Work done in one transaction: events of one instant, loans of one daily re-plan.
EVENTS_PER_TRANSACTION = 2000
LOANS_PER_TRANSACTION = 250
CLAIM_BATCH = 500
# A message claimed this often at one instant is left for the next second (a guard, not a rule)
MAX_CLAIMS_PER_INSTANT = 3
_DAY = dt.timedelta(days=1)
_SECOND = dt.timedelta(seconds=1)
# A simulation's messages are never sent: the unsubscribe links in their text are signed with
# a key of their own, so that none of them opens on a live service, and so that the same seed
# gives the same text
SIMULATION_LINK_KEY = b"outreach-simulation: links never sent"
# the borrowers of messages, by message id and by provider id
_BORROWERS_OF_MESSAGES = (
    select(m.Message.borrower_id).where(keys_in(m.Message.id, "ids")).distinct()
)
_BORROWERS_OF_PROVIDER_IDS = (
    select(m.Message.borrower_id).where(keys_in(m.Message.provider_id, "ids")).distinct()
)
# the next instant a message falls due (asked at every instant of a run: built once)
_FIRST_DUE = select(func.min(m.Message.send_at)).where(m.Message.status.in_(DUE_STATUSES))


class VirtualClock:
    """The one clock every component of a simulation reads."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def simulation_engine(path: Path) -> Engine:
    """A SQLite store for one run: one writer (this process), no fsync, no pre-ping."""
    return sqlite_engine(
        f"sqlite:///{path}",
        THROWAWAY_SQLITE,
        connect_args={"check_same_thread": False},
        pool_size=2,
    )


@dataclass
class SimulationEnvironment:
    """The store, caps, providers and service objects of one run."""

    clock: VirtualClock
    engine: Engine
    sessions: sessionmaker[Session]
    policy: pol.Policy
    dispatcher: Dispatcher
    senders: dict[Channel, SimulatedSender]
    renderer: Renderer


# the templates compiled by this process, while their files stay as they were (one set)
_COMPILED: dict[tuple[Path, tuple[tuple[str, int, int], ...]], Renderer] = {}


def compiled_renderer(directory: Path) -> Renderer:
    """The templates under `directory`, compiled once per process for as long as none of
    their files changes. A split run's processes are forked from a server that compiled the
    configured templates while the book was being split (`outreach.sim.preload`), so each
    starts with them compiled instead of spending most of a second on it."""
    root = directory.resolve()
    files = tuple(
        sorted(
            (path.relative_to(root).as_posix(), status.st_mtime_ns, status.st_size)
            for path in root.rglob("*")
            if path.is_file()
            for status in (path.stat(),)
        )
    )
    key = (root, files)
    renderer = _COMPILED.get(key)
    if renderer is None:
        _COMPILED.clear()
        renderer = _COMPILED[key] = Renderer(directory)
    return renderer


@contextlib.contextmanager
def environment(
    settings: Settings,
    start: dt.datetime,
    *,
    policy_path: Path | None = None,
    workdir: Path | None = None,
) -> Iterator[SimulationEnvironment]:
    """Build everything a run needs; remove every trace of it afterwards."""
    policy = pol.load_policy(policy_path or settings.policy_path)
    renderer = compiled_renderer(settings.templates_dir)
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="outreach-sim-", dir=workdir))
    engine: Engine | None = None
    embedded: PrivateRedisServer | None = None
    shared: redis_lib.Redis | None = None
    # every key of the run (caps, message leases) starts with this
    prefix = f"outreach:sim:{uuid.uuid4().hex}:"
    try:
        engine = simulation_engine(directory / "simulation.db")
        upgrade(engine)
        sessions = make_session_factory(engine)
        if settings.redis_url is not None:
            shared = redis_lib.Redis.from_url(
                settings.redis_url.reveal(), socket_timeout=10, socket_connect_timeout=5
            )
            client = shared
        else:
            try:
                embedded = PrivateRedisServer(directory)
            except RedisServerUnavailable as error:
                raise SimulationError("the embedded Redis for the caps did not start") from error
            client = embedded.client
        clock = VirtualClock(start)
        senders = {channel: SimulatedSender(channel, clock) for channel in Channel}
        caps = cap_reserver(client, policy, sessions, prefix=f"{prefix}caps:")
        plain_senders: dict[Channel, Sender] = dict(senders)
        dispatcher = Dispatcher(
            sessions=sessions,
            policy=policy,
            renderer=renderer,
            caps=caps,
            senders=plain_senders,
            public_url=settings.public_url,
            link_keys=(SIMULATION_LINK_KEY,),
            clock=clock,
            virtual_time=True,
            leases=MessageLeases(client, prefix=f"{prefix}lease:"),
            campaigns=CampaignControl(client, prefix=f"{prefix}campaign:"),
        )
        yield SimulationEnvironment(clock, engine, sessions, policy, dispatcher, senders, renderer)
    finally:
        if shared is not None:
            # a shared Redis keeps nothing of the run: its keys carry the run's own prefix
            with contextlib.suppress(redis_lib.RedisError):
                keys = list(shared.scan_iter(match=prefix + "*", count=1000))
                for index in range(0, len(keys), 500):
                    shared.delete(*keys[index : index + 500])
            shared.close()
        if embedded is not None:
            embedded.close()
        if engine is not None:
            engine.dispose()
        shutil.rmtree(directory, ignore_errors=True)


class Progress:
    """One run's progress over virtual time: on a `ProgressBar`, and (`report`) told to the
    process that shows the bar for several."""

    def __init__(
        self,
        start: dt.datetime,
        end: dt.datetime,
        enabled: bool,
        report: Callable[[float, int], None] | None = None,
    ) -> None:
        self._start = start
        self._total = (end - start).total_seconds()
        self._bar = ProgressBar(enabled, self._total)
        self._last = 0.0
        # told (virtual seconds done, messages dispatched) now and then: a process simulating
        # part of a book tells the one that shows the bar
        self._report = report

    def __enter__(self) -> Progress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)

    def update(self, now: dt.datetime, messages: int) -> None:
        if not self._bar.shown and self._report is None:
            return
        tick = time.monotonic()
        if tick - self._last < 0.1:
            return
        self._last = tick
        done = min((now - self._start).total_seconds(), self._total)
        if self._report is not None:
            self._report(done, messages)
        self._bar.show(done, messages)


class Simulator:
    """Drives one environment through a book of events from `start` for `days`."""

    def __init__(
        self,
        env: SimulationEnvironment,
        start: dt.datetime,
        end: dt.datetime,
        *,
        progress: bool = False,
        replan_every_loan: bool = False,
        report: Callable[[float, int], None] | None = None,
    ) -> None:
        self.env = env
        self.start = start
        self.end = end
        self.progress = progress
        self.report = report
        self.stats = SimulationStats()
        self._next_replan = self._day_boundary_after(start)
        # The clock re-plans every open loan at every day boundary. A re-plan before the
        # instant the policy names (`PlanOutcome.next_change`) finds nothing to do unless the
        # loan or its borrower changed since, so only those loans are re-planned: the ones
        # due by then, and the ones something happened to ("dirty").
        self.replan_every_loan = replan_every_loan
        self._replan_at: dict[str, dt.datetime | None] = {}
        self._dirty: set[str] = set()
        # whether a launched campaign may still start, end or complete, and the starts and
        # ends still ahead (instants the clock must visit, whatever else is due then)
        self._campaigns_unfinished = False
        self._campaign_marks: list[dt.datetime] = []

    @property
    def now(self) -> dt.datetime:
        return self.env.clock.now

    def _day_boundary_after(self, moment: dt.datetime) -> dt.datetime:
        zone = self.env.policy.day_boundary_zone
        local = moment.astimezone(zone)
        next_day = local.date() + _DAY
        return dt.datetime.combine(next_day, dt.time(), tzinfo=zone).astimezone(dt.UTC)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, book: EventBook) -> SimulationStats:
        started = time.perf_counter()
        cursor = book.cursor()
        with (
            contextlib.closing(cursor),
            Progress(self.start, self.end, self.progress, self.report) as bar,
        ):
            self._advance(self.start)
            while True:
                self._apply_events(cursor.due(self.now))
                self._record_outcomes()
                if self.now >= self._next_replan:
                    self._replan_open_loans()
                    self._next_replan = self._day_boundary_after(self.now)
                # before dispatch: at its end, a campaign's unsent messages are withheld
                self._advance_campaigns()
                self._dispatch_due()
                self.stats.instants += 1
                bar.update(self.now, sum(self.stats.dispatches.values()))
                upcoming = self._next_instant(cursor.next_at)
                if upcoming is None or upcoming >= self.end:
                    break
                self._advance(upcoming)
        self.stats.events_after_end = cursor.remaining
        self.stats.campaigns_after_end = cursor.remaining_campaigns
        if book.campaigns:
            with self.env.sessions() as session:
                self.stats.campaigns = sim_campaigns.reports(session, self.env.policy)
        self.stats.wall_seconds = time.perf_counter() - started
        return self.stats

    def _advance(self, instant: dt.datetime) -> None:
        self.env.clock.now = instant

    def _next_instant(self, next_event: dt.datetime | None) -> dt.datetime | None:
        candidates = [self._next_replan]
        if next_event is not None:
            candidates.append(next_event)
        for sender in self.env.senders.values():
            outcome_at = sender.next_outcome_at()
            if outcome_at is not None:
                candidates.append(outcome_at)
        with self.env.engine.connect() as connection:
            due = connection.execute(_FIRST_DUE).scalar()
        if due is not None:
            candidates.append(due)
        if self._campaign_marks:
            self._campaign_marks = [mark for mark in self._campaign_marks if mark > self.now]
            if self._campaign_marks:
                candidates.append(min(self._campaign_marks))
        upcoming = min(candidates)
        # something left due now (a guard against a loop at one instant) waits a second
        return max(upcoming, self.now + _SECOND) if upcoming <= self.now else upcoming

    # -- what happens at an instant ---------------------------------------------------------

    def _apply_events(self, due: Iterator[tuple[int, Event | CampaignLaunch]]) -> None:
        batch: list[tuple[int, Event | CampaignLaunch]] = []
        for item in due:
            batch.append(item)
            if len(batch) >= EVENTS_PER_TRANSACTION:
                self._apply_batch(batch)
                batch = []
        if batch:
            self._apply_batch(batch)

    def _apply_batch(self, batch: list[tuple[int, Event | CampaignLaunch]]) -> None:
        """Events of one instant in one transaction: runs of webhook events through
        `ingest_many`, replies through the inbound handler, campaign launches through the
        ops API's use cases, in file order."""
        env = self.env
        with transaction(env.sessions) as session:
            run: list[tuple[int, Event]] = []
            for line, event in [*batch, (0, None)]:
                if isinstance(event, Event) and not isinstance(event.data, SmsInbound):
                    run.append((line, event))
                    continue
                if run:
                    self._ingest_run(session, run)
                    run = []
                if isinstance(event, CampaignLaunch):
                    self._launch(session, event)
                elif event is not None:
                    self._reply(session, line, event)

    def _ingest_run(self, session: Session, run: list[tuple[int, Event]]) -> None:
        try:
            results = ingest_many(session, self.env.policy, [event for _, event in run], self.now)
        except Exception as error:
            lines = (
                f"{run[0][0]}"
                if len(run) == 1
                else f"{min(n for n, _ in run)}–{max(n for n, _ in run)}"
            )
            raise SimulationError(
                f"events on line(s) {lines} failed: {type(error).__name__}: {error}"
            ) from error
        borrowers: list[str] = []
        for (_, applied), result in zip(run, results, strict=True):
            self.stats.events[result.outcome or result.status] += 1
            if not result.replanned:
                continue
            if applied.loan_id is not None:
                self._dirty.add(applied.loan_id)
            if applied.borrower_id is not None and applied.type != "loan.updated":
                borrowers.append(applied.borrower_id)
        self._mark_borrowers(session, borrowers)

    def _reply(self, session: Session, line: int, event: Event) -> None:
        assert isinstance(event.data, SmsInbound)
        try:
            outcome = handle_sms_reply(
                session,
                self.env.policy,
                sender=event.data.from_,
                body=event.data.body,
                provider_id=event.id,
                now=self.now,
            )
        except Exception as error:
            raise SimulationError(
                f"reply on line {line} failed: {type(error).__name__}: {error}"
            ) from error
        self.stats.replies[outcome.classification] += 1
        if outcome.borrower_id is not None:
            self._mark_borrowers(session, [outcome.borrower_id])

    def _launch(self, session: Session, launched: CampaignLaunch) -> None:
        env = self.env
        try:
            spec = sim_campaigns.launch(session, env.policy, env.renderer, launched, self.now)
        except Exception as error:
            raise SimulationError(
                f"campaign on line {launched.line} failed: {type(error).__name__}: {error}"
            ) from error
        self._campaigns_unfinished = True
        self._campaign_marks += [mark for mark in (spec.start_at, spec.end_at) if mark]

    def _advance_campaigns(self) -> None:
        """The clock's campaign step (scheduled to running at the start; completed at the
        end, unsent messages withheld, or once nothing is pending), at every instant while
        any campaign may still move."""
        if not self._campaigns_unfinished:
            return
        with transaction(self.env.sessions) as session:
            campaigns.advance(session, self.env.dispatcher.campaigns, self.now)
            self._campaigns_unfinished = sim_campaigns.unfinished(session)

    def _mark_borrowers(self, session: Session, borrower_ids: Sequence[str]) -> None:
        """Every loan of these borrowers is re-planned at the next day boundary; read in one
        query (a read per borrower writes back all the state a transaction holds, each time)."""
        if borrower_ids:
            for loan_ids in loans_of_many(session, borrower_ids).values():
                self._dirty.update(loan_ids)

    def _record_outcomes(self) -> None:
        due = [
            outcome
            for sender in self.env.senders.values()
            for outcome in sender.due_outcomes(self.now)
        ]
        if not due:
            return
        with transaction(self.env.sessions) as session:
            record_statuses(
                session,
                provider="simulated",
                reports=[StatusReport(*outcome) for outcome in due],
                now=self.now,
            )
            failed = [provider_id for provider_id, _, error_code in due if error_code]
            # an opt-out or a dead number changes what the borrower may receive
            if failed:
                borrowers = session.connection().execute(
                    _BORROWERS_OF_PROVIDER_IDS, {"ids": failed}
                )
                self._mark_borrowers(session, borrowers.scalars().all())
        for _, status, _ in due:
            self.stats.outcomes[status] += 1

    def _replan_open_loans(self) -> None:
        env = self.env
        now = self.now
        with env.sessions() as session:
            open_loans = list(
                session.scalars(
                    select(m.Loan.id).where(m.Loan.closed_reason.is_(None)).order_by(m.Loan.id)
                )
            )
        if self.replan_every_loan:
            loan_ids = open_loans
        else:
            loan_ids = [
                loan_id
                for loan_id in open_loans
                if loan_id in self._dirty
                or loan_id not in self._replan_at
                or ((at := self._replan_at[loan_id]) is not None and at <= now)
            ]
        for index in range(0, len(loan_ids), LOANS_PER_TRANSACTION):
            chunk = loan_ids[index : index + LOANS_PER_TRANSACTION]
            with transaction(env.sessions) as session:
                # as `replan_loan` on each in turn (loans are planned independently)
                planned = plan_batch(
                    session,
                    env.policy,
                    [PlanWork((id_,)) for id_ in chunk],
                    now,
                    next_changes=True,
                )
            for loan_id in chunk:
                self._replan_at[loan_id] = planned.loans[loan_id].next_change
                self._dirty.discard(loan_id)
        self.stats.replans += len(loan_ids)

    def _dispatch_due(self) -> None:
        env = self.env
        claims: Counter[str] = Counter()
        while True:
            with transaction(env.sessions) as session:
                ids = claim_due(session, self.now, CLAIM_BATCH)
            if not ids:
                return
            fresh = [
                message_id for message_id in ids if claims[message_id] < MAX_CLAIMS_PER_INSTANT
            ]
            for message_id in ids:
                claims[message_id] += 1
            outcomes = env.dispatcher.dispatch_many(fresh)
            # a rejection may opt the borrower out or mark the number dead; a deferral moves
            # the message to an instant the next re-plan judges it at
            unsettled: list[str] = []
            for message_id in fresh:
                outcome = outcomes[message_id]
                self.stats.dispatches[outcome.kind.value] += 1
                if outcome.unsettled:
                    unsettled.append(message_id)
            if unsettled:
                with env.sessions() as session:
                    borrowers = session.connection().execute(
                        _BORROWERS_OF_MESSAGES, {"ids": unsettled}
                    )
                    self._mark_borrowers(session, borrowers.scalars().all())
            if not fresh:
                return

    # -- output -----------------------------------------------------------------------------

    def write_messages(self, out: IO[str], *, keyed: bool = False) -> int:
        """Every message as a MESSAGES.jsonl line (SPEC §10), in the order they were created;
        `keyed` puts that order's key before each line (`<key>\t\t<line>`), for merging
        the output of several processes."""
        written = 0
        statuses: Counter[str] = Counter()
        table = m.Message.__table__
        # one ordered read of the whole log (a page by page read sorts it again every page)
        query = select(table).order_by(table.c.created_at, table.c.id)
        with self.env.sessions() as session:
            result = session.connection().execution_options(stream_results=True).execute(query)
            for rows in result.partitions(2000):
                for row, record in zip(rows, records_of(session, rows), strict=True):
                    if keyed:
                        out.write(f"{_micros(row.created_at):020d} {row.id}\t\t")
                    # orjson: a quarter of the standard library's time for these records
                    out.write(orjson.dumps(record).decode())
                    out.write("\n")
                    statuses[record["status"]] += 1
                written += len(rows)
        self.stats.messages = written
        self.stats.statuses = statuses
        return written


def _micros(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def simulate(
    settings: Settings,
    book: EventBook,
    *,
    start: dt.datetime,
    days: float,
    out: Path,
    policy_path: Path | None = None,
    seed: int | None = None,
    progress: bool = False,
    workdir: Path | None = None,
    replan_every_loan: bool = False,
    on_environment: Callable[[SimulationEnvironment], None] | None = None,
    keyed_output: bool = False,
    report: Callable[[float, int], None] | None = None,
) -> SimulationResult:
    """Run `book` from `start` for `days` and write MESSAGES.jsonl to `out`."""
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("the start of a simulation must carry a UTC offset")
    start = start.astimezone(dt.UTC)
    end = start + dt.timedelta(days=days)
    ids = seeded_ids(seed) if seed is not None else contextlib.nullcontext()
    with (
        ids,
        environment(settings, start, policy_path=policy_path, workdir=workdir) as env,
        _long_lived_heap(),
    ):
        if not book.campaigns_checked:
            book.check_campaigns(sim_campaigns.checker(env.policy, env.renderer))
        if on_environment is not None:
            on_environment(env)
        simulator = Simulator(
            env,
            start,
            end,
            progress=progress,
            replan_every_loan=replan_every_loan,
            report=report,
        )
        stats = simulator.run(book)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as handle:
            simulator.write_messages(handle, keyed=keyed_output)
    stats.peak_memory_bytes = stats.largest_memory_bytes = peak_memory()
    return SimulationResult(stats, out)


@contextlib.contextmanager
def _long_lived_heap() -> Iterator[None]:
    """Garbage collection for a run that holds a large heap for its whole length.

    What exists when the run starts (the book, the templates, the modules) lives as long as
    it does, and each full collection would walk all of it again; and the run makes and drops
    objects by the million, so collecting young objects every 700 allocations is mostly
    wasted. A tenth of a simulation's time went to collections without this.
    """
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


__all__ = [
    "ProgressBar",
    "SimulationEnvironment",
    "SimulationError",
    "SimulationResult",
    "SimulationStats",
    "Simulator",
    "VirtualClock",
    "compiled_renderer",
    "environment",
    "peak_memory",
    "simulate",
]
