"""Borrowers and loans in the database: the rows a transaction holds for update (written
back together, `flush_state`), their states read back as domain values, and what is
recorded about them — payments, promises, plans, visits, restrictions, opt-outs and
addresses that cannot receive messages."""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar, Self, TypeVar, cast

from sqlalchemy import Select, Table, bindparam, delete, select, text, update
from sqlalchemy.orm import Session

from outreach.domain import (
    Address,
    BorrowerState,
    Channel,
    ClosedReason,
    FieldVisit,
    InconvenientWindow,
    Instalment,
    LoanState,
    Payment,
    PaymentPlan,
    Promise,
    Restriction,
)
from outreach.store import models as m
from outreach.store.bulk import insert_rows, row_tuple, update_rows
from outreach.store.db import Lockable, takes_row_locks
from outreach.store.keysets import keys_in

_LOANS = cast(Table, m.Loan.__table__)
LOAN_COLUMNS = tuple(column.name for column in _LOANS.columns)
_BORROWER_TABLE = cast(Table, m.Borrower.__table__)
BORROWER_COLUMNS = tuple(column.name for column in _BORROWER_TABLE.columns)
_PHONE_TABLE = cast(Table, m.BorrowerPhone.__table__)
_REPLIES = cast(Table, m.InboundReply.__table__)
_IN_CHUNK = 500
_EMAIL = BORROWER_COLUMNS.index("email")


def normalize_recipient(channel: Channel | str, recipient: str) -> str:
    return recipient.strip().lower() if Channel(channel) is Channel.EMAIL else recipient.strip()


# --- rows held for update --------------------------------------------------------------------


