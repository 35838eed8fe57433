"""The final gate: may this message go now, on the latest state? Everything but the caps.

Checks run from the most fundamental to the most particular, and the first that fails gives
the reason: restrictions on the borrower, then the loan and what the message is about, then
the channel, then the hour. Anything the gate cannot establish counts against sending.
"""

from __future__ import annotations

import datetime as dt

from outreach.domain import (
    BorrowerState,
    Decision,
    LoanState,
    PlannedMessage,
    Purpose,
    Reason,
    Restriction,
)
from outreach.policy.dunning import (
    DunningView,
    channel_block,
    day_of,
    dunning_view,
    latest_plan,
    latest_promise,
    local_day,
    missed_instalment,
    start_of_day,
)
from outreach.policy.hours import next_allowed_instant
from outreach.policy.model import Policy

# Restrictions that stop every message but direct replies, strongest first.
_STOPPING_RESTRICTIONS = (
    (Restriction.DECEASED, Reason.DECEASED),
    (Restriction.BANKRUPTCY, Reason.BANKRUPTCY),
    (Restriction.ATTORNEY, Reason.ATTORNEY),
)
# Purposes that exist only for a loan; without its state they cannot be re-checked.
_LOAN_PURPOSES = frozenset(
    {
        Purpose.DUNNING,
        Purpose.PROMISE_REMINDER,
        Purpose.BROKEN_PROMISE,
        Purpose.INSTALMENT_REMINDER,
        Purpose.VISIT_NOTICE,
        Purpose.PAYMENT_CONFIRMATION,
    }
)


def counts_against_caps(purpose: Purpose) -> bool:
    """Direct replies and payment confirmations are neither checked nor counted (SPEC §5)."""
    return not purpose.is_direct_reply and purpose is not Purpose.PAYMENT_CONFIRMATION


def obeys_quiet_hours(purpose: Purpose) -> bool:
    """A direct reply answers the borrower at once, in any hour; everything else waits."""
    return not purpose.is_direct_reply


