"""Reading the message log: filters, opaque cursors, timelines (SPEC §8)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy.orm import Session

from outreach.domain import (
    BorrowerState,
    Channel,
    LoanState,
    PaymentPlan,
    Promise,
    Purpose,
    Reason,
    Status,
)
from outreach.errors import PermanentError
from outreach.policy.dunning import latest_plan, local_day, missed_instalment
from outreach.policy.model import Policy
from outreach.service.messages import as_record, iso
from outreach.store import message_log as store
from outreach.store import models as m
from outreach.store.borrowers import load_borrower, load_loans
from outreach.store.loans import loan_ids_of_borrowers

MAX_LIMIT = 500
DEFAULT_LIMIT = 100


class MessageFilterError(PermanentError):
    """Raised when a message-log filter is malformed; the message names the parameter."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter


@dataclass(frozen=True)
class MessageFilter:
    borrower_id: str | None = None
    loan_id: str | None = None
    campaign_id: str | None = None
    status: str | None = None
    channel: str | None = None
    stage: str | None = None
    reason: str | None = None
    purpose: str | None = None
    needs_human: bool | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    q: str | None = None

    @classmethod
    def parse(
        cls, params: dict[str, str | None], *, stages: Sequence[str] | None = None
    ) -> MessageFilter:
        """The filters of a query string; `stages`, when given, are the ones a `stage` may
        name (the policy's)."""
        values: dict[str, Any] = {}
        for item in fields(cls):
            raw = params.get(item.name)
            if raw is None or raw == "":
                continue
            values[item.name] = raw
        if "status" in values:
            statuses = values["status"].split(",")
            for status in statuses:
                if status not in Status.__members__.values():
                    known = ", ".join(s.value for s in Status)
                    raise MessageFilterError("status", f"'{status}' is not a status ({known})")
        if "channel" in values and values["channel"] not in (c.value for c in Channel):
            raise MessageFilterError("channel", f"'{values['channel']}' is not sms or email")
        checked: tuple[tuple[str, list[str] | None], ...] = (
            ("purpose", [purpose.value for purpose in Purpose]),
            ("reason", [reason.value for reason in Reason]),
            ("stage", list(stages) if stages is not None else None),
        )
        for name, allowed in checked:
            if allowed is not None and name in values and values[name] not in allowed:
                raise MessageFilterError(
                    name, f"'{values[name]}' is not a {name} ({', '.join(allowed)})"
                )
        if "needs_human" in values:
            flag = values["needs_human"].lower()
            if flag not in ("true", "false"):
                raise MessageFilterError("needs_human", "must be true or false")
            values["needs_human"] = flag == "true"
        for name in ("since", "until"):
            if name in values:
                values[name] = parse_instant(name, values[name])
        return cls(**values)


def parse_instant(name: str, raw: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise MessageFilterError(name, f"'{raw}' is not an RFC 3339 date-time") from None
    if value.tzinfo is None:
        raise MessageFilterError(name, f"'{raw}' needs a UTC offset, e.g. 2026-11-23T00:00:00Z")
    return value


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise MessageFilterError("limit", f"'{raw}' is not a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise MessageFilterError("limit", f"must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise MessageFilterError("cursor", "is not a cursor this service issued") from None
    version, _, last_id = text.partition(":")
    if version != "v1" or not last_id:
        raise MessageFilterError("cursor", "is not a cursor this service issued")
    return last_id


def list_messages(
    session: Session, criteria: MessageFilter, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page, newest first; the cursor continues exactly after the last item shown, or
    after the last message read where a text search the index cannot serve read its most
    for one page (the page is then short, and the cursor reads on; `store.page_part`)."""
    before = decode_cursor(cursor) if cursor else None
    rows, read_to = store.page_part(session, criteria, limit + 1, before)
    page = rows[:limit]
    next_cursor: str | None = None
    if len(rows) > limit:
        next_cursor = encode_cursor(page[-1].id)
    elif read_to is not None:
        next_cursor = encode_cursor(read_to)
    return [as_record(row) for row in page], next_cursor


def iter_messages(
    session: Session, criteria: MessageFilter, batch: int = 500
) -> Iterator[m.Message]:
    """Every matching message, newest first, fetched in batches so exports stream."""
    return store.iter_messages(session, criteria, batch)


def get_message(session: Session, message_id: str) -> dict[str, Any] | None:
    row = store.get(session, message_id)
    return as_record(row) if row is not None else None


def borrower_timeline(session: Session, borrower_id: str) -> dict[str, Any] | None:
    """Every event, message step and inbound reply about a borrower, oldest first."""
    borrower, events, messages, replies = store.timeline_of(session, borrower_id)
    if borrower is None and not events and not messages and not replies:
        return None
    entries: list[tuple[dt.datetime, int, dict[str, Any]]] = []
    for event in events:
        entries.append(
            (
                event.occurred_at,
                0,
                {
                    "at": iso(event.occurred_at),
                    "kind": "event",
                    "event_id": event.id,
                    "type": event.type,
                    "loan_id": event.loan_id,
                    "outcome": event.outcome,
                    "detail": event.detail,
                },
            )
        )
    for message in messages:
        for step in message.events:
            entries.append(
                (
                    step.at,
                    1,
                    {
                        "at": iso(step.at),
                        "kind": "message",
                        "message_id": message.id,
                        "purpose": message.purpose,
                        "channel": message.channel,
                        "template": message.template,
                        "status": step.status,
                        "reason": step.reason,
                        "detail": step.detail,
                    },
                )
            )
    for reply in replies:
        entries.append(
            (
                reply.received_at,
                2,
                {
                    "at": iso(reply.received_at),
                    "kind": "reply",
                    "channel": reply.channel,
                    "from": reply.sender,
                    "body": reply.body,
                    "classification": reply.classification,
                    "needs_human": reply.needs_human,
                },
            )
        )
    entries.sort(key=lambda entry: (entry[0], entry[1]))
    return {
        "borrower_id": borrower_id,
        "borrower": None
        if borrower is None
        else {"id": borrower.id, "name": borrower.name, "locale": borrower.locale},
        "items": [entry[2] for entry in entries],
    }


@dataclass(frozen=True)
class BorrowerSummary:
    """What holds or limits contact with a borrower now: their restrictions, the recipients
    that opted out or cannot receive, consent, and the promises and payment plans in force."""

    borrower: BorrowerState
    loans: tuple[LoanState, ...]
    # (loan id, promise) not kept whose date has not passed
    promises: tuple[tuple[str, Promise], ...]
    # (loan id, plan): each loan's latest plan, no instalment missed and some still to pay
    plans: tuple[tuple[str, PaymentPlan], ...]


def borrower_summary(
    session: Session, policy: Policy, borrower_id: str, now: dt.datetime
) -> BorrowerSummary | None:
    borrower = load_borrower(session, borrower_id)
    if borrower is None:
        return None
    loan_ids = loan_ids_of_borrowers(session, [borrower_id]).get(borrower_id, [])
    loans = load_loans(session, loan_ids)
    today = local_day(policy, now)
    promises = []
    plans = []
    for loan_id in loan_ids:
        loan = loans[loan_id]
        for promise in loan.promises:
            if not promise.kept and promise.promised_date >= today:
                promises.append((loan_id, promise))
        plan = latest_plan(loan)
        if (
            plan is not None
            and missed_instalment(policy, plan, today) is None
            and not all(instalment.paid for instalment in plan.instalments)
        ):
            plans.append((loan_id, plan))
    return BorrowerSummary(
        borrower, tuple(loans[i] for i in loan_ids), tuple(promises), tuple(plans)
    )
