"""Borrower and loan state: events applied to rows, rows read back as domain values."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Row, Select, Table, bindparam, select
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
from outreach.service import events as ev
from outreach.store import models as m


def normalize_recipient(channel: Channel | str, recipient: str) -> str:
    return recipient.strip().lower() if Channel(channel) is Channel.EMAIL else recipient.strip()


# --- applying events -------------------------------------------------------------------------


def lock_for_update(session: Session) -> bool | None:
    """`with_for_update` for a row about to be updated: a row lock on PostgreSQL; nothing on
    SQLite, whose writers hold the database lock from BEGIN (and where asking would force
    another read of a row the session already holds)."""
    return True if session.get_bind().dialect.name == "postgresql" else None


def apply_borrower(session: Session, event: ev.Event, now: dt.datetime) -> str:
    """Upsert a borrower; an update older than the one applied is recorded and ignored."""
    data: ev.BorrowerIn = event.data.borrower
    row = session.get(m.Borrower, data.id, with_for_update=lock_for_update(session))
    if row is not None and row.state_as_of > event.occurred_at:
        return "ignored_stale"
    if row is None:
        row = m.Borrower(id=data.id, created_at=now)
        session.add(row)
    row.name = data.name
    row.locale = data.locale
    row.email = data.email
    row.timezone = data.timezone
    address = data.address or ev.AddressIn()
    row.address_country = address.country
    row.address_region = address.region
    row.address_city = address.city
    row.address_postal_code = address.postal_code
    row.consent_sms = data.consent.sms
    row.consent_email = data.consent.email
    row.tags = sorted(set(data.tags))
    row.state_as_of = event.occurred_at
    row.updated_at = now
    row.phones = [
        m.BorrowerPhone(borrower_id=data.id, position=index, phone=phone)
        for index, phone in enumerate(dict.fromkeys(data.phones))
    ]
    return "applied"


def apply_loan(session: Session, event: ev.Event, now: dt.datetime) -> str:
    data: ev.LoanIn = event.data.loan
    row = session.get(m.Loan, data.id, with_for_update=lock_for_update(session))
    if row is not None and row.state_as_of > event.occurred_at:
        return "ignored_stale"
    if row is not None and row.closed_reason is not None:
        return "ignored_closed"
    if row is None:
        row = m.Loan(id=data.id, created_at=now)
        session.add(row)
    row.borrower_id = data.borrower_id
    row.product = data.product
    row.currency = data.currency
    row.amount_due = data.amount_due
    row.balance = data.balance
    row.days_past_due = data.days_past_due
    row.due_date = data.due_date
    row.account_number = data.account_number
    row.state_as_of = event.occurred_at
    row.updated_at = now
    return "applied"


def apply_payment(session: Session, event: ev.Event, now: dt.datetime) -> str:
    data: ev.PaymentReceived = event.data
    if session.get(m.Payment, data.payment_id) is None:
        session.add(
            m.Payment(
                id=data.payment_id,
                loan_id=data.loan_id,
                amount=data.amount,
                paid_at=data.paid_at,
                amount_due_after=data.amount_due_after,
            )
        )
    loan = session.get(m.Loan, data.loan_id, with_for_update=lock_for_update(session))
    if loan is None:
        return "recorded_unknown_loan"
    if loan.state_as_of > event.occurred_at:
        # a later loan.updated already reflects this payment in the amount due
        return "recorded_stale"
    loan.amount_due = data.amount_due_after
    if data.amount_due_after <= 0:
        loan.days_past_due = min(loan.days_past_due, 0)
    loan.state_as_of = event.occurred_at
    loan.updated_at = now
    return "applied"


def apply_promise(session: Session, event: ev.Event, now: dt.datetime) -> str:
    data: ev.PromiseCreated = event.data
    if session.get(m.PromiseToPay, data.promise_id) is not None:
        return "ignored_known"
    session.add(
        m.PromiseToPay(
            id=data.promise_id,
            loan_id=data.loan_id,
            amount=data.amount,
            promised_date=data.promised_date,
            created_at=event.occurred_at,
        )
    )
    return "applied"


def apply_plan(session: Session, event: ev.Event, now: dt.datetime) -> str:
    data: ev.PlanCreated = event.data
    if session.get(m.PaymentPlan, data.plan_id) is not None:
        return "ignored_known"
    session.add(
        m.PaymentPlan(
            id=data.plan_id,
            loan_id=data.loan_id,
            instalments=[
                {"due_date": item.due_date.isoformat(), "amount": str(item.amount)}
                for item in sorted(data.instalments, key=lambda item: item.due_date)
            ],
            created_at=event.occurred_at,
        )
    )
    return "applied"


def apply_visit(session: Session, event: ev.Event, now: dt.datetime) -> str:
    data: ev.VisitScheduled = event.data
    row = session.get(m.FieldVisit, data.visit_id)
    if row is None:
        row = m.FieldVisit(id=data.visit_id, created_at=event.occurred_at)
        session.add(row)
    elif row.created_at > event.occurred_at:
        return "ignored_stale"
    row.loan_id = data.loan_id
    row.visit_at = data.visit_at
    row.collector_name = data.collector_name
    row.collector_id = data.collector_id
    row.created_at = event.occurred_at
    return "applied"


def apply_restriction(session: Session, event: ev.Event, now: dt.datetime) -> str:
    data: ev.ContactRestricted = event.data
    row = session.scalar(
        select(m.ContactRestriction)
        .where(
            m.ContactRestriction.borrower_id == data.borrower_id,
            m.ContactRestriction.restriction == data.restriction.value,
        )
        .with_for_update()
    )
    if row is not None and row.state_as_of > event.occurred_at:
        return "ignored_stale"
    if row is None:
        row = m.ContactRestriction(borrower_id=data.borrower_id, restriction=data.restriction.value)
        session.add(row)
    row.active = data.active
    row.windows = (
        [
            {
                "start": window.start.isoformat(),
                "end": window.end.isoformat(),
                "days": list(window.days),
            }
            for window in data.windows
        ]
        if data.windows
        else None
    )
    row.state_as_of = event.occurred_at
    row.updated_at = now
    return "applied"


def apply_closure(session: Session, event: ev.Event, now: dt.datetime) -> str:
    data: ev.LoanClosed = event.data
    loan = session.get(m.Loan, data.loan_id, with_for_update=lock_for_update(session))
    if loan is None:
        return "recorded_unknown_loan"
    loan.closed_reason = data.reason.value
    loan.state_as_of = max(loan.state_as_of, event.occurred_at)
    loan.updated_at = now
    return "applied"


APPLY = {
    "borrower.upserted": apply_borrower,
    "loan.updated": apply_loan,
    "payment.received": apply_payment,
    "promise_to_pay.created": apply_promise,
    "payment_plan.created": apply_plan,
    "field_visit.scheduled": apply_visit,
    "contact.restricted": apply_restriction,
    "loan.closed": apply_closure,
}


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
    row = session.scalar(
        select(m.OptOut)
        .where(m.OptOut.channel == channel.value, m.OptOut.recipient == recipient)
        .with_for_update()
    )
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
_LOANS = _table(m.Loan)
_PAYMENTS = _table(m.Payment)
_PROMISES = _table(m.PromiseToPay)
_PLANS = _table(m.PaymentPlan)
_VISITS = _table(m.FieldVisit)
# Built once: these run for every plan and every send, and building a statement costs more
# than running it.
_BORROWER_QUERY = select(_BORROWERS).where(_BORROWERS.c.id == bindparam("borrower_id"))
_PHONES_QUERY = (
    select(_PHONES.c.phone)
    .where(_PHONES.c.borrower_id == bindparam("borrower_id"))
    .order_by(_PHONES.c.position)
)
_LOAN_QUERY = select(_LOANS).where(_LOANS.c.id == bindparam("loan_id"))
_OPTED_OUT_QUERY = select(_OPT_OUTS.c.channel, _OPT_OUTS.c.recipient).where(
    _OPT_OUTS.c.recipient.in_(bindparam("recipients", expanding=True)),
    _OPT_OUTS.c.opted_out.is_(True),
)
_INVALID_QUERY = select(_INVALID.c.channel, _INVALID.c.recipient).where(
    _INVALID.c.recipient.in_(bindparam("recipients", expanding=True))
)
_RESTRICTIONS_QUERY = select(_RESTRICTIONS).where(
    _RESTRICTIONS.c.borrower_id == bindparam("borrower_id")
)
_PAYMENTS_QUERY = (
    select(_PAYMENTS)
    .where(_PAYMENTS.c.loan_id == bindparam("loan_id"))
    .order_by(_PAYMENTS.c.paid_at)
)
_PROMISES_QUERY = (
    select(_PROMISES)
    .where(_PROMISES.c.loan_id == bindparam("loan_id"))
    .order_by(_PROMISES.c.created_at)
)
_PLANS_QUERY = (
    select(_PLANS).where(_PLANS.c.loan_id == bindparam("loan_id")).order_by(_PLANS.c.created_at)
)
_VISITS_QUERY = (
    select(_VISITS).where(_VISITS.c.loan_id == bindparam("loan_id")).order_by(_VISITS.c.visit_at)
)


def _rows(
    session: Session, query: Select[Any], *, flush: bool = True, **params: Any
) -> Sequence[Row[Any]]:
    """Rows of a prebuilt query, after the session's pending changes (as autoflush would;
    `flush=False` right after a query that flushed)."""
    if flush:
        session.flush()
    return session.connection().execute(query, params).all()


def load_borrower(session: Session, borrower_id: str) -> BorrowerState | None:
    """The borrower's state as the database (with this session's changes) has it."""
    rows = _rows(session, _BORROWER_QUERY, borrower_id=borrower_id)
    if not rows:
        return None
    phones = tuple(_rows(session, _PHONES_QUERY, borrower_id=borrower_id, flush=False))
    return _borrower_state(session, rows[0], tuple(phone for (phone,) in phones))


def borrower_state(session: Session, row: m.Borrower) -> BorrowerState:
    return _borrower_state(session, row, tuple(phone.phone for phone in row.phones))


def _borrower_state(session: Session, row: Any, phones: tuple[str, ...]) -> BorrowerState:
    recipients = [("sms", phone) for phone in phones]
    if row.email:
        recipients.append(("email", normalize_recipient(Channel.EMAIL, row.email)))
    addresses = sorted({recipient for _, recipient in recipients})
    opted_out: set[str] = set()
    invalid: set[str] = set()
    if addresses:
        for listed in _rows(session, _OPTED_OUT_QUERY, recipients=addresses):
            if (listed.channel, listed.recipient) in recipients:
                opted_out.add(listed.recipient)
        for listed in _rows(session, _INVALID_QUERY, recipients=addresses):
            if (listed.channel, listed.recipient) in recipients:
                invalid.add(listed.recipient)
    restrictions = _rows(session, _RESTRICTIONS_QUERY, borrower_id=row.id)
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
    )


def load_loan(session: Session, loan_id: str) -> LoanState | None:
    """The loan's state as the database (with this session's changes) has it."""
    rows = _rows(session, _LOAN_QUERY, loan_id=loan_id)
    return loan_state(session, rows[0]) if rows else None


def loan_state(session: Session, row: m.Loan | Row[Any]) -> LoanState:
    payments = _rows(session, _PAYMENTS_QUERY, loan_id=row.id)
    promises = _rows(session, _PROMISES_QUERY, loan_id=row.id, flush=False)
    plans = _rows(session, _PLANS_QUERY, loan_id=row.id, flush=False)
    visits = _rows(session, _VISITS_QUERY, loan_id=row.id, flush=False)
    payment_values = tuple(Payment(p.id, p.amount, p.paid_at, p.amount_due_after) for p in payments)
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
        promises=tuple(_promise(p, payment_values) for p in promises),
        plans=tuple(_plan(p, payment_values) for p in plans),
        visits=tuple(
            FieldVisit(v.id, v.visit_at, v.collector_name, v.collector_id) for v in visits
        ),
        payments=payment_values,
    )


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
