"""Dispatch: the clock claims due rows; a worker gates, reserves, renders, sends and records.

A message is never sent twice. Every step is keyed on the row's status, committed before the
next step starts: a redelivered or retried job that finds a row `sending` or beyond does
nothing, and a row left `sending` by a crash is reconciled with the provider, never resent.

Each call of `dispatch_many` is one attempt: it first takes its messages' leases (`leases`),
so a second delivery of a message while the first is worked stands aside, and its cap
reservations carry its token, so no other attempt can give them back.

Here: the attempt, the final gate, reserving cap slots, composing and handing over. What a
provider answered is recorded by service/dispatch_answers.py; a message left `sending` by a
worker that is gone is reconciled by service/dispatch_reconcile.py; the outcome of each
message is a service/dispatch_outcome.Outcome.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial

from sqlalchemy.orm import Session, sessionmaker

from outreach import policy as pol
from outreach.campaign_control import CampaignControl, HandOver
from outreach.caps import CapRequest, CapReserver
from outreach.channels.base import (
    OutcomeUnknown,
    Outgoing,
    ProviderRejected,
    ProviderUnavailable,
    Receipt,
    Sender,
    ensure_still_held,
)
from outreach.domain import (
    BorrowerState,
    CampaignStatus,
    Channel,
    Decision,
    DecisionKind,
    LoanState,
    PlannedMessage,
    Purpose,
    Reason,
    Status,
)
from outreach.errors import ConfigurationError, RenderError, TransientError
from outreach.message_leases import MessageLeases
from outreach.render import Renderer, lint_rendered
from outreach.render.lint import ERROR
from outreach.service.context import message_context
from outreach.service.dispatch_answers import CHECK_RETRY_DELAY, ProviderAnswers
from outreach.service.dispatch_outcome import MISSING, NOT_DUE, SENT, UNKNOWN, Outcome
from outreach.service.dispatch_reconcile import STUCK_SENDING_AFTER, OrphanReconciler
from outreach.service.inbox import unapplied_about
from outreach.service.journal import HeldSenders
from outreach.service.planner import planned_from_row, withhold
from outreach.store import messages as store
from outreach.store.borrowers import (
    load_borrower,
    load_borrowers,
    load_loans,
)
from outreach.store.campaigns import CampaignState, campaign_states
from outreach.store.db import transaction
from outreach.store.inbox import DEAD_LETTER_OUTCOME, Unapplied
from outreach.store.messages import (
    DUE_STATUSES,
    MessageRow,
    cease_confirmations_sent,
    held_by_id,
    held_by_ids,
    write_rows,
)
from outreach.worker_leases import LeaseWatch, WorkerLease

log = logging.getLogger(__name__)

# a message held for an event not applied looks again after this long (a dead letter: longer)
HOLD_DELAY = dt.timedelta(minutes=1)
DEAD_LETTER_HOLD = dt.timedelta(minutes=15)
# a reply in the journal is applied within a clock tick or two of the database answering
UNAPPLIED_REPLY_RETRY_DELAY = dt.timedelta(seconds=5)
STALE_QUEUED_AFTER = dt.timedelta(minutes=2)
# a message of a campaign being paused looks again this soon (the pause is then on record);
# one of a paused campaign looks again after a day at the latest (a resume brings it forward)
CAMPAIGN_HALT_RECHECK = dt.timedelta(seconds=5)
PAUSED_RECHECK = dt.timedelta(days=1)
# a batch's final gate stands for this long; after it (a paced provider), each message left is
# gated again on its own, so "checked at the moment of sending" stays true
BATCH_GATE_FRESH_FOR = 10.0  # seconds
# statuses of a message that an attempt has handed, or is handing, to its provider: its cap
# slot is spent, and an attempt that finds it there never gives a slot of it back
HANDED_OVER = frozenset(
    {
        Status.SENDING.value,
        Status.SENT.value,
        Status.DELIVERED.value,
        Status.UNDELIVERED.value,
        Status.FAILED.value,
    }
)


def unsubscribe_token(key: bytes, message_id: str) -> str:
    """The token of a message's unsubscribe link, `<message id>.<signature>`: it names the
    message, never the address (which would land in access logs and browser histories)."""
    return f"{message_id}.{_link_signature(key, message_id)}"


def verify_unsubscribe_token(keys: Sequence[bytes], token: str) -> str | None:
    """The id of the message whose link this is, when one of `keys` signed it; None for
    anything else, whatever its length or characters."""
    if len(token) > _LONGEST_TOKEN or not token.isascii():
        return None
    match = _UNSUBSCRIBE_TOKEN.fullmatch(token)
    if match is None:
        return None
    message_id, signature = match.group(1), match.group(2).encode()
    valid = False
    for key in keys:
        valid |= hmac.compare_digest(_link_signature(key, message_id).encode(), signature)
    return message_id if valid else None


def _link_signature(key: bytes, message_id: str) -> str:
    digest = hmac.new(key, b"unsubscribe:" + message_id.encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


_UNSUBSCRIBE_TOKEN = re.compile(r"([0-9A-Za-z_]{1,64})\.([0-9a-f]{32})")
_LONGEST_TOKEN = 64 + 1 + 32


def stale_queued(session: Session, now: dt.datetime, limit: int = 500) -> list[str]:
    """Queued rows whose broker message may have been lost (Redis flushed, enqueue failed)."""
    return store.queued_before(session, now - STALE_QUEUED_AFTER, limit)


@dataclass(frozen=True)
class _Attempt:
    """One call of `dispatch_many`: the token its leases and cap reservations carry, and
    whether it holds its messages' leases (not without leases, or when Redis refused them)."""

    token: str
    leased: bool


