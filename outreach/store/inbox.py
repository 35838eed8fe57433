"""The inbox in the database: every accepted webhook event, stored once before the 202, with
what applying it came to (SPEC §4)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import Table, and_, bindparam, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from outreach.store import models as m
from outreach.store.bulk import insert_returning, update_rows
from outreach.store.db import InsertIgnoringDuplicates, Lockable
from outreach.store.keysets import keys_in

INBOX = cast(Table, m.ReceivedEvent.__table__)

# what applying an event usually ends in, stored with it when it is applied in the same commit
PROVISIONAL_OUTCOME = "applied"
# stored and answered 202, not applied yet (the web process applies it moments later)
PENDING_OUTCOME = "pending"
FAILED_OUTCOME = "failed"
DEAD_LETTER_OUTCOME = "dead_letter"
# not applied (yet): what the gate holds messages for, and what applying may still change
UNAPPLIED_OUTCOMES = (PENDING_OUTCOME, FAILED_OUTCOME, DEAD_LETTER_OUTCOME)


class InboxEntry(Protocol):
    """What the inbox stores of one event (a parsed `service.parse.Event`)."""

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def occurred_at(self) -> dt.datetime: ...
    @property
    def raw(self) -> dict[str, Any]: ...
    @property
    def borrower_id(self) -> str | None: ...
    @property
    def loan_id(self) -> str | None: ...


_NEW_EVENTS = InsertIgnoringDuplicates(
    INBOX,
    ("id", "type", "occurred_at", "received_at", "body", "borrower_id", "loan_id", "outcome"),
    key=("id",),
    returning=("id",),
)


def store_events(
    session: Session, events: Sequence[InboxEntry], now: dt.datetime, outcome: str
) -> set[str]:
    """Insert each event once, with `outcome`; returns the ids that were not stored before."""
    if not events:
        return set()
    rows = [
        {
            "id": event.id,
            "type": event.type,
            "occurred_at": event.occurred_at,
            "received_at": now,
            "body": event.raw,
            "borrower_id": event.borrower_id,
            "loan_id": event.loan_id,
            "outcome": outcome,
        }
        # in id order, so two transactions inserting the same ids wait for each other in turn
        for event in sorted(events, key=lambda event: event.id)
    ]
    return insert_returning(
        session, INBOX, rows, statement=_NEW_EVENTS.of(session), conflict="id", returning="id"
    )


def record_outcomes(session: Session, outcomes: Sequence[dict[str, Any]]) -> None:
    """Set what applying came to on these rows (`id` and the columns to set, the same in each)."""
    update_rows(session, INBOX, "id", outcomes)


_UNAPPLIED_OF = Lockable(
    select(INBOX.c.id)
    .where(keys_in(INBOX.c.id, "ids"), INBOX.c.outcome.in_(UNAPPLIED_OUTCOMES))
    .order_by(INBOX.c.id)
)


def unapplied_of(session: Session, ids: Sequence[str]) -> set[str]:
    """Which of these events are still to be applied (pending, failed or dead-lettered
    before), locked (on PostgreSQL) until the end of the transaction."""
    query = _UNAPPLIED_OF.of(session)
    return set(session.connection().execute(query, {"ids": list(ids)}).scalars())


_ATTEMPTS_OF = Lockable(
    select(INBOX.c.attempts).where(
        INBOX.c.id == bindparam("id"), INBOX.c.outcome.in_(UNAPPLIED_OUTCOMES)
    )
)


def attempts_of(session: Session, event_id: str) -> int | None:
    """How often applying the event failed, locked; None once it is applied."""
    found = session.connection().execute(_ATTEMPTS_OF.of(session), {"id": event_id}).scalar()
    return int(found) if found is not None else None


def record_failure(
    session: Session,
    event_id: str,
    *,
    dead: bool,
    detail: str,
    attempts: int,
    retry_at: dt.datetime | None,
) -> None:
    session.execute(
        update(INBOX)
        .where(INBOX.c.id == event_id)
        .values(
            outcome=DEAD_LETTER_OUTCOME if dead else FAILED_OUTCOME,
            detail=detail[:500],
            attempts=attempts,
            retry_at=retry_at,
        )
    )


def due_again(
    session: Session,
    pending_before: dt.datetime,
    now: dt.datetime,
    after: tuple[dt.datetime, str] | None,
    limit: int,
) -> list[Any]:
    """(id, body, received_at) of events stored before `pending_before` and still pending,
    and of failed ones whose `retry_at` has come, oldest first, after `after`."""
    unapplied = or_(
        and_(INBOX.c.outcome == PENDING_OUTCOME, INBOX.c.received_at <= pending_before),
        and_(
            INBOX.c.outcome == FAILED_OUTCOME,
            # rows failed before retries were timed have none
            or_(INBOX.c.retry_at.is_(None), INBOX.c.retry_at <= now),
        ),
    )
    query = select(INBOX.c.id, INBOX.c.body, INBOX.c.received_at).where(unapplied)
    if after is not None:
        query = query.where(tuple_(INBOX.c.received_at, INBOX.c.id) > after)
    query = query.order_by(INBOX.c.received_at, INBOX.c.id).limit(limit)
    return list(session.connection().execute(query).all())


@dataclass(frozen=True, slots=True)
class Unapplied:
    """An accepted event not applied: the messages of its borrower and loan wait for it."""

    id: str
    outcome: str


_UNAPPLIED_ABOUT = (
    select(INBOX.c.id, INBOX.c.outcome, INBOX.c.borrower_id, INBOX.c.loan_id)
    .where(
        INBOX.c.outcome.in_(UNAPPLIED_OUTCOMES),
        or_(INBOX.c.outcome != PENDING_OUTCOME, INBOX.c.received_at <= bindparam("cutoff")),
        or_(keys_in(INBOX.c.borrower_id, "borrowers"), keys_in(INBOX.c.loan_id, "loans")),
    )
    .order_by(INBOX.c.received_at, INBOX.c.id)
)


def unapplied_about(
    session: Session,
    borrower_ids: Iterable[str],
    loan_ids: Iterable[str],
    pending_before: dt.datetime,
) -> dict[tuple[str, str], Unapplied]:
    """The oldest event not applied about each of these borrowers and loans, keyed
    ("borrower", id) or ("loan", id): failed and dead-lettered ones, and pending ones stored
    before `pending_before`."""
    borrowers, loans = sorted(set(borrower_ids)), sorted(set(loan_ids))
    if not borrowers and not loans:
        return {}
    found: dict[tuple[str, str], Unapplied] = {}
    rows = session.connection().execute(
        _UNAPPLIED_ABOUT, {"cutoff": pending_before, "borrowers": borrowers, "loans": loans}
    )
    for row in rows:
        event = Unapplied(row.id, row.outcome)
        if row.borrower_id is not None:
            found.setdefault(("borrower", row.borrower_id), event)
        if row.loan_id is not None:
            found.setdefault(("loan", row.loan_id), event)
    return found


_DEAD_LETTER_COUNT = select(func.count()).where(INBOX.c.outcome == DEAD_LETTER_OUTCOME)


def dead_letter_count(session: Session) -> int:
    return int(session.connection().execute(_DEAD_LETTER_COUNT).scalar_one())


_DEAD_LETTERS = (
    select(
        INBOX.c.id,
        INBOX.c.type,
        INBOX.c.borrower_id,
        INBOX.c.loan_id,
        INBOX.c.occurred_at,
        INBOX.c.received_at,
        INBOX.c.attempts,
        INBOX.c.detail,
    )
    .where(INBOX.c.outcome == DEAD_LETTER_OUTCOME)
    .order_by(INBOX.c.received_at, INBOX.c.id)
    .limit(bindparam("limit"))
)


def dead_letters(session: Session, limit: int = 100) -> list[dict[str, Any]]:
    """The dead letters, oldest first, as ops read them."""
    return [
        {
            "id": row.id,
            "type": row.type,
            "borrower_id": row.borrower_id,
            "loan_id": row.loan_id,
            "occurred_at": row.occurred_at.isoformat(),
            "received_at": row.received_at.isoformat(),
            "attempts": row.attempts,
            "error": row.detail,
        }
        for row in session.connection().execute(_DEAD_LETTERS, {"limit": limit})
    ]


_INBOX_ROW = select(
    INBOX.c.body, INBOX.c.outcome, INBOX.c.detail, INBOX.c.borrower_id, INBOX.c.loan_id
).where(INBOX.c.id == bindparam("id"))


def stored_event(session: Session, event_id: str) -> Any:
    """(body, outcome, detail, borrower_id, loan_id) of one stored event, or None."""
    return session.connection().execute(_INBOX_ROW, {"id": event_id}).first()
