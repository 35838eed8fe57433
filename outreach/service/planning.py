"""Planning: the policy's desired messages become rows; pending rows no longer wanted go.

Runs inside the transaction that applied an event (so a payment cancels its reminders in the
same commit as the 202), and from the clock's periodic re-evaluation. Idempotent: message keys
are deterministic and inserted with ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, lazyload

from outreach import policy as pol
from outreach.domain import (
    LOAN_PURPOSES,
    PENDING_STATUSES,
    BorrowerState,
    Channel,
    Decision,
    DecisionKind,
    LoanState,
    PlannedMessage,
    Purpose,
    Reason,
    Status,
)
from outreach.service.messages import new_id, record
from outreach.service.state import load_borrower, load_loan, loan_state
from outreach.store import models as m

# A loan that no longer needs collecting is `cancelled`; a message withheld by a rule about the
# borrower is `suppressed`.
CANCEL_REASONS = frozenset(
    {Reason.LOAN_CLOSED, Reason.LOAN_CURRENT, Reason.SUPERSEDED, Reason.STAGE_CHANGED}
)
PENDING = tuple(status.value for status in PENDING_STATUSES)


@dataclass
class PlanOutcome:
    created: int = 0
    cancelled: int = 0
    suppressed: int = 0
    # when re-planning may next change something, the state staying as it is (see
    # `policy.next_plan_change`); None: never, or not known
    next_change: dt.datetime | None = None


def planned_from_row(row: m.Message) -> PlannedMessage:
    return PlannedMessage(
        key=row.idempotency_key,
        purpose=Purpose(row.purpose),
        borrower_id=row.borrower_id,
        loan_id=row.loan_id,
        stage=row.stage,
        channel=Channel(row.channel),
        template=row.template,
        send_at=row.send_at,
        fallback_from=Channel(row.fallback_from) if row.fallback_from else None,
        campaign_id=row.campaign_id,
        refs=dict(row.refs or {}),
    )


_MESSAGE_INSERTS: dict[str, Any] = {}


def _message_insert(dialect: str) -> Any:
    """INSERT … ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, built once."""
    statement = _MESSAGE_INSERTS.get(dialect)
    if statement is None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        table = cast(Table, m.Message.__table__)
        statement = (
            insert(table)
            .values({name: bindparam(name) for name in _MESSAGE_COLUMNS})
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(table.c.id)
        )
        _MESSAGE_INSERTS[dialect] = statement
    return statement


_MESSAGE_COLUMNS = (
    "id",
    "idempotency_key",
    "purpose",
    "borrower_id",
    "loan_id",
    "campaign_id",
    "stage",
    "channel",
    "template",
    "locale",
    "recipient",
    "send_at",
    "status",
    "reason",
    "fallback_from",
    "refs",
    "attempts",
    "needs_human",
    "created_at",
    "updated_at",
)


def insert_message(
    session: Session,
    policy: pol.Policy,
    borrower: BorrowerState,
    loan: LoanState | None,
    planned: PlannedMessage,
    now: dt.datetime,
    *,
    cease_confirmations_sent: int = 0,
    timing: Decision | None = None,
) -> m.Message | None:
    """Create the row for a planned message unless its key exists; gate it on the way in.

    `timing` is how the policy chose `send_at`: a wait (quiet hours, holiday, inconvenient
    time) is recorded as the deferral it is.
    """
    message_id = new_id("msg_", now)
    values = {
        "id": message_id,
        "idempotency_key": planned.key,
        "purpose": planned.purpose.value,
        "borrower_id": planned.borrower_id,
        "loan_id": planned.loan_id,
        "campaign_id": planned.campaign_id,
        "stage": planned.stage,
        "channel": planned.channel.value,
        "template": planned.template,
        "locale": policy.locale_for(borrower.locale),
        "recipient": borrower.recipient(planned.channel),
        "send_at": planned.send_at,
        "status": Status.SCHEDULED.value,
        "reason": Reason.PLANNED.value,
        "fallback_from": planned.fallback_from.value if planned.fallback_from else None,
        "refs": planned.refs,
        "attempts": 0,
        "needs_human": False,
        "created_at": now,
        "updated_at": now,
    }
    statement = _message_insert(session.get_bind().dialect.name)
    if session.execute(statement, values).scalar() is None:
        return None
    # the new row, without reading its (empty) timeline
    row = session.get_one(m.Message, message_id, options=[lazyload(m.Message.events)])
    detail: dict[str, object] = {"key": planned.key}
    if planned.fallback_from is not None:
        detail["fallback_from"] = planned.fallback_from.value
    record(row, Status.SCHEDULED, Reason.PLANNED.value, now, detail)
    if timing is not None and timing.kind is DecisionKind.SUPPRESS:
        withhold(row, timing, now)
        return row
    if timing is not None and timing.kind is DecisionKind.WAIT:
        record(row, Status.DEFERRED, timing.reason.value, now, timing.detail_text())
    decision = pol.gate(
        policy,
        borrower,
        loan,
        planned,
        max(now, planned.send_at),
        cease_confirmations_sent=cease_confirmations_sent,
    )
    apply_planning_decision(row, decision, now)
    return row


def apply_planning_decision(row: m.Message, decision: Decision, now: dt.datetime) -> None:
    if decision.kind is DecisionKind.SUPPRESS:
        withhold(row, decision, now)
    elif (
        decision.kind is DecisionKind.WAIT
        and decision.until is not None
        and decision.until > row.send_at
    ):
        row.send_at = decision.until
        record(row, Status.DEFERRED, decision.reason.value, now, decision.detail_text())


def withhold(row: m.Message, decision: Decision, now: dt.datetime) -> None:
    status = Status.CANCELLED if decision.reason in CANCEL_REASONS else Status.SUPPRESSED
    record(row, status, decision.reason.value, now, decision.detail_text() or None)


_PENDING_QUERIES: dict[tuple[bool, bool, bool], Select[m.Message]] = {}


def _pending_query(by_loan: bool, by_borrower: bool, lock: bool) -> Select[m.Message]:
    """Built once per shape; a timeline is loaded only for a row that gets a new step."""
    key = (by_loan, by_borrower, lock)
    cached = _PENDING_QUERIES.get(key)
    if cached is None:
        query = (
            select(m.Message)
            .where(m.Message.status.in_(PENDING))
            .options(lazyload(m.Message.events))
        )
        if by_loan:
            query = query.where(m.Message.loan_id == bindparam("loan_id"))
        if by_borrower:
            query = query.where(m.Message.borrower_id == bindparam("borrower_id"))
        if lock:
            query = query.with_for_update(skip_locked=False)
        cached = _PENDING_QUERIES[key] = query.order_by(m.Message.id)
    return cached


def pending_rows(
    session: Session,
    *,
    loan_id: str | None = None,
    borrower_id: str | None = None,
    lock: bool = True,
) -> Sequence[m.Message]:
    query = _pending_query(
        loan_id is not None,
        borrower_id is not None,
        lock and session.get_bind().dialect.name == "postgresql",
    )
    params = {"loan_id": loan_id, "borrower_id": borrower_id}
    return session.scalars(query, {k: v for k, v in params.items() if v is not None}).all()


_MESSAGES = cast(Table, m.Message.__table__)
_KEYS_OF_LOAN = select(_MESSAGES.c.idempotency_key).where(
    _MESSAGES.c.loan_id == bindparam("loan_id")
)


def planned_keys(session: Session, loan_id: str) -> set[str]:
    """The keys of every message a loan has, whatever became of them."""
    session.flush()
    return set(session.connection().execute(_KEYS_OF_LOAN, {"loan_id": loan_id}).scalars())


def cease_confirmations_sent(session: Session, borrower_id: str) -> int:
    rows = session.scalars(
        select(m.Message.status).where(
            m.Message.borrower_id == borrower_id,
            m.Message.purpose == Purpose.CEASE_CONFIRMATION.value,
        )
    ).all()
    delivered_or_on_its_way = {
        Status.SENDING.value,
        Status.SENT.value,
        Status.DELIVERED.value,
        Status.UNDELIVERED.value,
    }
    return sum(1 for status in rows if status in delivered_or_on_its_way)


def replan_loan(
    session: Session, policy: pol.Policy, loan_id: str, now: dt.datetime
) -> PlanOutcome:
    """Bring one loan's messages in line with the policy and the latest state."""
    outcome = PlanOutcome()
    loan = load_loan(session, loan_id)
    if loan is None:
        return outcome
    borrower = load_borrower(session, loan.borrower_id)
    if borrower is None:
        return outcome
    desired = pol.plan_items(policy, borrower, loan, now)
    desired_keys = {item.message.key for item in desired}
    existing = planned_keys(session, loan_id)
    for item in desired:
        if item.message.key in existing:
            continue  # planned before: inserting it again would change nothing
        created = insert_message(
            session, policy, borrower, loan, item.message, now, timing=item.timing
        )
        if created is not None:
            outcome.created += 1
    for row in pending_rows(session, loan_id=loan_id):
        planned = planned_from_row(row)
        if row.purpose in LOAN_PURPOSES and row.idempotency_key not in desired_keys:
            decision = pol.gate(policy, borrower, loan, planned, now)
            if decision.kind is not DecisionKind.SUPPRESS:
                decision = Decision.suppress(Reason.SUPERSEDED)
            withhold(row, decision, now)
            outcome.cancelled += 1
            continue
        outcome.suppressed += regate(session, policy, borrower, loan, row, now)
    outcome.next_change = pol.next_plan_change(policy, borrower, loan, now)
    return outcome


