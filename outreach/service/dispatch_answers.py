"""What a provider answered about a message handed to it, recorded on the message.

Accepted: its provider id and first hand-over, and `sent` from `sending` (many together for
a provider without status callbacks). Rejected for good: `failed`, and what the code says of
the recipient (an opt-out, a number that cannot receive texts), after which the borrower's
pending messages are gated again. Busy: tried again later with a growing delay, or `failed`
once its attempts are used up; withheld or deferred when the borrower's window closed while
it waited. Its cap slot is given back whenever it was not handed over.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from outreach import policy as pol
from outreach.channels.base import (
    LEASE_LOST,
    ProviderRejected,
    ProviderUnavailable,
    Receipt,
)
from outreach.domain import Decision, DecisionKind, Reason, Status
from outreach.errors import StoreUnavailable
from outreach.service.delivery_status import apply_parked, record_recipient_effect
from outreach.service.dispatch_outcome import RETRY, Outcome, OutcomeKind
from outreach.service.planner import withhold
from outreach.store.borrowers import load_borrower
from outreach.store.db import transaction
from outreach.store.messages import MessageRow, held_by_id, held_by_ids, write_rows

if TYPE_CHECKING:
    from outreach.service.dispatch import Dispatcher

log = logging.getLogger(__name__)

PROVIDER_RETRY_LIMIT = 8
# refusals that come from our side of the provider (pacing, the borrower's window closing
# while the message waited for a slot): the provider never saw the message, so they do not
# use up its attempts
NOT_PROVIDER_ATTEMPTS = frozenset(
    {"window_closed", "rate_limited", "rate_limiter_unavailable", "connect_failed", LEASE_LOST}
)
PROVIDER_BACKOFF_CAP = dt.timedelta(minutes=15)
CHECK_RETRY_DELAY = dt.timedelta(minutes=1)


@dataclass
class ProviderAnswers:
    """Records providers' answers on the dispatcher's store, giving back cap slots."""

    dispatcher: Dispatcher

    def record_accepted(
        self,
        message_id: str,
        receipt: Receipt,
        now: dt.datetime,
        reason: Reason = Reason.ACCEPTED,
    ) -> None:
        """A provider's acceptance of one message, in its own transaction."""
        with transaction(self.dispatcher.sessions) as session:
            row = held_by_id(session, message_id)
            if row is None:
                return
            _accept(row, receipt, now, reason)
            write_rows(session, [row])
        self._claim_parked([receipt.provider_id])

    def record_accepted_many(self, accepted: list[tuple[str, Receipt, dt.datetime]]) -> None:
        """`record_accepted` for many messages in one transaction; empties the list."""
        if not accepted:
            return
        batch = list(accepted)
        accepted.clear()
        with transaction(self.dispatcher.sessions) as session:
            current = held_by_ids(session, [message_id for message_id, _, _ in batch])
            # as `record_accepted`: the provider id and first hand-over always; the status
            # only from `sending` (a callback may already have moved it on)
            moved: list[MessageRow] = []
            for message_id, receipt, at in batch:
                row = current.get(message_id)
                if row is None:
                    continue
                _accept(row, receipt, at, Reason.ACCEPTED)
                moved.append(row)
            write_rows(session, moved)
        self._claim_parked(receipt.provider_id for _, receipt, _ in batch)

    def _claim_parked(self, provider_ids: Iterable[str | None]) -> None:
        """Statuses the provider called back with before these acceptances committed, applied
        now (see `delivery_status`); the clock's sweep takes any this cannot."""
        known = [provider_id for provider_id in provider_ids if provider_id]
        try:
            apply_parked(self.dispatcher.sessions, known, self.dispatcher.now())
        except StoreUnavailable as error:
            log.warning("parked statuses wait for the clock's sweep: %s", error)

    def record_rejection(
        self, message_id: str, rejected: ProviderRejected, *, holder: str | None
    ) -> None:
        now = self.dispatcher.now()
        with transaction(self.dispatcher.sessions) as session:
            row = held_by_id(session, message_id)
            if row is None:
                return
            row.move(Status.FAILED, Reason.PROVIDER_ERROR, now, f"code={rejected.code}")
            write_rows(session, [row])
            record_recipient_effect(session, row, rejected.effect, rejected.code, now)
            borrower_id = row.borrower_id
        if holder is not None:
            self.dispatcher._release(borrower_id, message_id, holder)
        if rejected.effect is not None:
            from outreach.service.planner import regate_borrower

            with transaction(self.dispatcher.sessions) as session:
                regate_borrower(session, self.dispatcher.policy, borrower_id, now)

    def record_retry(
        self,
        message_id: str,
        busy: ProviderUnavailable,
        *,
        holder: str | None,
        lease: str | None = None,
    ) -> Outcome:
        now = self.dispatcher.now()
        with transaction(self.dispatcher.sessions) as session:
            row = held_by_id(session, message_id)
            if row is None or row.status != Status.SENDING.value:
                return Outcome.skipped()
            if lease is not None and row.worker_lease != lease:
                # reconciled while this worker's lease had lapsed, and marked again since
                return Outcome.skipped()
            borrower_id = row.borrower_id
            if busy.code in NOT_PROVIDER_ATTEMPTS:
                row.attempts -= 1
            if busy.code == "window_closed":
                borrower = load_borrower(session, borrower_id)
                assert borrower is not None  # a message's borrower is never deleted
                window = pol.next_allowed_instant(self.dispatcher.policy, borrower, now)
                if window.kind is DecisionKind.SUPPRESS:
                    withhold(row, window, now)
                    outcome = Outcome.withheld(window.reason)
                else:
                    outcome = self.dispatcher._defer(
                        row,
                        window
                        if window.until
                        else Decision.wait(Reason.QUIET_HOURS, now + CHECK_RETRY_DELAY),
                        now,
                    )
                    if outcome.kind is OutcomeKind.DEFERRED:
                        outcome = Outcome.deferred("window_closed")
            elif row.attempts >= PROVIDER_RETRY_LIMIT:
                row.move(
                    Status.FAILED,
                    Reason.PROVIDER_ERROR,
                    now,
                    f"code={busy.code} attempts={row.attempts}",
                )
                outcome = Outcome.failed("retries_exhausted")
            else:
                delay = min(
                    self.dispatcher.retry_base * 2 ** max(row.attempts - 1, 0), PROVIDER_BACKOFF_CAP
                )
                if busy.retry_after:
                    delay = min(
                        max(delay, dt.timedelta(seconds=busy.retry_after)), PROVIDER_BACKOFF_CAP
                    )
                row.send_at = now + delay
                row.cap_reserved_at = None
                row.move(
                    Status.DEFERRED,
                    Reason.PROVIDER_RETRY,
                    now,
                    f"code={busy.code} until={row.send_at.isoformat()}",
                )
                outcome = RETRY
            write_rows(session, [row])
        if holder is not None:
            self.dispatcher._release(borrower_id, message_id, holder)
        return outcome


def _accept(row: MessageRow, receipt: Receipt, at: dt.datetime, reason: Reason) -> None:
    """A provider's acceptance: its id and the first hand-over always; the status only from
    `sending` (a status callback may have moved it on already)."""
    row.provider_id = receipt.provider_id
    row.sent_at = row.sent_at or at
    if row.status == Status.SENDING.value:
        row.move(Status.SENT, reason, at, f"provider_id={receipt.provider_id}")
