"""Desired-state planning: every message that should exist for a loan at an instant.

Keys are deterministic, so planning again creates nothing new; a message whose key is no
longer planned is no longer wanted. Stage dunning keys carry the delinquency cycle (the due
date the loan is late against), the stage, the day and the template: a new episode, a new
stage or a switch to a tag cadence (hardship) yields new keys; a change of channel does not,
so a step is never sent twice on two channels.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from outreach.domain import (
    BorrowerState,
    Channel,
    Decision,
    DecisionKind,
    LoanState,
    PlannedMessage,
    Purpose,
    Reason,
)
from outreach.policy.dunning import (
    DunningView,
    choose_channel,
    day_of,
    dunning_view,
    effective_days_past_due,
    latest_plan,
    latest_promise,
    local_day,
    missed_instalment,
)
from outreach.policy.hours import contact_rules, next_allowed_instant
from outreach.policy.model import EventRule, Policy
from outreach.policy.zones import candidate_zones

_DAY = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class PlanItem:
    """A planned message and how its time was chosen.

    `timing` is `send` when `message.send_at` is the instant the policy aimed for (`target`),
    `wait(QUIET_HOURS | HOLIDAY | INCONVENIENT_TIME, until=send_at)` when quiet hours moved it
    later — put that on the timeline as `deferred` — and `suppress(NO_CONVENIENT_TIME)` when
    no allowed instant exists within the search horizon (`send_at` is then the target).
    """

    message: PlannedMessage
    timing: Decision
    target: dt.datetime

    @property
    def deferred(self) -> bool:
        return self.timing.kind is DecisionKind.WAIT


def plan(
    policy: Policy, borrower: BorrowerState, loan: LoanState, now: dt.datetime
) -> list[PlannedMessage]:
    """Every message that should exist for this loan now (see `plan_items` for timings)."""
    return [item.message for item in plan_items(policy, borrower, loan, now)]


def plan_items(
    policy: Policy, borrower: BorrowerState, loan: LoanState, now: dt.datetime
) -> list[PlanItem]:
    """`plan` with, for each message, the decision that set its `send_at`."""
    planner = _Planner(policy, borrower, loan, now)
    planner.payment_confirmations()
    if not loan.is_closed and not loan.is_current:
        view = dunning_view(policy, borrower, loan, now)
        planner.dunning(view)
        planner.promise_follow_ups(view)
        planner.instalment_reminders(view)
        planner.visit_notices(view)
    return planner.items


# how far ahead `next_plan_change` looks for a change of the cadence before it asks again
PLAN_LOOKAHEAD_DAYS = 31


def next_plan_change(
    policy: Policy,
    borrower: BorrowerState,
    loan: LoanState,
    now: dt.datetime,
    *,
    planned: Collection[str] | None = None,
    pending: Mapping[str, dt.datetime] | None = None,
) -> dt.datetime | None:
    """The first instant after `now` at which `plan` may want other messages than it wants at
    `now`, if neither the loan nor the borrower changes meanwhile; None if it never will.

    Re-planning the loan before then finds nothing to create, cancel or withhold, so a clock
    may skip it until then. On the safe side: it may name an instant at which nothing
    changes, never one later than a change. What the plan depends on in time: the lender's
    day (stage, the steps due and to come, pauses for promises and plans, missed instalments
    — read off `dunning_view` day by day), the dates of the promise, instalment and visit
    follow-ups, and how long a payment stays confirmable. Days on which the borrower cannot
    be contacted at all (holidays, declared inconvenient times) may push a step past its
    successor's day at any point, so they are checked day by day.

    Given what exists of the loan's messages — `planned`, the keys of all of them, and
    `pending`, the send instants of those still waiting — a day on which the cadence moves on
    counts only if planning then would create a message (a key not planned yet) or withdraw
    one still waiting then (a pending key no longer wanted; one due before that day is sent,
    or deferred, by then, and a deferral has the loan re-planned anyway). A step's day that
    only turns a step planned ahead into a due one changes nothing.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("`now` must be timezone-aware")
    candidates: list[dt.datetime] = []
    rule = policy.event(Purpose.PAYMENT_CONFIRMATION)
    for payment in loan.payments:
        if rule.max_age is not None and payment.paid_at + rule.max_age >= now:
            candidates.append(payment.paid_at + rule.max_age + dt.timedelta(seconds=1))
    today = local_day(policy, now)
    if not loan.is_closed and not loan.is_current:
        candidates.extend(_follow_up_changes(policy, loan))
        candidates.extend(visit.visit_at for visit in loan.visits if visit.visit_at > now)
        signature = _cadence_signature(dunning_view(policy, borrower, loan, now))
        for day in _days_that_may_change(policy, borrower, loan, today):
            start = _start_of_day(policy, day)
            if _may_block_whole_day(policy, borrower, day):
                candidates.append(start)
                break
            moved = _cadence_signature(dunning_view(policy, borrower, loan, start))
            if moved == signature:
                continue
            if planned is None or pending is None:
                candidates.append(start)
                break
            wanted = {item.message.key for item in plan_items(policy, borrower, loan, start)}
            withdrawn = any(at >= start and key not in wanted for key, at in pending.items())
            if withdrawn or not wanted.issubset(planned):
                candidates.append(start)
                break
            signature = moved
        else:
            candidates.append(_start_of_day(policy, today + dt.timedelta(days=PLAN_LOOKAHEAD_DAYS)))
    later = [moment for moment in candidates if moment > now]
    return min(later) if later else None


