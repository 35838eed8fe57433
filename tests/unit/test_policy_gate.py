"""The final gate: one test per suppression reason of SPEC §5, then quiet hours and replies."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest

from outreach.domain import (
    BorrowerState,
    Channel,
    ClosedReason,
    Decision,
    DecisionKind,
    FieldVisit,
    InconvenientWindow,
    Instalment,
    LoanState,
    Payment,
    PaymentPlan,
    PlannedMessage,
    Promise,
    Purpose,
    Reason,
    Restriction,
)
from outreach.policy import counts_against_caps, gate, obeys_quiet_hours, plan, reply_message
from tests.unit.policy_fixtures import SHANGHAI as SHANGHAI_ZONE
from tests.unit.policy_fixtures import borrower, default_policy, loan, shanghai

POLICY = default_policy()
NOW = shanghai(2026, 3, 10, 11)  # Tuesday late morning in Shanghai
NIGHT = shanghai(2026, 3, 10, 3)
STOPPED_PHONE = "+8613812345678"


def first_notice(state: LoanState) -> PlannedMessage:
    """Today's dunning message of a loan one day late (SMS, early stage)."""
    message = plan(POLICY, borrower(), state, NOW - dt.timedelta(hours=2))[0]
    assert message.refs["step"] == "d1:early_first_notice"
    return dataclasses.replace(message, send_at=NOW)


def check(
    *,
    reason: Reason,
    person: BorrowerState | None = None,
    state: LoanState | None = None,
    message: PlannedMessage | None = None,
    at: dt.datetime = NOW,
    **options: int,
) -> Decision:
    state = state if state is not None else loan(NOW, 1)
    chosen_borrower = person if person is not None else borrower()
    message = message if message is not None else first_notice(loan(NOW, 1))
    decision = gate(POLICY, chosen_borrower, state, message, at, **options)
    assert decision.kind is DecisionKind.SUPPRESS, decision
    assert decision.reason is reason, decision
    return decision


def with_restriction(restriction: Restriction) -> BorrowerState:
    return borrower(active_restrictions=frozenset({restriction}))


def test_the_baseline_message_is_allowed() -> None:
    assert gate(POLICY, borrower(), loan(NOW, 1), first_notice(loan(NOW, 1)), NOW).may_send


# -- suppression, one reason at a time -------------------------------------------------------


def test_no_consent() -> None:
    decision = check(reason=Reason.NO_CONSENT, person=borrower(consent_sms=False))
    assert decision.detail == {"channel": "sms"}


def test_no_address() -> None:
    check(reason=Reason.NO_ADDRESS, person=borrower(phones=()))


def test_opted_out() -> None:
    check(reason=Reason.OPTED_OUT, person=borrower(opted_out=frozenset({STOPPED_PHONE})))


def test_opted_out_email_whatever_its_case() -> None:
    email_message = dataclasses.replace(first_notice(loan(NOW, 1)), channel=Channel.EMAIL)
    person = borrower(
        email="Wang.Fang@Mail.example", opted_out=frozenset({"wang.fang@mail.example"})
    )
    check(reason=Reason.OPTED_OUT, person=person, message=email_message)


def test_invalid_address() -> None:
    person = borrower(invalid_addresses=frozenset({STOPPED_PHONE}))
    check(reason=Reason.INVALID_ADDRESS, person=person)


def test_cease_contact() -> None:
    check(reason=Reason.CEASE_CONTACT, person=with_restriction(Restriction.CEASE_CONTACT))


def test_cease_contact_allows_exactly_one_confirmation() -> None:
    person = with_restriction(Restriction.CEASE_CONTACT)
    confirmation = reply_message(POLICY, person, Purpose.CEASE_CONFIRMATION, NOW, about="evt_1")
    assert gate(POLICY, person, None, confirmation, NOW).may_send
    check(
        reason=Reason.ALREADY_CONFIRMED,
        person=person,
        message=confirmation,
        cease_confirmations_sent=1,
    )
    # and not a payment confirmation either
    paid = Payment("P1", Decimal("10"), NOW, Decimal("1"))
    state = loan(NOW, 1, payments=(paid,))
    receipt = next(
        m for m in plan(POLICY, borrower(), state, NOW) if m.purpose is Purpose.PAYMENT_CONFIRMATION
    )
    check(reason=Reason.CEASE_CONTACT, person=person, state=state, message=receipt)


