"""The webhook path, stage 3 of 4: stored events applied to borrower and loan state, each
kind by its handler (`APPLY`), then handed to `planner` in the same transaction (so a payment
cancels its reminders in the commit that records it). `ingest_many` stores and applies in one
commit, as the simulator does."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from outreach import policy as pol
from outreach.domain import (
    LoanState,
    Purpose,
    Restriction,
)
from outreach.policy.zones import phone_facts_text
from outreach.service import parse, planner
from outreach.service.parse import ContactRestricted, Event
from outreach.store.borrowers import (
    BorrowerRecord,
    LoanRecord,
    compose_loan,
    flush_state,
    for_update,
    hold,
    hold_loans,
    load_borrower,
    loan_for_update,
    new_held,
    record_payment,
    record_plan,
    record_promise,
    record_restriction,
    record_visit,
    release_held,
)
from outreach.store.inbox import PROVISIONAL_OUTCOME, record_outcomes, store_events
from outreach.store.messages import cease_confirmations_sent, loans_with_pending_messages


@dataclass(frozen=True)
class IngestResult:
    status: str  # accepted | duplicate
    id: str
    outcome: str | None = None
    # whether the event's messages were re-planned (not when it changed nothing they depend on)
    replanned: bool = False


def ingest(session: Session, policy: pol.Policy, event: Event, now: dt.datetime) -> IngestResult:
    """Store and apply one validated event inside the caller's transaction."""
    return ingest_many(session, policy, [event], now)[0]


def ingest_many(
    session: Session, policy: pol.Policy, events: Sequence[Event], now: dt.datetime
) -> list[IngestResult]:
    """Store and apply validated events in order inside the caller's transaction: each
    stored once in the inbox, applied to state, its messages planned (`apply_stored`)."""
    unique: dict[str, Event] = {}
    for event in events:
        unique.setdefault(event.id, event)
    accepted = store_events(session, list(unique.values()), now, PROVISIONAL_OUTCOME)
    applied = iter(
        apply_stored(session, policy, [e for e in unique.values() if e.id in accepted], now)
    )
    results: list[IngestResult] = []
    for event in events:
        if event.id in accepted:
            accepted.discard(event.id)  # a second copy in the same batch is a duplicate
            results.append(next(applied))
        else:
            results.append(IngestResult("duplicate", event.id))
    return results


def apply_stored(
    session: Session,
    policy: pol.Policy,
    events: Sequence[Event],
    now: dt.datetime,
    *,
    stored_as: str = PROVISIONAL_OUTCOME,
) -> list[IngestResult]:
    """Apply events already in the inbox (stored with `stored_as`), in order, inside the
    caller's transaction, and record each one's outcome on its inbox row.

    The loans and borrowers they update are read (and on PostgreSQL locked) together. Loan
    and borrower updates that touch no loan or borrower another of them touches are planned
    together (`planner.plan_batch`), which decides exactly what planning each after its own
    event decides; any other event plans at once, after the group before it is planned.
    """
    lock_state_rows(session, events)
    group = _PlanGroup(_pending_loans_of(session, events))
    results: list[IngestResult] = []
    outcomes: list[dict[str, Any]] = []
    try:
        for event in events:
            keys = group.keys_of(session, event)
            if keys is None or not group.admits(keys):
                group.plan(session, policy, now)
            if keys is None:
                result = _apply(session, policy, event, now)
            else:
                result = _apply_state(session, policy, event, now)
                group.add(event, keys, plan=result.replanned)
            results.append(result)
            assert result.outcome is not None
            detail = (
                _ignored_detail(result.outcome) if result.outcome.startswith("ignored") else None
            )
            if result.outcome != stored_as or detail is not None:
                outcomes.append({"id": event.id, "outcome": result.outcome, "detail": detail})
        group.plan(session, policy, now)
        flush_state(session)
    finally:
        release_held(session)
    record_outcomes(session, outcomes)
    return results


def lock_state_rows(session: Session, events: Sequence[Event]) -> None:
    """Read the loans and borrowers these events update in one query each (FOR UPDATE on
    PostgreSQL) and hold them for the transaction (`borrowers.hold`), so applying the events
    finds them at hand, or knows they do not exist yet."""
    hold_loans(
        session, {e.loan_id for e in events if e.loan_id is not None and e.type in _LOAN_ROWS}
    )
    hold(
        session,
        BorrowerRecord,
        {e.borrower_id for e in events if e.type == "borrower.upserted" and e.borrower_id},
    )


# events whose apply step reads and updates the loan row
_LOAN_ROWS = frozenset({"loan.updated", "payment.received", "loan.closed"})


def _pending_loans_of(session: Session, events: Sequence[Event]) -> dict[str, set[str]]:
    """For the borrowers these events upsert: the loans their pending messages are about."""
    ids = sorted({e.borrower_id for e in events if e.type == "borrower.upserted" and e.borrower_id})
    return loans_with_pending_messages(session, ids)


