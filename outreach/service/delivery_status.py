"""What providers tell us of deliveries: status callbacks (SPEC §7), applied once, forward only.

A callback is recorded by its provider, message, status and error code before it is
applied, so a duplicate changes nothing; a status moves a message only forward (a late
`sent` never undoes `delivered`); an error code that says the number opted out or cannot
receive texts (channels/twilio_errors.py) is recorded against the number.

A status for a provider id no message carries yet is parked (`store/callbacks.py`): workers
record a run of acceptances together after handing the run over, and the provider's callback
can come first. `apply_parked` runs after each commit that records provider ids and after
each that parks a status, so whichever of the two commits last finds the other's work.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from outreach.channels.base import ErrorEffect
from outreach.channels.twilio_errors import recipient_effect
from outreach.domain import Channel, Reason, Status
from outreach.service.messages import may_move
from outreach.store import callbacks
from outreach.store.borrowers import mark_invalid, set_opt_out
from outreach.store.db import transaction
from outreach.store.messages import (
    MessageRow,
    first_callbacks,
    held_by_provider_ids,
    write_rows,
)

# the outcome of a status kept for a message not known by its provider id yet
PARKED = "parked"

# Twilio message statuses → ours. queued/accepted/sending say nothing new after acceptance.
TWILIO_STATUSES = {
    "sent": Status.SENT,
    "delivered": Status.DELIVERED,
    "undelivered": Status.UNDELIVERED,
    "failed": Status.FAILED,
}


@dataclass(frozen=True)
class StatusReport:
    """One delivery status a provider reported for a message it accepted."""

    provider_id: str
    status: str
    error_code: str | None = None


def record_status(
    session: Session,
    *,
    provider: str,
    provider_id: str,
    status: str,
    error_code: str | None,
    now: dt.datetime,
) -> str:
    """Apply one delivery status callback; duplicates and late ones change nothing."""
    report = StatusReport(provider_id, status, error_code)
    return record_statuses(session, provider=provider, reports=[report], now=now)[0]


def record_statuses(
    session: Session, *, provider: str, reports: Sequence[StatusReport], now: dt.datetime
) -> list[str]:
    """Apply delivery status reports in order, each as `record_status` applies one (a
    duplicate or a late one changes nothing); their messages are read together."""
    keys = [
        f"{provider}:{report.provider_id}:{report.status}:{report.error_code or ''}"
        for report in reports
    ]
    fresh = first_callbacks(session, provider, keys, now)
    messages: dict[str, MessageRow] = {}
    if fresh:
        messages = held_by_provider_ids(session, (report.provider_id for report in reports))
    outcomes: list[str] = []
    parked: list[callbacks.Parked] = []
    for key, report in zip(keys, reports, strict=True):
        if key not in fresh:
            outcomes.append("duplicate")
            continue
        fresh.discard(key)  # a second copy in the same batch is a duplicate
        message = messages.get(report.provider_id)
        if message is None:
            parked.append(
                callbacks.Parked(
                    key, provider, report.provider_id, report.status, report.error_code, now
                )
            )
            outcomes.append(PARKED)
            continue
        outcomes.append(_apply_status(session, message, report, now))
    callbacks.park(session, parked)
    write_rows(session, messages.values())
    return outcomes


def apply_parked(
    sessions: sessionmaker[Session], provider_ids: Iterable[str] | None, now: dt.datetime
) -> list[str]:
    """Apply, in a transaction of its own, the parked statuses whose message now carries
    their provider id (of these ids; None: of all), in the order they arrived."""
    with transaction(sessions) as session:
        claimed = callbacks.claim(session, provider_ids)
        if not claimed:
            return []
        messages = held_by_provider_ids(session, {status.provider_id for status in claimed})
        outcomes = [
            _apply_status(
                session,
                messages[status.provider_id],
                StatusReport(status.provider_id, status.status, status.error_code),
                now,
            )
            for status in claimed
        ]
        write_rows(session, messages.values())
    return outcomes


def _apply_status(
    session: Session, message: MessageRow, report: StatusReport, now: dt.datetime
) -> str:
    status, error_code = report.status, report.error_code
    new_status = TWILIO_STATUSES.get(status)
    if new_status is None or not may_move(Status(message.status), new_status):
        return "ignored"
    detail = f"provider_status={status}" + (f" code={error_code}" if error_code else "")
    reason = Reason.PROVIDER_ERROR if error_code else Reason.PROVIDER_STATUS
    message.move(new_status, reason, now, detail)
    if error_code is not None and message.recipient:
        record_recipient_effect(session, message, recipient_effect(error_code), error_code, now)
    return new_status.value


def record_recipient_effect(
    session: Session,
    message: MessageRow,
    effect: ErrorEffect | None,
    code: str,
    now: dt.datetime,
) -> None:
    """What a provider's error said of the message's recipient, on record: an opt-out, or an
    address that cannot receive messages (nothing for an error that says nothing of it)."""
    if message.recipient is None or effect is None:
        return
    channel = Channel(message.channel)
    if effect is ErrorEffect.OPT_OUT:
        set_opt_out(
            session,
            channel=channel,
            recipient=message.recipient,
            opted_out=True,
            source=f"provider:{code}",
            borrower_id=message.borrower_id,
            now=now,
        )
    elif effect is ErrorEffect.INVALID_RECIPIENT:
        mark_invalid(session, channel=channel, recipient=message.recipient, code=code, now=now)
