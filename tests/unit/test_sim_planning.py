"""What lets the simulator (and any clock) skip work that would change nothing:
`ages_alike` (a loan report that only restates its age) and `next_plan_change` (until when
a plan stays as it is).

`next_plan_change` is checked against `plan` itself: at every day boundary before the instant
it names, the plan wants exactly the messages it wanted at the start.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outreach.domain import (
    BorrowerState,
    FieldVisit,
    InconvenientWindow,
    Instalment,
    LoanState,
    Payment,
    PaymentPlan,
    Promise,
    Purpose,
)
from outreach.policy import ages_alike, cadence, next_plan_change, plan
from outreach.policy.dunning import dunning_view, local_day, start_of_day
from tests.unit.policy_fixtures import (
    SHANGHAI,
    borrower,
    default_policy,
    loan,
    shanghai,
    us_borrower,
)

NOW = shanghai(2026, 3, 10, 11)


def keys(borrower_state: BorrowerState, loan_state: LoanState, at: dt.datetime) -> set[str]:
    return {message.key for message in plan(default_policy(), borrower_state, loan_state, at)}


# -- ages_alike -------------------------------------------------------------------------------


def test_a_report_that_only_restates_the_age_is_alike() -> None:
    policy = default_policy()
    before = loan(NOW, days_past_due=5)
    tomorrow = NOW + dt.timedelta(days=1, hours=3)
    assert ages_alike(policy, before, dataclasses.replace(before, days_past_due=6, as_of=tomorrow))
    # the balance and the account number are only shown, not planned from
    moved = dataclasses.replace(
        before, days_past_due=6, as_of=tomorrow, balance=Decimal("1.00"), account_number="9"
    )
    assert ages_alike(policy, before, moved)


@pytest.mark.parametrize(
    "change",
    [
        {"days_past_due": 9},  # the loan system says it is later than aging implies
        {"days_past_due": 5},  # … or earlier
        {"days_past_due": 6, "amount_due": Decimal("10.00")},
        {"days_past_due": 6, "due_date": dt.date(2026, 3, 1)},  # a new delinquency cycle
        {"days_past_due": 6, "borrower_id": "B9"},
        {"days_past_due": 6, "amount_due": Decimal("0")},  # paid: current now
    ],
)
def test_a_report_that_changes_what_plans_depend_on_is_not(change: dict[str, object]) -> None:
    before = loan(NOW, days_past_due=5)
    after = dataclasses.replace(before, as_of=NOW + dt.timedelta(days=1), **change)
    assert not ages_alike(default_policy(), before, after)


def test_a_current_loan_does_not_age() -> None:
    paid = loan(NOW, days_past_due=0, amount_due=Decimal("0"))
    later = dataclasses.replace(paid, as_of=NOW + dt.timedelta(days=3))
    assert ages_alike(default_policy(), paid, later)


# -- next_plan_change -------------------------------------------------------------------------


def assert_stable_until_the_change(
    borrower_state: BorrowerState, loan_state: LoanState, now: dt.datetime
) -> dt.datetime | None:
    policy = default_policy()
    change = next_plan_change(policy, borrower_state, loan_state, now)
    wanted = keys(borrower_state, loan_state, now)
    limit = now + dt.timedelta(days=40)
    day = now.astimezone(SHANGHAI).date() + dt.timedelta(days=1)
    while True:
        boundary = start_of_day(policy, day)
        if boundary >= (change or limit):
            break
        assert keys(borrower_state, loan_state, boundary) == wanted, boundary
        day += dt.timedelta(days=1)
    assert change is None or change > now
    return change


def test_a_loan_in_early_changes_on_its_next_step_day() -> None:
    state = loan(NOW, days_past_due=2)
    change = assert_stable_until_the_change(borrower(), state, NOW)
    # steps on days 1, 2, 5, 9, 12: the day-5 step is the next change
    assert change == start_of_day(default_policy(), dt.date(2026, 3, 13))
    assert keys(borrower(), state, change) != keys(borrower(), state, NOW)


def test_the_stage_boundary_is_a_change() -> None:
    state = loan(NOW, days_past_due=13)
    change = assert_stable_until_the_change(borrower(), state, NOW)
    assert change == start_of_day(default_policy(), dt.date(2026, 3, 13))  # day 16


def test_a_closed_or_paid_loan_never_changes_but_for_its_payment_confirmation() -> None:
    paid_at = NOW - dt.timedelta(hours=2)
    payment = Payment("P1", Decimal("1286.40"), paid_at, Decimal("0"))
    paid = loan(NOW, days_past_due=3, amount_due=Decimal("0"), payments=(payment,))
    change = assert_stable_until_the_change(borrower(), paid, NOW)
    assert change is not None and change - paid_at > dt.timedelta(hours=72)
    assert next_plan_change(default_policy(), borrower(), paid, change) is None


def test_promises_plans_and_visits_bring_their_days() -> None:
    promise = Promise("PTP", Decimal("500"), dt.date(2026, 3, 14), NOW - dt.timedelta(days=1))
    promised = loan(NOW, days_past_due=20, promises=(promise,))
    assert_stable_until_the_change(borrower(), promised, NOW)
    plan_state = PaymentPlan(
        "PL",
        (
            Instalment(dt.date(2026, 3, 12), Decimal("100")),
            Instalment(dt.date(2026, 3, 26), Decimal("100")),
        ),
        NOW - dt.timedelta(days=2),
    )
    planned = loan(NOW, days_past_due=30, plans=(plan_state,))
    assert_stable_until_the_change(borrower(), planned, NOW)
    visit = FieldVisit("V", NOW + dt.timedelta(days=4, hours=3), "Officer Lin", "C1")
    visited = loan(NOW, days_past_due=50, visits=(visit,))
    change = assert_stable_until_the_change(borrower(), visited, NOW)
    assert change is not None and change <= visit.visit_at


def test_inconvenient_times_and_holidays_are_checked_day_by_day() -> None:
    windowed = borrower(inconvenient_windows=(InconvenientWindow(dt.time(12), dt.time(14)),))
    state = loan(NOW, days_past_due=60)
    change = next_plan_change(default_policy(), windowed, state, NOW)
    assert change == start_of_day(default_policy(), dt.date(2026, 3, 11))
    before_new_year = shanghai(2026, 12, 30, 11)
    change = next_plan_change(
        default_policy(), borrower(), loan(before_new_year, days_past_due=60), before_new_year
    )
    assert change == start_of_day(default_policy(), dt.date(2026, 12, 31))


@settings(max_examples=60, deadline=None)
@given(
    days_past_due=st.integers(min_value=-4, max_value=120),
    hour=st.integers(min_value=0, max_value=23),
    day=st.integers(min_value=0, max_value=300),
    us=st.booleans(),
    hardship=st.booleans(),
    promise_in=st.one_of(st.none(), st.integers(min_value=1, max_value=10)),
    promise_kept=st.booleans(),
)
def test_the_plan_stands_until_the_change_it_names(
    days_past_due: int,
    hour: int,
    day: int,
    us: bool,
    hardship: bool,
    promise_in: int | None,
    promise_kept: bool,
) -> None:
    now = shanghai(2026, 1, 5, hour) + dt.timedelta(days=day)
    who = us_borrower(id="B1") if us else borrower()
    if hardship:
        who = dataclasses.replace(who, tags=frozenset({"hardship"}))
    promises: tuple[Promise, ...] = ()
    if promise_in is not None:
        promised = now.astimezone(SHANGHAI).date() + dt.timedelta(days=promise_in)
        promises = (Promise("P", Decimal("100"), promised, now, kept=promise_kept),)
    state = loan(now, days_past_due=days_past_due, promises=promises)
    assert_stable_until_the_change(who, state, now)


def next_change_day_by_day(
    borrower_state: BorrowerState, loan_state: LoanState, now: dt.datetime
) -> dt.datetime | None:
    """`next_plan_change` as first written: every day of the lookahead looked at in turn."""
    policy = default_policy()
    candidates: list[dt.datetime] = []
    rule = policy.event(Purpose.PAYMENT_CONFIRMATION)
    for payment in loan_state.payments:
        if rule.max_age is not None and payment.paid_at + rule.max_age >= now:
            candidates.append(payment.paid_at + rule.max_age + dt.timedelta(seconds=1))
    today = local_day(policy, now)
    if not loan_state.is_closed and not loan_state.is_current:
        candidates.extend(cadence._follow_up_changes(policy, loan_state))
        candidates.extend(v.visit_at for v in loan_state.visits if v.visit_at > now)
        signature = cadence._cadence_signature(
            dunning_view(policy, borrower_state, loan_state, now)
        )
        day = today
        for _ in range(cadence.PLAN_LOOKAHEAD_DAYS):
            day += dt.timedelta(days=1)
            start = cadence._start_of_day(policy, day)
            if cadence._may_block_whole_day(policy, borrower_state, day):
                candidates.append(start)
                break
            view = dunning_view(policy, borrower_state, loan_state, start)
            if cadence._cadence_signature(view) != signature:
                candidates.append(start)
                break
        else:
            candidates.append(cadence._start_of_day(policy, day))
    later = [moment for moment in candidates if moment > now]
    return min(later) if later else None


@settings(max_examples=300, deadline=None)
@given(
    days_past_due=st.integers(min_value=-4, max_value=130),
    hour=st.integers(min_value=0, max_value=23),
    day=st.integers(min_value=0, max_value=364),
    us=st.booleans(),
    hardship=st.booleans(),
    windowed=st.booleans(),
    promise_in=st.one_of(st.none(), st.integers(min_value=-12, max_value=12)),
    promise_kept=st.booleans(),
    plan_dues=st.lists(st.integers(min_value=-20, max_value=40), max_size=4),
    plan_paid=st.integers(min_value=0, max_value=4),
    second_plan_in=st.one_of(st.none(), st.integers(min_value=-10, max_value=3)),
)
def test_looking_only_at_days_that_may_change_finds_what_every_day_finds(
    days_past_due: int,
    hour: int,
    day: int,
    us: bool,
    hardship: bool,
    windowed: bool,
    promise_in: int | None,
    promise_kept: bool,
    plan_dues: list[int],
    plan_paid: int,
    second_plan_in: int | None,
) -> None:
    now = shanghai(2026, 1, 5, hour) + dt.timedelta(days=day)
    today = now.astimezone(SHANGHAI).date()
    who = us_borrower(id="B1") if us else borrower()
    if hardship:
        who = dataclasses.replace(who, tags=frozenset({"hardship"}))
    if windowed:
        who = dataclasses.replace(
            who, inconvenient_windows=(InconvenientWindow(dt.time(12), dt.time(14)),)
        )
    promises: tuple[Promise, ...] = ()
    if promise_in is not None:
        promised = today + dt.timedelta(days=promise_in)
        made = now - dt.timedelta(days=max(0, -promise_in) + 1)
        promises = (Promise("P", Decimal("100"), promised, made, kept=promise_kept),)
    plans: tuple[PaymentPlan, ...] = ()
    if plan_dues:
        instalments = tuple(
            Instalment(today + dt.timedelta(days=due), Decimal("50"), paid=index < plan_paid)
            for index, due in enumerate(sorted(plan_dues))
        )
        plans = (PaymentPlan("PL1", instalments, now - dt.timedelta(days=25)),)
        if second_plan_in is not None:
            again = now + dt.timedelta(days=second_plan_in)
            plans += (PaymentPlan("PL2", instalments[:1], again),)
    state = loan(now, days_past_due=days_past_due, promises=promises, plans=plans)

    expected = next_change_day_by_day(who, state, now)
    assert next_plan_change(default_policy(), who, state, now) == expected


@settings(max_examples=80, deadline=None)
@given(
    days_past_due=st.integers(min_value=-4, max_value=120),
    hour=st.integers(min_value=0, max_value=23),
    day=st.integers(min_value=0, max_value=300),
    us=st.booleans(),
    promise_in=st.one_of(st.none(), st.integers(min_value=1, max_value=10)),
)
def test_knowing_what_is_planned_skips_only_days_that_would_neither_create_nor_withdraw(
    days_past_due: int, hour: int, day: int, us: bool, promise_in: int | None
) -> None:
    policy = default_policy()
    now = shanghai(2026, 1, 5, hour) + dt.timedelta(days=day)
    who = us_borrower(id="B1") if us else borrower()
    promises: tuple[Promise, ...] = ()
    if promise_in is not None:
        promised = now.astimezone(SHANGHAI).date() + dt.timedelta(days=promise_in)
        promises = (Promise("P", Decimal("100"), promised, now),)
    state = loan(now, days_past_due=days_past_due, promises=promises)
    # what the loan's first planning left: every message it wanted, all still waiting
    wanted_now = plan(policy, who, state, now)
    planned = {message.key for message in wanted_now}
    pending = {message.key: message.send_at for message in wanted_now}

    informed = next_plan_change(policy, who, state, now, planned=planned, pending=pending)
    blind = next_plan_change(policy, who, state, now)
    assert blind is not None and informed is not None
    assert informed >= blind
    day_ = now.astimezone(SHANGHAI).date() + dt.timedelta(days=1)
    while (boundary := start_of_day(policy, day_)) < informed:
        wanted = keys(who, state, boundary)
        assert wanted <= planned, boundary  # nothing to create
        still_waiting = {key for key, at in pending.items() if at >= boundary}
        assert still_waiting <= wanted, boundary  # nothing to withdraw
        day_ += dt.timedelta(days=1)


def test_a_step_planned_ahead_is_no_change_when_its_day_comes() -> None:
    policy = default_policy()
    state = loan(NOW, days_past_due=2)
    wanted = plan(policy, borrower(), state, NOW)
    planned = {message.key for message in wanted}
    pending = {message.key: message.send_at for message in wanted}
    # the early stage's steps (days 5, 9, 12) are planned ahead; the next message to create
    # is the first of the stage after it, on day 16
    assert next_plan_change(policy, borrower(), state, NOW) == start_of_day(
        policy, dt.date(2026, 3, 13)
    )
    informed = next_plan_change(policy, borrower(), state, NOW, planned=planned, pending=pending)
    assert informed == start_of_day(policy, dt.date(2026, 3, 24))
    assert not keys(borrower(), state, informed) <= planned
