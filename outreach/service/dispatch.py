"""Dispatch: the clock claims due rows; a worker gates, reserves, renders, sends and records.

A message is never sent twice. Every step is keyed on the row's status, committed before the
next step starts: a redelivered or retried job that finds a row `sending` or beyond does
nothing, and a row left `sending` by a crash is reconciled with the provider, never resent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session, lazyload, sessionmaker

from outreach import policy as pol
from outreach.caps import CapReserver
from outreach.channels.base import (
    OutcomeUnknown,
    Outgoing,
    ProviderRejected,
    ProviderUnavailable,
    Receipt,
    Sender,
)
from outreach.domain import (
    BorrowerState,
    Channel,
    Decision,
    DecisionKind,
    LoanState,
    Purpose,
    Reason,
    Status,
)
from outreach.errors import RenderError, TransientError
from outreach.render import Renderer
from outreach.service.context import render_context
from outreach.service.messages import record
from outreach.service.planning import planned_from_row, withhold
from outreach.service.state import (
    borrower_state,
    load_borrower,
    load_loan,
    mark_invalid,
    set_opt_out,
)
from outreach.store import models as m
from outreach.store.db import transaction

log = logging.getLogger(__name__)

PROVIDER_RETRY_LIMIT = 8
# refusals that come from our side of the provider (pacing, the borrower's window closing
# while the message waited for a slot): the provider never saw the message, so they do not
# use up its attempts
NOT_PROVIDER_ATTEMPTS = frozenset(
    {"window_closed", "rate_limited", "rate_limiter_unavailable", "connect_failed"}
)
PROVIDER_BACKOFF_CAP = dt.timedelta(minutes=15)
CHECK_RETRY_DELAY = dt.timedelta(minutes=1)
STUCK_SENDING_AFTER = dt.timedelta(minutes=10)
STALE_QUEUED_AFTER = dt.timedelta(minutes=2)
DUE_STATUSES = (Status.SCHEDULED.value, Status.DEFERRED.value)


def unsubscribe_token(secret: bytes, channel: Channel, recipient: str) -> str:
    payload = f"{channel.value}:{recipient.strip().lower()}"
    signature = hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{quote(payload, safe='')}.{signature}"


def verify_unsubscribe_token(secret: bytes, token: str) -> tuple[Channel, str] | None:
    from urllib.parse import unquote

    payload_quoted, _, signature = token.rpartition(".")
    payload = unquote(payload_quoted)
    expected = hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()[:32]
    if not payload or not hmac.compare_digest(expected, signature):
        return None
    channel, _, recipient = payload.partition(":")
    if channel not in (c.value for c in Channel) or not recipient:
        return None
    return Channel(channel), recipient


# one message by id, built once; a row's timeline is loaded only if a step is added to it
_BY_ID = (
    select(m.Message)
    .where(m.Message.id == bindparam("message_id"))
    .options(lazyload(m.Message.events))
)
_LOCK_QUERIES = {False: _BY_ID, True: _BY_ID.with_for_update()}


def claim_due(session: Session, now: dt.datetime, limit: int = 500) -> list[str]:
    """Move due rows to `queued` and return their ids (SKIP LOCKED on PostgreSQL)."""
    query = (
        select(m.Message)
        .where(m.Message.status.in_(DUE_STATUSES), m.Message.send_at <= now)
        .order_by(m.Message.send_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = session.scalars(query).all()
    for row in rows:
        record(row, Status.QUEUED, Reason.DUE.value, now)
    return [row.id for row in rows]


def stale_queued(session: Session, now: dt.datetime, limit: int = 500) -> list[str]:
    """Queued rows whose broker message may have been lost (Redis flushed, enqueue failed)."""
    return list(
        session.scalars(
            select(m.Message.id)
            .where(
                m.Message.status == Status.QUEUED.value,
                m.Message.updated_at <= now - STALE_QUEUED_AFTER,
            )
            .order_by(m.Message.updated_at)
            .limit(limit)
        )
    )


@dataclass
class Dispatcher:
    sessions: sessionmaker[Session]
    policy: pol.Policy
    renderer: Renderer
    caps: CapReserver
    senders: Mapping[Channel, Sender]
    public_url: str
    link_secret: bytes
    clock: Callable[[], dt.datetime]
    # the simulator runs the caps on its virtual clock; the live service uses Redis time
    virtual_time: bool = False
    retry_base: dt.timedelta = dt.timedelta(seconds=30)
    stuck_after: dt.timedelta = STUCK_SENDING_AFTER

    def now(self) -> dt.datetime:
        return self.clock()

    def _now_ms(self) -> int | None:
        return int(self.now().timestamp() * 1000) if self.virtual_time else None

    # -- the worker's one job ------------------------------------------------------------------

    def dispatch(self, message_id: str) -> str:
        """Take one message as far as it may go now; returns what happened, for logs."""
        prepared = self._gate(message_id)
        if isinstance(prepared, str):
            return prepared
        if prepared.capped:
            outcome = self._reserve(message_id, prepared)
            if outcome is not None:
                return outcome
        outgoing = self._render_and_mark_sending(message_id, prepared)
        if isinstance(outgoing, str):
            return outgoing
        return self._send(message_id, outgoing, capped=prepared.capped)

    @dataclass(frozen=True)
    class _Prepared:
        """A message the final gate let through, with the state it decided on: the caps of
        the borrower's jurisdiction and the text are taken from the same state."""

        capped: bool
        borrower_id: str
        channel: Channel
        purpose: Purpose
        borrower: BorrowerState
        loan: LoanState | None

    def _gate(self, message_id: str) -> str | Dispatcher._Prepared:
        now = self.now()
        with transaction(self.sessions) as session:
            row = self._lock(session, message_id)
            if row is None:
                return "missing"
            if row.status not in (Status.QUEUED.value, *DUE_STATUSES):
                return f"skipped:{row.status}"
            if row.send_at > now:
                # released early (or redelivered after a deferral): the clock brings it back
                if row.status == Status.QUEUED.value:
                    record(row, Status.SCHEDULED, Reason.PLANNED.value, now, "not due yet")
                return "not_due"
            decision, borrower, loan = self._final_gate(session, row, now)
            if decision.kind is DecisionKind.SUPPRESS:
                withhold(row, decision, now)
                return f"withheld:{decision.reason.value}"
            if decision.kind is DecisionKind.WAIT and decision.until is not None:
                self._defer(row, decision, now)
                return f"deferred:{decision.reason.value}"
            capped = pol.counts_against_caps(Purpose(row.purpose))
            if row.status != Status.QUEUED.value:
                record(row, Status.QUEUED, Reason.DUE.value, now)
            if capped:
                # durable before Redis is touched, so a cap rebuild counts this in-flight slot
                row.cap_reserved_at = now
            assert borrower is not None  # a decision to send was taken on it
            return Dispatcher._Prepared(
                capped=capped,
                borrower_id=row.borrower_id,
                channel=Channel(row.channel),
                purpose=Purpose(row.purpose),
                borrower=borrower,
                loan=loan,
            )

    def _final_gate(
        self, session: Session, row: m.Message, now: dt.datetime
    ) -> tuple[Decision, BorrowerState | None, LoanState | None]:
        borrower = load_borrower(session, row.borrower_id)
        if borrower is None:
            return Decision.suppress(Reason.NO_ADDRESS, detail="borrower unknown"), None, None
        loan = None
        if row.loan_id is not None:
            loan = load_loan(session, row.loan_id)
            if loan is None:
                return Decision.suppress(Reason.LOAN_CLOSED, detail="loan unknown"), None, None
        from outreach.service.planning import cease_confirmations_sent

        return (
            pol.gate(
                self.policy,
                borrower,
                loan,
                planned_from_row(row),
                now,
                cease_confirmations_sent=cease_confirmations_sent(session, borrower.id)
                if row.purpose == Purpose.CEASE_CONFIRMATION.value
                else 0,
            ),
            borrower,
            loan,
        )

    def _defer(self, row: m.Message, decision: Decision, now: dt.datetime) -> None:
        assert decision.until is not None
        row.send_at = decision.until
        row.cap_reserved_at = None
        record(row, Status.DEFERRED, decision.reason.value, now, decision.detail_text())

    def _lock(self, session: Session, message_id: str) -> m.Message | None:
        postgres = session.get_bind().dialect.name == "postgresql"
        return session.scalar(_LOCK_QUERIES[postgres], {"message_id": message_id})

    def _reserve(self, message_id: str, prepared: Dispatcher._Prepared) -> str | None:
        """Take the cap slots; returns an outcome when the message cannot go now."""
        try:
            decision = self.caps.reserve(
                prepared.borrower_id,
                prepared.channel,
                message_id,
                prepared.purpose,
                now_ms=self._now_ms(),
                borrower=prepared.borrower,
            )
        except TransientError as error:
            # fail closed: a cap that cannot be checked means the message waits
            now = self.now()
            with transaction(self.sessions) as session:
                waiting = self._lock(session, message_id)
                if waiting is not None and waiting.status == Status.QUEUED.value:
                    self._defer(
                        waiting,
                        Decision.wait(
                            Reason.CHECK_UNAVAILABLE, now + CHECK_RETRY_DELAY, check="caps"
                        ),
                        now,
                    )
            log.warning("caps unavailable for %s: %s", message_id, error)
            return "deferred:check_unavailable"
        if decision.may_send:
            return None
        now = self.now()
        with transaction(self.sessions) as session:
            locked = self._lock(session, message_id)
            if locked is None or locked.status != Status.QUEUED.value:
                return f"skipped:{locked.status if locked else 'missing'}"
            row = locked
            until = decision.until or now + CHECK_RETRY_DELAY
            borrower = borrower_state(session, session.get_one(m.Borrower, row.borrower_id))
            window = pol.next_allowed_instant(self.policy, borrower, until)
            if window.kind is DecisionKind.SUPPRESS:
                withhold(row, window, now)
                return f"withheld:{window.reason.value}"
            later = window.until or until
            self._defer(row, Decision.wait(Reason.FREQUENCY_CAP, later, **decision.detail), now)
        return "deferred:frequency_cap"

    def _release(self, borrower_id: str, message_id: str) -> None:
        try:
            self.caps.release(borrower_id, message_id)
        except TransientError:
            # an unreleased slot only over-counts until its window passes: the safe direction
            log.warning("could not release cap slot of %s", message_id)

    def _render_and_mark_sending(
        self, message_id: str, prepared: Dispatcher._Prepared
    ) -> Outgoing | str:
        now = self.now()
        capped = prepared.capped
        with transaction(self.sessions) as session:
            row = self._lock(session, message_id)
            if row is None or row.status != Status.QUEUED.value:
                if row is not None and capped:
                    self._release(row.borrower_id, row.id)
                return f"skipped:{row.status if row else 'missing'}"
            borrower, loan = prepared.borrower, prepared.loan
            channel = Channel(row.channel)
            recipient = borrower.recipient(channel)
            if recipient is None:
                withhold(row, Decision.suppress(Reason.NO_ADDRESS), now)
                if capped:
                    self._release(row.borrower_id, row.id)
                return "withheld:no_address"
            locale = self.policy.locale_for(borrower.locale)
            zones = pol.candidate_zones(self.policy, borrower)
            unsubscribe_url = None
            if channel is Channel.EMAIL:
                token = unsubscribe_token(self.link_secret, channel, recipient)
                unsubscribe_url = f"{self.public_url}/v1/unsubscribe/{token}"
            planned = planned_from_row(row)
            context = render_context(
                borrower=borrower,
                loan=loan,
                message=planned,
                locale=locale,
                lender=self.policy.sender_for(locale),
                timezone=zones[0].key if zones else self.policy.default_zone.key,
                days_past_due=pol.days_past_due_at(self.policy, loan, now) if loan else None,
                unsubscribe_url=unsubscribe_url,
            )
            try:
                rendered = self.renderer.render(row.template, channel, locale, context)
            except RenderError as error:
                record(row, Status.FAILED, "render_error", now, str(error))
                if capped:
                    self._release(row.borrower_id, row.id)
                return "failed:render_error"
            row.locale = locale
            row.recipient = recipient
            row.template_version = rendered.version
            if channel is Channel.SMS:
                row.body = rendered.body
                row.segments = rendered.segments
                row.encoding = rendered.encoding
            else:
                row.subject = rendered.subject
                row.text = rendered.text
                row.html = rendered.html
            row.attempts += 1
            record(row, Status.SENDING, None, now, f"attempt={row.attempts}")
            headers = {}
            if unsubscribe_url is not None:
                headers = {
                    "List-Unsubscribe": f"<{unsubscribe_url}>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                }
            return Outgoing(
                message_id=row.id,
                channel=channel,
                to=recipient,
                body=row.body,
                subject=row.subject,
                text=row.text,
                html=row.html,
                segments=row.segments or 1,
                headers=headers,
                deliver_by=pol.window_closes_at(self.policy, borrower, now),
            )

    def _send(self, message_id: str, outgoing: Outgoing, *, capped: bool) -> str:
        sender = self.senders[outgoing.channel]
        try:
            receipt = sender.send(outgoing)
        except ProviderRejected as rejected:
            self._record_rejection(message_id, rejected, capped=capped)
            return f"failed:{rejected.code}"
        except ProviderUnavailable as busy:
            return self._record_retry(message_id, busy, capped=capped)
        except OutcomeUnknown as unknown:
            # the provider may have it: leave `sending` for the reconciler, never resend
            log.warning("outcome unknown for %s: %s", message_id, unknown)
            return "unknown"
        self.record_accepted(message_id, receipt, self.now())
        return "sent"

    def record_accepted(
        self, message_id: str, receipt: Receipt, now: dt.datetime, reason: str = "accepted"
    ) -> None:
        with transaction(self.sessions) as session:
            row = self._lock(session, message_id)
            if row is None:
                return
            row.provider_id = receipt.provider_id
            row.sent_at = row.sent_at or now
            if row.status == Status.SENDING.value:
                record(row, Status.SENT, reason, now, f"provider_id={receipt.provider_id}")

    def _record_rejection(
        self, message_id: str, rejected: ProviderRejected, *, capped: bool
    ) -> None:
        now = self.now()
        with transaction(self.sessions) as session:
            row = self._lock(session, message_id)
            if row is None:
                return
            record(row, Status.FAILED, Reason.PROVIDER_ERROR.value, now, f"code={rejected.code}")
            channel = Channel(row.channel)
            if rejected.effect == "opt_out" and row.recipient:
                set_opt_out(
                    session,
                    channel=channel,
                    recipient=row.recipient,
                    opted_out=True,
                    source=f"provider:{rejected.code}",
                    borrower_id=row.borrower_id,
                    now=now,
                )
            elif rejected.effect == "invalid_recipient" and row.recipient:
                mark_invalid(
                    session, channel=channel, recipient=row.recipient, code=rejected.code, now=now
                )
            borrower_id = row.borrower_id
        if capped:
            self._release(borrower_id, message_id)
        if rejected.effect in ("opt_out", "invalid_recipient"):
            from outreach.service.planning import regate_borrower

            with transaction(self.sessions) as session:
                regate_borrower(session, self.policy, borrower_id, now)

    def _record_retry(self, message_id: str, busy: ProviderUnavailable, *, capped: bool) -> str:
        now = self.now()
        with transaction(self.sessions) as session:
            row = self._lock(session, message_id)
            if row is None or row.status != Status.SENDING.value:
                return "skipped"
            borrower_id = row.borrower_id
            if busy.code in NOT_PROVIDER_ATTEMPTS:
                row.attempts -= 1
            if busy.code == "window_closed":
                borrower = borrower_state(session, session.get_one(m.Borrower, borrower_id))
                window = pol.next_allowed_instant(self.policy, borrower, now)
                if window.kind is DecisionKind.SUPPRESS:
                    withhold(row, window, now)
                    outcome = f"withheld:{window.reason.value}"
                else:
                    self._defer(
                        row,
                        window
                        if window.until
                        else Decision.wait(Reason.QUIET_HOURS, now + CHECK_RETRY_DELAY),
                        now,
                    )
                    outcome = "deferred:window_closed"
            elif row.attempts >= PROVIDER_RETRY_LIMIT:
                record(
                    row,
                    Status.FAILED,
                    Reason.PROVIDER_ERROR.value,
                    now,
                    f"code={busy.code} attempts={row.attempts}",
                )
                outcome = "failed:retries_exhausted"
            else:
                delay = min(self.retry_base * 2 ** max(row.attempts - 1, 0), PROVIDER_BACKOFF_CAP)
                if busy.retry_after:
                    delay = min(
                        max(delay, dt.timedelta(seconds=busy.retry_after)), PROVIDER_BACKOFF_CAP
                    )
                row.send_at = now + delay
                row.cap_reserved_at = None
                record(
                    row,
                    Status.DEFERRED,
                    Reason.PROVIDER_RETRY.value,
                    now,
                    f"code={busy.code} until={row.send_at.isoformat()}",
                )
                outcome = "retry"
        if capped:
            self._release(borrower_id, message_id)
        return outcome

    # -- the clock's housekeeping ----------------------------------------------------------------

    def reconcile_stuck(self, limit: int = 100) -> int:
        """Rows left `sending` by a crash: ask the provider; never send them again."""
        now = self.now()
        with transaction(self.sessions) as session:
            rows: Sequence[m.Message] = session.scalars(
                select(m.Message)
                .where(
                    m.Message.status == Status.SENDING.value,
                    m.Message.updated_at <= now - self.stuck_after,
                )
                .limit(limit)
            ).all()
            stuck = [
                (
                    row.id,
                    row.updated_at,
                    Outgoing(
                        message_id=row.id,
                        channel=Channel(row.channel),
                        to=row.recipient or "",
                        body=row.body,
                        subject=row.subject,
                        text=row.text,
                        html=row.html,
                    ),
                )
                for row in rows
            ]
        for message_id, since, outgoing in stuck:
            try:
                receipt = self.senders[outgoing.channel].find_sent(
                    outgoing, since - dt.timedelta(minutes=1)
                )
            except TransientError:
                continue
            if receipt is not None:
                self.record_accepted(message_id, receipt, self.now(), reason="reconciled")
                continue
            with transaction(self.sessions) as session:
                row = self._lock(session, message_id)
                if row is not None and row.status == Status.SENDING.value:
                    record(
                        row,
                        Status.FAILED,
                        Reason.RECONCILED.value,
                        self.now(),
                        "provider has no record of it; not resent",
                    )
        return len(stuck)


def release_due(sessions: sessionmaker[Session], now: dt.datetime, limit: int = 500) -> list[str]:
    with transaction(sessions) as session:
        return claim_due(session, now, limit)


def touch_requeued(sessions: sessionmaker[Session], ids: Sequence[str], now: dt.datetime) -> None:
    if not ids:
        return
    with transaction(sessions) as session:
        session.execute(update(m.Message).where(m.Message.id.in_(ids)).values(updated_at=now))
