"""Webhook events in: stored in the inbox, applied to state, messages planned — one commit."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from outreach import policy as pol
from outreach.domain import Channel, PlannedMessage, Purpose, Restriction
from outreach.service import planning
from outreach.service.events import ContactRestricted, Event
from outreach.service.state import APPLY, load_borrower
from outreach.store import models as m

APPLIED_OUTCOMES = frozenset({"applied"})


@dataclass(frozen=True)
class IngestResult:
    status: str  # accepted | duplicate
    id: str
    outcome: str | None = None


def store_in_inbox(session: Session, event: Event, now: dt.datetime) -> bool:
    """Insert the event once; returns False when its id was already accepted."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(m.ReceivedEvent)
        .values(
            id=event.id,
            type=event.type,
            occurred_at=event.occurred_at,
            received_at=now,
            body=event.raw,
            borrower_id=event.borrower_id,
            loan_id=event.loan_id,
            outcome="received",
        )
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(m.ReceivedEvent.id)
    )
    return session.execute(statement).scalar() is not None


def ingest(session: Session, policy: pol.Policy, event: Event, now: dt.datetime) -> IngestResult:
    """Apply one validated event inside the caller's transaction."""
    if not store_in_inbox(session, event, now):
        return IngestResult("duplicate", event.id)
    outcome = APPLY[event.type](session, event, now)
    inbox = session.get_one(m.ReceivedEvent, event.id)
    inbox.outcome = outcome
    if outcome != "applied" and outcome.startswith("ignored"):
        inbox.detail = _ignored_detail(outcome)
    else:
        follow_up(session, policy, event, now)
    return IngestResult("accepted", event.id, outcome)


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
            loan = session.get(m.Loan, event.loan_id)
            borrower_id = loan.borrower_id if loan is not None else None
    elif borrower_id is not None:
        loan_ids.extend(planning.loans_of(session, borrower_id))
    if event.type == "borrower.upserted" and borrower_id is not None:
        loan_ids.extend(planning.loans_of(session, borrower_id))
    planning.replan_loans(session, policy, loan_ids, now)
    if borrower_id is not None and event.type in ("contact.restricted", "borrower.upserted"):
        planning.regate_borrower(session, policy, borrower_id, now)
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
    """The one message a cease-contact request still allows: confirming it."""
    borrower = load_borrower(session, borrower_id)
    if borrower is None:
        return
    channel = next(
        (
            channel
            for channel in (Channel.SMS, Channel.EMAIL)
            if borrower.recipient(channel) is not None
            and borrower.consents_to(channel)
            and borrower.recipient(channel) not in borrower.opted_out
        ),
        None,
    )
    if channel is None:
        return
    planned = PlannedMessage(
        key=f"cease_confirmation:{borrower_id}:{event.id}",
        purpose=Purpose.CEASE_CONFIRMATION,
        borrower_id=borrower_id,
        loan_id=None,
        stage=None,
        channel=channel,
        template="cease_confirmation",
        send_at=now,
    )
    planning.insert_message(
        session,
        policy,
        borrower,
        None,
        planned,
        now,
        cease_confirmations_sent=planning.cease_confirmations_sent(session, borrower_id),
    )
