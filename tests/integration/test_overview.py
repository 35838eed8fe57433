"""The overview page's figures (store/overview.py) on both stores: what a supervisor reads
must be what the log holds."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import random
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from outreach.service.log import MessageFilter
from outreach.store import message_log, overview
from outreach.store.models import (
    MESSAGE_DAY_COUNTS,
    MESSAGE_WITHHELD_COUNTS,
    InboundReply,
    Message,
    ReceivedEvent,
)

NOW = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC)
_ids = itertools.count(1)


def a_message(send_at: dt.datetime, **overrides: object) -> Message:
    number = next(_ids)
    fields: dict[str, object] = {
        # ids sort as the service's do: by creation
        "id": f"msg_{number:08d}",
        "idempotency_key": f"k{number}",
        "purpose": "dunning",
        "borrower_id": "b1",
        "loan_id": "l1",
        "stage": "early",
        "channel": "sms",
        "template": "early_first_notice",
        "locale": "en-US",
        "send_at": send_at,
        "status": "delivered",
        "reason": "provider_status",
        "refs": {},
        "created_at": send_at,
        "updated_at": send_at,
    }
    fields.update(overrides)
    return Message(**fields)


def store(engine: Engine, *rows: object) -> None:
    with Session(engine, expire_on_commit=False) as session:
        session.add_all(rows)
        session.commit()


def test_messages_per_day_are_the_messages_of_each_day(engine: Engine) -> None:
    rnd = random.Random(7)
    expected: collections.Counter[tuple[dt.date, str, str]] = collections.Counter()
    rows = []
    for days_ago in range(30):
        day = NOW.date() - dt.timedelta(days=days_ago)
        for _ in range(rnd.randrange(0, 6)):
            channel = rnd.choice(["sms", "email"])
            status = rnd.choice(["delivered", "sent", "failed", "suppressed", "cancelled"])
            minute = rnd.randrange(0, 24 * 60)
            at = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC) + dt.timedelta(minutes=minute)
            rows.append(a_message(at, channel=channel, status=status))
            expected[(day, channel, status)] += 1
    # the first instant of the window counts, the day before it and tomorrow do not
    first_day = NOW.date() - dt.timedelta(days=29)
    start = dt.datetime.combine(first_day, dt.time(0), tzinfo=dt.UTC)
    rows.append(a_message(start, status="sent"))
    expected[(first_day, "sms", "sent")] += 1
    rows.append(a_message(start - dt.timedelta(microseconds=1)))
    rows.append(a_message(dt.datetime(2026, 11, 24, 0, 0, tzinfo=dt.UTC), status="scheduled"))
    store(engine, *rows)

    with Session(engine) as session:
        found = overview.activity(session, NOW)

    assert found.days[0] == first_day and found.days[-1] == NOW.date() and len(found.days) == 30
    assert {(e.day, e.channel, e.status): e.count for e in found.per_day} == dict(expected)
    per_day = collections.Counter({day: 0 for day in found.days})
    for (day, _, _), count in expected.items():
        per_day[day] += count
    assert found.totals() == dict(per_day)
    assert (found.start, found.end) == (start, dt.datetime(2026, 11, 24, tzinfo=dt.UTC))


def test_a_day_is_a_day_in_the_zone_asked_for(engine: Engine) -> None:
    # 00:30 in Shanghai on the 23rd is 16:30 UTC on the 22nd
    store(
        engine,
        a_message(dt.datetime(2026, 11, 22, 16, 30, tzinfo=dt.UTC)),
        a_message(dt.datetime(2026, 11, 22, 15, 59, tzinfo=dt.UTC)),
    )
    with Session(engine) as session:
        shanghai = overview.activity(session, NOW, zone=ZoneInfo("Asia/Shanghai"))
        utc = overview.activity(session, NOW)
    assert {(e.day, e.count) for e in shanghai.per_day} == {
        (dt.date(2026, 11, 23), 1),
        (dt.date(2026, 11, 22), 1),
    }
    assert {(e.day, e.count) for e in utc.per_day} == {(dt.date(2026, 11, 22), 2)}
    assert shanghai.bounds(dt.date(2026, 11, 23)) == (
        dt.datetime(2026, 11, 22, 16, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 23, 16, 0, tzinfo=dt.UTC),
    )


def test_a_days_bar_is_what_the_log_shows_for_that_day(engine: Engine) -> None:
    """Following a bar to the log (since and until at the day's bounds, its channel and
    status) lists exactly the messages the bar counts."""
    rnd = random.Random(3)
    zone = ZoneInfo("America/New_York")  # a day of 25 hours in the window (DST ended 1 Nov)
    rows = [
        a_message(
            NOW - dt.timedelta(minutes=rnd.randrange(0, 31 * 24 * 60)),
            channel=rnd.choice(["sms", "email"]),
            status=rnd.choice(["delivered", "undelivered", "suppressed"]),
        )
        for _ in range(400)
    ]
    store(engine, *rows)
    with Session(engine) as session:
        found = overview.activity(session, NOW, zone=zone)
        assert sum(e.count for e in found.per_day) > 300
        for entry in found.per_day:
            since, until = found.bounds(entry.day)
            criteria = MessageFilter(
                since=since, until=until, channel=entry.channel, status=entry.status
            )
            assert len(message_log.page(session, criteria, 1000, None)) == entry.count


def test_what_was_withheld_and_what_waits_by_reason(engine: Engine) -> None:
    day = NOW - dt.timedelta(days=2)
    store(
        engine,
        *(a_message(day, status="suppressed", reason="opted_out") for _ in range(3)),
        a_message(day, status="suppressed", reason="frequency_cap"),
        *(a_message(day, status="cancelled", reason="loan_closed") for _ in range(2)),
        # withheld before the window: not in it
        a_message(NOW - dt.timedelta(days=40), status="suppressed", reason="frequency_cap"),
        # deferred now, whenever they are due
        *(
            a_message(NOW + dt.timedelta(hours=9), status="deferred", reason="quiet_hours")
            for _ in range(4)
        ),
        a_message(NOW + dt.timedelta(days=3), status="deferred", reason="campaign_paused"),
        a_message(NOW - dt.timedelta(days=45), status="deferred", reason="frequency_cap"),
        a_message(NOW + dt.timedelta(hours=1), status="scheduled", reason="planned"),
    )
    with Session(engine) as session:
        found = overview.activity(session, NOW)
        deferred = overview.deferred_by_reason(session)
    assert [(w.status, w.reason, w.count) for w in found.withheld] == [
        ("suppressed", "opted_out", 3),
        ("cancelled", "loan_closed", 2),
        ("suppressed", "frequency_cap", 1),
    ]
    assert [(d.reason, d.count) for d in deferred] == [
        ("quiet_hours", 4),
        ("campaign_paused", 1),
        ("frequency_cap", 1),
    ]


def test_replies_waiting_for_a_person(engine: Engine) -> None:
    def reply(days_ago: float, needs_human: bool, body: str) -> InboundReply:
        return InboundReply(
            provider_id=f"SM{next(_ids)}",
            channel="sms",
            sender="+15005550006",
            body=body,
            borrower_id="b1",
            classification="other" if needs_human else "opt_out",
            needs_human=needs_human,
            received_at=NOW - dt.timedelta(days=days_ago),
        )

    store(
        engine,
        reply(1, True, "I lost my job"),
        reply(0.1, True, "可以分期吗"),
        reply(3, True, "who is this"),
        reply(2, False, "STOP"),
        reply(31, True, "an old one"),
        a_message(NOW - dt.timedelta(days=1), reason="needs_human", needs_human=True),
        a_message(NOW - dt.timedelta(days=90), reason="needs_human", needs_human=True),
        a_message(NOW - dt.timedelta(days=1)),
    )
    with Session(engine) as session:
        found = overview.replies_waiting(session, NOW, latest=2)
    assert found.count == 3
    assert [r.body for r in found.latest] == ["可以分期吗", "I lost my job"]
    assert found.latest[0].received_at == NOW - dt.timedelta(days=0.1)
    assert found.messages_flagged == 2


def test_due_in_the_next_hour_and_the_queues(engine: Engine) -> None:
    store(
        engine,
        a_message(NOW - dt.timedelta(minutes=3), status="scheduled", reason="planned"),
        a_message(NOW, status="deferred", reason="quiet_hours", channel="email"),
        *(a_message(NOW + dt.timedelta(minutes=20), status="scheduled") for _ in range(2)),
        a_message(NOW + dt.timedelta(minutes=59), status="deferred", channel="email"),
        a_message(NOW + dt.timedelta(minutes=61), status="scheduled"),  # beyond the hour
        a_message(
            NOW - dt.timedelta(minutes=1),
            status="queued",
            reason="due",
            updated_at=NOW - dt.timedelta(seconds=50),
        ),
        a_message(
            NOW - dt.timedelta(minutes=2),
            status="queued",
            reason="due",
            updated_at=NOW - dt.timedelta(seconds=70),
        ),
        a_message(NOW - dt.timedelta(minutes=2), status="sending", reason=None, updated_at=NOW),
        *(
            ReceivedEvent(
                id=f"evt{n}",
                type="loan.updated",
                occurred_at=NOW,
                received_at=NOW - dt.timedelta(seconds=n),
                body={},
                outcome=outcome,
            )
            for n, outcome in enumerate(
                ["pending", "pending", "failed", "dead_letter", "applied", "ignored_stale"]
            )
        ),
    )
    with Session(engine) as session:
        due = overview.due_soon(session, NOW)
        queues = overview.queue_health(session, NOW)
    assert dict(due.overdue) == {"sms": 1, "email": 1}
    assert dict(due.next_hour) == {"sms": 2, "email": 1}
    assert due.total == 5
    assert (queues.queued, queues.oldest_queued_at) == (2, NOW - dt.timedelta(seconds=70))
    assert (queues.sending, queues.oldest_sending_at) == (1, NOW)
    assert queues.oldest_due_at == NOW - dt.timedelta(minutes=3)
    assert (queues.events_pending, queues.events_failed, queues.dead_letters) == (2, 1, 1)
    assert queues.oldest_pending_event_at == NOW - dt.timedelta(seconds=1)


def test_the_overview_of_an_empty_log(engine: Engine) -> None:
    with Session(engine) as session:
        found = overview.overview(session, NOW)
    assert found.activity.per_day == () and set(found.activity.totals().values()) == {0}
    assert found.deferred == () and found.replies.count == 0 and found.due.total == 0
    assert found.queues.queued == 0 and found.queues.oldest_due_at is None


def counted_in_python(engine: Engine) -> dict[tuple[dt.date, str, str], int]:
    """The log's messages of the 30 days up to NOW, counted one by one."""
    first = dt.datetime.combine(NOW.date() - dt.timedelta(days=29), dt.time(0), tzinfo=dt.UTC)
    end = dt.datetime.combine(NOW.date() + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)
    found: collections.Counter[tuple[dt.date, str, str]] = collections.Counter()
    with Session(engine) as session:
        for row in session.scalars(select(Message)):
            if first <= row.send_at < end:
                found[(row.send_at.date(), row.channel, row.status)] += 1
    return dict(found)