class _PlanGroup:
    """Applied events whose planning waits to be done together (`planner.plan_batch`).

    An event joins only when nothing it touches — its loan, the borrower the loan belongs to
    before and after it, for an upserted borrower the borrower and the loans of its pending
    messages — is touched by an event already in the group: then planning any of them reads
    nothing another's state change or planning writes, so planning them together decides
    what planning each right after its event decides. Everything else plans at once.
    """

    def __init__(self, pending_loans: dict[str, set[str]]) -> None:
        self.pending_loans = pending_loans
        self.keys: set[tuple[str, str]] = set()
        self.planned: list[Event] = []
        # a loan moved to another borrower leaves pending messages of the one before that no
        # key above names: upserted borrowers plan one by one from then on
        self.loan_moved = False

    def keys_of(self, session: Session, event: Event) -> set[tuple[str, str]] | None:
        """What the event touches, or None when it must be planned on its own."""
        if event.type == "borrower.upserted" and event.borrower_id and not self.loan_moved:
            loans = self.pending_loans.get(event.borrower_id, ())
            return {("borrower", event.borrower_id), *(("loan", loan_id) for loan_id in loans)}
        if event.type not in _LOAN_ROWS or event.loan_id is None:
            return None
        keys = {("loan", event.loan_id)}
        row = loan_for_update(session, event.loan_id)
        if row is not None:
            keys.add(("borrower", row.borrower_id))
        if event.type == "loan.updated" and event.borrower_id is not None:
            keys.add(("borrower", event.borrower_id))
            if row is not None and row.borrower_id != event.borrower_id:
                self.loan_moved = True
        return keys

    def admits(self, keys: set[tuple[str, str]]) -> bool:
        return self.keys.isdisjoint(keys)

    def add(self, event: Event, keys: set[tuple[str, str]], *, plan: bool) -> None:
        self.keys |= keys
        if plan:
            self.planned.append(event)

    def plan(self, session: Session, policy: pol.Policy, now: dt.datetime) -> None:
        """Plan the group's events, as `follow_up` plans each, and start a new group."""
        planned, self.planned, self.keys = self.planned, [], set()
        if not planned:
            return
        upserted = [e.borrower_id for e in planned if e.type == "borrower.upserted"]
        loans = planner.loans_of_many(session, [b for b in upserted if b is not None])
        work: list[planner.PlanWork] = []
        for event in planned:
            if event.type == "borrower.upserted":
                assert event.borrower_id is not None
                borrower_loans = tuple(loans.get(event.borrower_id, ()))
                work.append(planner.PlanWork(borrower_loans, event.borrower_id))
            else:
                assert event.loan_id is not None
                work.append(planner.PlanWork((event.loan_id,)))
        planner.plan_batch(session, policy, work, now)


def _apply(session: Session, policy: pol.Policy, event: Event, now: dt.datetime) -> IngestResult:
    result = _apply_state(session, policy, event, now)
    if result.replanned:
        follow_up(session, policy, event, now)
    return result


def _apply_state(
    session: Session, policy: pol.Policy, event: Event, now: dt.datetime
) -> IngestResult:
    """Apply the event to state; `replanned` says whether its messages are to be planned."""
    before = _loan_before(session, event)
    outcome = APPLY[event.type](session, event, now)
    if outcome != "applied" and outcome.startswith("ignored"):
        return IngestResult("accepted", event.id, outcome)
    if before is not None and pol.ages_alike(policy, before[1], _bare_state(before[0])):
        # the report only restates what aging already implies: the plan stands as it is
        return IngestResult("accepted", event.id, outcome)
    return IngestResult("accepted", event.id, outcome, replanned=True)


def _loan_before(session: Session, event: Event) -> tuple[LoanRecord, LoanState] | None:
    """A loan's row and its state before a `loan.updated` is applied to it."""
    if event.type != "loan.updated" or event.loan_id is None:
        return None
    # held as `apply_loan` holds it, so what is read here is what is then updated
    row = loan_for_update(session, event.loan_id)
    return None if row is None else (row, _bare_state(row))


def _bare_state(row: LoanRecord) -> LoanState:
    """What planning reads of the loan row itself (its promises, plans… are not needed)."""
    return compose_loan(row, (), (), (), ())


def _ignored_detail(outcome: str) -> str:
    return {
        "ignored_stale": "older than the state already applied; recorded, not applied",
        "ignored_closed": "the loan is closed; recorded, not applied",
        "ignored_known": "already known by its id; recorded, not applied",
    }.get(outcome, outcome)


