"""What a loan's state means for the cadence at an instant: shared by `plan` and `gate`.

Days are counted in the policy's day-boundary zone: a loan ages one day past due at each
midnight there, from the instant (`as_of`) its `days_past_due` was reported.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from outreach.domain import (
    BorrowerState,
    Channel,
    Instalment,
    LoanState,
    PaymentPlan,
    Promise,
    Purpose,
    Reason,
)
from outreach.policy.model import Policy, Stage, Step

DEFAULT_CADENCE = "default"


def local_day(policy: Policy, moment: dt.datetime) -> dt.date:
    """The calendar day of `moment` in the policy's day-boundary zone."""
    return _day_in(moment, policy.day_boundary_zone)


@functools.lru_cache(maxsize=8192)
def _day_in(moment: dt.datetime, zone: dt.tzinfo) -> dt.date:
    # planning asks for the day of the same few instants (now, the starts of the days ahead,
    # a loan's report) many times over
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetimes given to the policy must be timezone-aware")
    return moment.astimezone(zone).date()


def start_of_day(policy: Policy, day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=policy.day_boundary_zone)


def effective_days_past_due(policy: Policy, loan: LoanState, now: dt.datetime) -> int:
    """`days_past_due` aged to `now`; a loan with nothing owed does not age."""
    return aged_days_past_due(policy, loan.days_past_due, loan.as_of, not loan.is_current, now)


def aged_days_past_due(
    policy: Policy, reported: int, as_of: dt.datetime, owing: bool, now: dt.datetime
) -> int:
    """Days past due reported at `as_of`, aged to `now` (a loan with nothing owed does not
    age): for reads that have the loan's columns, not its state."""
    if not owing:
        return reported
    return reported + (local_day(policy, now) - local_day(policy, as_of)).days


def ages_alike(policy: Policy, before: LoanState, after: LoanState) -> bool:
    """Whether a new report of a loan says nothing the old one did not already imply.

    Same borrower, delinquency cycle (due date), amount due and closure, and the days past
    due that aging the old report gives at the new report's instant: what the cadence is
    planned from is unchanged, so re-planning would change nothing (a nightly update that
    only restates the age is the common case). Balance, product and account number only
    change what a message says, which is rendered at sending time.
    """
    return (
        before.borrower_id == after.borrower_id
        and before.due_date == after.due_date
        and before.amount_due == after.amount_due
        and before.closed_reason == after.closed_reason
        and before.is_current == after.is_current
        and effective_days_past_due(policy, before, after.as_of) == after.days_past_due
    )


def day_of(policy: Policy, loan: LoanState, days_past_due: int) -> dt.date:
    """The calendar day on which the loan is (or was) `days_past_due` days past due."""
    return local_day(policy, loan.as_of) + dt.timedelta(days=days_past_due - loan.days_past_due)


def delinquency_cycle(loan: LoanState) -> str:
    """One delinquency episode of a loan, named by the due date it is late against."""
    return loan.due_date.isoformat()


def cadence_for(
    policy: Policy, borrower: BorrowerState, stage: Stage
) -> tuple[str, tuple[Step, ...]]:
    """The steps this borrower gets in `stage`: the first matching tag cadence, else default."""
    for tag in policy.cadence_tags:
        if tag in borrower.tags and tag in stage.tag_steps:
            return tag, stage.tag_steps[tag]
    return DEFAULT_CADENCE, stage.steps


def latest_promise(loan: LoanState) -> Promise | None:
    return max(loan.promises, key=lambda promise: promise.created_at, default=None)


def latest_plan(loan: LoanState) -> PaymentPlan | None:
    return max(loan.plans, key=lambda plan: plan.created_at, default=None)


def missed_instalment(policy: Policy, plan: PaymentPlan, today: dt.date) -> Instalment | None:
    """The first instalment left unpaid past its due date (and the grace days), if any."""
    grace = dt.timedelta(days=policy.pauses.instalment_grace_days)
    missed = [i for i in plan.instalments if not i.paid and i.due_date + grace < today]
    return min(missed, key=lambda instalment: instalment.due_date, default=None)


@dataclass(frozen=True, slots=True)
class Pause:
    """Days on which stage dunning does not run, and why. `last` None: still open."""

    first: dt.date
    last: dt.date | None
    reason: Reason

    def covers(self, day: dt.date) -> bool:
        return self.first <= day and (self.last is None or day <= self.last)