def test_bankruptcy() -> None:
    check(reason=Reason.BANKRUPTCY, person=with_restriction(Restriction.BANKRUPTCY))


def test_deceased() -> None:
    check(reason=Reason.DECEASED, person=with_restriction(Restriction.DECEASED))


def test_attorney() -> None:
    check(reason=Reason.ATTORNEY, person=with_restriction(Restriction.ATTORNEY))


def test_dispute_pauses_collection_but_not_a_payment_confirmation() -> None:
    disputing = with_restriction(Restriction.DISPUTE)
    check(reason=Reason.DISPUTE, person=disputing)
    paid = Payment("P1", Decimal("10"), NOW, Decimal("1"))
    state = loan(NOW, 1, payments=(paid,))
    receipt = next(
        m for m in plan(POLICY, borrower(), state, NOW) if m.purpose is Purpose.PAYMENT_CONFIRMATION
    )
    assert gate(POLICY, disputing, state, receipt, NOW).may_send


def test_loan_closed() -> None:
    closed = loan(NOW, 1, closed_reason=ClosedReason.SETTLED)
    decision = check(reason=Reason.LOAN_CLOSED, state=closed)
    assert decision.detail == {"closed": "settled"}


def test_loan_current() -> None:
    check(reason=Reason.LOAN_CURRENT, state=loan(NOW, 1, amount_due=Decimal("0")))


def test_promise_pending() -> None:
    promise = Promise("PR1", Decimal("500"), dt.date(2026, 3, 14), NOW - dt.timedelta(hours=1))
    check(reason=Reason.PROMISE_PENDING, state=loan(NOW, 1, promises=(promise,)))


def test_payment_plan_active() -> None:
    instalments = (Instalment(dt.date(2026, 3, 20), Decimal("400")),)
    plan_made = PaymentPlan("PL1", instalments, NOW - dt.timedelta(hours=1))
    check(reason=Reason.PAYMENT_PLAN_ACTIVE, state=loan(NOW, 1, plans=(plan_made,)))


def test_stage_changed() -> None:
    # the loan system now reports 20 days past due: the early-stage message is stale
    decision = check(reason=Reason.STAGE_CHANGED, state=loan(NOW, 20))
    assert decision.detail == {"stage": "negotiation"}


def test_stage_changed_by_ageing_while_the_message_waited() -> None:
    message = first_notice(loan(NOW, 1))
    fifteen_days_later = NOW + dt.timedelta(days=15)
    check(reason=Reason.STAGE_CHANGED, message=message, at=fifteen_days_later)


def test_a_later_step_supersedes_a_waiting_one() -> None:
    message = first_notice(loan(NOW, 1))
    decision = check(reason=Reason.SUPERSEDED, message=message, at=NOW + dt.timedelta(days=4))
    assert decision.detail == {"detail": "a later step is due", "by": "d5:early_follow_up_1"}


def test_promise_kept() -> None:
    promise = Promise("PR1", Decimal("500"), dt.date(2026, 3, 8), shanghai(2026, 3, 6, 12))
    open_loan = loan(NOW, 5, promises=(promise,))
    follow_up = next(
        m
        for m in plan(POLICY, borrower(), open_loan, shanghai(2026, 3, 7, 9))
        if m.purpose is Purpose.BROKEN_PROMISE
    )
    kept = loan(NOW, 5, promises=(dataclasses.replace(promise, kept=True),))
    check(reason=Reason.PROMISE_KEPT, state=kept, message=follow_up)
    # not kept: it goes
    assert gate(POLICY, borrower(), open_loan, follow_up, follow_up.send_at).may_send