def gate(
    policy: Policy,
    borrower: BorrowerState,
    loan: LoanState | None,
    message: PlannedMessage,
    now: dt.datetime,
    *,
    known_at: dt.datetime | None = None,
    cease_confirmations_sent: int = 0,
    optout_confirmations_sent: int = 0,
) -> Decision:
    """Send, wait until an instant, or suppress — with the reason — on the latest state.

    `known_at`: when the state was read (default `now`). Asked about a later `now` — a
    forecast, as planning asks about a message's send time — the gate suppresses only for
    what time alone decides (a stage the loan will have aged out of, a visit that will have
    passed); whether an instalment is missed waits for its day, as a payment may yet come.

    `cease_confirmations_sent`: cease-contact confirmations already sent (or on their way)
    to this borrower since the request; only the first is allowed. `optout_confirmations_sent`:
    opt-out confirmations already sent to this recipient since the opt-out; only the first is
    allowed. Caps are not checked here (see `outreach.caps`).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("`now` must be timezone-aware")
    purpose = message.purpose
    if purpose.is_direct_reply:
        return _direct_reply(borrower, message, optout_confirmations_sent)
    campaign_ends = campaign_end(message)
    if campaign_ends is not None and now >= campaign_ends:
        return Decision.suppress(Reason.CAMPAIGN_ENDED)

    restrictions = borrower.active_restrictions
    for restriction, reason in _STOPPING_RESTRICTIONS:
        if restriction in restrictions:
            return Decision.suppress(reason)
    if purpose is Purpose.CEASE_CONFIRMATION:
        if cease_confirmations_sent > 0:
            return Decision.suppress(Reason.ALREADY_CONFIRMED)
    elif Restriction.CEASE_CONTACT in restrictions:
        return Decision.suppress(Reason.CEASE_CONTACT)
    if purpose.is_collection and Restriction.DISPUTE in restrictions:
        return Decision.suppress(Reason.DISPUTE)

    if loan is None:
        if purpose in _LOAN_PURPOSES:
            return Decision.suppress(Reason.SUPERSEDED, detail="loan state unknown")
    else:
        about_loan = _check_loan(policy, borrower, loan, message, now, known_at or now)
        if about_loan is not None:
            return about_loan

    blocked = channel_block(borrower, message.channel)
    if blocked is not None:
        return Decision.suppress(blocked, channel=str(message.channel))

    if message.send_at > now:
        return Decision.wait(Reason.PLANNED, message.send_at)
    timing = next_allowed_instant(policy, borrower, now)
    if campaign_ends is not None and timing.until is not None and timing.until >= campaign_ends:
        return Decision.suppress(
            Reason.CAMPAIGN_ENDED,
            detail=f"no allowed hour before the campaign ends ({timing.reason})",
        )
    if purpose is Purpose.VISIT_NOTICE and loan is not None and timing.until is not None:
        visit = _visit(loan, message)
        if visit is not None and timing.until >= visit:
            return Decision.suppress(
                Reason.EXPIRED, detail="the visit comes before any allowed hour"
            )
    return timing


def campaign_end(message: PlannedMessage) -> dt.datetime | None:
    """The end of the campaign a message belongs to (`refs["campaign_end_at"]`), if it has
    one: a campaign message not sent by then is withheld as `campaign_ended`."""
    ends = message.refs.get("campaign_end_at") if message.purpose is Purpose.CAMPAIGN else None
    return dt.datetime.fromisoformat(ends) if ends else None


def _direct_reply(
    borrower: BorrowerState, message: PlannedMessage, optout_confirmations_sent: int
) -> Decision:
    blocked = channel_block(borrower, message.channel)
    # A reply answers a message the borrower sent from this address: consent and the opt-out
    # the reply confirms do not stop it; a missing or dead address does.
    if blocked in (Reason.NO_ADDRESS, Reason.INVALID_ADDRESS):
        return Decision.suppress(blocked, channel=str(message.channel))
    if message.purpose is Purpose.OPTOUT_CONFIRMATION and optout_confirmations_sent > 0:
        return Decision.suppress(Reason.ALREADY_CONFIRMED)
    return Decision.send(Reason.DUE, reply="true")


def _check_loan(
    policy: Policy,
    borrower: BorrowerState,
    loan: LoanState,
    message: PlannedMessage,
    now: dt.datetime,
    known_at: dt.datetime,
) -> Decision | None:
    purpose = message.purpose
    refs = message.refs
    if purpose is Purpose.PAYMENT_CONFIRMATION:
        payment_id = refs.get("payment_id")
        if payment_id is not None and all(p.id != payment_id for p in loan.payments):
            return Decision.suppress(Reason.SUPERSEDED, detail="payment unknown")
        return None
    if not purpose.is_collection:
        return None
    if loan.is_closed:
        return Decision.suppress(Reason.LOAN_CLOSED, closed=str(loan.closed_reason))
    if loan.is_current:
        return Decision.suppress(Reason.LOAN_CURRENT)
    today = local_day(policy, now)
    if purpose is Purpose.DUNNING:
        view = dunning_view(policy, borrower, loan, now)
        return _check_dunning(policy, borrower, loan, message, view)
    if purpose is Purpose.CAMPAIGN:
        view = dunning_view(policy, borrower, loan, now)
        if view.pause_today is not None:
            return Decision.suppress(view.pause_today.reason)
        return None
    if purpose in (Purpose.PROMISE_REMINDER, Purpose.BROKEN_PROMISE):
        return _check_promise(policy, loan, message, today)
    if purpose is Purpose.INSTALMENT_REMINDER:
        # a miss is a fact only once its day has passed by what is known
        known_day = min(today, local_day(policy, known_at))
        return _check_instalment(policy, loan, message, today, known_day)
    if purpose is Purpose.VISIT_NOTICE:
        visit_id = refs.get("visit_id")
        current = next((v for v in loan.visits if v.id == visit_id), None)
        if current is None:
            return Decision.suppress(Reason.VISIT_CANCELLED)
        planned_at = refs.get("visit_at")
        if planned_at is not None and dt.datetime.fromisoformat(planned_at) != current.visit_at:
            return Decision.suppress(Reason.SUPERSEDED, detail="visit rescheduled")
        if current.visit_at <= now:
            return Decision.suppress(Reason.EXPIRED)
        return None
    return None


def _check_dunning(
    policy: Policy,
    borrower: BorrowerState,
    loan: LoanState,
    message: PlannedMessage,
    view: DunningView,
) -> Decision | None:
    if view.stage is None or view.stage.name != message.stage:
        return Decision.suppress(
            Reason.STAGE_CHANGED, stage=view.stage.name if view.stage else "none"
        )
    if message.refs.get("cycle", view.cycle) != view.cycle:
        return Decision.suppress(Reason.STAGE_CHANGED, cycle=view.cycle)
    if view.pause_today is not None:
        return Decision.suppress(view.pause_today.reason)
    step = view.step(message.refs.get("step", ""))
    if step is None:
        return Decision.suppress(Reason.SUPERSEDED, detail=f"not in the {view.cadence} cadence")
    step_day = day_of(policy, loan, step.days_past_due)
    for pause in view.pauses:
        if pause.covers(step_day):
            return Decision.suppress(pause.reason, detail="its day was paused")
    # a step held past its day (quiet hours, caps, a late report) still goes, unless a later
    # step has come that reaches the borrower on the same channel: never two of a kind
    replacing = view.replaced_by(borrower, step, message.channel)
    if replacing is not None:
        return Decision.suppress(Reason.SUPERSEDED, detail="a later step is due", by=replacing.id)
    if step.days_past_due > view.days_past_due:
        return Decision.wait(Reason.PLANNED, start_of_day(policy, step_day))
    return None


def _check_promise(
    policy: Policy, loan: LoanState, message: PlannedMessage, today: dt.date
) -> Decision | None:
    promise_id = message.refs.get("promise_id")
    promise = next((p for p in loan.promises if p.id == promise_id), None)
    if promise is None or promise is not latest_promise(loan):
        return Decision.suppress(Reason.SUPERSEDED, detail="a newer promise replaced it")
    if promise.kept:
        return Decision.suppress(Reason.PROMISE_KEPT)
    if message.purpose is Purpose.PROMISE_REMINDER:
        if today > promise.promised_date:
            return Decision.suppress(Reason.EXPIRED)
        return None
    # broken-promise follow-up: not before the promised date has passed
    if today <= promise.promised_date:
        next_day = promise.promised_date + dt.timedelta(days=1)
        return Decision.wait(Reason.PROMISE_PENDING, start_of_day(policy, next_day))
    rule = policy.event(Purpose.BROKEN_PROMISE)
    if today > promise.promised_date + dt.timedelta(days=rule.days + rule.valid_days):
        return Decision.suppress(Reason.EXPIRED)
    return None


def _check_instalment(
    policy: Policy, loan: LoanState, message: PlannedMessage, today: dt.date, known_day: dt.date
) -> Decision | None:
    plan = latest_plan(loan)
    if plan is None or plan.id != message.refs.get("plan_id"):
        return Decision.suppress(Reason.SUPERSEDED, detail="a newer plan replaced it")
    due = message.refs.get("instalment_due_date")
    that_day = [i for i in plan.instalments if i.due_date.isoformat() == due]
    if not that_day:
        return Decision.suppress(Reason.SUPERSEDED, detail="instalment unknown")
    if all(instalment.paid for instalment in that_day):
        return Decision.suppress(Reason.INSTALMENT_PAID)
    instalment = that_day[0]
    missed = missed_instalment(policy, plan, known_day)
    if missed is not None:
        return Decision.suppress(Reason.PLAN_BROKEN, missed=missed.due_date.isoformat())
    if today > instalment.due_date:
        return Decision.suppress(Reason.EXPIRED)
    return None


def _visit(loan: LoanState, message: PlannedMessage) -> dt.datetime | None:
    visit_id = message.refs.get("visit_id")
    return next((v.visit_at for v in loan.visits if v.id == visit_id), None)
