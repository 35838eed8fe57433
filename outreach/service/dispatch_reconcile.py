"""Reconciliation: messages left `sending` by a worker process that is gone.

A `sending` mark records the lease of the worker process that made it
(outreach/worker_leases.py); once that worker is known to be gone, the message is reconciled
with the provider: it takes the provider's record if there is one, and goes back through the
final gate if there is none. A provider that cannot be asked (an SMTP relay) has it counted
as sent and flagged for a person: never sent twice on a guess.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from outreach.channels.base import Outgoing
from outreach.domain import Channel, Reason, Status
from outreach.errors import TransientError
from outreach.service.delivery_status import record_status
from outreach.store import messages as store
from outreach.store.db import transaction
from outreach.store.messages import held_by_id, write_rows
from outreach.worker_leases import LeaseWatch

if TYPE_CHECKING:
    from outreach.service.dispatch import Dispatcher

log = logging.getLogger("outreach.service.dispatch")

# a `sending` mark that names no worker lease (made before leases existed) is taken as
# orphaned after this long: the only case left where a timer stands in for knowing
STUCK_SENDING_AFTER = dt.timedelta(minutes=10)
# how far back of its `sending` mark a provider is searched for the message (clock skew)
FIND_SENT_MARGIN = dt.timedelta(minutes=1)


@dataclass
class OrphanReconciler:
    """The clock's housekeeping of `sending` rows, on the dispatcher's store, providers and
    caps."""

    dispatcher: Dispatcher

    def reconcile_orphaned(self, watch: LeaseWatch, limit: int = 1000) -> list[str]:
        """Messages whose worker is gone (how that is known: outreach/worker_leases.py).

        Each one it left `sending` is reconciled with its provider (`_reconcile`); the ids of
        those it held `queued` are returned, for the clock to enqueue again. A message held by
        a live worker is left alone, however long its batch takes.
        """
        now = self.dispatcher.now()
        with self.dispatcher.sessions() as session:
            rows = store.sending(session, limit)
        try:
            view = watch.look({row.worker_lease for row in rows if row.worker_lease})
        except redis.RedisError as error:
            # whether their workers live cannot be told: the messages wait
            log.warning("worker leases unavailable, nothing reconciled: %s", error)
            return []
        let_go_before = now - dt.timedelta(seconds=watch.ttl)
        for row in rows:
            lease = row.worker_lease
            if lease is None:
                orphaned = row.updated_at <= now - STUCK_SENDING_AFTER
            elif lease in view.alive:
                # its worker lives: orphaned only if the worker let it go (outcome unknown, an
                # interrupted batch), and has not held it for a whole lease since
                orphaned = (
                    not view.holds(lease, row.id)
                    and row.updated_at <= let_go_before
                    and watch.let_go(lease, row.id)
                )
            else:
                orphaned = lease in view.dead
            if orphaned:
                self._reconcile(row.id, lease)
        if not view.dead:
            return []
        held_by_dead = set().union(*view.dead.values())
        held_by_live = set().union(*view.alive.values())
        with self.dispatcher.sessions() as session:
            requeue = store.queued_among(session, held_by_dead - held_by_live)
        try:
            for token in view.dead:
                watch.forget(token)
        except redis.RedisError as error:
            log.warning("dead worker leases not forgotten yet: %s", error)
        return requeue

    def _reconcile(self, message_id: str, lease: str | None) -> None:
        """A message left `sending` by a worker that is gone: the provider's record if it has
        one; if it has none, the message goes back through the final gate, to be sent once."""
        with transaction(self.dispatcher.sessions) as session:
            row = held_by_id(session, message_id)
            if row is None or row.status != Status.SENDING.value or row.worker_lease != lease:
                return
            since = row.updated_at - FIND_SENT_MARGIN
            body, subject, text, html = store.sent_text(session, message_id)
            outgoing = Outgoing(
                message_id=row.id,
                channel=Channel(row.channel),
                to=row.recipient or "",
                body=body,
                subject=subject,
                text=text,
                html=html,
            )
        sender = self.dispatcher.senders[outgoing.channel]
        if not sender.finds_sent:
            self._record_unconfirmed(message_id, lease)
            return
        try:
            receipt = sender.find_sent(outgoing, since)
        except TransientError as error:
            log.warning("reconciling %s waits for its provider: %s", message_id, error)
            return
        if receipt is None:
            self._return_to_gate(message_id, lease)
            return
        now = self.dispatcher.now()
        self.dispatcher.record_accepted(message_id, receipt, now, reason=Reason.RECONCILED)
        if receipt.status not in ("queued", "accepted", "sending", "sent"):
            with transaction(self.dispatcher.sessions) as session:
                record_status(
                    session,
                    provider=sender.provider,
                    provider_id=receipt.provider_id,
                    status=receipt.status,
                    error_code=receipt.error_code,
                    now=now,
                )

    def _return_to_gate(self, message_id: str, lease: str | None) -> None:
        """The provider has no record of it: it was never handed over, so it waits for the
        clock to release it again, and the final gate decides on the latest state (caps,
        quiet hours and all) whether and when it goes."""
        now = self.dispatcher.now()
        with transaction(self.dispatcher.sessions) as session:
            row = held_by_id(session, message_id)
            if row is None or row.status != Status.SENDING.value or row.worker_lease != lease:
                return
            if row.cap_reserved_at is not None:
                # the dead attempt's slot, whichever attempt it was: given back while the row is
                # still `sending` under the dead lease, so no new attempt can have reserved it
                # (an error leaves the row `sending`, to be tried again: nothing half done)
                self.dispatcher.caps.release_any(row.borrower_id, message_id)
            row.attempts = max(row.attempts - 1, 0)
            row.send_at = now
            row.cap_reserved_at = None
            row.worker_lease = None
            row.move(
                Status.DEFERRED,
                Reason.RECONCILED,
                now,
                f"worker {lease or 'unknown'} is gone and the provider has no record of it; "
                "back to the final gate",
            )
            write_rows(session, [row])

    def _record_unconfirmed(self, message_id: str, lease: str | None) -> None:
        """A provider that cannot be asked (SMTP): the worker died after the `sending` mark,
        which is committed immediately before the hand-over, so the relay may have it. It is
        never sent again (a second copy is the worse harm), nor `failed` (nothing refused it):
        it counts as sent, keeping its cap slots, and is flagged for a person, who can look
        for its X-Outreach-Message-Id in the relay's log."""
        now = self.dispatcher.now()
        with transaction(self.dispatcher.sessions) as session:
            row = held_by_id(session, message_id)
            if row is None or row.status != Status.SENDING.value or row.worker_lease != lease:
                return
            row.sent_at = row.sent_at or row.updated_at
            row.needs_human = True
            row.move(
                Status.SENT,
                Reason.OUTCOME_UNKNOWN,
                now,
                f"worker {lease or 'unknown'} stopped during the hand-over; the provider cannot "
                "be asked whether it has the message, so it is not sent again",
            )
            write_rows(session, [row])