def test_broken_promise_follow_up_waits_until_the_promised_date_has_passed() -> None:
    promise = Promise("PR1", Decimal("500"), dt.date(2026, 3, 10), shanghai(2026, 3, 6, 12))
    state = loan(NOW, 5, promises=(promise,))
    follow_up = next(
        m
        for m in plan(POLICY, borrower(), state, shanghai(2026, 3, 7, 9))
        if m.purpose is Purpose.BROKEN_PROMISE
    )
    early = gate(POLICY, borrower(), state, dataclasses.replace(follow_up, send_at=NOW), NOW)
    assert early.kind is DecisionKind.WAIT and early.reason is Reason.PROMISE_PENDING
    assert early.until == shanghai(2026, 3, 11, 0)


def test_instalment_paid_and_plan_broken() -> None:
    instalments = (
        Instalment(dt.date(2026, 3, 20), Decimal("400")),
        Instalment(dt.date(2026, 4, 20), Decimal("400")),
    )
    plan_made = PaymentPlan("PL1", instalments, NOW - dt.timedelta(days=1))
    active = loan(NOW, 20, plans=(plan_made,))
    reminder = next(
        m for m in plan(POLICY, borrower(), active, NOW) if m.purpose is Purpose.INSTALMENT_REMINDER
    )
    paid = dataclasses.replace(
        plan_made, instalments=(dataclasses.replace(instalments[0], paid=True), instalments[1])
    )
    check(reason=Reason.INSTALMENT_PAID, state=loan(NOW, 20, plans=(paid,)), message=reminder)
    second = [
        m for m in plan(POLICY, borrower(), active, NOW) if m.purpose is Purpose.INSTALMENT_REMINDER
    ][1]
    after_missing_the_first = shanghai(2026, 4, 17, 10)
    check(reason=Reason.PLAN_BROKEN, state=active, message=second, at=after_missing_the_first)


def test_visit_cancelled_rescheduled_and_expired() -> None:
    visit = FieldVisit("V1", shanghai(2026, 3, 16, 9, 30), "李明", "C-0042")
    state = loan(NOW, 50, visits=(visit,))
    notice = next(
        m for m in plan(POLICY, borrower(), state, NOW) if m.purpose is Purpose.VISIT_NOTICE
    )
    assert gate(POLICY, borrower(), state, notice, notice.send_at).may_send
    check(reason=Reason.VISIT_CANCELLED, state=loan(NOW, 50), message=notice, at=notice.send_at)
    moved = dataclasses.replace(visit, visit_at=shanghai(2026, 3, 18, 9, 30))
    check(
        reason=Reason.SUPERSEDED,
        state=loan(NOW, 50, visits=(moved,)),
        message=notice,
        at=notice.send_at,
    )
    check(reason=Reason.EXPIRED, state=state, message=notice, at=shanghai(2026, 3, 16, 10))


def test_no_convenient_time() -> None:
    always = InconvenientWindow(dt.time(0), dt.time(0))
    check(reason=Reason.NO_CONVENIENT_TIME, person=borrower(inconvenient_windows=(always,)))


def test_restrictions_outrank_the_loan_and_the_channel() -> None:
    person = borrower(
        active_restrictions=frozenset({Restriction.BANKRUPTCY, Restriction.DISPUTE}),
        consent_sms=False,
    )
    check(reason=Reason.BANKRUPTCY, person=person, state=loan(NOW, 1, amount_due=Decimal("0")))


def test_dunning_message_without_loan_state_fails_closed() -> None:
    decision = gate(POLICY, borrower(), None, first_notice(loan(NOW, 1)), NOW)
    assert decision.kind is DecisionKind.SUPPRESS


# -- waiting for the hour --------------------------------------------------------------------


