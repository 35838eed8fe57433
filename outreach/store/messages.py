"""Messages and their timelines in the database: the one row type every stage moves, and
every query and write on `messages`, `message_events` and `provider_callbacks`.

A message is moved one way: read as a `MessageRow` (or planned as one), moved with
`MessageRow.move` (the status, the reason and a step on its timeline, together), and written
with `write_rows` (rows read from the database: the columns that changed, and the new steps)
or `insert_new` (planned rows: the row and its timeline). Planning, the final gate, dispatch,
provider callbacks, replies and ops all go through it; the ORM models are for reads where
they are clearer (the log). The one exception is `claim_due`, which moves a whole batch of
due rows to `queued` in one set-based statement: the clock's tick must not read them first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from outreach.domain import PENDING_STATUSES, Channel, Purpose, Reason, Status
from outreach.store import models as m
from outreach.store.bulk import insert_returning, insert_rows, update_rows
from outreach.store.db import InsertIgnoringDuplicates, Lockable, takes_row_locks
from outreach.store.keysets import keys_in

MESSAGES = cast(Table, m.Message.__table__)
STEPS = cast(Table, m.MessageEvent.__table__)
CALLBACKS = cast(Table, m.ProviderCallback.__table__)
# how many keys one IN list carries
IN_CHUNK = 500


def detail_text(detail: Mapping[str, object] | str | None) -> str | None:
    """A step's detail as stored: `key=value` pairs, or the sentence given."""
    if detail is None or isinstance(detail, str):
        return detail or None
    if not detail:
        return None
    return " ".join(f"{key}={value}" for key, value in detail.items())


def timeline_step(
    message_id: str,
    at: dt.datetime,
    status: Status,
    reason: Reason | None,
    detail: Mapping[str, object] | str | None = None,
) -> dict[str, Any]:
    """One step of a message's timeline, as `message_events` stores it."""
    return {
        "message_id": message_id,
        "at": at,
        "status": status.value,
        "reason": reason.value if reason is not None else None,
        "detail": detail_text(detail),
    }


@dataclass(eq=False)
class MessageRow:
    """A message as plain values, held by the transaction that moves it.

    Its fields up to `worker_lease` are the columns every stage reads (`HELD_COLUMNS`, in this
    order); the rendered text, which only dispatch writes and reconciliation reads, is set
    with `set_content`. The ORM would do the same with several times the work per row.
    """

    id: str
    idempotency_key: str
    purpose: str
    borrower_id: str
    loan_id: str | None
    campaign_id: str | None
    stage: str | None
    channel: str
    template: str
    locale: str
    recipient: str | None
    send_at: dt.datetime
    status: str
    reason: str | None
    fallback_from: str | None
    refs: dict[str, str]
    created_at: dt.datetime
    updated_at: dt.datetime
    cap_reserved_at: dt.datetime | None = None
    attempts: int = 0
    needs_human: bool = False
    provider_id: str | None = None
    sent_at: dt.datetime | None = None
    variant: str | None = None
    worker_lease: str | None = None
    # -- not columns ---------------------------------------------------------------------------
    steps: list[dict[str, Any]] = field(default_factory=list)
    # the rendered text and what it was rendered with, set by dispatch (`set_content`)
    content: dict[str, object] = field(default_factory=dict)
    # the instant the final gate was asked about it on planning (`plan_message`), if it was
    gated_for: dt.datetime | None = None
    # the values of the columns that change as the database has them; None: not inserted
    stored: tuple[Any, ...] | None = None

    @classmethod
    def from_db(cls, row: Sequence[Any]) -> MessageRow:
        """From a row of `HELD_QUERY`'s columns."""
        held = cls(*row)
        held.stored = held.changing()
        return held

    def move(
        self,
        status: Status,
        reason: Reason | None,
        at: dt.datetime,
        detail: Mapping[str, object] | str | None = None,
    ) -> None:
        """The one way a message moves: its status and reason, and a step on its timeline
        (to the same status, a note: a reply flagged for a person)."""
        self.status = status.value
        self.reason = reason.value if reason is not None else None
        self.updated_at = at
        self.steps.append(timeline_step(self.id, at, status, reason, detail))

    def set_content(self, columns: Mapping[str, object]) -> None:
        self.content.update(columns)

    def changing(self) -> tuple[Any, ...]:
        return _CHANGING_VALUES(self)

    def row(self) -> dict[str, Any]:
        """The values a new row is inserted with."""
        return dict(zip(INSERTED_COLUMNS, _INSERTED_VALUES(self), strict=True))


