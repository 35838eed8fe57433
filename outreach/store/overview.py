"""The overview page's figures (SPEC §8 `/ui/`): messages per day by channel and status,
what was withheld and what is deferred, by reason, replies waiting for a person, what is due
in the next hour, and the health of the queues the database can tell.

Every figure is what the log holds at the session's snapshot. They stay fast on a large log
(migration 0007): the messages per day and the withheld by reason are summed, on PostgreSQL,
from `message_day_counts` and `message_withheld_counts`, which triggers keep in the
transaction of every change of a message (rows of differences, only appended;
`fold_day_counts`, run by the clock each minute, sums them), and counted from the log on
SQLite; the deferred are a range of `ix_messages_status_id`, which carries their reason; the
rest reads short ranges of other indexes.

A day is a calendar day in the zone asked for (UTC unless told), and a message belongs to
the day of its `send_at`: the instant it was due (and, once handed over, the instant it was
handed over within the dispatch delay), so that each bar of a day is exactly what the log
shows with `since` and `until` at that day's bounds and the same channel and status.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Integer,
    Table,
    TextClause,
    and_,
    func,
    literal,
    select,
    text,
    union_all,
)
from sqlalchemy.orm import Session

from outreach.domain import FINAL_STATUSES, Status
from outreach.store import models as m
from outreach.store.inbox import DEAD_LETTER_OUTCOME, FAILED_OUTCOME, PENDING_OUTCOME
from outreach.store.types import UTCDateTime

MESSAGES = cast(Table, m.Message.__table__)
REPLIES = cast(Table, m.InboundReply.__table__)
INBOX = cast(Table, m.ReceivedEvent.__table__)
UTC = ZoneInfo("UTC")
# held back for good, by a rule (suppressed) or because it was no longer wanted (cancelled)
WITHHELD_STATUSES = (Status.SUPPRESSED.value, Status.CANCELLED.value)
DUE_STATUSES = (Status.SCHEDULED.value, Status.DEFERRED.value)
DAY_COUNTS = m.MESSAGE_DAY_COUNTS
WITHHELD_COUNTS = m.MESSAGE_WITHHELD_COUNTS
# what `message_day_counts` counts in: half hours from this instant (migration 0007's
# date_bin); every zone's midnight is one, but Nepal's and the Chatham Islands'
HALF_HOUR = dt.timedelta(minutes=30)
_HALF_HOURS_FROM = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
# pg_try_advisory_xact_lock key of a fold of `message_day_counts`: one at a time
FOLD_LOCK = 0x6F757472_64617973  # "outr" "days"


@dataclass(frozen=True)
class DayCount:
    """Messages due on `day` (in the zone asked for) sent by `channel`, now in `status`."""

    day: dt.date
    channel: str
    status: str
    count: int


@dataclass(frozen=True)
class ReasonCount:
    """Messages in `status` whose latest step gave `reason` (None: no reason recorded)."""

    status: str
    reason: str | None
    count: int


@dataclass(frozen=True)
class Activity:
    """The log's days from `days[0]` to `days[-1]` (today, in `zone`): `per_day` holds every
    (day, channel, status) with at least one message (a chart of final statuses keeps those
    whose status is in `FINAL_STATUSES`, plus `sent`). `start` and `end` are the instants
    bounding the days (the first day's midnight, the midnight after today): the log filtered
    with `since=start`, `until=end` shows exactly these messages. `withheld`: the suppressed
    and cancelled messages by reason, most first, of as many days in UTC (from
    `withheld_start` to `withheld_end`, the same days where `zone` is UTC)."""

    zone: str
    days: tuple[dt.date, ...]
    start: dt.datetime
    end: dt.datetime
    per_day: tuple[DayCount, ...]
    withheld: tuple[ReasonCount, ...]
    withheld_start: dt.datetime
    withheld_end: dt.datetime

    def bounds(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """The instants (UTC) a day runs from and to: the log's `since` and `until`."""
        zone = ZoneInfo(self.zone)
        return _midnight(day, zone), _midnight(day + dt.timedelta(days=1), zone)

    def totals(self) -> dict[dt.date, int]:
        """Messages per day, every channel and status together."""
        found = dict.fromkeys(self.days, 0)
        for entry in self.per_day:
            found[entry.day] += entry.count
        return found


@dataclass(frozen=True)
class WaitingReply:
    """A borrower's reply no keyword answers: a person should read it."""

    id: int
    received_at: dt.datetime
    borrower_id: str | None
    channel: str
    sender: str
    body: str


@dataclass(frozen=True)
class RepliesWaiting:
    """Replies flagged for a person received since `since` (there is no mark for a reply
    read: these are the flagged ones of the period), the latest first; and the messages the
    log flags for a person (`needs_human=true` in the log: answered by such a reply, text
    rejected at dispatch, or a hand-over whose outcome nobody knows), of any age."""

    since: dt.datetime
    count: int
    latest: tuple[WaitingReply, ...]
    messages_flagged: int


@dataclass(frozen=True)
class DueSoon:
    """Scheduled and deferred messages by channel: `overdue` were due by `now` and not yet
    claimed by the clock, `next_hour` fall due after `now` and by `until`."""

    now: dt.datetime
    until: dt.datetime
    overdue: Mapping[str, int] = field(default_factory=dict)
    next_hour: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.overdue.values()) + sum(self.next_hour.values())


