"""The webhook path, stage 4 of 4 (and the clock's re-plan): the policy's desired messages
become rows; pending rows no longer wanted are withheld.

Runs inside the transaction that applied an event (so a payment cancels its reminders in the
same commit as the 202), and from the clock's periodic re-evaluation. Idempotent: message keys
are deterministic and inserted with ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from outreach import policy as pol
from outreach.domain import (
    LOAN_PURPOSES,
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
from outreach.service.messages import new_id
from outreach.store.borrowers import flush_state, load_borrowers, load_loans
from outreach.store.loans import loan_ids_of_borrowers
from outreach.store.messages import (
    PENDING,
    MessageRow,
    NewMessage,
    cease_confirmations_sent,
    insert_new,
    keys_of_loans,
    pending_of,
    write_rows,
)

# A loan that no longer needs collecting is `cancelled`; a message withheld by a rule about the
# borrower is `suppressed`.
# Reasons that cancel a message: the loan or its stage moved on, so it is no longer wanted.
# Any other withholding is a suppression by a rule — `superseded` too: a later step, promise
# or plan took its place, which the log shows as a rule at work, not a change of plan.
CANCEL_REASONS = frozenset({Reason.LOAN_CLOSED, Reason.LOAN_CURRENT, Reason.STAGE_CHANGED})


@dataclass
class PlanOutcome:
    created: int = 0
    cancelled: int = 0
    suppressed: int = 0
    # when re-planning may next change something, the state staying as it is (see
    # `policy.next_plan_change`; asked for with `plan_batch(next_changes=True)`); None:
    # never, or not asked
    next_change: dt.datetime | None = None


def planned_from_row(row: MessageRow) -> PlannedMessage:
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
        variant=row.variant,
        refs=dict(row.refs or {}),
    )


def plan_message(
    policy: pol.Policy,
    borrower: BorrowerState,
    loan: LoanState | None,
    planned: PlannedMessage,
    now: dt.datetime,
    *,
    cease_confirmations_sent: int = 0,
    timing: Decision | None = None,
) -> NewMessage:
    """The row a planned message becomes, gated on the way in (not inserted yet).

    `timing` is how the policy chose `send_at`: a wait (quiet hours, holiday, inconvenient
    time) is recorded as the deferral it is.
    """
    message = NewMessage(
        id=new_id("msg_", now, name=planned.key),
        idempotency_key=planned.key,
        purpose=planned.purpose.value,
        borrower_id=planned.borrower_id,
        loan_id=planned.loan_id,
        campaign_id=planned.campaign_id,
        variant=planned.variant,
        stage=planned.stage,
        channel=planned.channel.value,
        template=planned.template,
        locale=policy.locale_for(borrower.locale),
        recipient=borrower.recipient(planned.channel),
        send_at=planned.send_at,
        status=Status.SCHEDULED.value,
        reason=Reason.PLANNED.value,
        fallback_from=planned.fallback_from.value if planned.fallback_from else None,
        refs=planned.refs,
        created_at=now,
        updated_at=now,
    )
    detail: dict[str, object] = {"key": planned.key}
    if planned.fallback_from is not None:
        detail["fallback_from"] = planned.fallback_from.value
    message.move(Status.SCHEDULED, Reason.PLANNED, now, detail)
    if timing is not None and timing.kind is DecisionKind.SUPPRESS:
        withhold(message, timing, now)
        return message
    if timing is not None and timing.kind is DecisionKind.WAIT:
        message.move(Status.DEFERRED, timing.reason, now, timing.detail_text())
    message.gated_for = max(now, planned.send_at)
    decision = pol.gate(
        policy,
        borrower,
        loan,
        planned,
        message.gated_for,
        known_at=now,
        cease_confirmations_sent=cease_confirmations_sent,
    )
    apply_planning_decision(message, decision, now)
    return message


def _just_gated(row: MessageRow, now: dt.datetime) -> bool:
    """A message planned in this batch whose gate was asked about the very instant a re-gate
    would ask about, on the same state: asking again decides the same."""
    return row.stored is None and row.gated_for == max(now, row.send_at)


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
) -> str | None:
    """Create the row for a planned message unless its key exists; gate it on the way in.
    Returns its id, or None when the key existed."""
    message = plan_message(
        policy,
        borrower,
        loan,
        planned,
        now,
        cease_confirmations_sent=cease_confirmations_sent,
        timing=timing,
    )
    return message.id if insert_new(session, [message]) else None


def apply_planning_decision(row: MessageRow, decision: Decision, now: dt.datetime) -> None:
    if decision.kind is DecisionKind.SUPPRESS:
        withhold(row, decision, now)
    elif (
        decision.kind is DecisionKind.WAIT
        and decision.until is not None
        and decision.until > row.send_at
    ):
        row.send_at = decision.until
        row.move(Status.DEFERRED, decision.reason, now, decision.detail_text())


def withhold(row: MessageRow, decision: Decision, now: dt.datetime) -> None:
    """Withhold a message for good: cancelled when it is no longer wanted, suppressed by a
    rule otherwise."""
    status = Status.CANCELLED if decision.reason in CANCEL_REASONS else Status.SUPPRESSED
    row.move(status, decision.reason, now, decision.detail_text() or None)


@dataclass(frozen=True)
class PlanWork:
    """What one event (or one re-plan) asks of planning: these loans re-planned in turn, as
    `replan_loan` re-plans one, then the borrower's pending messages re-gated, as
    `regate_borrower` re-gates them."""

    loan_ids: tuple[str, ...] = ()
    regate_borrower: str | None = None


@dataclass
class BatchOutcome:
    loans: dict[str, PlanOutcome] = field(default_factory=dict)
    # messages withheld by re-gating, per borrower
    withheld: dict[str, int] = field(default_factory=dict)


def plan_batch(
    session: Session,
    policy: pol.Policy,
    work: Sequence[PlanWork],
    now: dt.datetime,
    *,
    next_changes: bool = False,
) -> BatchOutcome:
    """Plan as doing each item of `work` in turn would, reading every row the batch needs in
    a fixed number of queries and inserting its new messages in one statement.

    The items must not depend on one another: no loan and no borrower in two items, and no
    item's borrower with pending messages of another item's loan (`apply.apply_stored`
    groups events so).
    Planning then writes nothing another item reads — it changes messages, never a loan's or
    a borrower's state — so reading everything first reads what each would have read. New
    message ids are drawn in the order doing the items one by one draws them.
    """
    result = BatchOutcome()
    loan_ids = sorted({loan_id for item in work for loan_id in item.loan_ids})
    regated = sorted({item.regate_borrower for item in work if item.regate_borrower is not None})
    if not loan_ids and not regated:
        return result
    loans = load_loans(session, loan_ids)
    existing = keys_of_loans(session, loan_ids)
    held: dict[str, MessageRow] = {}
    pending_of_loan = pending_of(session, "loan_id", loan_ids, held)
    pending_of_borrower = pending_of(session, "borrower_id", regated, held)
    # loans of a re-gated borrower's messages that are not re-planned here
    others = {
        row.loan_id
        for rows in pending_of_borrower.values()
        for row in rows
        if row.loan_id is not None and row.loan_id not in loans
    }
    loans.update(load_loans(session, others))
    # a re-gated borrower with nothing pending and no loan re-planned here withholds nothing:
    # its state is not needed
    needed = _borrowers_of(loans, loan_ids)
    needed.update(borrower_id for borrower_id in regated if borrower_id in pending_of_borrower)
    borrowers = load_borrowers(session, needed)
    created: list[tuple[NewMessage, PlanOutcome]] = []
    new_of_borrower: dict[str, list[NewMessage]] = {}
    taken: set[str] = set()
    for item in work:
        for loan_id in item.loan_ids:
            outcome = result.loans[loan_id] = PlanOutcome()
            loan = loans.get(loan_id)
            borrower = borrowers.get(loan.borrower_id) if loan is not None else None
            if loan is None or borrower is None:
                continue
            for message in _replan(
                session,
                policy,
                borrower,
                loan,
                existing.get(loan_id, set()),
                pending_of_loan.get(loan_id, []),
                taken,
                outcome,
                now,
                next_changes,
            ):
                created.append((message, outcome))
                new_of_borrower.setdefault(message.borrower_id, []).append(message)
        borrower_id = item.regate_borrower
        if borrower_id is None:
            continue
        withheld = result.withheld[borrower_id] = 0
        regated_borrower = borrowers.get(borrower_id)
        if regated_borrower is None:
            continue
        rows: list[MessageRow] = [
            *pending_of_borrower.get(borrower_id, []),
            *new_of_borrower.get(borrower_id, []),
        ]
        for row in sorted(rows, key=lambda row: row.id):
            if row.status not in PENDING or _just_gated(row, now):
                continue  # withheld by the re-plan before, or gated on this state just now
            loan = loans.get(row.loan_id) if row.loan_id is not None else None
            withheld += regate(session, policy, regated_borrower, loan, row, now)
        result.withheld[borrower_id] = withheld
    write_rows(session, held.values())
    inserted = insert_new(session, [message for message, _ in created])
    for message, outcome in created:
        if message.id not in inserted:
            outcome.created -= 1  # someone else inserted it first: theirs stands
    return result


def _borrowers_of(loans: dict[str, LoanState], loan_ids: Sequence[str]) -> set[str]:
    return {loans[loan_id].borrower_id for loan_id in loan_ids if loan_id in loans}


def _replan(
    session: Session,
    policy: pol.Policy,
    borrower: BorrowerState,
    loan: LoanState,
    existing: set[str],
    pending: Sequence[MessageRow],
    taken: set[str],
    outcome: PlanOutcome,
    now: dt.datetime,
    next_change: bool,
) -> list[NewMessage]:
    """One loan's messages brought in line with the policy and the latest state; returns the
    new ones (inserted by the caller)."""
    desired = pol.plan_items(policy, borrower, loan, now)
    desired_keys = {item.message.key for item in desired}
    fresh: list[NewMessage] = []
    for item in desired:
        if item.message.key in existing:
            continue  # planned before: inserting it again would change nothing
        message = plan_message(policy, borrower, loan, item.message, now, timing=item.timing)
        if message.idempotency_key in taken:
            continue  # as the unique key refuses a second row
        taken.add(message.idempotency_key)
        fresh.append(message)
        outcome.created += 1
    rows: list[MessageRow] = [
        *pending,
        *(message for message in fresh if message.status in PENDING),
    ]
    for row in sorted(rows, key=lambda row: row.id):
        planned = planned_from_row(row)
        # a cadence step held past its day is no longer planned anew, yet may still go: the
        # gate decides (it withholds one a later step replaced, or a stage moved past)
        carried = row.purpose == Purpose.DUNNING.value
        if row.purpose in LOAN_PURPOSES and row.idempotency_key not in desired_keys and not carried:
            decision = pol.gate(policy, borrower, loan, planned, now)
            if decision.kind is not DecisionKind.SUPPRESS:
                decision = Decision.suppress(Reason.SUPERSEDED)
            withhold(row, decision, now)
            outcome.cancelled += 1
            continue
        if not _just_gated(row, now):
            outcome.suppressed += regate(session, policy, borrower, loan, row, now)
    if next_change:
        outcome.next_change = pol.next_plan_change(
            policy,
            borrower,
            loan,
            now,
            planned=existing | {message.idempotency_key for message in fresh},
            pending={
                row.idempotency_key: row.send_at
                for row in rows
                if row.status in PENDING and row.purpose in LOAN_PURPOSES
            },
        )
    return fresh


def replan_loan(
    session: Session, policy: pol.Policy, loan_id: str, now: dt.datetime
) -> PlanOutcome:
    """Bring one loan's messages in line with the policy and the latest state."""
    return plan_batch(session, policy, [PlanWork((loan_id,))], now).loans[loan_id]


def regate(
    session: Session,
    policy: pol.Policy,
    borrower: BorrowerState,
    loan: LoanState | None,
    row: MessageRow,
    now: dt.datetime,
) -> int:
    """Withhold a pending row at once when the latest state forbids it; returns 1 if so."""
    decision = pol.gate(
        policy,
        borrower,
        loan,
        planned_from_row(row),
        max(now, row.send_at),
        known_at=now,
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
    return plan_batch(session, policy, [PlanWork((), borrower_id)], now).withheld[borrower_id]


def loans_of(session: Session, borrower_id: str) -> list[str]:
    return loans_of_many(session, [borrower_id]).get(borrower_id, [])


def loans_of_many(session: Session, borrower_ids: Sequence[str]) -> dict[str, list[str]]:
    """The ids of each borrower's loans, in id order (held changes written first)."""
    flush_state(session)
    return loan_ids_of_borrowers(session, borrower_ids)