def test_quiet_hours_wait() -> None:
    message = dataclasses.replace(first_notice(loan(NOW, 1)), send_at=NIGHT)
    decision = gate(POLICY, borrower(), loan(NIGHT, 1), message, NIGHT)
    assert decision.kind is DecisionKind.WAIT
    assert decision.reason is Reason.QUIET_HOURS
    assert decision.until == shanghai(2026, 3, 10, 8)
    assert "until=2026-03-10T00:00:00+00:00" in decision.detail_text()


def test_holiday_wait() -> None:
    # planned the evening before for the next morning; the next day is National Day
    eve = shanghai(2026, 9, 30, 20)
    national_day = shanghai(2026, 10, 1, 11)
    state = loan(eve, 4)
    planned = plan(POLICY, borrower(), state, eve)
    message = next(m for m in planned if m.refs["step"] == "d5:early_follow_up_1")
    # the plan moved it past the holidays already; at the gate it would wait for them too
    assert message.send_at == shanghai(2026, 10, 4, 8)
    decision = gate(
        POLICY, borrower(), state, dataclasses.replace(message, send_at=eve), national_day
    )
    assert (decision.kind, decision.reason) == (DecisionKind.WAIT, Reason.HOLIDAY)
    assert decision.until == shanghai(2026, 10, 4, 8)


def test_inconvenient_time_wait() -> None:
    lunch = InconvenientWindow(dt.time(10, 30), dt.time(12))
    decision = gate(
        POLICY,
        borrower(inconvenient_windows=(lunch,)),
        loan(NOW, 1),
        first_notice(loan(NOW, 1)),
        NOW,
    )
    assert (decision.kind, decision.reason) == (DecisionKind.WAIT, Reason.INCONVENIENT_TIME)
    assert decision.until == shanghai(2026, 3, 10, 12)


def test_payment_confirmation_obeys_quiet_hours() -> None:
    paid = Payment("P1", Decimal("10"), NIGHT, Decimal("1"))
    state = loan(NIGHT, 1, payments=(paid,))
    receipt = next(
        m
        for m in plan(POLICY, borrower(), state, NIGHT)
        if m.purpose is Purpose.PAYMENT_CONFIRMATION
    )
    decision = gate(POLICY, borrower(), state, dataclasses.replace(receipt, send_at=NIGHT), NIGHT)
    assert decision.reason is Reason.QUIET_HOURS


def test_not_before_its_send_time() -> None:
    message = first_notice(loan(NOW, 1))
    decision = gate(
        POLICY, borrower(), loan(NOW, 1), message, message.send_at - dt.timedelta(minutes=5)
    )
    assert (decision.kind, decision.until) == (DecisionKind.WAIT, message.send_at)


# -- direct replies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "purpose", [Purpose.OPTOUT_CONFIRMATION, Purpose.OPTIN_CONFIRMATION, Purpose.HELP_REPLY]
)
def test_direct_replies_go_at_once_at_three_in_the_morning(purpose: Purpose) -> None:
    message = reply_message(POLICY, borrower(), purpose, NIGHT, about="SM1", channel=Channel.SMS)
    assert gate(POLICY, borrower(), None, message, NIGHT).may_send


def test_opt_out_confirmation_goes_once_although_opted_out() -> None:
    person = borrower(opted_out=frozenset({STOPPED_PHONE}), consent_sms=False)
    message = reply_message(
        POLICY, person, Purpose.OPTOUT_CONFIRMATION, NIGHT, about="SM1", channel=Channel.SMS
    )
    assert gate(POLICY, person, None, message, NIGHT).may_send
    again = gate(POLICY, person, None, message, NIGHT, optout_confirmations_sent=1)
    assert (again.kind, again.reason) == (DecisionKind.SUPPRESS, Reason.ALREADY_CONFIRMED)
    help_reply = reply_message(
        POLICY, person, Purpose.HELP_REPLY, NIGHT, about="SM2", channel=Channel.SMS
    )
    assert gate(POLICY, person, None, help_reply, NIGHT).may_send


