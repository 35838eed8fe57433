"""The overview page's figures (SPEC §8 `/ui/`): messages per day by channel and status,
what was withheld and what is deferred, by reason, replies waiting for a person, what is due
in the next hour, and the health of the queues the database can tell.

Every figure is counted from the log itself, in the transaction of the session given, so it
is always what the log says at that moment (no summary table to drift from it). They stay
fast on a large log by reading indexes only (migration 0007): the messages of a day are a
range of `ix_messages_send_at`, which carries their channel, status and reason; the deferred
ones a range of `ix_messages_status_id`, which carries their reason.

A day is a calendar day in the zone asked for (UTC unless told), and a message belongs to
the day of its `send_at`: the instant it was due (and, once handed over, the instant it was
handed over within the dispatch delay), so that each bar of a day is exactly what the log
shows with `since` and `until` at that day's bounds and the same channel and status.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, Table, and_, func, literal, select, union_all
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
    whose status is in `FINAL_STATUSES`, plus `sent`); `withheld` the suppressed and cancelled
    ones of those days by reason, most first. `start` and `end` are the instants bounding
    the days (the first day's midnight, the midnight after today): the log filtered with
    `since=start`, `until=end` shows exactly these messages."""

    zone: str
    days: tuple[dt.date, ...]
    start: dt.datetime
    end: dt.datetime
    per_day: tuple[DayCount, ...]
    withheld: tuple[ReasonCount, ...]

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


def activity(
    session: Session, now: dt.datetime, *, days: int = 30, zone: ZoneInfo = UTC
) -> Activity:
    """Messages per day by channel and status over the `days` days up to today in `zone`,
    and the suppressed and cancelled ones of those days by reason.

    One statement: a range of `ix_messages_send_at` per day (its channel, status and reason
    carried in the index), grouped."""
    today = now.astimezone(zone).date()
    calendar = tuple(today - dt.timedelta(days=n) for n in range(days - 1, -1, -1))
    # the days as rows (a union: SQLite names no columns of a VALUES list)
    spans = union_all(
        *(
            select(
                literal(number, Integer()).label("number"),
                literal(_midnight(day, zone), UTCDateTime()).label("start_at"),
                literal(_midnight(day + dt.timedelta(days=1), zone), UTCDateTime()).label("end_at"),
            )
            for number, day in enumerate(calendar)
        )
    ).subquery("days")
    # grouped by reason too (a few dozen pairs of status and reason occur), the reasons of
    # the withheld kept
    query = (
        select(
            spans.c.number,
            MESSAGES.c.channel,
            MESSAGES.c.status,
            MESSAGES.c.reason,
            func.count().label("count"),
        )
        .select_from(spans)
        .join(
            MESSAGES,
            and_(MESSAGES.c.send_at >= spans.c.start_at, MESSAGES.c.send_at < spans.c.end_at),
        )
        .group_by(spans.c.number, MESSAGES.c.channel, MESSAGES.c.status, MESSAGES.c.reason)
    )
    per_day: dict[tuple[int, str, str], int] = {}
    withheld: dict[tuple[str, str | None], int] = {}
    for number, channel, status, reason, count in session.execute(query):
        key = (number, channel, status)
        per_day[key] = per_day.get(key, 0) + count
        if status in WITHHELD_STATUSES:
            withheld[(status, reason)] = withheld.get((status, reason), 0) + count
    return Activity(
        zone=zone.key,
        days=calendar,
        start=_midnight(calendar[0], zone),
        end=_midnight(today + dt.timedelta(days=1), zone),
        per_day=tuple(
            DayCount(calendar[number], channel, status, count)
            for (number, channel, status), count in sorted(per_day.items())
        ),
        withheld=_by_count(withheld),
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
    oldest_due = session.execute(
        select(func.min(MESSAGES.c.send_at)).where(
            MESSAGES.c.status.in_(DUE_STATUSES), MESSAGES.c.send_at <= now
        )
    ).scalar_one()
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
    "overview",
    "queue_health",
    "replies_waiting",
]
