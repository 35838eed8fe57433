"""What `GET /metrics` reads of the database: messages by status and channel, inbox events
by type and outcome, and how many messages are due.

On PostgreSQL the first two are kept by triggers (migration 0008) in `message_counts` and
`event_counts`: rows of differences appended in the same transaction as each change, so a
read is a sum over a few rows whatever the size of the log, and as exact as a GROUP BY of the
tables at the read's snapshot. `fold` replaces the rows of each pair by their sum (run by
every scrape and by the clock each minute, so the tables stay small without a scrape): one
statement that deletes the rows its snapshot sees and inserts their sum, so a concurrent
fold (it waits for the rows, then skips those already deleted) or a concurrent change never
makes a count wrong. On SQLite (the embedded default: one process, a small book) the counts
are a GROUP BY of the tables themselves.

The due count reads the index of (status, send_at): due rows are released every second, so
the range is short unless the clock or the workers are behind, which is what it tells.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final, cast

from sqlalchemy import Insert, Select, Table, and_, bindparam, delete, func, insert, select, text
from sqlalchemy.orm import Session

from outreach.domain import Status
from outreach.store import models as m

MESSAGES: Final = cast(Table, m.Message.__table__)
INBOX: Final = cast(Table, m.ReceivedEvent.__table__)
DUE_STATUSES: Final = (Status.SCHEDULED.value, Status.DEFERRED.value)
# pg_try_advisory_xact_lock key of a fold: one at a time, the others skip theirs
FOLD_LOCK: Final = 0x6F757472_636E7473  # "outr" "cnts"


def _summed(counts: Table, first: str, second: str) -> Select[Any]:
    pair = (counts.c[first], counts.c[second])
    return select(*pair, func.sum(counts.c.n)).group_by(*pair)


def _grouped(table: Table, first: str, second: str) -> Select[Any]:
    pair = (table.c[first], table.c[second])
    return select(*pair, func.count()).group_by(*pair)


def _fold(counts: Table, first: str, second: str) -> Insert:
    """Replace the rows of `counts` by one per pair, their sum; a pair whose sum is 0 keeps
    its row (its series stays, at 0, rather than vanishing)."""
    gone = delete(counts).returning(counts.c[first], counts.c[second], counts.c.n).cte("gone")
    pair = (gone.c[first], gone.c[second])
    summed = select(*pair, func.sum(gone.c.n)).group_by(*pair)
    return insert(counts).from_select([first, second, "n"], summed).add_cte(gone, nest_here=True)


_MESSAGE_SUM = _summed(m.MESSAGE_COUNTS, "status", "channel")
_EVENT_SUM = _summed(m.EVENT_COUNTS, "type", "outcome")
_MESSAGE_GROUPS = _grouped(MESSAGES, "status", "channel")
_EVENT_GROUPS = _grouped(INBOX, "type", "outcome")
_DUE = select(func.count()).where(
    and_(MESSAGES.c.status.in_(DUE_STATUSES), MESSAGES.c.send_at <= bindparam("now"))
)
_FOLDS: Final = (
    _fold(m.MESSAGE_COUNTS, "status", "channel"),
    _fold(m.EVENT_COUNTS, "type", "outcome"),
)
_TRY_FOLD_LOCK: Final = text("SELECT pg_try_advisory_xact_lock(:key)")


def _kept_by_triggers(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def message_counts(session: Session) -> dict[tuple[str, str], int]:
    """Messages now in each (status, channel)."""
    query = _MESSAGE_SUM if _kept_by_triggers(session) else _MESSAGE_GROUPS
    return {(status, channel): int(n) for status, channel, n in session.execute(query)}


def event_counts(session: Session) -> dict[tuple[str, str], int]:
    """Inbox events of each (type, outcome)."""
    query = _EVENT_SUM if _kept_by_triggers(session) else _EVENT_GROUPS
    return {(kind, outcome): int(n) for kind, outcome, n in session.execute(query)}


def messages_due(session: Session, now: dt.datetime) -> int:
    """Messages scheduled or deferred whose send_at has passed."""
    return int(session.execute(_DUE, {"now": now}).scalar_one())


def fold(session: Session) -> bool:
    """Fold the counts' rows into one per pair (PostgreSQL; in the caller's transaction);
    False when another fold holds the lock (or on SQLite): nothing to do here."""
    if not _kept_by_triggers(session):
        return False
    if not session.execute(_TRY_FOLD_LOCK, {"key": FOLD_LOCK}).scalar_one():
        return False
    for statement in _FOLDS:
        session.execute(statement)
    return True