def follow_up(session: Session, policy: pol.Policy, event: Event, now: dt.datetime) -> None:
    """Plan or cancel the messages this event changes, in the same transaction."""
    loan_ids: list[str] = []
    borrower_id = event.borrower_id
    if event.loan_id is not None:
        loan_ids.append(event.loan_id)
        if borrower_id is None:
            loan = loan_for_update(session, event.loan_id)
            borrower_id = loan.borrower_id if loan is not None else None
    elif borrower_id is not None:
        loan_ids.extend(planner.loans_of(session, borrower_id))
    if event.type == "borrower.upserted" and borrower_id is not None:
        loan_ids.extend(planner.loans_of(session, borrower_id))
    regate = borrower_id is not None and event.type in ("contact.restricted", "borrower.upserted")
    work = planner.PlanWork(tuple(sorted(set(loan_ids))), borrower_id if regate else None)
    planner.plan_batch(session, policy, [work], now)
    data: Any = event.data
    if (
        isinstance(data, ContactRestricted)
        and data.restriction is Restriction.CEASE_CONTACT
        and data.active
    ):
        plan_cease_confirmation(session, policy, data.borrower_id, event, now)


def plan_cease_confirmation(
    session: Session, policy: pol.Policy, borrower_id: str, event: Event, now: dt.datetime
) -> None:
    """The one message a cease-contact request still allows: confirming it, on the policy's
    channel for it (in writing: email by default), or the other one when the borrower cannot
    receive that; when neither reaches them the gate records why, on the message."""
    borrower = load_borrower(session, borrower_id)
    if borrower is None:
        return
    planned = pol.reply_message(policy, borrower, Purpose.CEASE_CONFIRMATION, now, about=event.id)
    planner.insert_message(
        session,
        policy,
        borrower,
        None,
        planned,
        now,
        cease_confirmations_sent=cease_confirmations_sent(session, borrower_id),
    )


# --- applying each kind of event ----------------------------------------------------------


def apply_borrower(session: Session, event: parse.Event, now: dt.datetime) -> str:
    """Upsert a borrower; an update older than the one applied is recorded and ignored."""
    data: parse.BorrowerIn = event.data.borrower
    row = for_update(session, BorrowerRecord, data.id)
    if row is not None and row.state_as_of > event.occurred_at:
        return "ignored_stale"
    if row is None:
        row = new_held(session, BorrowerRecord, data.id)
        row.created_at = now
    row.name = data.name
    row.locale = data.locale
    row.email = data.email
    row.timezone = data.timezone
    address = data.address or parse.AddressIn()
    row.address_country = address.country
    row.address_region = address.region
    row.address_city = address.city
    row.address_postal_code = address.postal_code
    row.consent_sms = data.consent.sms
    row.consent_email = data.consent.email
    row.tags = sorted(set(data.tags))
    row.state_as_of = event.occurred_at
    row.updated_at = now
    row.phones = tuple(dict.fromkeys(data.phones))
    # worked out once here, stored with the number: planning a campaign over a whole book
    # reads them instead of asking libphonenumber again for every number
    row.phone_facts = tuple(phone_facts_text(phone) for phone in row.phones)
    return "applied"


def apply_loan(session: Session, event: parse.Event, now: dt.datetime) -> str:
    data: parse.LoanIn = event.data.loan
    row = loan_for_update(session, data.id)
    if row is not None and row.state_as_of > event.occurred_at:
        return "ignored_stale"
    if row is not None and row.closed_reason is not None:
        return "ignored_closed"
    if row is None:
        row = new_held(session, LoanRecord, data.id)
        row.created_at = now
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


def apply_payment(session: Session, event: parse.Event, now: dt.datetime) -> str:
    data: parse.PaymentReceived = event.data
    record_payment(
        session, data.payment_id, data.loan_id, data.amount, data.paid_at, data.amount_due_after
    )
    loan = loan_for_update(session, data.loan_id)
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


def apply_promise(session: Session, event: parse.Event, now: dt.datetime) -> str:
    data: parse.PromiseCreated = event.data
    recorded = record_promise(
        session,
        data.promise_id,
        data.loan_id,
        data.amount,
        data.promised_date,
        event.occurred_at,
    )
    return "applied" if recorded else "ignored_known"


def apply_plan(session: Session, event: parse.Event, now: dt.datetime) -> str:
    data: parse.PlanCreated = event.data
    instalments = [(item.due_date, item.amount) for item in data.instalments]
    recorded = record_plan(session, data.plan_id, data.loan_id, instalments, event.occurred_at)
    return "applied" if recorded else "ignored_known"


def apply_visit(session: Session, event: parse.Event, now: dt.datetime) -> str:
    data: parse.VisitScheduled = event.data
    recorded = record_visit(
        session,
        data.visit_id,
        data.loan_id,
        data.visit_at,
        data.collector_name,
        data.collector_id,
        event.occurred_at,
    )
    return "applied" if recorded else "ignored_stale"


def apply_restriction(session: Session, event: parse.Event, now: dt.datetime) -> str:
    data: parse.ContactRestricted = event.data
    windows = [(window.start, window.end, window.days) for window in data.windows or ()]
    recorded = record_restriction(
        session,
        data.borrower_id,
        data.restriction.value,
        data.active,
        windows or None,
        event.occurred_at,
        now,
    )
    return "applied" if recorded else "ignored_stale"


def apply_closure(session: Session, event: parse.Event, now: dt.datetime) -> str:
    data: parse.LoanClosed = event.data
    loan = loan_for_update(session, data.loan_id)
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