_FIELDS = tuple(f.name for f in dataclasses.fields(MessageRow))
# what every stage reads of a message: MessageRow's column fields, in their order
HELD_COLUMNS = _FIELDS[: _FIELDS.index("worker_lease") + 1]
# … what a stage may change of them once the row exists
CHANGING_COLUMNS = tuple(
    name for name in HELD_COLUMNS if name not in ("id", "idempotency_key", "created_at")
)
# … and what a new row is inserted with (the rest take their defaults)
INSERTED_COLUMNS = tuple(
    name for name in HELD_COLUMNS if name not in ("cap_reserved_at", "sent_at", "worker_lease")
)
# read in one step: a loop of getattr costs several times as much per row
_CHANGING_VALUES = operator.attrgetter(*CHANGING_COLUMNS)
_INSERTED_VALUES = operator.attrgetter(*INSERTED_COLUMNS)
# the rendered text columns dispatch fills (`set_content`)
CONTENT_COLUMNS = (
    "template_version",
    "body",
    "segments",
    "encoding",
    "subject",
    "text",
    "html",
)
assert set(HELD_COLUMNS) | set(CONTENT_COLUMNS) <= set(MESSAGES.c.keys())

HELD_QUERY = select(*(MESSAGES.c[name] for name in HELD_COLUMNS))
_NEW_MESSAGES = InsertIgnoringDuplicates(MESSAGES, INSERTED_COLUMNS, key=("idempotency_key",))
# planned messages not inserted yet are held the same way
NewMessage = MessageRow


def write_rows(session: Session, rows: Iterable[MessageRow]) -> None:
    """Write what changed on messages read from the database, and their new steps: one
    statement per set of columns changed, one for the steps."""
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    steps: list[dict[str, Any]] = []
    for row in rows:
        if row.stored is None:
            continue  # not inserted yet: `insert_new` writes it
        values = row.changing()
        if values != row.stored or row.content:
            changed = tuple(
                name
                for name, now, then in zip(CHANGING_COLUMNS, values, row.stored, strict=True)
                if now != then
            )
            update_values: dict[str, object] = {"id": row.id}
            update_values.update(row.content)
            update_values.update((name, getattr(row, name)) for name in changed)
            updates.setdefault(tuple(update_values), []).append(update_values)
            row.stored = values
            row.content = {}
        steps.extend(row.steps)
        row.steps = []
    for group in updates.values():
        update_rows(session, MESSAGES, "id", group)
    insert_rows(session, STEPS, steps)


def insert_new(session: Session, messages: Sequence[NewMessage]) -> set[str]:
    """Insert planned messages (a key that exists already is skipped) and the timelines of
    those inserted; returns their ids."""
    if not messages:
        return set()
    rows = [message.row() for message in messages]
    ids = [message.id for message in messages]
    count = insert_rows(
        session, MESSAGES, rows, statement=_NEW_MESSAGES.of(session), conflict="idempotency_key"
    )
    if count == len(rows):
        inserted = set(ids)
    else:
        # a key someone else inserted first (another transaction planning the same loan)
        inserted = set()
        for index in range(0, len(ids), IN_CHUNK):
            query = select(MESSAGES.c.id).where(MESSAGES.c.id.in_(ids[index : index + IN_CHUNK]))
            inserted.update(session.connection().execute(query).scalars())
    steps = [step for message in messages if message.id in inserted for step in message.steps]
    insert_rows(session, STEPS, steps)
    return inserted


# -- reading rows to move ---------------------------------------------------------------------

_BY_IDS = Lockable(HELD_QUERY.where(keys_in(MESSAGES.c.id, "ids")).order_by(MESSAGES.c.id))


def held_by_ids(
    session: Session, ids: Iterable[str], *, lock: bool = True
) -> dict[str, MessageRow]:
    """These messages (those that exist), locked in id order on PostgreSQL."""
    wanted = sorted(set(ids))
    found: dict[str, MessageRow] = {}
    for index in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[index : index + IN_CHUNK]
        for row in session.connection().execute(_BY_IDS.of(session, lock=lock), {"ids": chunk}):
            found[row.id] = MessageRow.from_db(row)
    return found


def held_by_id(session: Session, message_id: str) -> MessageRow | None:
    """One message, locked on PostgreSQL."""
    return held_by_ids(session, [message_id]).get(message_id)


_ADDRESSED_TO = select(MESSAGES.c.channel, MESSAGES.c.recipient).where(
    MESSAGES.c.id == bindparam("id")
)