@dataclass(frozen=True)
class QueueHealth:
    """What the database tells of the queues: messages claimed for the workers (`queued`)
    and being handed over (`sending`), with the oldest of each (its last move); the oldest
    due message not yet claimed (the clock's lag); and the inbox's events not applied yet:
    pending, failed (to be tried again) and dead letters (given up, for ops)."""

    queued: int
    oldest_queued_at: dt.datetime | None
    sending: int
    oldest_sending_at: dt.datetime | None
    oldest_due_at: dt.datetime | None
    events_pending: int
    events_failed: int
    dead_letters: int
    oldest_pending_event_at: dt.datetime | None


@dataclass(frozen=True)
class Overview:
    """Every figure of the overview page, read in one session at `now`."""

    now: dt.datetime
    activity: Activity
    deferred: tuple[ReasonCount, ...]
    replies: RepliesWaiting
    due: DueSoon
    queues: QueueHealth


def _midnight(day: dt.date, zone: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=zone).astimezone(dt.UTC)


def _kept_by_triggers(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _days(bounds: list[dt.datetime]) -> Any:
    """The days between `bounds` as rows (number, start_at, end_at): a union, as SQLite
    names no columns of a VALUES list."""
    return union_all(
        *(
            select(
                literal(number, Integer()).label("number"),
                literal(bounds[number], UTCDateTime()).label("start_at"),
                literal(bounds[number + 1], UTCDateTime()).label("end_at"),
            )
            for number in range(len(bounds) - 1)
        )
    ).subquery("days")


def _per_day(
    session: Session, bounds: list[dt.datetime], *, kept: bool
) -> Iterable[tuple[int, str, str, int]]:
    """(day number, channel, status, count) of the days between `bounds`: summed from
    `message_day_counts` (`kept`: a range of half hours a day) or counted from the log (a
    read of the messages of 30 days: for SQLite's small books)."""
    days = _days(bounds)
    source = DAY_COUNTS if kept else MESSAGES
    moment = DAY_COUNTS.c.bucket if kept else MESSAGES.c.send_at
    count: ColumnElement[Any] = func.sum(DAY_COUNTS.c.n) if kept else func.count()
    query = (
        select(days.c.number, source.c.channel, source.c.status, count)
        .select_from(days)
        .join(source, and_(moment >= days.c.start_at, moment < days.c.end_at))
        .group_by(days.c.number, source.c.channel, source.c.status)
    )
    return cast(Iterable[tuple[int, str, str, int]], session.execute(query))


def _withheld(
    session: Session, first: dt.date, last: dt.date, *, kept: bool
) -> Iterable[tuple[str, str | None, int]]:
    """(status, reason, count) of the suppressed and cancelled messages of the UTC days from
    `first` to `last`: summed from `message_withheld_counts`, or counted from the log."""
    if kept:
        table = WITHHELD_COUNTS
        query = (
            select(table.c.status, table.c.reason, func.sum(table.c.n))
            .where(table.c.day >= first, table.c.day <= last)
            .group_by(table.c.status, table.c.reason)
        )
    else:
        start, end = _midnight(first, UTC), _midnight(last + dt.timedelta(days=1), UTC)
        query = (
            select(MESSAGES.c.status, MESSAGES.c.reason, func.count())
            .where(
                MESSAGES.c.status.in_(WITHHELD_STATUSES),
                MESSAGES.c.send_at >= start,
                MESSAGES.c.send_at < end,
            )
            .group_by(MESSAGES.c.status, MESSAGES.c.reason)
        )
    return cast(Iterable[tuple[str, str | None, int]], session.execute(query))


def activity(
    session: Session, now: dt.datetime, *, days: int = 30, zone: ZoneInfo = UTC
) -> Activity:
    """Messages per day by channel and status over the `days` days up to today in `zone`,
    and the suppressed and cancelled ones of as many UTC days by reason.

    On PostgreSQL summed from `message_day_counts` and `message_withheld_counts` (kept by
    triggers in the transaction of every change, so exactly what the log holds): a few rows
    a half hour or a day, whatever the size of the log. On SQLite, or for days that do not
    start on a half hour, counted from the log."""
    today = now.astimezone(zone).date()
    calendar = tuple(today - dt.timedelta(days=n) for n in range(days - 1, -1, -1))
    bounds = [_midnight(day, zone) for day in calendar]
    bounds.append(_midnight(today + dt.timedelta(days=1), zone))
    kept = _kept_by_triggers(session)
    on_half_hours = all(
        (moment - _HALF_HOURS_FROM) % HALF_HOUR == dt.timedelta(0) for moment in bounds
    )
    per_day: dict[tuple[int, str, str], int] = {}
    for number, channel, status, count in _per_day(session, bounds, kept=kept and on_half_hours):
        if count:  # a key every message of which has moved on sums to 0
            per_day[(number, channel, status)] = int(count)
    last_utc = now.astimezone(dt.UTC).date()
    first_utc = last_utc - dt.timedelta(days=days - 1)
    withheld = {
        (status, reason): int(count)
        for status, reason, count in _withheld(session, first_utc, last_utc, kept=kept)
        if count
    }
    return Activity(
        zone=zone.key,
        days=calendar,
        start=bounds[0],
        end=bounds[-1],
        per_day=tuple(
            DayCount(calendar[number], channel, status, count)
            for (number, channel, status), count in sorted(per_day.items())
        ),
        withheld=_by_count(withheld),
        withheld_start=_midnight(first_utc, UTC),
        withheld_end=_midnight(last_utc + dt.timedelta(days=1), UTC),
    )


def _by_count(counts: Mapping[tuple[str, str | None], int]) -> tuple[ReasonCount, ...]:
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0][0], item[0][1] or ""))
    return tuple(ReasonCount(status, reason, count) for (status, reason), count in ordered)