def pauses(policy: Policy, loan: LoanState, today: dt.date) -> list[Pause]:
    """Every stretch of days a promise or a payment plan paused (or pauses) stage dunning.

    A promise pauses dunning from the day it is made through its promised date; an unkept one
    also through the day of the broken-promise follow-up, so the two never crowd one day. A
    payment plan replaces dunning from the day it is made until an instalment is missed (or
    it is all paid, or a newer plan replaces it).
    """
    follow_up_days = policy.event(Purpose.BROKEN_PROMISE).days
    result = []
    for promise in loan.promises:
        last = promise.promised_date
        if not promise.kept:
            last += dt.timedelta(days=follow_up_days)
        result.append(Pause(local_day(policy, promise.created_at), last, Reason.PROMISE_PENDING))
    plans = sorted(loan.plans, key=lambda plan: plan.created_at)
    grace = dt.timedelta(days=policy.pauses.instalment_grace_days)
    for index, plan in enumerate(plans):
        first = local_day(policy, plan.created_at)
        plan_last: dt.date | None = None
        missed = missed_instalment(policy, plan, today)
        if missed is not None:
            plan_last = missed.due_date + grace
        elif plan.instalments and all(instalment.paid for instalment in plan.instalments):
            plan_last = max(instalment.due_date for instalment in plan.instalments)
        if index + 1 < len(plans):
            replaced = local_day(policy, plans[index + 1].created_at) - dt.timedelta(days=1)
            plan_last = replaced if plan_last is None else min(plan_last, replaced)
        result.append(Pause(first, plan_last, Reason.PAYMENT_PLAN_ACTIVE))
    return result


def pause_on(all_pauses: list[Pause], day: dt.date) -> Pause | None:
    """The pause covering `day`; a payment plan wins over a promise, being the firmer deal."""
    covering = [pause for pause in all_pauses if pause.covers(day)]
    for pause in covering:
        if pause.reason is Reason.PAYMENT_PLAN_ACTIVE:
            return pause
    return covering[0] if covering else None


@dataclass(frozen=True, slots=True)
class DunningView:
    """Where a loan stands in its stage cadence at one instant."""

    today: dt.date
    days_past_due: int
    cycle: str
    stage: Stage | None
    cadence: str
    steps: tuple[Step, ...]
    # the most recent step(s) whose day has come (several if they share that day), unless
    # that day (or today) is paused
    due: tuple[Step, ...]
    # steps of this stage whose day is still to come and not paused
    upcoming: tuple[Step, ...]
    pause_today: Pause | None
    pauses: tuple[Pause, ...]

    def step(self, step_id: str) -> Step | None:
        for step in self.steps:
            if step.id == step_id:
                return step
        return None

    def successor(self, borrower: BorrowerState, step: Step) -> Step | None:
        """The first later step of the cadence that reaches the borrower on the channel `step`
        reaches them on: from its day on, it says what `step` would have said."""
        channel = step_channel(borrower, step)
        return next(
            (
                other
                for other in self.steps
                if other.days_past_due > step.days_past_due
                and step_channel(borrower, other) is channel
            ),
            None,
        )

    def replaced_by(self, borrower: BorrowerState, step: Step, channel: Channel) -> Step | None:
        """The latest step whose day has come that replaces `step`, sent on `channel`: a later
        step of the cadence on the same channel. A later step on the other channel does not:
        the borrower who reads only texts would otherwise lose the text."""
        replacing = [
            other
            for other in self.steps
            if step.days_past_due < other.days_past_due <= self.days_past_due
            and step_channel(borrower, other) is channel
        ]
        return replacing[-1] if replacing else None


# the views worked out last, by identity of their inputs and the lender's day (see below)
_VIEWS: dict[
    tuple[int, int, int, dt.date], tuple[Policy, BorrowerState, LoanState, DunningView]
] = {}
_MAX_VIEWS = 4096


