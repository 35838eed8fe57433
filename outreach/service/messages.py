"""Messages as the service names and shows them: identifiers, the forward-only rule of
delivery statuses, ops cancellation, and the record the API and MESSAGES.jsonl show."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import Row, Table, select
from sqlalchemy.orm import Session, sessionmaker

from outreach.domain import DELIVERY_RANK, Reason, Status
from outreach.errors import PermanentError
from outreach.store import audit
from outreach.store import models as m
from outreach.store.bulk import row_tuple
from outreach.store.db import transaction
from outreach.store.keysets import keys_in
from outreach.store.messages import held_by_id, write_rows

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# the simulator's --seed while `seeded_ids` is active: the random part of new identifiers is
# then derived from it and what the identifier names
_seed: int | None = None


def _random_bits(name: str | None) -> int:
    if _seed is not None:
        if name is None:
            raise RuntimeError("a seeded identifier needs the name of what it identifies")
        digest = hashlib.blake2b(f"{_seed}:{name}".encode(), digest_size=10).digest()
        return int.from_bytes(digest, "big")
    return int.from_bytes(os.urandom(10), "big")


@contextmanager
def seeded_ids(seed: int) -> Iterator[None]:
    """Reproducible identifiers while active: each one's random part is derived from the seed
    and the name of what it identifies (a message's idempotency key), so the same seed and
    inputs give the same ids whatever order, or process, creates them.

    For the simulator only; it is process-wide, so never use it in a serving process.
    """
    global _seed
    previous = _seed
    _seed = seed
    try:
        yield
    finally:
        _seed = previous


def new_id(prefix: str, at: dt.datetime | None = None, *, name: str | None = None) -> str:
    """A sortable identifier: 48 bits of milliseconds then 80 random bits, Crockford base32.

    Newer messages sort after older ones, which keeps cursor pages stable. `name` is what
    the identifier names, unique among its kind (see `seeded_ids`).
    """
    millis = int(at.timestamp() * 1000) if at is not None else time.time_ns() // 1_000_000
    value = (millis << 80) | _random_bits(name)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return prefix + "".join(reversed(chars))


class MessageNotFound(PermanentError):
    """Raised when no message has the id asked for."""


class MessageNotPending(PermanentError):
    """Raised when a message asked to change has gone out (or was withheld) already."""


def cancel_by_ops(
    session: Session, message_id: str, now: dt.datetime, note: str | None = None
) -> None:
    """An ops cancellation of a message that has not gone out: `cancelled` / `ops_cancelled`,
    with the note on its timeline."""
    row = held_by_id(session, message_id)
    if row is None:
        raise MessageNotFound(f"no message {message_id}")
    if not Status(row.status).is_pending:
        raise MessageNotPending(f"message is {row.status}; only pending ones cancel")
    row.move(Status.CANCELLED, Reason.OPS_CANCELLED, now, note)
    write_rows(session, [row])


def dead_letter_dispatch(
    sessions: sessionmaker[Session], message_id: str, detail: str, now: dt.datetime
) -> str | None:
    """A message whose dispatch keeps failing on an error retrying cannot cure: `failed` /
    `dispatch_failed` with the error in its timeline, flagged for a person (it is never
    enqueued again); its channel, or None when it is no longer queued (it went on meanwhile)."""
    with transaction(sessions) as session:
        row = held_by_id(session, message_id)
        if row is None or row.status != Status.QUEUED.value:
            return None
        row.move(Status.FAILED, Reason.DISPATCH_FAILED, now, detail)
        row.needs_human = True
        write_rows(session, [row])
        return str(row.channel)


def cancel_audited(
    sessions: sessionmaker[Session],
    message_id: str,
    now: dt.datetime,
    *,
    actor: str,
    role: str | None,
    note: str | None = None,
    via: str | None = None,
) -> None:
    """`cancel_by_ops` with its row in the audit log (`message.cancel`, in the same
    transaction); a refusal (the message has gone out) is recorded too, then raised. `via`
    names where it was asked from when that is not the API (`ui`)."""
    where = {"via": via} if via else {}
    try:
        with transaction(sessions) as session:
            cancel_by_ops(session, message_id, now, note)
            detail = {**({"note": note} if note else {}), **where}
            _audit_cancel(session, actor, role, message_id, now, "ok", detail)
    except MessageNotPending as error:
        with transaction(sessions) as session:
            _audit_cancel(
                session, actor, role, message_id, now, "refused", {"why": str(error), **where}
            )
        raise


def _audit_cancel(
    session: Session,
    actor: str,
    role: str | None,
    message_id: str,
    now: dt.datetime,
    outcome: str,
    detail: dict[str, Any],
) -> None:
    audit.append(
        session,
        at=now,
        actor=actor,
        role=role,
        action="message.cancel",
        target=message_id,
        outcome=outcome,
        detail=detail or None,
    )


def may_move(current: Status, new: Status) -> bool:
    """Delivery statuses only move forward: a late `sent` never undoes `delivered`."""
    if current.is_final:
        return False
    return DELIVERY_RANK[new] > DELIVERY_RANK[current]


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return _iso(value)


@functools.lru_cache(maxsize=4096)
def _iso(value: dt.datetime) -> str:
    # a log's instants repeat (every step of a batch is taken at the same one)
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def as_record(
    message: m.Message | Row[Any],
    *,
    with_events: bool = True,
    events: Iterable[m.MessageEvent | Row[Any]] | None = None,
) -> dict[str, Any]:
    """The message as the API and MESSAGES.jsonl show it (SPEC §6, §10); its timeline is
    `events` when given (read together for many messages), else the row's own."""
    document: dict[str, Any] = {
        "id": message.id,
        "purpose": message.purpose,
        "borrower_id": message.borrower_id,
        "loan_id": message.loan_id,
        "campaign_id": message.campaign_id,
        "variant": message.variant,
        "stage": message.stage,
        "channel": message.channel,
        "template": message.template,
        "template_version": message.template_version,
        "locale": message.locale,
        "to": message.recipient,
        "body": message.body,
        "subject": message.subject,
        "text": message.text,
        "html": message.html,
        "segments": message.segments,
        "encoding": message.encoding,
        "status": message.status,
        "reason": message.reason,
        "fallback_from": message.fallback_from,
        "provider_id": message.provider_id,
        "needs_human": message.needs_human,
        "send_at": iso(message.send_at),
        "sent_at": iso(message.sent_at),
        "created_at": iso(message.created_at),
    }
    if with_events:
        steps = events if events is not None else cast(m.Message, message).events
        document["events"] = [
            {"at": iso(e.at), "status": e.status, "reason": e.reason, "detail": e.detail}
            for e in steps
        ]
    return document


_MESSAGES = cast(Table, m.Message.__table__)
_STEPS = cast(Table, m.MessageEvent.__table__)
_STEPS_OF = select(_STEPS).where(keys_in(_STEPS.c.message_id, "ids")).order_by(_STEPS.c.id)


def records_of(session: Session, rows: Sequence[Row[Any]]) -> list[dict[str, Any]]:
    """`as_record` for rows of the messages table read with Core, their timelines read in
    one query per 500 messages."""
    # as plain named tuples (`row_tuple`): a record reads every column of its message and
    # of each of its steps
    message_row, step_row = row_tuple(_MESSAGES), row_tuple(_STEPS)
    if rows and tuple(rows[0]._fields) != message_row._fields:
        raise ValueError("records_of reads rows of every column of the messages table")
    messages: list[Any] = [message_row._make(row) for row in rows]
    steps: dict[str, list[Any]] = {message.id: [] for message in messages}
    ids = list(steps)
    for index in range(0, len(ids), 500):
        chunk = ids[index : index + 500]
        for row in session.connection().execute(_STEPS_OF, {"ids": chunk}):
            step = step_row._make(row)
            steps[step.message_id].append(step)
    return [as_record(message, events=steps[message.id]) for message in messages]