_DEFERRED = (
    select(MESSAGES.c.reason, func.count())
    .where(MESSAGES.c.status == Status.DEFERRED.value)
    .group_by(MESSAGES.c.reason)
)


def deferred_by_reason(session: Session) -> tuple[ReasonCount, ...]:
    """The messages deferred now, by why they wait (quiet hours, caps, a pause, …), most
    first: a range of `ix_messages_status_id`, which carries the reason."""
    counts = {
        (Status.DEFERRED.value, reason): count for reason, count in session.execute(_DEFERRED)
    }
    return _by_count(counts)


def replies_waiting(
    session: Session, now: dt.datetime, *, days: int = 30, latest: int = 10
) -> RepliesWaiting:
    """Replies flagged for a person received in the last `days` days (their number and the
    `latest` of them) and the messages the log flags for a person."""
    since = now - dt.timedelta(days=days)
    flagged = and_(REPLIES.c.needs_human.is_(True), REPLIES.c.received_at >= since)
    count = session.execute(select(func.count()).where(flagged)).scalar_one()
    rows = session.execute(
        select(
            REPLIES.c.id,
            REPLIES.c.received_at,
            REPLIES.c.borrower_id,
            REPLIES.c.channel,
            REPLIES.c.sender,
            REPLIES.c.body,
        )
        .where(flagged)
        .order_by(REPLIES.c.received_at.desc(), REPLIES.c.id.desc())
        .limit(latest)
    )
    messages_flagged = session.execute(
        select(func.count()).where(MESSAGES.c.needs_human.is_(True))
    ).scalar_one()
    return RepliesWaiting(
        since=since,
        count=int(count),
        latest=tuple(WaitingReply(*row) for row in rows),
        messages_flagged=int(messages_flagged),
    )


