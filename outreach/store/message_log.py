"""The message log's reads (SPEC §8): filtered pages and batches of messages with their
timelines, one message, and everything about a borrower; through the ORM, whose eager
loading of timelines reads clearest here. Filters and cursors are parsed in service/log.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, false, or_, select
from sqlalchemy.orm import Session, selectinload

from outreach.store import models as m

if TYPE_CHECKING:
    from outreach.service.log import MessageFilter


def filtered(query: Select[Any], criteria: MessageFilter) -> Select[Any]:
    for name in ("borrower_id", "loan_id", "campaign_id", "channel", "stage", "reason", "purpose"):
        value = getattr(criteria, name)
        if value is not None:
            query = query.where(getattr(m.Message, name) == value)
    if criteria.needs_human is not None:
        query = query.where(m.Message.needs_human.is_(criteria.needs_human))
    if criteria.status is not None:
        query = query.where(m.Message.status.in_(criteria.status.split(",")))
    if criteria.since is not None:
        query = query.where(m.Message.send_at >= criteria.since)
    if criteria.until is not None:
        query = query.where(m.Message.send_at < criteria.until)
    if criteria.q:
        pattern = "%" + criteria.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern += "%"
        query = query.where(
            or_(
                *(
                    column.ilike(pattern, escape="\\")
                    for column in (
                        m.Message.body,
                        m.Message.subject,
                        m.Message.text,
                        m.Message.recipient,
                        m.Message.template,
                        m.Message.borrower_id,
                        m.Message.loan_id,
                    )
                )
            )
        )
    return query


def page(
    session: Session, criteria: MessageFilter, count: int, before_id: str | None
) -> Sequence[m.Message]:
    """Up to `count` matching messages, newest first, after `before_id` if given; their
    timelines read with them."""
    query = filtered(select(m.Message), criteria).options(selectinload(m.Message.events))
    if before_id is not None:
        query = query.where(m.Message.id < before_id)
    return session.scalars(query.order_by(m.Message.id.desc()).limit(count)).all()


def iter_messages(
    session: Session, criteria: MessageFilter, batch: int = 500
) -> Iterator[m.Message]:
    """Every matching message, newest first, fetched in batches so exports stream."""
    last_id: str | None = None
    while True:
        query = filtered(select(m.Message), criteria)
        if last_id is not None:
            query = query.where(m.Message.id < last_id)
        rows = session.scalars(query.order_by(m.Message.id.desc()).limit(batch)).all()
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id
        session.expunge_all()


def get(session: Session, message_id: str) -> m.Message | None:
    return session.get(m.Message, message_id)


def timeline_of(
    session: Session, borrower_id: str
) -> tuple[
    m.Borrower | None,
    Sequence[m.ReceivedEvent],
    Sequence[m.Message],
    Sequence[m.InboundReply],
]:
    """The borrower, the events about it or its loans, its messages with their timelines,
    and its replies."""
    borrower = session.get(m.Borrower, borrower_id)
    loan_ids = list(session.scalars(select(m.Loan.id).where(m.Loan.borrower_id == borrower_id)))
    events = session.scalars(
        select(m.ReceivedEvent).where(
            or_(
                m.ReceivedEvent.borrower_id == borrower_id,
                m.ReceivedEvent.loan_id.in_(loan_ids) if loan_ids else false(),
            )
        )
    ).all()
    messages = session.scalars(
        select(m.Message)
        .where(m.Message.borrower_id == borrower_id)
        .options(selectinload(m.Message.events))
    ).all()
    replies = session.scalars(
        select(m.InboundReply).where(m.InboundReply.borrower_id == borrower_id)
    ).all()
    return borrower, events, messages, replies