def addressed_to(session: Session, message_id: str) -> tuple[str, str] | None:
    """The channel and recipient a message was rendered for; None when there is no such
    message or it was never rendered (an unsubscribe link names its message)."""
    found = session.execute(_ADDRESSED_TO, {"id": message_id}).first()
    if found is None or not found.recipient:
        return None
    return found.channel, found.recipient


PENDING = tuple(status.value for status in PENDING_STATUSES)
_PENDING_OF = {
    column: Lockable(
        HELD_QUERY.where(
            MESSAGES.c.status.in_(PENDING), keys_in(MESSAGES.c[column], "ids")
        ).order_by(MESSAGES.c.id)
    )
    for column in ("loan_id", "borrower_id")
}


def pending_of(
    session: Session, column: str, ids: Sequence[str], held: dict[str, MessageRow]
) -> dict[str, list[MessageRow]]:
    """Pending rows of many loans (`column` loan_id) or borrowers (borrower_id), in one query
    per 500, grouped by that id; locked on PostgreSQL. A message `held` already is that same
    object (one message read for its loan and for its borrower is changed in one place)."""
    found: dict[str, list[MessageRow]] = {}
    query = _PENDING_OF[column].of(session)
    for index in range(0, len(ids), IN_CHUNK):
        chunk = list(ids[index : index + IN_CHUNK])
        for row in session.connection().execute(query, {"ids": chunk}):
            message = held.get(row.id)
            if message is None:
                message = held[row.id] = MessageRow.from_db(row)
            found.setdefault(getattr(message, column), []).append(message)
    return found


def loans_with_pending_messages(
    session: Session, borrower_ids: Sequence[str]
) -> dict[str, set[str]]:
    """For each of these borrowers, the loans its pending messages are about."""
    found: dict[str, set[str]] = {}
    for index in range(0, len(borrower_ids), IN_CHUNK):
        query = (
            select(MESSAGES.c.borrower_id, MESSAGES.c.loan_id)
            .where(
                MESSAGES.c.borrower_id.in_(list(borrower_ids[index : index + IN_CHUNK])),
                MESSAGES.c.status.in_(PENDING),
                MESSAGES.c.loan_id.is_not(None),
            )
            .distinct()
        )
        for borrower_id, loan_id in session.execute(query):
            if loan_id is not None:
                found.setdefault(borrower_id, set()).add(loan_id)
    return found


_KEYS_OF_LOANS = select(MESSAGES.c.loan_id, MESSAGES.c.idempotency_key).where(
    keys_in(MESSAGES.c.loan_id, "ids")
)


def keys_of_loans(session: Session, loan_ids: Sequence[str]) -> dict[str, set[str]]:
    """The keys of every message of these loans, whatever became of them."""
    keys: dict[str, set[str]] = {}
    for index in range(0, len(loan_ids), IN_CHUNK):
        chunk = list(loan_ids[index : index + IN_CHUNK])
        for loan_id, key in session.connection().execute(_KEYS_OF_LOANS, {"ids": chunk}):
            keys.setdefault(loan_id, set()).add(key)
    return keys


_ON_THEIR_WAY = (
    Status.SENDING.value,
    Status.SENT.value,
    Status.DELIVERED.value,
    Status.UNDELIVERED.value,
)
_CEASE_CONFIRMATIONS = select(func.count()).where(
    MESSAGES.c.borrower_id == bindparam("borrower_id"),
    MESSAGES.c.purpose == Purpose.CEASE_CONFIRMATION.value,
    MESSAGES.c.status.in_(_ON_THEIR_WAY),
)


def cease_confirmations_sent(session: Session, borrower_id: str) -> int:
    """How many cease-contact confirmations went (or are going) to the borrower."""
    return int(session.scalar(_CEASE_CONFIRMATIONS, {"borrower_id": borrower_id}) or 0)


_BY_PROVIDER_ID = Lockable(
    HELD_QUERY.where(keys_in(MESSAGES.c.provider_id, "ids")).order_by(MESSAGES.c.id)
)


def held_by_provider_ids(session: Session, provider_ids: Iterable[str]) -> dict[str, MessageRow]:
    """The messages a provider knows by these ids, by provider id; locked on PostgreSQL."""
    found: dict[str, MessageRow] = {}
    query = _BY_PROVIDER_ID.of(session)
    for row in session.connection().execute(query, {"ids": sorted(set(provider_ids))}):
        message = MessageRow.from_db(row)
        assert message.provider_id is not None
        found[message.provider_id] = message
    return found


_LAST_SMS_SENT_TO = (
    HELD_QUERY.where(
        MESSAGES.c.borrower_id == bindparam("borrower_id"),
        MESSAGES.c.channel == Channel.SMS.value,
        MESSAGES.c.recipient == bindparam("recipient"),
        MESSAGES.c.sent_at.is_not(None),
    )
    .order_by(MESSAGES.c.sent_at.desc())
    .limit(1)
)