def _days_that_may_change(
    policy: Policy, borrower: BorrowerState, loan: LoanState, today: dt.date
) -> list[dt.date]:
    """The days after `today`, up to the lookahead, on which the cadence signature or the
    contact calendar may change, in order; between two of them neither can.

    `dunning_view` reads the day only through the days past due (which cross a step's day or
    a stage's bounds on known days), the pauses of promises and plans (which start, end and
    turn on missed instalments on known days), and `_may_block_whole_day` through holidays
    (and any day at all for declared inconvenient times). Days around each of these are
    included; a day more than needed costs only a look.
    """
    last = today + dt.timedelta(days=PLAN_LOOKAHEAD_DAYS)
    days: set[dt.date] = set()
    if borrower.inconvenient_windows:
        days.add(today + _DAY)
    holidays = _in_order(contact_rules(policy, borrower).holidays)
    for holiday in holidays[
        bisect.bisect_left(holidays, today) : bisect.bisect_right(holidays, last + _DAY)
    ]:
        days.update(holiday + dt.timedelta(days=shift) for shift in (-1, 0, 1))
    reported = local_day(policy, loan.as_of)
    # the days past due on the days ahead: those of a step or a stage bound matter
    offset = loan.days_past_due - reported.toordinal()
    thresholds = _days_past_due_that_matter(policy)
    low = bisect.bisect_right(thresholds, today.toordinal() + offset)
    high = bisect.bisect_right(thresholds, last.toordinal() + offset)
    days.update(dt.date.fromordinal(value - offset) for value in thresholds[low:high])
    for moment in _pause_dates(policy, loan):
        days.update(moment + dt.timedelta(days=shift) for shift in (-1, 0, 1, 2))
    return sorted(day for day in days if today < day <= last)


@functools.lru_cache(maxsize=64)
def _in_order(holidays: frozenset[dt.date]) -> tuple[dt.date, ...]:
    return tuple(sorted(holidays))


_THRESHOLDS: dict[int, tuple[Policy, tuple[int, ...]]] = {}


def _days_past_due_that_matter(policy: Policy) -> tuple[int, ...]:
    """Every step's days past due (tag cadences too) and every stage's bounds, in order."""
    found = _THRESHOLDS.get(id(policy))
    if found is not None and found[0] is policy:
        return found[1]
    values: set[int] = set()
    for stage in policy.stages:
        values.add(stage.first_day)
        if stage.last_day is not None:
            values.add(stage.last_day + 1)
        for steps in (stage.steps, *stage.tag_steps.values()):
            values.update(step.days_past_due for step in steps)
    thresholds = tuple(sorted(values))
    _THRESHOLDS[id(policy)] = (policy, thresholds)
    return thresholds


def _pause_dates(policy: Policy, loan: LoanState) -> list[dt.date]:
    """The days around which a promise's or a plan's pause may start, end or turn."""
    dates: list[dt.date] = []
    follow_up = dt.timedelta(days=policy.event(Purpose.BROKEN_PROMISE).days)
    for promise in loan.promises:
        dates += [
            local_day(policy, promise.created_at),
            promise.promised_date,
            promise.promised_date + follow_up,
        ]
    grace = dt.timedelta(days=policy.pauses.instalment_grace_days)
    for plan in loan.plans:
        dates.append(local_day(policy, plan.created_at))
        for instalment in plan.instalments:
            dates += [instalment.due_date, instalment.due_date + grace]
    return dates


def _cadence_signature(view: DunningView) -> tuple[object, ...]:
    return (
        view.cycle,
        None if view.stage is None else view.stage.name,
        view.cadence,
        tuple(step.id for step in view.due),
        tuple(step.id for step in view.upcoming),
        None if view.pause_today is None else view.pause_today.reason,
    )