def due_soon(session: Session, now: dt.datetime, *, within: dt.timedelta | None = None) -> DueSoon:
    """Scheduled and deferred messages by channel: those due by `now` the clock has not
    claimed yet, and those falling due in the next hour (or `within`)."""
    until = now + (within if within is not None else dt.timedelta(hours=1))
    overdue = MESSAGES.c.send_at <= now
    query = (
        select(
            MESSAGES.c.channel,
            func.count().filter(overdue),
            func.count().filter(MESSAGES.c.send_at > now),
        )
        .where(MESSAGES.c.status.in_(DUE_STATUSES), MESSAGES.c.send_at <= until)
        .group_by(MESSAGES.c.channel)
    )
    found: dict[bool, dict[str, int]] = {True: {}, False: {}}
    for channel, late, coming in session.execute(query):
        if late:
            found[True][channel] = int(late)
        if coming:
            found[False][channel] = int(coming)
    return DueSoon(now=now, until=until, overdue=found[True], next_hour=found[False])


def _count_and_oldest(session: Session, status: Status, column_name: str) -> tuple[int, Any]:
    moment = MESSAGES.c[column_name]
    count, oldest = session.execute(
        select(func.count(), func.min(moment)).where(MESSAGES.c.status == status.value)
    ).one()
    return int(count), oldest


def queue_health(session: Session, now: dt.datetime) -> QueueHealth:
    """Queued and sending messages (count, oldest move), the oldest due message not yet
    claimed, and the inbox's events not applied (pending, failed, dead letters)."""
    queued, oldest_queued = _count_and_oldest(session, Status.QUEUED, "updated_at")
    sending, oldest_sending = _count_and_oldest(session, Status.SENDING, "updated_at")
    # a status at a time: each the first entry of its range of (status, send_at)
    due = [
        session.execute(
            select(func.min(MESSAGES.c.send_at)).where(
                MESSAGES.c.status == status, MESSAGES.c.send_at <= now
            )
        ).scalar_one()
        for status in DUE_STATUSES
    ]
    found_due = [aware for moment in due if (aware := _aware(moment)) is not None]
    oldest_due = min(found_due) if found_due else None
    inbox: dict[str, tuple[int, Any]] = {}
    for outcome, count, oldest in session.execute(
        select(INBOX.c.outcome, func.count(), func.min(INBOX.c.received_at))
        .where(INBOX.c.outcome.in_((PENDING_OUTCOME, FAILED_OUTCOME, DEAD_LETTER_OUTCOME)))
        .group_by(INBOX.c.outcome)
    ):
        inbox[outcome] = (int(count), oldest)
    pending = inbox.get(PENDING_OUTCOME, (0, None))
    return QueueHealth(
        queued=queued,
        oldest_queued_at=_aware(oldest_queued),
        sending=sending,
        oldest_sending_at=_aware(oldest_sending),
        oldest_due_at=_aware(oldest_due),
        events_pending=pending[0],
        events_failed=inbox.get(FAILED_OUTCOME, (0, None))[0],
        dead_letters=inbox.get(DEAD_LETTER_OUTCOME, (0, None))[0],
        oldest_pending_event_at=_aware(pending[1]),
    )