def last_sms_sent_to(session: Session, borrower_id: str, recipient: str) -> MessageRow | None:
    """The borrower's latest text handed to a provider for this number (what a reply answers)."""
    row = (
        session.connection()
        .execute(_LAST_SMS_SENT_TO, {"borrower_id": borrower_id, "recipient": recipient})
        .first()
    )
    return MessageRow.from_db(row) if row is not None else None


_CONTENT = select(*(MESSAGES.c[name] for name in ("body", "subject", "text", "html"))).where(
    MESSAGES.c.id == bindparam("message_id")
)


def sent_text(session: Session, message_id: str) -> tuple[str | None, ...]:
    """The body, subject, text and HTML a message was handed over with."""
    row = session.connection().execute(_CONTENT, {"message_id": message_id}).one()
    return tuple(row)


def bring_held_forward(
    session: Session, borrower_id: str | None, loan_id: str | None, now: dt.datetime
) -> None:
    """Messages held for an event about this borrower or loan (`event_pending`) are due
    now: the event is applied, and the gate decides on them at once."""
    messages = MESSAGES
    about = [
        column == value
        for column, value in ((messages.c.borrower_id, borrower_id), (messages.c.loan_id, loan_id))
        if value is not None
    ]
    if not about:
        return
    session.execute(
        update(messages)
        .where(
            messages.c.status == Status.DEFERRED.value,
            messages.c.reason == Reason.EVENT_PENDING.value,
            messages.c.send_at > now,
            or_(*about),
        )
        .values(send_at=now)
    )


# -- the clock --------------------------------------------------------------------------------

DUE_STATUSES = (Status.SCHEDULED.value, Status.DEFERRED.value)
_DUE = Lockable(
    select(MESSAGES.c.id)
    .where(MESSAGES.c.status.in_(DUE_STATUSES), MESSAGES.c.send_at <= bindparam("now"))
    # ties in id order: which of them a batch takes never depends on storage order
    .order_by(MESSAGES.c.send_at, MESSAGES.c.id)
    .limit(bindparam("limit"))
)
_DUE_SKIP_LOCKED = _DUE.plain.with_for_update(skip_locked=True)
_QUEUE = (
    update(MESSAGES)
    .where(keys_in(MESSAGES.c.id, "ids"))
    .values(status=Status.QUEUED.value, reason=Reason.DUE.value, updated_at=bindparam("now"))
)


def claim_due(session: Session, now: dt.datetime, limit: int = 500) -> list[str]:
    """Move due rows to `queued` and return their ids (SKIP LOCKED on PostgreSQL)."""
    query = _DUE_SKIP_LOCKED if takes_row_locks(session) else _DUE.plain
    connection = session.connection()
    ids = list(connection.execute(query, {"now": now, "limit": limit}).scalars())
    if ids:
        connection.execute(_QUEUE, {"ids": ids, "now": now})
        insert_rows(session, STEPS, [timeline_step(i, now, Status.QUEUED, Reason.DUE) for i in ids])
    return ids


_STALE_QUEUED = (
    select(MESSAGES.c.id)
    .where(MESSAGES.c.status == Status.QUEUED.value, MESSAGES.c.updated_at <= bindparam("before"))
    .order_by(MESSAGES.c.updated_at)
    .limit(bindparam("limit"))
)


def queued_before(session: Session, before: dt.datetime, limit: int = 500) -> list[str]:
    """Queued rows last touched before `before` (their broker message may have been lost)."""
    rows = session.connection().execute(_STALE_QUEUED, {"before": before, "limit": limit})
    return list(rows.scalars())


_TOUCH = update(MESSAGES).where(keys_in(MESSAGES.c.id, "ids")).values(updated_at=bindparam("now"))


def touch(session: Session, ids: Sequence[str], now: dt.datetime) -> None:
    """Mark queued rows as enqueued again now (so they are not taken as stale at once)."""
    if ids:
        session.connection().execute(_TOUCH, {"ids": list(ids), "now": now})


_SENDING_ROWS = (
    select(MESSAGES.c.id, MESSAGES.c.worker_lease, MESSAGES.c.updated_at)
    .where(MESSAGES.c.status == Status.SENDING.value)
    .order_by(MESSAGES.c.updated_at)
    .limit(bindparam("limit"))
)


def sending(session: Session, limit: int) -> list[Any]:
    """Messages `sending`, oldest mark first: (id, worker_lease, updated_at)."""
    return list(session.connection().execute(_SENDING_ROWS, {"limit": limit}).all())