def regate(
    session: Session,
    policy: pol.Policy,
    borrower: BorrowerState,
    loan: LoanState | None,
    row: m.Message,
    now: dt.datetime,
) -> int:
    """Withhold a pending row at once when the latest state forbids it; returns 1 if so."""
    decision = pol.gate(
        policy,
        borrower,
        loan,
        planned_from_row(row),
        max(now, row.send_at),
        cease_confirmations_sent=cease_confirmations_sent(session, borrower.id)
        if row.purpose == Purpose.CEASE_CONFIRMATION.value
        else 0,
    )
    if decision.kind is DecisionKind.SUPPRESS:
        withhold(row, decision, now)
        return 1
    return 0


def regate_borrower(
    session: Session, policy: pol.Policy, borrower_id: str, now: dt.datetime
) -> int:
    """After an opt-out or restriction: withhold every pending message of the borrower."""
    borrower = load_borrower(session, borrower_id)
    if borrower is None:
        return 0
    loans: dict[str, LoanState | None] = {}
    withheld = 0
    for row in pending_rows(session, borrower_id=borrower_id):
        loan = None
        if row.loan_id is not None:
            if row.loan_id not in loans:
                loan_row = session.get(m.Loan, row.loan_id)
                loans[row.loan_id] = loan_state(session, loan_row) if loan_row else None
            loan = loans[row.loan_id]
        withheld += regate(session, policy, borrower, loan, row, now)
    return withheld


def loans_of(session: Session, borrower_id: str) -> list[str]:
    return list(
        session.scalars(
            select(m.Loan.id).where(m.Loan.borrower_id == borrower_id).order_by(m.Loan.id)
        )
    )


def replan_loans(
    session: Session, policy: pol.Policy, loan_ids: Iterable[str], now: dt.datetime
) -> PlanOutcome:
    total = PlanOutcome()
    for loan_id in sorted(set(loan_ids)):
        outcome = replan_loan(session, policy, loan_id, now)
        total.created += outcome.created
        total.cancelled += outcome.cancelled
        total.suppressed += outcome.suppressed
    return total