def test_direct_reply_needs_a_live_address() -> None:
    person = borrower(invalid_addresses=frozenset({STOPPED_PHONE}))
    message = reply_message(
        POLICY, person, Purpose.HELP_REPLY, NIGHT, about="SM1", channel=Channel.SMS
    )
    assert gate(POLICY, person, None, message, NIGHT).reason is Reason.INVALID_ADDRESS


def test_which_purposes_count_against_caps_and_obey_quiet_hours() -> None:
    exempt = {p for p in Purpose if not counts_against_caps(p)}
    assert exempt == {
        Purpose.OPTOUT_CONFIRMATION,
        Purpose.OPTIN_CONFIRMATION,
        Purpose.HELP_REPLY,
        Purpose.PAYMENT_CONFIRMATION,
    }
    any_hour = {p for p in Purpose if not obeys_quiet_hours(p)}
    assert any_hour == {Purpose.OPTOUT_CONFIRMATION, Purpose.OPTIN_CONFIRMATION, Purpose.HELP_REPLY}


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        gate(
            POLICY,
            borrower(),
            loan(NOW, 1),
            first_notice(loan(NOW, 1)),
            dt.datetime(2026, 3, 10, 3),
        )


def fortnightly_plan(made: dt.datetime, count: int = 4) -> PaymentPlan:
    first = made.astimezone(SHANGHAI_ZONE).date() + dt.timedelta(days=14)
    instalments = tuple(
        Instalment(first + dt.timedelta(days=14 * n), Decimal("300")) for n in range(count)
    )
    return PaymentPlan("PL1", instalments, made)


def test_a_future_instalment_reminder_is_not_judged_on_payments_still_to_come() -> None:
    """Planned at 22 days past due, each reminder's send time comes after the earlier
    instalments' due dates, which nobody has paid yet: that is no miss to judge it by."""
    made = shanghai(2026, 3, 10, 11)
    state = loan(made, 22, plans=(fortnightly_plan(made),))
    reminders = [
        m for m in plan(POLICY, borrower(), state, made) if m.purpose is Purpose.INSTALMENT_REMINDER
    ]
    assert len(reminders) == 4
    for reminder in reminders:
        forecast = gate(POLICY, borrower(), state, reminder, reminder.send_at, known_at=made)
        assert forecast.kind is not DecisionKind.SUPPRESS, (reminder.key, forecast)


def test_a_kept_plan_lets_every_reminder_go_and_a_missed_one_stops_the_rest() -> None:
    made = shanghai(2026, 3, 10, 11)
    payment_plan = fortnightly_plan(made)
    state = loan(made, 22, plans=(payment_plan,))
    reminders = [
        m for m in plan(POLICY, borrower(), state, made) if m.purpose is Purpose.INSTALMENT_REMINDER
    ]
    for index, reminder in enumerate(reminders):
        # at its send time the borrower has paid every instalment before this one
        paid = tuple(
            dataclasses.replace(instalment, paid=n < index)
            for n, instalment in enumerate(payment_plan.instalments)
        )
        kept = loan(made, 22, plans=(dataclasses.replace(payment_plan, instalments=paid),))
        assert gate(POLICY, borrower(), kept, reminder, reminder.send_at).may_send, reminder.key
    # the second instalment unpaid the day after its due date: the later reminders stop
    the_day_after = dt.datetime.combine(
        payment_plan.instalments[1].due_date + dt.timedelta(days=1), dt.time(9), SHANGHAI_ZONE
    )
    first_paid = tuple(
        dataclasses.replace(instalment, paid=n == 0)
        for n, instalment in enumerate(payment_plan.instalments)
    )
    missed = loan(made, 22, plans=(dataclasses.replace(payment_plan, instalments=first_paid),))
    for reminder in reminders[2:]:
        decision = check(
            reason=Reason.PLAN_BROKEN, state=missed, message=reminder, at=the_day_after
        )
        assert decision.detail == {"missed": payment_plan.instalments[1].due_date.isoformat()}