def _follow_up_changes(policy: Policy, loan: LoanState) -> list[dt.datetime]:
    """The lender days on which a promise, instalment or visit follow-up starts or stops."""
    days: list[dt.date] = []
    promise = latest_promise(loan)
    if promise is not None and not promise.kept:
        reminder = policy.event(Purpose.PROMISE_REMINDER)
        broken = policy.event(Purpose.BROKEN_PROMISE)
        follow_day = promise.promised_date + dt.timedelta(days=broken.days)
        days += [
            promise.promised_date - dt.timedelta(days=reminder.days),
            promise.promised_date,
            promise.promised_date + _DAY,
            follow_day,
            follow_day + dt.timedelta(days=broken.valid_days) + _DAY,
        ]
    plan = latest_plan(loan)
    if plan is not None:
        rule = policy.event(Purpose.INSTALMENT_REMINDER)
        grace = dt.timedelta(days=policy.pauses.instalment_grace_days)
        for instalment in plan.instalments:
            days += [
                instalment.due_date - dt.timedelta(days=rule.days),
                instalment.due_date + _DAY,
                instalment.due_date + grace + _DAY,
            ]
    return [_start_of_day(policy, day) for day in days]


def _may_block_whole_day(policy: Policy, borrower: BorrowerState, day: dt.date) -> bool:
    if borrower.inconvenient_windows:
        return True
    holidays = contact_rules(policy, borrower).holidays
    return any(day + dt.timedelta(days=shift) in holidays for shift in (-1, 0, 1))


def _start_of_day(policy: Policy, day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=policy.day_boundary_zone).astimezone(dt.UTC)


def reply_message(
    policy: Policy,
    borrower: BorrowerState,
    purpose: Purpose,
    now: dt.datetime,
    *,
    about: str,
    channel: Channel | None = None,
    loan_id: str | None = None,
) -> PlannedMessage:
    """A message answering something the borrower or the loan system just did.

    For direct replies (opt-out, opt-in, HELP) `channel` is the channel the borrower wrote on;
    for a cease-contact confirmation it defaults to the policy's channel with fallback. `about`
    names what is answered (the inbound message or the event id), keeping the key unique.
    """
    rule = policy.event(purpose)
    if channel is None:
        if rule.channel is None:
            raise ValueError(f"{purpose} goes back on the borrower's channel: pass `channel`")
        channel, fallback_from = choose_channel(borrower, rule.channel, rule.fallback)
    else:
        fallback_from = None
    return PlannedMessage(
        key=f"{purpose}:{borrower.id}:{about}",
        purpose=purpose,
        borrower_id=borrower.id,
        loan_id=loan_id,
        stage=None,
        channel=channel,
        template=rule.template,
        send_at=now,
        fallback_from=fallback_from,
        refs={"about": about},
    )


