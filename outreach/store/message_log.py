"""The message log's reads (SPEC §8): filtered pages and batches of messages with their
timelines, one message, and everything about a borrower; through the ORM, whose eager
loading of timelines reads clearest here. Filters and cursors are parsed in service/log.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Select,
    String,
    bindparam,
    false,
    or_,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from outreach.store import models as m
from outreach.store.keysets import keys_in

if TYPE_CHECKING:
    from outreach.service.log import MessageFilter


def _like_pattern(q: str) -> str:
    """`q` as a LIKE pattern matching it anywhere, its wildcards taken literally."""
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class Matches(ColumnElement[bool]):
    """The log's text search: `q` found, ignoring case, in any of the searched columns
    (`models.SEARCHED_COLUMNS`: the content, the recipient, the template and the ids).

    On PostgreSQL it reads the columns as one text, kept in `message_search`, whose trigram
    index finds the rows; a unit separator stands between the columns, so a `q` without one
    matches that text exactly where it matches a column (one with one is searched column by
    column, as elsewhere). `indexed=False` searches column by
    column everywhere: no index can then be chosen for it (`page_ids`)."""

    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy's own declaration)
        ("pattern", InternalTraversal.dp_clauseelement),
        ("whole", InternalTraversal.dp_boolean),
    ]

    def __init__(self, q: str, *, indexed: bool = True) -> None:
        self.pattern = bindparam("q_pattern", _like_pattern(q), type_=String())
        # column by column (no index of that) where the index must not be read
        self.whole = indexed and m.SEARCH_SEPARATOR not in q

    def by_column(self) -> ColumnElement[bool]:
        return or_(
            *(
                getattr(m.Message, name).ilike(self.pattern, escape="\\")
                for name in m.SEARCHED_COLUMNS
            )
        )


@compiles(Matches)
def _matches_by_column(element: Matches, compiler: SQLCompiler, **kw: Any) -> str:
    # in parentheses: the OR must not take the criteria ANDed with it
    return f"({compiler.process(element.by_column(), **kw)})"


@compiles(Matches, "postgresql")
def _matches_by_trigrams(element: Matches, compiler: SQLCompiler, **kw: Any) -> str:
    if not element.whole:
        return _matches_by_column(element, compiler, **kw)
    searched = m.MESSAGE_SEARCH.c.searched.ilike(element.pattern, escape="\\")
    found = select(m.MESSAGE_SEARCH.c.message_id).where(searched)
    return f"({compiler.process(m.Message.id.in_(found), **kw)})"


def filtered(
    query: Select[Any], criteria: MessageFilter, *, indexed_search: bool = True
) -> Select[Any]:
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
        query = query.where(Matches(criteria.q, indexed=indexed_search))
    return query


# how many messages a text search reads one by one (a stretch, then the next), newest first
# from the cursor, before it asks the trigram index for the older ones (see `page_ids`)
SEARCH_WINDOWS = (4000, 8000)
# how many messages a text search the trigram index cannot serve (no three letters or
# digits in a row, e.g. a name of two Chinese characters) reads for one page at most
SEARCH_BUDGET = 10_000


def ids_statement(
    criteria: MessageFilter,
    count: int,
    before_id: str | None,
    *,
    from_id: str | None = None,
    indexed_search: bool = True,
) -> Select[Any]:
    """The ids of up to `count` matching messages, newest first, below `before_id` and from
    `from_id` on if given.

    Ids alone, so that PostgreSQL may answer from an index without reading the rows it
    passes over: a filter on one column from that column's index of (column, id)
    (migration 0007), `since` and `until` from `ix_messages_id_send_at` read backwards,
    which carries `send_at` (a range long ago is then a walk over index entries, not over
    the rows of every message sent since)."""
    query = filtered(select(m.Message.id), criteria, indexed_search=indexed_search)
    if before_id is not None:
        query = query.where(m.Message.id < before_id)
    if from_id is not None:
        query = query.where(m.Message.id >= from_id)
    return query.order_by(m.Message.id.desc()).limit(count)


def _nth_below(session: Session, before_id: str | None, n: int) -> str | None:
    """The id of the n-th message below `before_id` (None: there are fewer)."""
    query = select(m.Message.id)
    if before_id is not None:
        query = query.where(m.Message.id < before_id)
    return session.scalar(query.order_by(m.Message.id.desc()).offset(n - 1).limit(1))


def has_trigram(q: str) -> bool:
    """Whether the trigram index can find `q`: three letters or digits in a row."""
    run = 0
    for char in q:
        run = run + 1 if char.isalnum() else 0
        if run >= 3:
            return True
    return False


@dataclass(frozen=True)
class Part:
    """What one read of the log found: the ids of matching messages, newest first, and,
    when it stopped short of a full page before the end of the log, the last id it read
    (every message between the cursor and it was read: reading on goes below it)."""

    ids: list[str]
    read_to: str | None = None


def page_ids(session: Session, criteria: MessageFilter, count: int, before_id: str | None) -> Part:
    """The ids of up to `count` matching messages, newest first, below `before_id` if given;
    in one read of bounded cost for every filter.

    A text search reads the newest messages one by one first, without the index, in two
    stretches (SEARCH_WINDOWS): a word in one message of two hundred and fifty fills a page
    there, where the trigram index would hand over every message it is in. One rarer than
    that is then asked of the trigram index for the older ones (a few thousand at most in a
    log of a million). A search the index cannot serve reads SEARCH_BUDGET messages at most,
    and says where it stopped when it found fewer than a page there."""
    if not criteria.q:
        return Part(list(session.scalars(ids_statement(criteria, count, before_id))))
    indexable = has_trigram(criteria.q)
    first = SEARCH_WINDOWS[0]
    stretches = SEARCH_WINDOWS if indexable else (first, max(SEARCH_BUDGET - first, 0))
    ids: list[str] = []
    for size in stretches:
        if not size:
            continue
        floor = _nth_below(session, before_id, size)
        stretch = ids_statement(
            criteria, count - len(ids), before_id, from_id=floor, indexed_search=False
        )
        ids.extend(session.scalars(stretch))
        if floor is None or len(ids) >= count:
            return Part(ids)
        before_id = floor
    if not indexable:
        return Part(ids, read_to=before_id)
    ids.extend(session.scalars(ids_statement(criteria, count - len(ids), before_id)))
    return Part(ids)


def _rows(session: Session, ids: Sequence[str]) -> Sequence[m.Message]:
    if not ids:
        return []
    query = (
        select(m.Message)
        .where(keys_in(m.Message.id, "ids"))
        .order_by(m.Message.id.desc())
        .options(selectinload(m.Message.events))
    )
    return session.scalars(query, {"ids": list(ids)}).all()


def page_part(
    session: Session, criteria: MessageFilter, count: int, before_id: str | None
) -> tuple[Sequence[m.Message], str | None]:
    """Up to `count` matching messages, newest first, below `before_id` if given, with their
    timelines, in one read of bounded cost; and where reading should go on from when it
    stopped short of `count` before the end of the log (`Part.read_to`), else None."""
    found = page_ids(session, criteria, count, before_id)
    return _rows(session, found.ids), found.read_to


def page(
    session: Session, criteria: MessageFilter, count: int, before_id: str | None
) -> Sequence[m.Message]:
    """Up to `count` matching messages, newest first, after `before_id` if given; their
    timelines read with them (as many reads as that takes)."""
    rows: list[m.Message] = []
    while True:
        found, read_to = page_part(session, criteria, count - len(rows), before_id)
        rows.extend(found)
        if read_to is None or len(rows) >= count:
            return rows
        before_id = read_to


def iter_messages(
    session: Session, criteria: MessageFilter, batch: int = 500
) -> Iterator[m.Message]:
    """Every matching message, newest first, fetched in batches so exports stream."""
    before_id: str | None = None
    while True:
        rows, read_to = page_part(session, criteria, batch, before_id)
        if not rows and read_to is None:
            return
        yield from rows
        before_id = read_to or rows[-1].id
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