def _aware(value: Any) -> dt.datetime | None:
    """An aggregate's instant: min() hands back what the driver reads, which on SQLite is
    the stored text and on PostgreSQL an aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _fold(table: str, key: tuple[str, ...]) -> TextClause:
    """The statement that sums a counts table's differences into one folded row a key:
    the differences its snapshot sees, and the folded rows of their keys, deleted; their
    sums inserted (in key order, so that a key's rows of a day lie together)."""
    names = ", ".join(key)
    same = " AND ".join(f"summed.{name} IS NOT DISTINCT FROM keys.{name}" for name in key)
    first = key[0]
    # names from the tables above, never input
    return text(
        f"""
WITH fresh AS (
  DELETE FROM {table} WHERE NOT folded RETURNING {names}, n
), keys AS (
  SELECT DISTINCT {names} FROM fresh
), kept AS (
  DELETE FROM {table} AS summed USING keys
  WHERE summed.folded AND summed.{first} = keys.{first} AND {same}
  RETURNING {", ".join(f"summed.{name}" for name in key)}, summed.n
)
INSERT INTO {table} ({names}, n, folded)
SELECT {names}, sum(n), true
FROM (SELECT * FROM fresh UNION ALL SELECT * FROM kept) AS rows_of_keys
GROUP BY {names}
HAVING sum(n) <> 0
ORDER BY {names}
"""  # noqa: S608
    )


_FOLDS = (
    _fold("message_day_counts", ("bucket", "channel", "status")),
    _fold("message_withheld_counts", ("day", "status", "reason")),
)
_TRY_FOLD_LOCK = text("SELECT pg_try_advisory_xact_lock(:key)")


def fold_day_counts(session: Session) -> bool:
    """Sum the differences appended to the overview's counts since the last fold into their
    keys' one folded row each (PostgreSQL; in the caller's transaction, to commit). One
    statement: the rows its snapshot sees are deleted and their sums inserted, so a reader
    sees the rows before or after it, the same sums; a change committed meanwhile stays a
    difference for the next fold. False where another fold holds the lock, or on SQLite."""
    if not _kept_by_triggers(session):
        return False
    if not session.execute(_TRY_FOLD_LOCK, {"key": FOLD_LOCK}).scalar_one():
        return False
    for statement in _FOLDS:
        session.execute(statement)
    return True


def overview(session: Session, now: dt.datetime, *, zone: ZoneInfo = UTC) -> Overview:
    """Every figure of the overview page, in one session (one snapshot where the session's
    transaction gives one)."""
    return Overview(
        now=now,
        activity=activity(session, now, zone=zone),
        deferred=deferred_by_reason(session),
        replies=replies_waiting(session, now),
        due=due_soon(session, now),
        queues=queue_health(session, now),
    )


# the overview's parts by name, each read on its own (the benchmark times them one by one)
PARTS: dict[str, Callable[[Session, dt.datetime], object]] = {
    "activity (30 days)": activity,
    "deferred by reason": lambda session, _now: deferred_by_reason(session),
    "replies waiting": replies_waiting,
    "due soon": due_soon,
    "queue health": queue_health,
}

__all__ = [
    "FINAL_STATUSES",
    "Activity",
    "DayCount",
    "DueSoon",
    "Overview",
    "QueueHealth",
    "ReasonCount",
    "RepliesWaiting",
    "WaitingReply",
    "activity",
    "deferred_by_reason",
    "due_soon",
    "fold_day_counts",
    "overview",
    "queue_health",
    "replies_waiting",
]