@dataclass(frozen=True)
class _Composed:
    """A rendered message: the columns it fills on its row, and what goes to the provider."""

    columns: dict[str, object]
    outgoing: Outgoing


@dataclass
class Dispatcher:
    sessions: sessionmaker[Session]
    policy: pol.Policy
    renderer: Renderer
    caps: CapReserver
    senders: Mapping[Channel, Sender]
    public_url: str
    # keys of OUTREACH_LINK_SECRET, newest first (wiring.link_keys); the first signs
    link_keys: tuple[bytes, ...]
    clock: Callable[[], dt.datetime]
    # the simulator runs the caps on its virtual clock; the live service uses Redis time
    virtual_time: bool = False
    retry_base: dt.timedelta = dt.timedelta(seconds=30)
    stuck_after: dt.timedelta = STUCK_SENDING_AFTER
    # the numbers with a reply not applied yet (`journal.ReplyJournal.held_senders`); None
    # where replies are always applied at once (the simulator)
    replies_pending: Callable[[], HeldSenders] | None = None
    # without leases a duplicate delivery is still never sent twice (the row's status says),
    # but it may not take over a reservation another attempt left behind
    leases: MessageLeases | None = None
    # this worker process's lease; None where nothing reconciles (the simulator)
    lease: WorkerLease | None = None
    # campaigns' pause, cancel and throttle at hand-over; without it campaign messages wait
    campaigns: CampaignControl | None = None

    def now(self) -> dt.datetime:
        return self.clock()

    def close_providers(self) -> None:
        """Let go of the providers' kept connections (an SMTP relay's, Twilio's session), once
        nothing is sent any more."""
        for sender in self.senders.values():
            close = getattr(sender, "close", None)
            if close is not None:
                close()

    def _now_ms(self) -> int | None:
        return int(self.now().timestamp() * 1000) if self.virtual_time else None

    # -- the worker's one job ------------------------------------------------------------------

    def dispatch(self, message_id: str) -> Outcome:
        """Take one message as far as it may go now; returns what happened, for logs."""
        return self.dispatch_many([message_id])[message_id]

    def dispatch_many(self, message_ids: Sequence[str]) -> dict[str, Outcome]:
        """Take many messages as far as each may go now; returns each one's outcome.

        Each message goes through the steps `dispatch` takes, in the same order and with the
        same guarantees, but the batch is gated in one transaction on state read together,
        and acceptances of providers without status callbacks are recorded together.
        Messages for a provider that hands over at once (`hands_over_at_once`) also have
        their cap slots reserved in one Redis round trip and are marked `sending` in one
        transaction before the first of them is handed over; any other provider (one that
        paces sends or answers over the network) gets them in short runs (its
        `hand_over_run`, as long as it takes in about a twentieth of a second; one at a time
        when it is paced slowly), each run marked `sending` just before its first call, so a
        payment or an opt-out arriving while earlier runs were sent still stops the later.

        A message whose lease another attempt holds (it is being worked elsewhere) is left
        to that attempt, untouched: `skipped:leased`.
        """
        outcomes: dict[str, Outcome] = {}
        attempt, mine = self._take_leases(message_ids, outcomes)
        try:
            with self._holding(mine) as lease:
                outcomes.update(self._dispatch_as(attempt, lease, mine))
        finally:
            if self.leases is not None and attempt.leased:
                self.leases.give_back(attempt.token, mine)
        return outcomes

    @contextmanager
    def _holding(self, message_ids: Sequence[str]) -> Iterator[str | None]:
        """This worker's lease on the batch while it is worked on, so that the reconciler
        leaves it alone (and takes it over once the worker is gone); yields the lease token."""
        if self.lease is None:
            yield None
            return
        with self.lease.holding(message_ids) as token:
            yield token

    def _take_leases(
        self, message_ids: Sequence[str], outcomes: dict[str, Outcome]
    ) -> tuple[_Attempt, list[str]]:
        """A new attempt, and the messages it may work: those whose lease it took."""
        wanted = list(dict.fromkeys(message_ids))
        token = secrets.token_hex(8)
        if self.leases is None:
            return _Attempt(token, leased=False), wanted
        try:
            mine = self.leases.take(token, wanted)
        except TransientError as error:
            # the row's status still keeps it from being sent twice, and the caps refuse to
            # share a reservation without a lease: safe to go on
            log.warning("dispatching without leases: %s", error)
            return _Attempt(token, leased=False), wanted
        taken = set(mine)
        outcomes.update((i, Outcome.skipped("leased")) for i in wanted if i not in taken)
        return _Attempt(token, leased=True), mine

    def _dispatch_as(
        self, attempt: _Attempt, lease: str | None, message_ids: Sequence[str]
    ) -> dict[str, Outcome]:
        """`dispatch_many`'s work, for messages the attempt may work."""
        outcomes: dict[str, Outcome] = {}
        gated_at = time.monotonic()
        prepared = self._gate_many(message_ids, outcomes)
        accepted: list[tuple[str, Receipt, dt.datetime]] = []
        try:
            for group in self._hand_over_groups(prepared):
                ready: list[tuple[str, Dispatcher._Prepared]] = []
                for message_id, item in group:
                    if self._gate_holds(item, gated_at):
                        ready.append((message_id, item))
                        continue
                    ProviderAnswers(self).record_accepted_many(accepted)
                    again = self._dispatch_as(attempt, lease, [message_id])
                    outcomes[message_id] = again[message_id]
                self._dispatch_group(ready, accepted, outcomes, attempt, lease)
        finally:
            ProviderAnswers(self).record_accepted_many(accepted)
        return outcomes

    def unleased(self, message_ids: Sequence[str]) -> list[str]:
        """Of these messages, those no attempt is working now (holds no lease of): what the
        clock may enqueue again. Raises `LeaseUnavailable` when the leases cannot be read."""
        if self.leases is None:
            return list(message_ids)
        held = self.leases.held(message_ids)
        return [message_id for message_id in message_ids if message_id not in held]

    def _hand_over_groups(
        self, prepared: list[tuple[str, Dispatcher._Prepared]]
    ) -> list[list[tuple[str, Dispatcher._Prepared]]]:
        """The batch in order, in runs handed over together: consecutive messages whose
        providers hand over at once form one run; consecutive messages of one network
        provider form runs of at most its `hand_over_run`."""
        groups: list[list[tuple[str, Dispatcher._Prepared]]] = []
        run_of: Channel | None = None  # the channel of the last run, while it may grow
        for item in prepared:
            sender = self.senders[item[1].channel]
            longest = 0 if sender.hands_over_at_once else max(1, sender.hand_over_run)
            if (
                run_of is not None
                and groups
                and self.senders[run_of] is sender
                and (longest == 0 or len(groups[-1]) < longest)
            ):
                groups[-1].append(item)
            else:
                groups.append([item])
            run_of = item[1].channel
        return groups

    def _gate_holds(self, prepared: Dispatcher._Prepared, gated_at: float) -> bool:
        """Whether the batch's gate still stands for this message: not older than
        BATCH_GATE_FRESH_FOR (a paced provider), and the allowed window it decided in not
        closed since. Otherwise the message is gated again on its own, so quiet hours and the
        latest state hold at the moment of sending."""
        if time.monotonic() - gated_at > BATCH_GATE_FRESH_FOR:
            return False
        closes = prepared.window_closes_at
        return closes is None or self.now() < closes

    def _gate_many(
        self, message_ids: Sequence[str], outcomes: dict[str, Outcome]
    ) -> list[tuple[str, Dispatcher._Prepared]]:
        now = self.now()
        prepared: list[tuple[str, Dispatcher._Prepared]] = []
        with transaction(self.sessions) as session:
            rows = held_by_ids(session, message_ids)
            borrower_ids = {row.borrower_id for row in rows.values()}
            loan_ids = {row.loan_id for row in rows.values() if row.loan_id}
            borrowers = load_borrowers(session, borrower_ids)
            loans = load_loans(session, loan_ids)
            # read in the gate's transaction: when it cannot be read, nothing is gated
            unapplied = unapplied_about(session, borrower_ids, loan_ids, now)
            campaigns = campaign_states(
                session, {row.campaign_id for row in rows.values() if row.campaign_id}
            )
            for message_id in dict.fromkeys(message_ids):
                row = rows.get(message_id)
                if row is None:
                    outcomes[message_id] = MISSING
                    continue
                gated = self._gate_row(
                    session,
                    row,
                    now,
                    borrowers.get(row.borrower_id),
                    loans.get(row.loan_id) if row.loan_id else None,
                    unapplied.get(("borrower", row.borrower_id))
                    or (unapplied.get(("loan", row.loan_id)) if row.loan_id else None),
                    campaigns.get(row.campaign_id) if row.campaign_id else None,
                )
                if isinstance(gated, Outcome):
                    outcomes[message_id] = gated
                else:
                    prepared.append((message_id, gated))
            write_rows(session, rows.values())
        return prepared

    def _dispatch_group(
        self,
        group: list[tuple[str, Dispatcher._Prepared]],
        accepted: list[tuple[str, Receipt, dt.datetime]],
        outcomes: dict[str, Outcome],
        attempt: _Attempt,
        lease: str | None,
    ) -> None:
        """Reserve, compose, mark `sending` and hand over a run of gated messages."""
        if not group:
            return
        held = self._reserve_group(group, outcomes, attempt)
        now = self.now()
        ready: list[tuple[str, Dispatcher._Prepared, _Composed]] = []
        for message_id, prepared in held:
            holder = attempt.token if prepared.capped else None
            composed = self._compose(message_id, prepared, now)
            if isinstance(composed, _Composed):
                ready.append((message_id, prepared, composed))
            else:
                outcomes[message_id] = self._withhold_uncomposable(
                    message_id, prepared, holder, *composed
                )
        ready = self._hold_for_unapplied_replies(ready, outcomes, attempt.token)
        ready, through = self._campaign_hand_over(ready, outcomes, attempt.token)
        try:
            self._hand_over(ready, accepted, outcomes, attempt, lease, now)
        finally:
            if through and self.campaigns is not None:
                self.campaigns.handed_over(through)

    def _hand_over(
        self,
        ready: list[tuple[str, Dispatcher._Prepared, _Composed]],
        accepted: list[tuple[str, Receipt, dt.datetime]],
        outcomes: dict[str, Outcome],
        attempt: _Attempt,
        lease: str | None,
        now: dt.datetime,
    ) -> None:
        """Mark the messages `sending` (committed) and hand each to its provider."""
        not_marked = self._mark_sending_many(ready, now, lease)
        for message_id, prepared, composed in ready:
            holder = attempt.token if prepared.capped else None
            status = not_marked.get(message_id)
            if status is not None:
                # a payment or an opt-out got to it after the gate: its slot goes back; but
                # one another attempt handed over keeps its slot, whoever's reservation it is
                if holder is not None and status not in HANDED_OVER:
                    self._release(prepared.borrower_id, message_id, holder)
                outcomes[message_id] = Outcome.skipped(status)
                continue
            outcomes[message_id] = self._send(
                message_id,
                composed.outgoing,
                holder=holder,
                accepted=accepted,
                lease=lease,
            )

    def _hold_for_unapplied_replies(
        self,
        ready: list[tuple[str, Dispatcher._Prepared, _Composed]],
        outcomes: dict[str, Outcome],
        attempt: str,
    ) -> list[tuple[str, Dispatcher._Prepared, _Composed]]:
        """SMS to a number whose reply is not applied (it waits in the journal: it came
        while the database was unreachable; or was set aside for a person) waits too, as
        does every SMS while the journal cannot be read: the reply may be a STOP, and its
        opt-out is not on record until it is applied. Returns the messages that may go on."""
        sms = [item for item in ready if item[2].outgoing.channel is Channel.SMS]
        if self.replies_pending is None or not sms:
            return ready
        try:
            held: HeldSenders | None = self.replies_pending()
        except TransientError:
            held = None
        now = self.now()
        waiting: dict[str, tuple[Dispatcher._Prepared, dt.datetime]] = {}
        for message_id, prepared, composed in sms:
            if held is not None and composed.outgoing.to in held.waiting:
                waiting[message_id] = (prepared, now + UNAPPLIED_REPLY_RETRY_DELAY)
            elif held is None or composed.outgoing.to in held.set_aside:
                waiting[message_id] = (prepared, now + CHECK_RETRY_DELAY)
        return self._hold_queued(
            ready,
            {
                message_id: (
                    prepared,
                    Decision.wait(Reason.CHECK_UNAVAILABLE, until, check="unapplied_reply"),
                )
                for message_id, (prepared, until) in waiting.items()
            },
            outcomes,
            attempt,
        )

    def _hold_queued(
        self,
        ready: list[tuple[str, Dispatcher._Prepared, _Composed]],
        waiting: Mapping[str, tuple[Dispatcher._Prepared, Decision]],
        outcomes: dict[str, Outcome],
        attempt: str,
    ) -> list[tuple[str, Dispatcher._Prepared, _Composed]]:
        """Defer these messages of `ready` (still `queued`) as their decisions say, giving
        back their cap slots; returns the rest of `ready`."""
        if not waiting:
            return ready
        now = self.now()
        with transaction(self.sessions) as session:
            rows = held_by_ids(session, waiting)
            for message_id, (_, decision) in waiting.items():
                row = rows.get(message_id)
                if row is None or row.status != Status.QUEUED.value:
                    outcomes[message_id] = Outcome.skipped(row.status if row else "missing")
                    continue
                outcomes[message_id] = self._defer(row, decision, now)
            write_rows(session, [rows[i] for i in waiting if i in rows])
        for message_id, (prepared, _) in waiting.items():
            if prepared.capped:
                self._release(prepared.borrower_id, message_id, attempt)
        return [item for item in ready if item[0] not in waiting]

    def _campaign_hand_over(
        self,
        ready: list[tuple[str, Dispatcher._Prepared, _Composed]],
        outcomes: dict[str, Outcome],
        attempt: str,
    ) -> tuple[list[tuple[str, Dispatcher._Prepared, _Composed]], list[tuple[str, str]]]:
        """Campaign messages wait while their campaign is halted (a pause or a cancel not
        yet seen by the gate) or its throttle is used up, and all of them while that cannot
        be checked. Returns the messages that may go on, and the hand-overs let through (in
        flight until `handed_over`)."""
        asking = [item for item in ready if item[1].campaign_id is not None]
        if not asking:
            return ready, []
        members = [f"{message_id}@{attempt}" for message_id, _, _ in asking]
        answers = None
        if self.campaigns is not None:
            try:
                answers = self.campaigns.hand_over(
                    [
                        HandOver(str(prepared.campaign_id), member, prepared.throttle_per_minute)
                        for (_, prepared, _), member in zip(asking, members, strict=True)
                    ],
                    now_ms=self._now_ms(),
                )
            except TransientError as error:
                log.warning("campaign checks unavailable: %s", error)
        now = self.now()
        waiting: dict[str, tuple[Dispatcher._Prepared, Decision]] = {}
        through: list[tuple[str, str]] = []
        throttled = 0
        for index, (message_id, prepared, _) in enumerate(asking):
            answer = answers[index] if answers is not None else None
            if answer is None:
                waiting[message_id] = (
                    prepared,
                    Decision.wait(
                        Reason.CHECK_UNAVAILABLE, now + CHECK_RETRY_DELAY, check="campaign"
                    ),
                )
            elif answer.allowed:
                through.append((str(prepared.campaign_id), members[index]))
            elif answer.halted:
                waiting[message_id] = (
                    prepared,
                    Decision.wait(Reason.CAMPAIGN_PAUSED, now + CAMPAIGN_HALT_RECHECK),
                )
            else:
                assert answer.until is not None and prepared.throttle_per_minute
                # those refused together leave one by one after the minute frees
                spacing = dt.timedelta(minutes=1) / prepared.throttle_per_minute
                until = max(answer.until, now) + spacing * throttled
                throttled += 1
                waiting[message_id] = (
                    prepared,
                    Decision.wait(
                        Reason.RATE_LIMITED,
                        until,
                        throttle_per_minute=str(prepared.throttle_per_minute),
                    ),
                )
        return self._hold_queued(ready, waiting, outcomes, attempt), through

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
        planned: PlannedMessage
        # the end of the allowed stretch the gate decided in (None: exempt from quiet hours)
        window_closes_at: dt.datetime | None
        campaign_id: str | None = None
        throttle_per_minute: int | None = None

    def _gate_row(
        self,
        session: Session,
        row: MessageRow,
        now: dt.datetime,
        borrower: BorrowerState | None,
        loan: LoanState | None,
        unapplied: Unapplied | None = None,
        campaign: CampaignState | None = None,
    ) -> Outcome | Dispatcher._Prepared:
        """The final gate on a locked row, with the latest borrower and loan state; held
        while an accepted event about them is `unapplied` (that state may be stale), and a
        campaign message while its campaign is paused."""
        if row.status not in (Status.QUEUED.value, *DUE_STATUSES):
            return Outcome.skipped(row.status)
        if row.send_at > now:
            # released early (or redelivered after a deferral): the clock brings it back
            if row.status == Status.QUEUED.value:
                row.move(Status.SCHEDULED, Reason.PLANNED, now, "not due yet")
            return NOT_DUE
        if unapplied is not None:
            # a dead letter waits for ops: looked at again less often than one being retried
            delay = DEAD_LETTER_HOLD if unapplied.outcome == DEAD_LETTER_OUTCOME else HOLD_DELAY
            hold = Decision.wait(
                Reason.EVENT_PENDING, now + delay, event=unapplied.id, outcome=unapplied.outcome
            )
            return self._defer(row, hold, now)
        if row.campaign_id is not None:
            held = _campaign_hold(campaign, now)
            if held is not None and held.kind is DecisionKind.SUPPRESS:
                withhold(row, held, now)
                return Outcome.withheld(held.reason)
            if held is not None:
                return self._defer(row, held, now)
        if borrower is None:
            decision = Decision.suppress(Reason.NO_ADDRESS, detail="borrower unknown")
        elif row.loan_id is not None and loan is None:
            decision = Decision.suppress(Reason.LOAN_CLOSED, detail="loan unknown")
        else:
            decision = pol.gate(
                self.policy,
                borrower,
                loan,
                planned_from_row(row),
                now,
                cease_confirmations_sent=cease_confirmations_sent(session, borrower.id)
                if row.purpose == Purpose.CEASE_CONFIRMATION.value
                else 0,
            )
        if decision.kind is DecisionKind.SUPPRESS:
            withhold(row, decision, now)
            return Outcome.withheld(decision.reason)
        if decision.kind is DecisionKind.WAIT and decision.until is not None:
            return self._defer(row, decision, now)
        capped = pol.counts_against_caps(Purpose(row.purpose))
        if row.status != Status.QUEUED.value:
            row.move(Status.QUEUED, Reason.DUE, now)
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
            planned=planned_from_row(row),
            window_closes_at=pol.window_closes_at(self.policy, borrower, now),
            campaign_id=row.campaign_id,
            throttle_per_minute=campaign.throttle_per_minute if campaign else None,
        )

    def _defer(self, row: MessageRow, decision: Decision, now: dt.datetime) -> Outcome:
        """Hold a message until `decision.until`; a campaign message that would wait past
        its campaign's end is withheld instead (`campaign_ended`), except for a pause, which
        the campaign's end settles."""
        assert decision.until is not None
        ends = pol.campaign_end(planned_from_row(row))
        if (
            ends is not None
            and decision.until >= ends
            and decision.reason is not Reason.CAMPAIGN_PAUSED
        ):
            row.cap_reserved_at = None
            ended = Decision.suppress(
                Reason.CAMPAIGN_ENDED, detail=f"held ({decision.reason}) past the campaign's end"
            )
            withhold(row, ended, now)
            return Outcome.withheld(Reason.CAMPAIGN_ENDED)
        row.send_at = decision.until
        row.cap_reserved_at = None
        row.move(Status.DEFERRED, decision.reason, now, decision.detail_text())
        return Outcome.deferred(decision.reason)

    def _reserve_group(
        self,
        group: list[tuple[str, Dispatcher._Prepared]],
        outcomes: dict[str, Outcome],
        attempt: _Attempt,
    ) -> list[tuple[str, Dispatcher._Prepared]]:
        """Take the cap slots of the group's capped messages in one go; returns the messages
        that may go on. One refused waits for its slot (or the morning after it); when the
        caps cannot be checked, every capped message waits (fail closed). One whose
        reservation another attempt holds is that attempt's to finish: left untouched."""
        capped = [(message_id, prepared) for message_id, prepared in group if prepared.capped]
        if not capped:
            return group
        requests = [
            CapRequest(
                prepared.borrower_id,
                prepared.channel,
                message_id,
                prepared.purpose,
                prepared.borrower,
                attempt.token,
                self.leases.key(message_id) if self.leases is not None and attempt.leased else None,
            )
            for message_id, prepared in capped
        ]
        try:
            decisions = self.caps.reserve_many(requests, now_ms=self._now_ms())
        except TransientError as error:
            now = self.now()
            with transaction(self.sessions) as session:
                rows = held_by_ids(session, [message_id for message_id, _ in capped])
                for message_id, _ in capped:
                    waiting = rows.get(message_id)
                    if waiting is not None and waiting.status == Status.QUEUED.value:
                        self._defer(
                            waiting,
                            Decision.wait(
                                Reason.CHECK_UNAVAILABLE, now + CHECK_RETRY_DELAY, check="caps"
                            ),
                            now,
                        )
                    outcomes[message_id] = Outcome.deferred(Reason.CHECK_UNAVAILABLE)
                write_rows(session, [rows[i] for i, _ in capped if i in rows])
            log.warning("caps unavailable for %d messages: %s", len(capped), error)
            return [item for item in group if not item[1].capped]
        refused = {
            message_id: decision
            for (message_id, _), decision in zip(capped, decisions, strict=True)
            if not decision.may_send
        }
        capped_out = {i: d for i, d in refused.items() if d.reason is not Reason.CLAIMED}
        outcomes.update((i, Outcome.skipped("claimed")) for i in refused if i not in capped_out)
        if capped_out:
            now = self.now()
            with transaction(self.sessions) as session:
                for message_id, decision in capped_out.items():
                    outcomes[message_id] = self._wait_for_cap(session, message_id, decision, now)
        return [item for item in group if item[0] not in refused]

    def _wait_for_cap(
        self, session: Session, message_id: str, decision: Decision, now: dt.datetime
    ) -> Outcome:
        """A message refused by a cap waits until the slot frees, inside the next allowed
        window; or is withheld when no window comes."""
        row = held_by_id(session, message_id)
        if row is None or row.status != Status.QUEUED.value:
            return Outcome.skipped(row.status if row else "missing")
        until = decision.until or now + CHECK_RETRY_DELAY
        borrower = load_borrower(session, row.borrower_id)
        assert borrower is not None  # a message's borrower is never deleted
        window = pol.next_allowed_instant(self.policy, borrower, until)
        if window.kind is DecisionKind.SUPPRESS:
            withhold(row, window, now)
            outcome = Outcome.withheld(window.reason)
        else:
            later = window.until or until
            outcome = self._defer(
                row, Decision.wait(Reason.FREQUENCY_CAP, later, **decision.detail), now
            )
        write_rows(session, [row])
        return outcome

    def _release(self, borrower_id: str, message_id: str, holder: str) -> None:
        try:
            self.caps.release(borrower_id, message_id, holder)
        except TransientError:
            # an unreleased slot only over-counts until its window passes: the safe direction
            log.warning("could not release cap slot of %s", message_id)

    def _compose(
        self, message_id: str, prepared: Dispatcher._Prepared, now: dt.datetime
    ) -> _Composed | tuple[Decision | None, str, Mapping[str, object]]:
        """The message's text for its recipient, rendered from the state the gate decided on
        and linted; or why it cannot go: (a decision to withhold it, or None with a render
        error; the columns of a text that was rendered but fails the lint)."""
        borrower, loan, channel = prepared.borrower, prepared.loan, prepared.channel
        recipient = borrower.recipient(channel)
        if recipient is None:
            return Decision.suppress(Reason.NO_ADDRESS), Outcome.withheld(Reason.NO_ADDRESS), {}
        unsubscribe_url = None
        if channel is Channel.EMAIL:
            if not self.link_keys:
                raise ConfigurationError("OUTREACH_LINK_SECRET: required to send email")
            token = unsubscribe_token(self.link_keys[0], message_id)
            unsubscribe_url = f"{self.public_url}/v1/unsubscribe/{token}"
        locale, context = message_context(
            self.policy, borrower, loan, prepared.planned, now, unsubscribe_url
        )
        try:
            rendered = self.renderer.render(prepared.planned.template, channel, locale, context)
        except RenderError as error:
            return None, str(error), {}
        # every check of `outreach check` but the segment limit: a long name or address
        # makes a lawful message longer, not one to withhold (its segments are recorded)
        findings = [
            finding
            for finding in lint_rendered(rendered, context, max_sms_segments=None)
            if finding.severity == ERROR
        ]
        headers = {}
        if unsubscribe_url is not None:
            headers = {
                "List-Unsubscribe": f"<{unsubscribe_url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            }
        sms = channel is Channel.SMS
        columns: dict[str, object] = {
            "locale": locale,
            "recipient": recipient,
            "template_version": rendered.version,
            "body": rendered.body if sms else None,
            "segments": rendered.segments if sms else None,
            "encoding": rendered.encoding if sms else None,
            "subject": None if sms else rendered.subject,
            "text": None if sms else rendered.text,
            "html": None if sms else rendered.html,
        }
        if findings:
            summary = "; ".join(f"{finding.code}: {finding.message}" for finding in findings)
            rejected = Decision.suppress(Reason.CONTENT_REJECTED, findings=summary[:1000])
            return rejected, Outcome.withheld(Reason.CONTENT_REJECTED), columns
        return _Composed(
            columns=columns,
            outgoing=Outgoing(
                message_id=message_id,
                channel=channel,
                to=recipient,
                body=rendered.body if sms else None,
                subject=None if sms else rendered.subject,
                text=None if sms else rendered.text,
                html=None if sms else rendered.html,
                segments=(rendered.segments or 1) if sms else 1,
                headers=headers,
                deliver_by=prepared.window_closes_at,
            ),
        )

    def _withhold_uncomposable(
        self,
        message_id: str,
        prepared: Dispatcher._Prepared,
        holder: str | None,
        decision: Decision | None,
        why: str,
        rendered: Mapping[str, object],
    ) -> Outcome:
        """A message that cannot be composed: withheld (no address left; its text rejected,
        kept on the row and flagged for a person) or failed (its template does not render),
        if still `queued`; its cap slot given back unless another attempt has handed it over
        meanwhile."""
        now = self.now()
        with transaction(self.sessions) as session:
            row = held_by_id(session, message_id)
            handed_over = row is not None and row.status in HANDED_OVER
            if row is None or row.status != Status.QUEUED.value:
                outcome = Outcome.skipped(row.status if row else "missing")
            elif decision is not None:
                _fill(row, rendered)
                if decision.reason is Reason.CONTENT_REJECTED:
                    row.needs_human = True
                withhold(row, decision, now)
                outcome = Outcome.withheld(decision.reason)
            else:
                row.move(Status.FAILED, Reason.RENDER_ERROR, now, why)
                outcome = Outcome.failed(Reason.RENDER_ERROR)
            if row is not None:
                write_rows(session, [row])
        if holder is not None and not handed_over:
            self._release(prepared.borrower_id, message_id, holder)
        return outcome

    def _send(
        self,
        message_id: str,
        outgoing: Outgoing,
        *,
        holder: str | None,
        accepted: list[tuple[str, Receipt, dt.datetime]] | None = None,
        lease: str | None = None,
    ) -> Outcome:
        """Hand the message to its provider and record the answer; an acceptance is added
        to `accepted` when given (recorded with the rest of its run; a status callback that
        comes first is parked for it, see `delivery_status`). `holder` is the attempt
        holding the message's cap slot (None: it holds none)."""
        sender = self.senders[outgoing.channel]
        if self.lease is not None and lease is not None:
            outgoing = replace(outgoing, still_held=partial(self.lease.may_hand_over, lease))
        try:
            ensure_still_held(outgoing)
            receipt = sender.send(outgoing)
        except ProviderRejected as rejected:
            ProviderAnswers(self).record_rejection(message_id, rejected, holder=holder)
            return Outcome.failed(rejected.code)
        except ProviderUnavailable as busy:
            return ProviderAnswers(self).record_retry(message_id, busy, holder=holder, lease=lease)
        except OutcomeUnknown as unknown:
            # the provider may have it: left `sending`, and no longer held once this batch
            # ends, so the reconciler asks the provider; never resent on a guess
            log.warning("outcome unknown for %s: %s", message_id, unknown)
            return UNKNOWN
        if accepted is not None:
            accepted.append((message_id, receipt, self.now()))
        else:
            self.record_accepted(message_id, receipt, self.now())
        return SENT

    def record_accepted(
        self,
        message_id: str,
        receipt: Receipt,
        now: dt.datetime,
        reason: Reason = Reason.ACCEPTED,
    ) -> None:
        """Record a provider's acceptance (see `dispatch_answers.ProviderAnswers`)."""
        ProviderAnswers(self).record_accepted(message_id, receipt, now, reason)

    def _mark_sending_many(
        self,
        ready: list[tuple[str, Dispatcher._Prepared, _Composed]],
        now: dt.datetime,
        lease: str | None,
    ) -> dict[str, str]:
        """Move the messages from `queued` to `sending` with their text, committed before
        any provider is called; returns the status of each that is no longer queued (a
        payment or an opt-out got to it after the gate, or another attempt), `missing` for
        one that is gone."""
        if not ready:
            return {}
        with transaction(self.sessions) as session:
            found = held_by_ids(session, [message_id for message_id, _, _ in ready])
            refused: dict[str, str] = {}
            marked: list[MessageRow] = []
            for message_id, _, composed in ready:
                row = found.get(message_id)
                if row is None or row.status != Status.QUEUED.value:
                    refused[message_id] = row.status if row else "missing"
                    continue
                _fill(row, composed.columns)
                row.attempts += 1
                row.worker_lease = lease
                detail = f"attempt={row.attempts}" + (f" worker={lease}" if lease else "")
                row.move(Status.SENDING, None, now, detail)
                marked.append(row)
            write_rows(session, marked)
        return refused

    # -- the clock's housekeeping ----------------------------------------------------------------

    def reconcile_orphaned(self, watch: LeaseWatch, limit: int = 1000) -> list[str]:
        """Messages whose worker is gone: reconciled with their providers, or enqueued again
        (see `dispatch_reconcile.OrphanReconciler`)."""
        return OrphanReconciler(self).reconcile_orphaned(watch, limit)


def _campaign_hold(campaign: CampaignState | None, now: dt.datetime) -> Decision | None:
    """What the campaign's status says of its message: withheld once it is cancelled or
    over, held while it is paused (until its end, when it is settled, or a day, when it
    looks again); None: it may go as far as the rest of the gate allows."""
    if campaign is None:
        return Decision.suppress(Reason.CAMPAIGN_CANCELLED, detail="campaign unknown")
    if campaign.status == CampaignStatus.CANCELLED:
        return Decision.suppress(Reason.CAMPAIGN_CANCELLED)
    if campaign.status == CampaignStatus.COMPLETED:
        return Decision.suppress(Reason.CAMPAIGN_ENDED)
    if campaign.status == CampaignStatus.PAUSED:
        until = now + PAUSED_RECHECK
        if campaign.end_at is not None:
            until = min(until, max(campaign.end_at, now + CAMPAIGN_HALT_RECHECK))
        return Decision.wait(Reason.CAMPAIGN_PAUSED, until)
    return None


def _fill(row: MessageRow, columns: Mapping[str, object]) -> None:
    """Put a composed message's columns on its row: its locale and recipient as the text was
    rendered for, and the text."""
    for name, value in columns.items():
        if name in ("locale", "recipient"):
            setattr(row, name, value)
    row.set_content({k: v for k, v in columns.items() if k not in ("locale", "recipient")})


def release_due(sessions: sessionmaker[Session], now: dt.datetime, limit: int = 500) -> list[str]:
    with transaction(sessions) as session:
        return store.claim_due(session, now, limit)


def touch_requeued(sessions: sessionmaker[Session], ids: Sequence[str], now: dt.datetime) -> None:
    if not ids:
        return
    with transaction(sessions) as session:
        store.touch(session, ids, now)