class _Planner:
    def __init__(
        self, policy: Policy, borrower: BorrowerState, loan: LoanState, now: dt.datetime
    ) -> None:
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("`now` must be timezone-aware")
        self.policy = policy
        self.borrower = borrower
        self.loan = loan
        self.now = now
        self.today = local_day(policy, now)
        self.zone: ZoneInfo = candidate_zones(policy, borrower)[0]
        # the borrower's calendar day now; dates the loan system gives (promised dates,
        # instalment and visit days) are read in it when choosing the hour to write
        self.local_today = now.astimezone(self.zone).date()
        self.items: list[PlanItem] = []

    def at_local(self, day: dt.date, time: dt.time) -> dt.datetime:
        """`time` on `day` in the borrower's most explicit zone; quiet hours refine it later."""
        return dt.datetime.combine(day, time, tzinfo=self.zone)

    def step_target(self, days_past_due: int, time: dt.time) -> dt.datetime:
        """When a cadence step aims to go: its time, in the borrower's zone, on its day.

        A step's day is counted in the lender's calendar (the day-boundary zone). A step whose
        day has come aims at its time on that same date in the borrower's zone when the
        borrower's calendar shows that date too; otherwise (the borrower is behind the
        lender's zone and still on the day before, or the step was missed) it goes at once,
        quiet hours permitting. A later step aims at its time on its date in the borrower's
        zone, but never before the lender's day for it has begun: the loan is not yet that
        late before then.
        """
        day = day_of(self.policy, self.loan, days_past_due)
        if day <= self.today:
            return self.at_local(day, time) if day == self.local_today else self.now
        return max(self.at_local(day, time), self._start_of(day))

    def add(
        self,
        key: str,
        purpose: Purpose,
        stage: str | None,
        channel: Channel,
        fallback: bool,
        template: str,
        target: dt.datetime,
        refs: dict[str, str],
        *,
        latest: dt.datetime | None = None,
        too_late: Decision | None = None,
    ) -> None:
        """Plan one message. With `latest`, one that cannot go before that instant is still
        planned, withheld at once with `too_late` (by default: expired): the log shows that
        the policy wanted it and why it did not go."""
        target = max(target, self.now)
        timing = next_allowed_instant(self.policy, self.borrower, target)
        send_at = timing.until if timing.kind is DecisionKind.WAIT and timing.until else target
        send_at = send_at.astimezone(dt.UTC)
        if latest is not None and send_at >= latest:
            timing = too_late or Decision.suppress(
                Reason.EXPIRED,
                detail="no allowed hour in time",
                latest=latest.astimezone(dt.UTC).isoformat(),
            )
        chosen, fallback_from = choose_channel(self.borrower, channel, fallback)
        message = PlannedMessage(
            key=key,
            purpose=purpose,
            borrower_id=self.borrower.id,
            loan_id=self.loan.id,
            stage=stage,
            channel=chosen,
            template=template,
            send_at=send_at,
            fallback_from=fallback_from,
            refs=refs,
        )
        self.items.append(PlanItem(message, timing, target))

    def stage_name(self) -> str | None:
        if self.loan.is_current or self.loan.is_closed:
            return None
        return self.policy.stage_for(effective_days_past_due(self.policy, self.loan, self.now))

    # -- stage cadence ----------------------------------------------------------------------

    def dunning(self, view: DunningView) -> None:
        if view.stage is None:
            return
        last_day = view.stage.last_day
        for step in (*view.due, *view.upcoming):
            # a step that quiet hours or holidays push past the day its successor on the same
            # channel (or the next stage) takes over gives way to it, on the record
            successor = view.successor(self.borrower, step)
            latest = None
            too_late = None
            if successor is not None:
                latest = self._start_of(day_of(self.policy, self.loan, successor.days_past_due))
                too_late = Decision.suppress(
                    Reason.SUPERSEDED, detail="a later step is due", by=successor.id
                )
            elif last_day is not None:
                latest = self._start_of(day_of(self.policy, self.loan, last_day + 1))
                too_late = Decision.suppress(
                    Reason.STAGE_CHANGED, detail="no allowed hour before the stage ends"
                )
            self.add(
                key=f"dunning:{self.loan.id}:{view.cycle}:{view.stage.name}:{step.id}",
                purpose=Purpose.DUNNING,
                stage=view.stage.name,
                channel=step.channel,
                fallback=step.fallback,
                template=step.template,
                target=self.step_target(step.days_past_due, step.at),
                refs={
                    "step": step.id,
                    "cycle": view.cycle,
                    "cadence": view.cadence,
                    "days_past_due": str(step.days_past_due),
                },
                latest=latest,
                too_late=too_late,
            )

    # -- event follow-ups -------------------------------------------------------------------

    def promise_follow_ups(self, view: DunningView) -> None:
        promise = latest_promise(self.loan)
        if promise is None or promise.kept:
            return
        stage = None if view.stage is None else view.stage.name
        refs = {"promise_id": promise.id, "promised_date": promise.promised_date.isoformat()}
        reminder = self.policy.event(Purpose.PROMISE_REMINDER)
        reminder_day = promise.promised_date - dt.timedelta(days=reminder.days)
        made_on = local_day(self.policy, promise.created_at)
        # wanted while the promise is open, if its reminder day came after it was made
        if made_on <= reminder_day and self.today <= promise.promised_date:
            self._event(
                reminder,
                f"promise_reminder:{self.loan.id}:{promise.id}",
                stage,
                max(reminder_day, self.local_today),
                refs,
                latest=self._end_of(promise.promised_date),
            )
        broken = self.policy.event(Purpose.BROKEN_PROMISE)
        follow_day = promise.promised_date + dt.timedelta(days=broken.days)
        if self.today <= follow_day + dt.timedelta(days=broken.valid_days):
            self._event(
                broken,
                f"broken_promise:{self.loan.id}:{promise.id}",
                stage,
                max(follow_day, self.local_today),
                refs,
                # not before the promised date has ended for the lender too
                earliest=self._start_of(promise.promised_date + _DAY),
                latest=self._end_of(follow_day + dt.timedelta(days=broken.valid_days)),
            )

    def instalment_reminders(self, view: DunningView) -> None:
        plan = latest_plan(self.loan)
        if plan is None or missed_instalment(self.policy, plan, self.today) is not None:
            return
        rule = self.policy.event(Purpose.INSTALMENT_REMINDER)
        stage = None if view.stage is None else view.stage.name
        reminded: set[dt.date] = set()
        for instalment in sorted(plan.instalments, key=lambda i: i.due_date):
            # one reminder a day, however many instalments fall due on it
            if instalment.paid or instalment.due_date < self.today:
                continue
            if instalment.due_date in reminded:
                continue
            reminded.add(instalment.due_date)
            due = instalment.due_date.isoformat()
            self._event(
                rule,
                f"instalment_reminder:{self.loan.id}:{plan.id}:{due}",
                stage,
                max(instalment.due_date - dt.timedelta(days=rule.days), self.local_today),
                {"plan_id": plan.id, "instalment_due_date": due},
                latest=self._end_of(instalment.due_date),
            )

    def visit_notices(self, view: DunningView) -> None:
        rule = self.policy.event(Purpose.VISIT_NOTICE)
        assert rule.notice is not None and rule.at is not None  # the loader guarantees both
        stage = None if view.stage is None else view.stage.name
        for visit in self.loan.visits:
            if visit.visit_at <= self.now:
                continue
            visit_at = visit.visit_at.astimezone(dt.UTC)
            key = f"visit_notice:{self.loan.id}:{visit.id}:{visit_at:%Y%m%dT%H%M%SZ}"
            refs = {"visit_id": visit.id, "visit_at": visit_at.isoformat()}
            deadline = visit.visit_at - rule.notice
            target = self._notice_target(rule.at, deadline)
            if target is None:
                # too late for full notice: tell them as soon as allowed, and say so
                target = self.now
                refs["short_notice"] = "true"
            self.add(
                key,
                Purpose.VISIT_NOTICE,
                stage,
                rule.channel or Channel.SMS,
                rule.fallback,
                rule.template,
                target,
                refs,
                latest=visit.visit_at,
            )

    def _notice_target(self, at: dt.time, deadline: dt.datetime) -> dt.datetime | None:
        """The latest day's `at` whose allowed send instant still meets the notice deadline."""
        if deadline <= self.now:
            return None
        day = deadline.astimezone(self.zone).date()
        for _ in range(self.policy.search_horizon.days + 1):
            target = max(self.at_local(day, at), self.now)
            if target > deadline:
                day -= _DAY
                continue
            timing = next_allowed_instant(self.policy, self.borrower, target)
            send_at = timing.until if timing.kind is DecisionKind.WAIT else target
            allowed = timing.kind is not DecisionKind.SUPPRESS and send_at is not None
            if allowed and send_at is not None and send_at <= deadline:
                return target
            if target == self.now:
                return None
            day -= _DAY
        return None

    def payment_confirmations(self) -> None:
        rule = self.policy.event(Purpose.PAYMENT_CONFIRMATION)
        assert rule.max_age is not None  # the loader always sets it
        stage = self.stage_name()
        for payment in self.loan.payments:
            if self.now - payment.paid_at > rule.max_age:
                continue
            self.add(
                f"payment_confirmation:{self.loan.id}:{payment.id}",
                Purpose.PAYMENT_CONFIRMATION,
                stage,
                rule.channel or Channel.SMS,
                rule.fallback,
                rule.template,
                max(payment.paid_at, self.now),
                {"payment_id": payment.id},
            )

    def _event(
        self,
        rule: EventRule,
        key: str,
        stage: str | None,
        day: dt.date,
        refs: dict[str, str],
        *,
        earliest: dt.datetime | None = None,
        latest: dt.datetime | None = None,
    ) -> None:
        assert rule.at is not None and rule.channel is not None  # timed events have both
        target = self.at_local(day, rule.at)
        if earliest is not None:
            target = max(target, earliest)
        self.add(
            key,
            rule.purpose,
            stage,
            rule.channel,
            rule.fallback,
            rule.template,
            target,
            dict(refs),
            latest=latest,
        )

    def _start_of(self, day: dt.date) -> dt.datetime:
        """Midnight starting `day` in the lender's calendar."""
        return dt.datetime.combine(day, dt.time(), tzinfo=self.policy.day_boundary_zone)

    def _end_of(self, day: dt.date) -> dt.datetime:
        """When `day` is over in the borrower's calendar or the lender's, whichever is first.

        A reminder for a date is no use once the date has passed for either party, and the
        gate (which counts in the lender's calendar) would then withhold it as expired.
        """
        next_day = day + _DAY
        return min(
            dt.datetime.combine(next_day, dt.time(), tzinfo=self.zone), self._start_of(next_day)
        )