class HeldRecord:
    """A row this transaction holds for update, as plain values.

    Events change it in memory; `write_held` writes the changed ones back (new rows in one
    statement, the others in one per set of columns changed) before anything reads the table
    again (`flush_state`). The ORM would do the same with several times the work per row,
    which the loan system's nightly report of every loan makes the bulk of ingesting.
    """

    TABLE: ClassVar[Table]
    COLUMNS: ClassVar[tuple[str, ...]]
    # session.info key of the records of this kind a transaction holds: {id: record or None}
    HELD: ClassVar[str]

    __slots__ = ("_written",)
    # COLUMNS read in one step (a loop of getattr costs several times as much per row, and
    # a nightly report holds every loan)
    _VALUES: ClassVar[Callable[[Any], tuple[Any, ...]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._VALUES = operator.attrgetter(*cls.COLUMNS)

    def __init__(self, values: Sequence[Any], *, stored: bool) -> None:
        """From the row's values in COLUMNS order."""
        if len(values) != len(self.COLUMNS):
            raise ValueError(f"{type(self).__name__} takes {len(self.COLUMNS)} values")
        for name, value in zip(self.COLUMNS, values, strict=True):
            setattr(self, name, value)
        # the values the database has, or None for a row not inserted yet
        self._written: tuple[Any, ...] | None = tuple(values) if stored else None

    @classmethod
    def new(cls, key: str) -> Self:
        """A row not in the database yet."""
        return cls([key if name == "id" else None for name in cls.COLUMNS], stored=False)

    def values(self) -> tuple[Any, ...]:
        return type(self)._VALUES(self)


class LoanRecord(HeldRecord):
    TABLE = _LOANS
    COLUMNS = LOAN_COLUMNS
    HELD = "outreach.held_loans"
    __slots__ = LOAN_COLUMNS

    id: str
    borrower_id: str
    product: str
    currency: str
    amount_due: Decimal
    balance: Decimal
    days_past_due: int
    due_date: dt.date
    account_number: str
    closed_reason: str | None
    state_as_of: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime


class BorrowerRecord(HeldRecord):
    """A borrower, with its phone numbers in order (written back when they change)."""

    TABLE = _BORROWER_TABLE
    COLUMNS = BORROWER_COLUMNS
    HELD = "outreach.held_borrowers"
    __slots__ = (*BORROWER_COLUMNS, "phones", "phone_facts", "_phones_written")

    id: str
    name: str
    locale: str
    email: str | None
    timezone: str | None
    address_country: str | None
    address_region: str | None
    address_city: str | None
    address_postal_code: str | None
    consent_sms: bool
    consent_email: bool
    tags: list[str]
    state_as_of: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime

    def __init__(self, values: Sequence[Any], *, stored: bool) -> None:
        super().__init__(values, stored=stored)
        # set by `hold` for a stored borrower: its numbers as the database has them
        self.phones: tuple[str, ...] = ()
        # beside each number when `phones` is set anew (`policy.zones.phone_facts_text`)
        self.phone_facts: tuple[str, ...] = ()
        self._phones_written: tuple[str, ...] | None = () if stored else None


_BY_ID: dict[str, Lockable[Select[Any]]] = {}
_PHONES_OF = (
    select(_PHONE_TABLE.c.borrower_id, _PHONE_TABLE.c.phone)
    .where(keys_in(_PHONE_TABLE.c.borrower_id, "keys"))
    .order_by(_PHONE_TABLE.c.borrower_id, _PHONE_TABLE.c.position)
)


def _held(session: Session, kind: type[Held]) -> dict[str, Held | None]:
    held: dict[str, Held | None] = session.info.setdefault(kind.HELD, {})
    return held


def hold(session: Session, kind: type[Held], keys: Iterable[str]) -> dict[str, Held | None]:
    """Read these rows for update (FOR UPDATE on PostgreSQL) in one query per 500, unless
    this transaction holds them already; returns every row of the kind it holds (None: no
    such row)."""
    held = _held(session, kind)
    wanted = sorted({key for key in keys if key not in held})
    if not wanted:
        return held
    by_id = _BY_ID.get(kind.TABLE.name)
    if by_id is None:
        by_id = _BY_ID[kind.TABLE.name] = Lockable(
            select(kind.TABLE).where(keys_in(kind.TABLE.c.id, "keys"))
        )
    query = by_id.of(session)
    connection = session.connection()
    for index in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[index : index + _IN_CHUNK]
        found = {row.id: row for row in connection.execute(query, {"keys": chunk})}
        phones: dict[str, list[str]] = {}
        if kind is BorrowerRecord and found:
            for borrower_id, phone in connection.execute(_PHONES_OF, {"keys": list(found)}):
                phones.setdefault(borrower_id, []).append(phone)
        for key in chunk:
            row = found.get(key)
            record = None if row is None else kind(row, stored=True)
            if isinstance(record, BorrowerRecord):
                record.phones = record._phones_written = tuple(phones.get(key, ()))
            held[key] = record
    return held


def for_update(session: Session, kind: type[Held], key: str) -> Held | None:
    """The row about to be updated, held by this transaction (see `hold`)."""
    held = _held(session, kind)
    if key in held:
        return held[key]
    return hold(session, kind, (key,))[key]


def hold_loans(session: Session, loan_ids: Iterable[str]) -> dict[str, LoanRecord | None]:
    return hold(session, LoanRecord, loan_ids)


def loan_for_update(session: Session, loan_id: str) -> LoanRecord | None:
    return for_update(session, LoanRecord, loan_id)


def write_held(session: Session, kind: type[HeldRecord]) -> None:
    """Write the held rows of this kind that changed since they were read or last written:
    new ones in one statement, the others in one per set of columns changed (a nightly
    report changes the same few columns of every loan); then changed phone lists."""
    held = session.info.get(kind.HELD)
    if not held:
        return
    columns = kind.COLUMNS
    inserts: list[dict[str, Any]] = []
    updates: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    phones_changed: list[BorrowerRecord] = []
    attached: dict[str, str] = {}
    for record in held.values():
        if record is None:
            continue
        if isinstance(record, BorrowerRecord):
            if record.phones != record._phones_written:
                phones_changed.append(record)
            for address in _new_addresses(record):
                attached.setdefault(address, record.id)
        values = record.values()
        written = record._written
        if written is None:
            inserts.append(dict(zip(columns, values, strict=True)))
        elif values != written:
            pairs = enumerate(zip(values, written, strict=True))
            changed = tuple(index for index, (now, then) in pairs if now != then)
            row = {"id": record.id}
            row.update((columns[index], values[index]) for index in changed)
            updates.setdefault(changed, []).append(row)
        else:
            continue
        record._written = values
    insert_rows(session, kind.TABLE, inserts)
    for rows in updates.values():
        update_rows(session, kind.TABLE, "id", rows)
    if phones_changed:
        _write_phones(session, phones_changed)
    if attached:
        attach_replies(session, attached)


def _new_addresses(record: BorrowerRecord) -> list[str]:
    """The phone numbers and email address this write gives the borrower that the stored
    row did not have (before the row's written values are brought up to date)."""
    before = set(record._phones_written or ())
    added = [phone for phone in record.phones if phone not in before]
    email = normalize_recipient(Channel.EMAIL, record.email) if record.email else None
    old = record._written[_EMAIL] if record._written is not None else None
    if email and (old is None or normalize_recipient(Channel.EMAIL, old) != email):
        added.append(email)
    return added


def lock_addresses(session: Session, addresses: Iterable[str]) -> None:
    """Serialise, per phone number or email address, the transactions that link replies to
    a borrower: the one recording a reply from it and the one giving it to a borrower. Each
    then sees what the other committed, so a reply from a number being attached at that
    moment is linked by one of them, never by neither. SQLite writers are serial already
    (BEGIN IMMEDIATE); PostgreSQL takes a transaction-level advisory lock per address, in
    key order so that two writers never wait on each other's."""
    if not takes_row_locks(session):
        return
    keys = sorted(set(addresses))
    if keys:
        session.connection().execute(_LOCK_ADDRESSES, {"addresses": keys})


_LOCK_ADDRESSES = text(
    "SELECT pg_advisory_xact_lock(key) FROM (SELECT DISTINCT "
    "hashtextextended('outreach.address:' || address, 0) AS key "
    "FROM unnest(CAST(:addresses AS text[])) AS address ORDER BY key) AS keys"
)
_ORPHAN_REPLIES = select(_REPLIES.c.id, _REPLIES.c.sender).where(
    _REPLIES.c.borrower_id.is_(None), keys_in(_REPLIES.c.sender, "senders")
)


def attach_replies(session: Session, addresses: Mapping[str, str]) -> None:
    """Replies from these addresses that arrived while no borrower had them (before the
    borrower.upserted that gives them one was applied) now belong to that borrower, so its
    timeline shows them. A reply already linked stays with the borrower who had the address
    when it arrived: a number passed on to someone else does not carry its old replies."""
    lock_addresses(session, addresses)
    senders = sorted(addresses)
    connection = session.connection()
    for index in range(0, len(senders), _IN_CHUNK):
        found = connection.execute(
            _ORPHAN_REPLIES, {"senders": senders[index : index + _IN_CHUNK]}
        ).all()
        for reply_id, sender in found:
            connection.execute(
                update(_REPLIES)
                .where(_REPLIES.c.id == reply_id, _REPLIES.c.borrower_id.is_(None))
                .values(borrower_id=addresses[sender])
            )


def _write_phones(session: Session, borrowers: list[BorrowerRecord]) -> None:
    stored = [b.id for b in borrowers if b._phones_written]
    for index in range(0, len(stored), _IN_CHUNK):
        session.connection().execute(
            delete(_PHONE_TABLE).where(
                _PHONE_TABLE.c.borrower_id.in_(stored[index : index + _IN_CHUNK])
            )
        )
    insert_rows(
        session,
        _PHONE_TABLE,
        [
            {
                "borrower_id": b.id,
                "position": position,
                "phone": phone,
                "facts": b.phone_facts[position] if len(b.phone_facts) == len(b.phones) else None,
            }
            for b in borrowers
            for position, phone in enumerate(b.phones)
        ],
    )
    for borrower in borrowers:
        borrower._phones_written = borrower.phones


def release_held(session: Session) -> None:
    """Forget the held rows (at the end of the work that held them, after `flush_state`)."""
    for kind in (LoanRecord, BorrowerRecord):
        session.info.pop(kind.HELD, None)


def flush_state(session: Session) -> None:
    """Everything this transaction changed, in the database: what the ORM holds and the
    held rows; run before reading state back with a query."""
    session.flush()
    write_held(session, BorrowerRecord)
    write_held(session, LoanRecord)


Held = TypeVar("Held", bound=HeldRecord)


# --- what the loan system reports besides the loan row ----------------------------------------


def record_payment(
    session: Session,
    payment_id: str,
    loan_id: str,
    amount: Decimal,
    paid_at: dt.datetime,
    amount_due_after: Decimal,
) -> None:
    """Record a payment, once (a payment id seen before changes nothing)."""
    if session.get(m.Payment, payment_id) is None:
        session.add(
            m.Payment(
                id=payment_id,
                loan_id=loan_id,
                amount=amount,
                paid_at=paid_at,
                amount_due_after=amount_due_after,
            )
        )


def record_promise(
    session: Session,
    promise_id: str,
    loan_id: str,
    amount: Decimal,
    promised_date: dt.date,
    created_at: dt.datetime,
) -> bool:
    """Record a promise to pay; False when its id is known already."""
    if session.get(m.PromiseToPay, promise_id) is not None:
        return False
    session.add(
        m.PromiseToPay(
            id=promise_id,
            loan_id=loan_id,
            amount=amount,
            promised_date=promised_date,
            created_at=created_at,
        )
    )
    return True


def record_plan(
    session: Session,
    plan_id: str,
    loan_id: str,
    instalments: Sequence[tuple[dt.date, Decimal]],
    created_at: dt.datetime,
) -> bool:
    """Record a payment plan (instalments in date order); False when its id is known already."""
    if session.get(m.PaymentPlan, plan_id) is not None:
        return False
    session.add(
        m.PaymentPlan(
            id=plan_id,
            loan_id=loan_id,
            instalments=[
                {"due_date": due_date.isoformat(), "amount": str(amount)}
                for due_date, amount in sorted(instalments, key=operator.itemgetter(0))
            ],
            created_at=created_at,
        )
    )
    return True


def record_visit(
    session: Session,
    visit_id: str,
    loan_id: str,
    visit_at: dt.datetime,
    collector_name: str,
    collector_id: str,
    reported_at: dt.datetime,
) -> bool:
    """Record a field visit, or its change; False when a later report of it is recorded."""
    row = session.get(m.FieldVisit, visit_id)
    if row is None:
        row = m.FieldVisit(id=visit_id, created_at=reported_at)
        session.add(row)
    elif row.created_at > reported_at:
        return False
    row.loan_id = loan_id
    row.visit_at = visit_at
    row.collector_name = collector_name
    row.collector_id = collector_id
    row.created_at = reported_at
    return True


_RESTRICTION = Lockable(
    select(m.ContactRestriction).where(
        m.ContactRestriction.borrower_id == bindparam("borrower_id"),
        m.ContactRestriction.restriction == bindparam("restriction"),
    )
)


def record_restriction(
    session: Session,
    borrower_id: str,
    restriction: str,
    active: bool,
    windows: Sequence[tuple[dt.time, dt.time, Sequence[int]]] | None,
    reported_at: dt.datetime,
    now: dt.datetime,
) -> bool:
    """Record a contact restriction in force or lifted (its inconvenient windows, if any);
    False when a later report of it is recorded."""
    row = session.scalar(
        _RESTRICTION.of(session), {"borrower_id": borrower_id, "restriction": restriction}
    )
    if row is not None and row.state_as_of > reported_at:
        return False
    if row is None:
        row = m.ContactRestriction(borrower_id=borrower_id, restriction=restriction)
        session.add(row)
    row.active = active
    row.windows = (
        [
            {"start": start.isoformat(), "end": end.isoformat(), "days": list(days)}
            for start, end, days in windows
        ]
        if windows
        else None
    )
    row.state_as_of = reported_at
    row.updated_at = now
    return True


def new_held(session: Session, kind: type[Held], key: str) -> Held:
    """A row this transaction will insert, held like the rows it read (see `hold`)."""
    record = _held(session, kind)[key] = kind.new(key)
    return record


_OPT_OUT = Lockable(
    select(m.OptOut).where(
        m.OptOut.channel == bindparam("channel"), m.OptOut.recipient == bindparam("recipient")
    )
)


def set_opt_out(
    session: Session,
    *,
    channel: Channel,
    recipient: str,
    opted_out: bool,
    source: str,
    borrower_id: str | None,
    now: dt.datetime,
) -> bool:
    """Record an opt-out or opt-in; returns whether it changed anything."""
    recipient = normalize_recipient(channel, recipient)
    row = session.scalar(_OPT_OUT.of(session), {"channel": channel.value, "recipient": recipient})
    if row is None:
        if not opted_out:
            return False
        session.add(
            m.OptOut(
                channel=channel.value,
                recipient=recipient,
                borrower_id=borrower_id,
                opted_out=True,
                source=source,
                updated_at=now,
            )
        )
        return True
    changed = row.opted_out != opted_out
    row.opted_out = opted_out
    row.source = source
    row.updated_at = now
    row.borrower_id = row.borrower_id or borrower_id
    return changed


def mark_invalid(
    session: Session, *, channel: Channel, recipient: str, code: str, now: dt.datetime
) -> None:
    recipient = normalize_recipient(channel, recipient)
    exists = session.scalar(
        select(m.InvalidRecipient.id).where(
            m.InvalidRecipient.channel == channel.value,
            m.InvalidRecipient.recipient == recipient,
        )
    )
    if exists is None:
        session.add(
            m.InvalidRecipient(
                channel=channel.value, recipient=recipient, code=code, recorded_at=now
            )
        )


# --- reading state ---------------------------------------------------------------------------


def _windows(raw: Sequence[dict[str, object]] | None) -> tuple[InconvenientWindow, ...]:
    if not raw:
        return ()
    return tuple(
        InconvenientWindow(
            start=dt.time.fromisoformat(str(item["start"])),
            end=dt.time.fromisoformat(str(item["end"])),
            weekdays=frozenset(int(day) for day in item.get("days") or []),  # type: ignore[attr-defined]
        )
        for item in raw
    )


def _table(model: type[m.Base]) -> Table:
    return cast(Table, model.__table__)


_OPT_OUTS = _table(m.OptOut)
_INVALID = _table(m.InvalidRecipient)
_RESTRICTIONS = _table(m.ContactRestriction)
_BORROWERS = _table(m.Borrower)
_PHONES = _table(m.BorrowerPhone)
_PAYMENTS = _table(m.Payment)
_PROMISES = _table(m.PromiseToPay)
_PLANS = _table(m.PaymentPlan)
_VISITS = _table(m.FieldVisit)


def load_borrower(session: Session, borrower_id: str) -> BorrowerState | None:
    """The borrower's state as the database (with this session's changes) has it: a batch
    read of one (`load_borrowers`)."""
    return load_borrowers(session, (borrower_id,)).get(borrower_id)


def _recipients(row: Any, phones: tuple[str, ...]) -> list[tuple[str, str]]:
    recipients = [("sms", phone) for phone in phones]
    if row.email:
        recipients.append(("email", normalize_recipient(Channel.EMAIL, row.email)))
    return recipients


def _addresses(row: Any, phones: tuple[str, ...]) -> list[str]:
    return sorted({recipient for _, recipient in _recipients(row, phones)})


def _compose_borrower(
    row: Any,
    phones: tuple[str, ...],
    opted_out_listed: Iterable[Any],
    invalid_listed: Iterable[Any],
    restrictions: Sequence[Any],
    phone_facts: tuple[str | None, ...] = (),
) -> BorrowerState:
    """The borrower's state from its rows; the listed opt-outs and invalid recipients may
    include other borrowers' addresses (a batch read), only this borrower's count."""
    recipients = set(_recipients(row, phones))
    opted_out = {
        listed.recipient
        for listed in opted_out_listed
        if (listed.channel, listed.recipient) in recipients
    }
    invalid = {
        listed.recipient
        for listed in invalid_listed
        if (listed.channel, listed.recipient) in recipients
    }
    active = frozenset(Restriction(r.restriction) for r in restrictions if r.active)
    windows: tuple[InconvenientWindow, ...] = ()
    for restriction in restrictions:
        if restriction.active and restriction.restriction == Restriction.INCONVENIENT_TIMES:
            windows = _windows(restriction.windows)
    address = None
    if any((row.address_country, row.address_region, row.address_city, row.address_postal_code)):
        address = Address(
            row.address_country, row.address_region, row.address_city, row.address_postal_code
        )
    return BorrowerState(
        id=row.id,
        name=row.name,
        locale=row.locale,
        phones=phones,
        email=row.email,
        timezone=row.timezone,
        address=address,
        consent_sms=row.consent_sms,
        consent_email=row.consent_email,
        tags=frozenset(row.tags or ()),
        opted_out=frozenset(opted_out),
        invalid_addresses=frozenset(invalid),
        active_restrictions=active,
        inconvenient_windows=windows,
        phone_facts=phone_facts,
    )


def compose_loan(
    row: Any,
    payments: Iterable[Any],
    promises: Iterable[Any],
    plans: Iterable[Any],
    visits: Iterable[Any],
) -> LoanState:
    # most loans have none of these: an empty one is not walked (a nightly report of every
    # loan composes each twice)
    payment_values = (
        tuple(Payment(p.id, p.amount, p.paid_at, p.amount_due_after) for p in payments)
        if payments
        else ()
    )
    return LoanState(
        id=row.id,
        borrower_id=row.borrower_id,
        product=row.product,
        currency=row.currency,
        amount_due=row.amount_due,
        balance=row.balance,
        days_past_due=row.days_past_due,
        due_date=row.due_date,
        account_number=row.account_number,
        as_of=row.state_as_of,
        closed_reason=ClosedReason(row.closed_reason) if row.closed_reason else None,
        promises=tuple(_promise(p, payment_values) for p in promises) if promises else (),
        plans=tuple(_plan(p, payment_values) for p in plans) if plans else (),
        visits=tuple(FieldVisit(v.id, v.visit_at, v.collector_name, v.collector_id) for v in visits)
        if visits
        else (),
        payments=payment_values,
    )


# --- reading many at once: the same states, a fixed number of queries for a whole batch -------


_ROWS_IN: dict[tuple[str, str, tuple[str, ...]], Select[Any]] = {}


def _rows_in(
    session: Session, table: Table, column: str, keys: Sequence[str], *order_by: str
) -> list[Any]:
    """Rows whose `column` is one of `keys`, in one query per 500 (built once per shape), as
    named tuples of the table's columns (`row_tuple`)."""
    shape = (table.name, column, order_by)
    query = _ROWS_IN.get(shape)
    if query is None:
        query = select(table).where(keys_in(table.c[column], "keys"))
        if order_by:
            query = query.order_by(*(table.c[name] for name in order_by))
        _ROWS_IN[shape] = query
    values = row_tuple(table)
    rows: list[Any] = []
    for index in range(0, len(keys), _IN_CHUNK):
        chunk = list(keys[index : index + _IN_CHUNK])
        rows.extend(map(values._make, session.connection().execute(query, {"keys": chunk})))
    return rows


def _grouped(rows: Iterable[Any], key: str) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for row in rows:
        groups.setdefault(getattr(row, key), []).append(row)
    return groups


def load_borrowers(session: Session, borrower_ids: Iterable[str]) -> dict[str, BorrowerState]:
    """The states of many borrowers, as the database (with this session's changes) has them,
    in five queries (a batch's states are read together: the one read path)."""
    ids = sorted(set(borrower_ids))
    if not ids:
        return {}
    flush_state(session)
    rows = _rows_in(session, _BORROWERS, "id", ids)
    phones = _grouped(
        _rows_in(session, _PHONES, "borrower_id", ids, "borrower_id", "position"), "borrower_id"
    )
    phones_of = {row.id: tuple(p.phone for p in phones.get(row.id, ())) for row in rows}
    facts_of = {row.id: tuple(p.facts for p in phones.get(row.id, ())) for row in rows}
    addresses = sorted({a for row in rows for a in _addresses(row, phones_of[row.id])})
    opted_out = [r for r in _rows_in(session, _OPT_OUTS, "recipient", addresses) if r.opted_out]
    invalid = _rows_in(session, _INVALID, "recipient", addresses)
    opted_out_by = _grouped(opted_out, "recipient")
    invalid_by = _grouped(invalid, "recipient")
    restrictions = _grouped(_rows_in(session, _RESTRICTIONS, "borrower_id", ids), "borrower_id")
    states: dict[str, BorrowerState] = {}
    for row in rows:
        mine = _addresses(row, phones_of[row.id])
        states[row.id] = _compose_borrower(
            row,
            phones_of[row.id],
            [listed for address in mine for listed in opted_out_by.get(address, ())],
            [listed for address in mine for listed in invalid_by.get(address, ())],
            restrictions.get(row.id, []),
            facts_of[row.id],
        )
    return states


def load_loans(session: Session, loan_ids: Iterable[str]) -> dict[str, LoanState]:
    """The states of many loans, as the database (with this session's changes) has them, in
    five queries."""
    ids = sorted(set(loan_ids))
    if not ids:
        return {}
    flush_state(session)
    rows = _rows_in(session, _LOANS, "id", ids)
    payments = _grouped(
        _rows_in(session, _PAYMENTS, "loan_id", ids, "loan_id", "paid_at"), "loan_id"
    )
    promises = _grouped(
        _rows_in(session, _PROMISES, "loan_id", ids, "loan_id", "created_at"), "loan_id"
    )
    plans = _grouped(_rows_in(session, _PLANS, "loan_id", ids, "loan_id", "created_at"), "loan_id")
    visits = _grouped(_rows_in(session, _VISITS, "loan_id", ids, "loan_id", "visit_at"), "loan_id")
    return {
        row.id: compose_loan(
            row,
            payments.get(row.id, ()),
            promises.get(row.id, ()),
            plans.get(row.id, ()),
            visits.get(row.id, ()),
        )
        for row in rows
    }


def _promise(row: Any, payments: Iterable[Payment]) -> Promise:
    """A promise counts as kept once payments made since it cover it, even a little late:
    nobody who paid should be told they broke their word."""
    paid = sum((p.amount for p in payments if p.paid_at >= row.created_at), Decimal(0))
    return Promise(row.id, row.amount, row.promised_date, row.created_at, kept=paid >= row.amount)


def _plan(row: Any, payments: Sequence[Payment]) -> PaymentPlan:
    """Instalments are paid in order by the payments received since the plan was agreed."""
    available = sum((p.amount for p in payments if p.paid_at >= row.created_at), Decimal(0))
    instalments = []
    for item in row.instalments:
        amount = Decimal(item["amount"])
        paid = available >= amount
        if paid:
            available -= amount
        instalments.append(Instalment(dt.date.fromisoformat(item["due_date"]), amount, paid))
    return PaymentPlan(row.id, tuple(instalments), row.created_at)