def dunning_view(
    policy: Policy, borrower: BorrowerState, loan: LoanState, now: dt.datetime
) -> DunningView:
    """The loan's place in its cadence at `now`.

    It depends on `now` only through the lender's day, and re-planning a loan asks for the
    same day's view several times (the plan, each pending message's gate, the look ahead),
    so the last few thousand are remembered, held by the identity of the (immutable) policy,
    borrower and loan states they were worked out from. Each entry keeps those states alive,
    so no other object can take their identity while it is remembered.
    """
    today = local_day(policy, now)
    key = (id(policy), id(borrower), id(loan), today)
    found = _VIEWS.get(key)
    if found is not None:
        return found[3]
    view = _dunning_view(policy, borrower, loan, now, today)
    if len(_VIEWS) >= _MAX_VIEWS:
        _VIEWS.clear()
    _VIEWS[key] = (policy, borrower, loan, view)
    return view


def _dunning_view(
    policy: Policy, borrower: BorrowerState, loan: LoanState, now: dt.datetime, today: dt.date
) -> DunningView:
    days_past_due = effective_days_past_due(policy, loan, now)
    stage = policy.stage_at(days_past_due)
    all_pauses = pauses(policy, loan, today)
    pause_today = pause_on(all_pauses, today)
    cadence: str = DEFAULT_CADENCE
    steps: tuple[Step, ...] = ()
    if stage is not None:
        cadence, steps = cadence_for(policy, borrower, stage)
    reported_day = local_day(policy, loan.as_of)

    def paused(step: Step) -> bool:
        if not all_pauses:
            return False
        day = reported_day + dt.timedelta(days=step.days_past_due - loan.days_past_due)
        return pause_on(all_pauses, day) is not None

    reached = [step for step in steps if step.days_past_due <= days_past_due]
    due: tuple[Step, ...] = ()
    # Never catch up: only the latest day's steps that have come may go, and not if that day
    # was paused (a step skipped during a promise or plan stays skipped).
    if reached and pause_today is None and not paused(reached[-1]):
        latest_day = reached[-1].days_past_due
        due = tuple(step for step in reached if step.days_past_due == latest_day)
    upcoming = tuple(
        step for step in steps if step.days_past_due > days_past_due and not paused(step)
    )
    return DunningView(
        today=today,
        days_past_due=days_past_due,
        cycle=delinquency_cycle(loan),
        stage=stage,
        cadence=cadence,
        steps=steps,
        due=due,
        upcoming=upcoming,
        pause_today=pause_today,
        pauses=tuple(all_pauses),
    )


def choose_channel(
    borrower: BorrowerState, preferred: Channel, fallback: bool
) -> tuple[Channel, Channel | None]:
    """The channel to use and the one it fell back from (SPEC §5).

    When the borrower cannot receive on `preferred` (no address, no consent, opted out,
    invalid) but can on the other channel, and the policy allows fallback, use the other.
    Otherwise keep `preferred`: the gate then records precisely why it does not go.
    """
    if channel_block(borrower, preferred) is None:
        return preferred, None
    if fallback and channel_block(borrower, preferred.other) is None:
        return preferred.other, preferred
    return preferred, None


def step_channel(borrower: BorrowerState, step: Step) -> Channel:
    """The channel a cadence step reaches this borrower on, after any fallback."""
    return choose_channel(borrower, step.channel, step.fallback)[0]


def recipient_key(borrower: BorrowerState, channel: Channel) -> str | None:
    """The recipient as opt-out and invalid-address lists store it (emails lower-cased)."""
    recipient = borrower.recipient(channel)
    if recipient is None:
        return None
    return recipient.strip().lower() if channel is Channel.EMAIL else recipient.strip()


def channel_block(borrower: BorrowerState, channel: Channel) -> Reason | None:
    """Why this borrower cannot receive on `channel` at all, or None if they can."""
    recipient = recipient_key(borrower, channel)
    if recipient is None or not recipient:
        return Reason.NO_ADDRESS
    if _listed(recipient, borrower.opted_out, channel):
        return Reason.OPTED_OUT
    if _listed(recipient, borrower.invalid_addresses, channel):
        return Reason.INVALID_ADDRESS
    if not borrower.consents_to(channel):
        return Reason.NO_CONSENT
    return None


def _listed(recipient: str, listed: frozenset[str], channel: Channel) -> bool:
    # Email addresses are compared without case whatever way the list was written.
    if recipient in listed:
        return True
    return channel is Channel.EMAIL and any(entry.strip().lower() == recipient for entry in listed)
