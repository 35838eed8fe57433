"""Planning: the policy's desired messages become rows; pending rows no longer wanted go.

Runs inside the transaction that applied an event (so a payment cancels its reminders in the
same commit as the 202), and from the clock's periodic re-evaluation. Idempotent: message keys
are deterministic and inserted with ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, select
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
from outreach.service.messages import detail_text, new_id, record
from outreach.service.state import flush_state, load_borrowers, load_loans
from outreach.store import models as m
from outreach.store.bulk import insert_rows, update_rows
from outreach.store.keysets import keys_in

# A loan that no longer needs collecting is `cancelled`; a message withheld by a rule about the
# borrower is `suppressed`.
# Reasons that cancel a message: the loan or its stage moved on, so it is no longer wanted.
# Any other withholding is a suppression by a rule — `superseded` too: a later step, promise
# or plan took its place, which the log shows as a rule at work, not a change of plan.
CANCEL_REASONS = frozenset({Reason.LOAN_CLOSED, Reason.LOAN_CURRENT, Reason.STAGE_CHANGED})
PENDING = tuple(status.value for status in PENDING_STATUSES)


@dataclass
class PlanOutcome:
    created: int = 0
    cancelled: int = 0
    suppressed: int = 0
    # when re-planning may next change something, the state staying as it is (see
    # `policy.next_plan_change`; asked for with `plan_batch(next_changes=True)`); None:
    # never, or not asked
    next_change: dt.datetime | None = None


@dataclass(eq=False)
class MessageRow:
    """A message as plain values, held by the transaction that plans or gates it.

    Planning and the final gate record its moves here (`record`); a batch then writes them
    together: new messages and their timelines one statement each (`insert_new`), messages
    read from the database by the columns that changed and their new steps (`write_rows`).
    The ORM would do the same with several times the work per row.
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
    steps: list[dict[str, Any]] = field(default_factory=list)
    # the instant the final gate was asked about it on planning (`plan_message`), if it was
    gated_for: dt.datetime | None = None
    # the values of the columns that change as the database has them; None: not inserted
    stored: tuple[Any, ...] | None = None

    @classmethod
    def from_db(cls, row: Any) -> MessageRow:
        """From a row of `HELD_QUERY`'s columns."""
        held = cls(*row)
        held.stored = held.changing()
        return held

    def record(
        self,
        status: Status,
        reason: str | None,
        at: dt.datetime,
        detail: dict[str, object] | str | None = None,
    ) -> None:
        """As `messages.record` moves a row: the status, and a step on its timeline."""
        self.status = status.value
        self.reason = reason
        self.updated_at = at
        self.steps.append(
            {
                "message_id": self.id,
                "at": at,
                "status": status.value,
                "reason": reason,
                "detail": detail_text(detail),
            }
        )

    def changing(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in CHANGING_COLUMNS])

    def row(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in _MESSAGE_COLUMNS if name in _NEW_FIELDS}
        values.update(attempts=0, needs_human=False)
        return values


# what planning and the final gate read of a message (MessageRow's fields, in order) …
HELD_COLUMNS = (
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
    "created_at",
    "updated_at",
    "cap_reserved_at",
)
# … and what they may change
CHANGING_COLUMNS = ("send_at", "status", "reason", "updated_at", "cap_reserved_at")
_HELD = cast(Table, m.Message.__table__)
HELD_QUERY = select(*(_HELD.c[name] for name in HELD_COLUMNS))


def write_rows(session: Session, rows: Iterable[MessageRow]) -> None:
    """Write what changed on messages read from the database, and their new steps: one
    statement per set of columns changed, one for the steps."""
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    steps: list[dict[str, Any]] = []
    for row in rows:
        if row.stored is None:
            continue  # not inserted yet: `insert_new` writes it
        values = row.changing()
        if values != row.stored:
            changed = tuple(
                name
                for name, now, then in zip(CHANGING_COLUMNS, values, row.stored, strict=True)
                if now != then
            )
            update = {"id": row.id}
            update.update((name, getattr(row, name)) for name in changed)
            updates.setdefault(changed, []).append(update)
            row.stored = values
        steps.extend(row.steps)
        row.steps = []
    for group in updates.values():
        update_rows(session, _HELD, "id", group)
    insert_rows(session, _STEPS, steps)