def test_the_days_follow_every_move_of_a_message(engine: Engine) -> None:
    """Status changes, deferrals to another day, set-based moves, deletions and folds: the
    chart says what the log holds after each."""
    rnd = random.Random(5)
    rows = [
        a_message(
            NOW - dt.timedelta(minutes=rnd.randrange(0, 29 * 24 * 60)),
            status=rnd.choice(["scheduled", "deferred", "queued"]),
            channel=rnd.choice(["sms", "email"]),
        )
        for _ in range(300)
    ]
    store(engine, *rows)
    ids = [row.id for row in rows]

    def chart() -> dict[tuple[dt.date, str, str], int]:
        with Session(engine) as session:
            found = overview.activity(session, NOW)
        withheld = {(w.status, w.reason): w.count for w in found.withheld}
        expected: collections.Counter[tuple[str, str | None]] = collections.Counter()
        with Session(engine) as session:
            for row in session.scalars(select(Message)):
                within = found.withheld_start <= row.send_at < found.withheld_end
                if row.status in ("suppressed", "cancelled") and within:
                    expected[(row.status, row.reason)] += 1
        assert withheld == dict(expected)
        return {(e.day, e.channel, e.status): e.count for e in found.per_day}

    def fold() -> None:
        with Session(engine) as session:
            overview.fold_day_counts(session)
            session.commit()

    assert chart() == counted_in_python(engine)
    with Session(engine) as session:
        # one by one, as dispatch and callbacks move them
        for message_id in rnd.sample(ids, 80):
            row = session.get_one(Message, message_id)
            row.status = rnd.choice(["sending", "sent", "delivered", "suppressed", "cancelled"])
            row.reason = {"suppressed": "opted_out", "cancelled": "loan_closed"}.get(
                row.status, row.reason
            )
        session.commit()
    assert chart() == counted_in_python(engine)
    fold()
    with Session(engine) as session:
        # deferred to another day; a set-based move (the clock's claim); a deletion
        for message_id in rnd.sample(ids, 40):
            row = session.get_one(Message, message_id)
            row.send_at = row.send_at + dt.timedelta(days=rnd.choice([-2, 1, 3]))
        session.execute(
            update(Message)
            .where(Message.status == "scheduled", Message.send_at < NOW - dt.timedelta(days=9))
            .values(status="queued", reason="due")
        )
        session.delete(session.get_one(Message, ids[0]))
        session.commit()
    assert chart() == counted_in_python(engine)
    fold()
    fold()
    assert chart() == counted_in_python(engine)
    if engine.dialect.name == "postgresql":
        with Session(engine) as session:
            for table, key in (
                (MESSAGE_DAY_COUNTS, ("bucket", "channel", "status")),
                (MESSAGE_WITHHELD_COUNTS, ("day", "status", "reason")),
            ):
                fresh = session.execute(
                    select(func.count()).where(table.c.folded.is_(False))
                ).scalar_one()
                columns = [table.c[name] for name in key]
                keys = session.execute(
                    select(func.count()).select_from(
                        select(*columns).group_by(*columns).having(func.count() > 1).subquery()
                    )
                ).scalar_one()
                assert (fresh, keys) == (0, 0)  # folded: one row a key


def test_a_day_in_a_zone_three_quarters_off_the_hour(engine: Engine) -> None:
    # Kathmandu is 5:45 ahead of UTC: its days start on a quarter hour, not on an hour
    store(engine, *(a_message(NOW - dt.timedelta(hours=h * 7)) for h in range(60)))
    with Session(engine) as session:
        kathmandu = overview.activity(session, NOW, zone=ZoneInfo("Asia/Kathmandu"))
    expected: collections.Counter[dt.date] = collections.Counter()
    for h in range(60):
        local = (NOW - dt.timedelta(hours=h * 7)).astimezone(ZoneInfo("Asia/Kathmandu"))
        if local.date() >= kathmandu.days[0]:
            expected[local.date()] += 1
    assert {d: n for d, n in kathmandu.totals().items() if n} == dict(expected)