_QUEUED_AMONG = select(MESSAGES.c.id).where(
    keys_in(MESSAGES.c.id, "ids"), MESSAGES.c.status == Status.QUEUED.value
)


def queued_among(session: Session, ids: Iterable[str]) -> list[str]:
    return list(session.connection().execute(_QUEUED_AMONG, {"ids": sorted(set(ids))}).scalars())


# -- provider callbacks -----------------------------------------------------------------------

_NEW_CALLBACKS = InsertIgnoringDuplicates(
    CALLBACKS, ("id", "provider", "received_at"), key=("id",), returning=("id",)
)


def first_callbacks(
    session: Session, provider: str, keys: Iterable[str], now: dt.datetime
) -> set[str]:
    """Record these callbacks as received; returns the keys not received before."""
    return insert_returning(
        session,
        CALLBACKS,
        [{"id": key, "provider": provider, "received_at": now} for key in dict.fromkeys(keys)],
        statement=_NEW_CALLBACKS.of(session),
        conflict="id",
        returning="id",
    )


# -- the caps' source of truth ----------------------------------------------------------------

# statuses of a message that holds, or held, frequency-cap slots
CAP_HOLDING_STATUSES = (
    Status.QUEUED.value,
    Status.SENDING.value,
    Status.SENT.value,
    Status.DELIVERED.value,
    Status.UNDELIVERED.value,
)


def _cap_history_query(borrowers: ColumnElement[bool], capped: Sequence[str]) -> Any:
    return select(
        MESSAGES.c.borrower_id,
        MESSAGES.c.id,
        MESSAGES.c.channel,
        MESSAGES.c.cap_reserved_at,
        MESSAGES.c.sent_at,
    ).where(
        borrowers,
        MESSAGES.c.purpose.in_(list(capped)),
        or_(
            MESSAGES.c.status.in_(CAP_HOLDING_STATUSES),
            # outcome unknown after a crash: it may have gone, so it counts
            (MESSAGES.c.status == Status.FAILED.value)
            & (MESSAGES.c.reason == Reason.RECONCILED.value),
        ),
        or_(
            MESSAGES.c.cap_reserved_at >= bindparam("since"),
            MESSAGES.c.sent_at >= bindparam("since"),
        ),
    )


class CapHistory:
    """The message log as the caps' source of truth when Redis has lost them: every slot a
    message of a `capped` purpose holds or held since an instant, per borrower."""

    def __init__(self, capped: Sequence[str]) -> None:
        # built once: a rebuild runs for each borrower Redis has no caps for
        self._one = _cap_history_query(MESSAGES.c.borrower_id == bindparam("borrower_id"), capped)
        self._many = _cap_history_query(keys_in(MESSAGES.c.borrower_id, "borrower_ids"), capped)
        self._range = _cap_history_query(
            MESSAGES.c.borrower_id.between(bindparam("first"), bindparam("last")), capped
        )

    def of(
        self, session: Session, borrower_id: str, since: dt.datetime
    ) -> list[tuple[str, Channel, dt.datetime]]:
        rows = session.connection().execute(self._one, {"borrower_id": borrower_id, "since": since})
        return _slots(rows).get(borrower_id, [])

    def of_range(
        self, session: Session, first: str, last: str, since: dt.datetime
    ) -> dict[str, list[tuple[str, Channel, dt.datetime]]]:
        """`of_many` for every borrower with an id from `first` to `last`, in one read (a
        campaign's batch is a run of borrower ids)."""
        rows = session.connection().execute(
            self._range, {"first": first, "last": last, "since": since}
        )
        return _slots(rows)

    def of_many(
        self, session: Session, borrower_ids: Sequence[str], since: dt.datetime
    ) -> dict[str, list[tuple[str, Channel, dt.datetime]]]:
        found: dict[str, list[tuple[str, Channel, dt.datetime]]] = {}
        for index in range(0, len(borrower_ids), IN_CHUNK):
            chunk = list(borrower_ids[index : index + IN_CHUNK])
            rows = session.connection().execute(self._many, {"borrower_ids": chunk, "since": since})
            found.update(_slots(rows))
        return found


def _slots(rows: Iterable[Any]) -> dict[str, list[tuple[str, Channel, dt.datetime]]]:
    entries: dict[str, list[tuple[str, Channel, dt.datetime]]] = {}
    for borrower_id, message_id, channel, reserved_at, sent_at in rows:
        at = reserved_at or sent_at
        if at is not None:
            entries.setdefault(borrower_id, []).append((message_id, Channel(channel), at))
    return entries