# planned messages not inserted yet are held the same way
NewMessage = MessageRow


Planned = m.Message | MessageRow


def planned_from_row(row: Planned) -> PlannedMessage:
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


def record_move(
    row: Planned,
    status: Status,
    reason: str | None,
    at: dt.datetime,
    detail: dict[str, object] | str | None = None,
) -> None:
    if isinstance(row, MessageRow):
        row.record(status, reason, at, detail)
    else:
        record(row, status, reason, at, detail)


_MESSAGE_INSERTS: dict[str, Any] = {}


def _message_insert(dialect: str) -> Any:
    """INSERT … ON CONFLICT (idempotency_key) DO NOTHING, built once per dialect.

    Without RETURNING, so that many rows go to the driver's executemany (one prepared
    statement) rather than into one long multi-row statement the driver must parse.
    """
    statement = _MESSAGE_INSERTS.get(dialect)
    if statement is None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        table = cast(Table, m.Message.__table__)
        statement = (
            insert(table)
            .values({name: bindparam(name) for name in _MESSAGE_COLUMNS})
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
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


_NEW_FIELDS = frozenset(_MESSAGE_COLUMNS) - {"attempts", "needs_human"}
_STEPS = cast(Table, m.MessageEvent.__table__)


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
    message.record(Status.SCHEDULED, Reason.PLANNED.value, now, detail)
    if timing is not None and timing.kind is DecisionKind.SUPPRESS:
        withhold(message, timing, now)
        return message
    if timing is not None and timing.kind is DecisionKind.WAIT:
        message.record(Status.DEFERRED, timing.reason.value, now, timing.detail_text())
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


def _just_gated(row: Planned, now: dt.datetime) -> bool:
    """A message planned in this batch whose gate was asked about the very instant a re-gate
    would ask about, on the same state: asking again decides the same."""
    return (
        isinstance(row, MessageRow)
        and row.stored is None
        and row.gated_for == max(now, row.send_at)
    )


def insert_new(session: Session, messages: Sequence[NewMessage]) -> set[str]:
    """Insert planned messages (a key that exists already is skipped) and the timelines of
    those inserted; returns their ids."""
    if not messages:
        return set()
    statement = _message_insert(session.get_bind().dialect.name)
    rows = [message.row() for message in messages]
    ids = [message.id for message in messages]
    count = insert_rows(session, _MESSAGES, rows, statement=statement, conflict="idempotency_key")
    if count == len(rows):
        inserted = set(ids)
    else:
        # a key someone else inserted first (another transaction planning the same loan)
        inserted = set()
        for index in range(0, len(ids), _IN_CHUNK):
            query = select(_MESSAGES.c.id).where(_MESSAGES.c.id.in_(ids[index : index + _IN_CHUNK]))
            inserted.update(session.connection().execute(query).scalars())
    steps = [step for message in messages if message.id in inserted for step in message.steps]
    insert_rows(session, _STEPS, steps)
    return inserted


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
    """Create the row for a planned message unless its key exists; gate it on the way in."""
    message = plan_message(
        policy,
        borrower,
        loan,
        planned,
        now,
        cease_confirmations_sent=cease_confirmations_sent,
        timing=timing,
    )
    if not insert_new(session, [message]):
        return None
    # the new row, without reading its timeline (read when someone asks for it)
    return session.get_one(m.Message, message.id, options=[lazyload(m.Message.events)])


def apply_planning_decision(row: Planned, decision: Decision, now: dt.datetime) -> None:
    if decision.kind is DecisionKind.SUPPRESS:
        withhold(row, decision, now)
    elif (
        decision.kind is DecisionKind.WAIT
        and decision.until is not None
        and decision.until > row.send_at
    ):
        row.send_at = decision.until
        record_move(row, Status.DEFERRED, decision.reason.value, now, decision.detail_text())


def withhold(row: Planned, decision: Decision, now: dt.datetime) -> None:
    status = Status.CANCELLED if decision.reason in CANCEL_REASONS else Status.SUPPRESSED
    record_move(row, status, decision.reason.value, now, decision.detail_text() or None)


_MESSAGES = cast(Table, m.Message.__table__)

_IN_CHUNK = 500


_PENDING_OF: dict[tuple[str, bool], Any] = {}


def _pending_of(
    session: Session, column: str, ids: Sequence[str], lock: bool, held: dict[str, MessageRow]
) -> dict[str, list[MessageRow]]:
    """Pending rows of many loans (or borrowers) in one query per 500, grouped by that id;
    locked on PostgreSQL. A message `held` already is that same object (one message read
    for its loan and for its borrower is changed in one place)."""
    found: dict[str, list[MessageRow]] = {}
    query = _PENDING_OF.get((column, lock))
    if query is None:
        query = HELD_QUERY.where(
            _HELD.c.status.in_(PENDING), keys_in(_HELD.c[column], "ids")
        ).order_by(_HELD.c.id)
        if lock:
            query = query.with_for_update()
        _PENDING_OF[(column, lock)] = query
    for index in range(0, len(ids), _IN_CHUNK):
        chunk = list(ids[index : index + _IN_CHUNK])
        for row in session.connection().execute(query, {"ids": chunk}):
            message = held.get(row.id)
            if message is None:
                message = held[row.id] = MessageRow.from_db(row)
            found.setdefault(getattr(message, column), []).append(message)
    return found


_KEYS_OF_LOANS = select(_MESSAGES.c.loan_id, _MESSAGES.c.idempotency_key).where(
    keys_in(_MESSAGES.c.loan_id, "ids")
)


def _keys_of_loans(session: Session, loan_ids: Sequence[str]) -> dict[str, set[str]]:
    """The keys of every message of these loans, whatever became of them."""
    keys: dict[str, set[str]] = {}
    for index in range(0, len(loan_ids), _IN_CHUNK):
        chunk = list(loan_ids[index : index + _IN_CHUNK])
        for loan_id, key in session.connection().execute(_KEYS_OF_LOANS, {"ids": chunk}):
            keys.setdefault(loan_id, set()).add(key)
    return keys


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
    item's borrower with pending messages of another item's loan (`ingest` groups events so).
    Planning then writes nothing another item reads — it changes messages, never a loan's or
    a borrower's state — so reading everything first reads what each would have read. New
    message ids are drawn in the order doing the items one by one draws them.
    """
    result = BatchOutcome()
    loan_ids = sorted({loan_id for item in work for loan_id in item.loan_ids})
    regated = sorted({item.regate_borrower for item in work if item.regate_borrower is not None})
    if not loan_ids and not regated:
        return result
    lock = session.get_bind().dialect.name == "postgresql"
    loans = load_loans(session, loan_ids)
    existing = _keys_of_loans(session, loan_ids)
    held: dict[str, MessageRow] = {}
    pending_of_loan = _pending_of(session, "loan_id", loan_ids, lock, held)
    pending_of_borrower = _pending_of(session, "borrower_id", regated, lock, held)
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
        rows: list[Planned] = [
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
    rows: list[Planned] = [*pending, *(message for message in fresh if message.status in PENDING)]
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
    row: Planned,
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
    flush_state(session)
    return list(
        session.scalars(
            select(m.Loan.id).where(m.Loan.borrower_id == borrower_id).order_by(m.Loan.id)
        )
    )


def loans_of_many(session: Session, borrower_ids: Sequence[str]) -> dict[str, list[str]]:
    """`loans_of` for many borrowers, in one query per 500."""
    found: dict[str, list[str]] = {}
    ids = sorted(set(borrower_ids))
    flush_state(session)
    for index in range(0, len(ids), _IN_CHUNK):
        query = (
            select(m.Loan.borrower_id, m.Loan.id)
            .where(m.Loan.borrower_id.in_(ids[index : index + _IN_CHUNK]))
            .order_by(m.Loan.id)
        )
        for borrower_id, loan_id in session.execute(query):
            found.setdefault(borrower_id, []).append(loan_id)
    return found


def replan_loans(
    session: Session, policy: pol.Policy, loan_ids: Iterable[str], now: dt.datetime
) -> PlanOutcome:
    ids = tuple(sorted(set(loan_ids)))
    total = PlanOutcome()
    for outcome in plan_batch(session, policy, [PlanWork(ids)], now).loans.values():
        total.created += outcome.created
        total.cancelled += outcome.cancelled
        total.suppressed += outcome.suppressed
    return total
