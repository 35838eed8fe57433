"""Planning: the desired messages of a loan at an instant, under the default policy."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from outreach.domain import (
    Address,
    Channel,
    ClosedReason,
    DecisionKind,
    FieldVisit,
    Instalment,
    LoanState,
    Payment,
    PaymentPlan,
    PlannedMessage,
    Promise,
    Purpose,
    Reason,
)
from outreach.policy import (
    contact_rules,
    days_past_due_at,
    effective_days_past_due,
    gate,
    next_allowed_instant,
    plan,
    plan_items,
    reply_message,
)
from outreach.policy.dunning import local_day
from tests.unit.policy_fixtures import (
    SHANGHAI,
    borrower,
    default_document,
    default_policy,
    loan,
    policy_from,
    shanghai,
)

POLICY = default_policy()
NOW = shanghai(2026, 3, 10, 9)  # a Tuesday morning in Shanghai


def keys(messages: list[PlannedMessage]) -> list[str]:
    return [message.key for message in messages]


def by_purpose(messages: list[PlannedMessage], purpose: Purpose) -> list[PlannedMessage]:
    return [message for message in messages if message.purpose is purpose]


def test_first_day_overdue_plans_first_notice_today_and_the_rest_of_the_stage() -> None:
    messages = plan(POLICY, borrower(), loan(NOW, 1), NOW)
    cycle = "2026-03-09"
    assert keys(messages) == [
        f"dunning:L1:{cycle}:early:d1:early_first_notice",
        f"dunning:L1:{cycle}:early:d2:early_first_notice",
        f"dunning:L1:{cycle}:early:d5:early_follow_up_1",
        f"dunning:L1:{cycle}:early:d9:early_follow_up_1",
        f"dunning:L1:{cycle}:early:d12:early_follow_up_2",
    ]
    first = messages[0]
    assert first.purpose is Purpose.DUNNING and first.stage == "early"
    assert first.channel is Channel.SMS and first.template == "early_first_notice"
    assert first.send_at == shanghai(2026, 3, 10, 10)
    assert first.send_at.tzinfo is dt.UTC
    assert messages[1].channel is Channel.EMAIL
    assert messages[1].send_at == shanghai(2026, 3, 11, 10)
    assert messages[4].send_at == shanghai(2026, 3, 21, 11)
    assert first.refs == {
        "step": "d1:early_first_notice",
        "cycle": cycle,
        "cadence": "default",
        "days_past_due": "1",
    }


def test_planning_again_plans_the_same_keys() -> None:
    state = loan(NOW, 1)
    assert plan(POLICY, borrower(), state, NOW) == plan(POLICY, borrower(), state, NOW)
    later = NOW + dt.timedelta(hours=5)
    assert keys(plan(POLICY, borrower(), state, later)) == keys(
        plan(POLICY, borrower(), state, NOW)
    )


def test_the_loan_ages_from_when_it_was_reported() -> None:
    state = loan(NOW, 1)
    two_days_later = NOW + dt.timedelta(days=2)
    assert days_past_due_at(POLICY, state, two_days_later) == 3
    # after midnight in the day-boundary zone, not after 24 hours
    assert days_past_due_at(POLICY, state, shanghai(2026, 3, 11, 0, 1)) == 2
    messages = plan(POLICY, borrower(), state, two_days_later)
    # day 2's email is now the most recent step; day 1's is no longer wanted
    assert [m.refs["step"] for m in messages] == [
        "d2:early_first_notice",
        "d5:early_follow_up_1",
        "d9:early_follow_up_1",
        "d12:early_follow_up_2",
    ]
    assert messages[0].send_at == two_days_later


def test_a_jump_in_days_past_due_sends_only_the_latest_missed_step() -> None:
    messages = plan(POLICY, borrower(), loan(NOW, 8), NOW)
    assert [m.refs["step"] for m in messages] == [
        "d5:early_follow_up_1",
        "d9:early_follow_up_1",
        "d12:early_follow_up_2",
    ]
    assert messages[0].send_at == NOW  # at once, as 09:00 is inside the window


def test_a_missed_step_found_at_night_waits_for_morning_and_says_why() -> None:
    night = shanghai(2026, 3, 10, 3)
    items = plan_items(POLICY, borrower(), loan(night, 8), night)
    first = items[0]
    assert first.target == night
    assert first.timing.kind is DecisionKind.WAIT
    assert first.timing.reason is Reason.QUIET_HOURS
    assert first.timing.until == first.message.send_at == shanghai(2026, 3, 10, 8)
    assert first.deferred
    assert not items[1].deferred


def test_stage_change_moves_to_the_next_stage_cadence() -> None:
    state = loan(NOW, 13)
    later = NOW + dt.timedelta(days=3)  # day 16: negotiation
    messages = plan(POLICY, borrower(), state, later)
    assert {m.stage for m in messages} == {"negotiation"}
    assert messages[0].key == "dunning:L1:2026-02-25:negotiation:d16:negotiation_invitation"
    assert [m.refs["step"] for m in messages][:2] == [
        "d16:negotiation_invitation",
        "d17:negotiation_invitation",
    ]


def test_pre_due_reminder_and_nothing_before_the_first_stage() -> None:
    assert plan(POLICY, borrower(), loan(NOW, -5), NOW) == []
    messages = plan(POLICY, borrower(), loan(NOW, -3), NOW)
    assert [(m.template, m.channel) for m in messages] == [
        ("pre_due_reminder", Channel.EMAIL),
        ("pre_due_reminder", Channel.SMS),
    ]
    assert messages[1].send_at == shanghai(2026, 3, 12, 10)


def test_last_stage_has_no_end_and_repeats_nothing() -> None:
    messages = plan(POLICY, borrower(), loan(NOW, 200), NOW)
    assert [m.refs["step"] for m in messages] == ["d91:pre_legal_notice"]


def test_hardship_borrowers_follow_the_gentler_cadence() -> None:
    hardship = borrower(tags=frozenset({"hardship"}))
    messages = plan(POLICY, hardship, loan(NOW, 1), NOW)
    assert [(m.refs["step"], m.channel) for m in messages] == [
        ("d2:early_hardship", Channel.EMAIL),
        ("d9:early_hardship", Channel.SMS),
    ]
    assert {m.refs["cadence"] for m in messages} == {"hardship"}
    assert all(m.template.endswith("_hardship") for m in messages)
    # switching cadence yields new keys, so the pipeline cancels the other cadence's messages
    assert not set(keys(messages)) & set(keys(plan(POLICY, borrower(), loan(NOW, 1), NOW)))


def test_channel_falls_back_when_the_borrower_cannot_receive_it() -> None:
    state = loan(NOW, 1)
    for person in (
        borrower(consent_sms=False),
        borrower(phones=()),
        borrower(opted_out=frozenset({"+8613812345678"})),
        borrower(invalid_addresses=frozenset({"+8613812345678"})),
    ):
        first = plan(POLICY, person, state, NOW)[0]
        assert (first.channel, first.fallback_from) == (Channel.EMAIL, Channel.SMS)
    email_opt_out = borrower(opted_out=frozenset({"wang.fang@mail.example"}))
    second = plan(POLICY, email_opt_out, state, NOW)[1]
    assert (second.channel, second.fallback_from) == (Channel.SMS, Channel.EMAIL)


def test_no_fallback_when_the_other_channel_is_closed_too() -> None:
    person = borrower(consent_sms=False, consent_email=False)
    first = plan(POLICY, person, loan(NOW, 1), NOW)[0]
    assert (first.channel, first.fallback_from) == (Channel.SMS, None)
    # the gate then records precisely why it does not go
    decision = gate(POLICY, person, loan(NOW, 1), first, first.send_at)
    assert decision.reason is Reason.NO_CONSENT


def test_fallback_can_be_turned_off_per_step() -> None:
    document = default_document()
    document["stages"]["early"]["steps"][0]["fallback"] = False
    strict = policy_from(document)
    first = plan(strict, borrower(consent_sms=False), loan(NOW, 1), NOW)[0]
    assert (first.channel, first.fallback_from) == (Channel.SMS, None)
    assert Channel.EMAIL in strict.templates_referenced()["early_first_notice"]  # day 2 email


def test_a_current_or_closed_loan_has_no_collection_messages() -> None:
    paid = Payment("P1", Decimal("1286.40"), NOW - dt.timedelta(hours=1), Decimal("0"))
    current = loan(NOW, 5, amount_due=Decimal("0"), payments=(paid,))
    messages = plan(POLICY, borrower(), current, NOW)
    assert keys(messages) == ["payment_confirmation:L1:P1"]
    assert messages[0].refs == {"payment_id": "P1"}
    assert messages[0].stage is None
    closed = loan(NOW, 5, closed_reason=ClosedReason.PAID_OFF, payments=(paid,))
    assert keys(plan(POLICY, borrower(), closed, NOW)) == ["payment_confirmation:L1:P1"]


def test_payment_confirmation_only_for_recent_payments_and_not_at_night() -> None:
    old = Payment("P0", Decimal("10"), NOW - dt.timedelta(days=5), Decimal("100"))
    late_night = shanghai(2026, 3, 10, 23, 30)
    recent = Payment("P1", Decimal("10"), late_night, Decimal("100"))
    state = loan(late_night, 5, payments=(old, recent))
    items = plan_items(POLICY, borrower(), state, late_night)
    confirmations = [i for i in items if i.message.purpose is Purpose.PAYMENT_CONFIRMATION]
    assert [i.message.key for i in confirmations] == ["payment_confirmation:L1:P1"]
    assert confirmations[0].message.send_at == shanghai(2026, 3, 11, 8)
    assert confirmations[0].timing.reason is Reason.QUIET_HOURS


def test_an_open_promise_pauses_dunning_and_plans_its_reminder_and_follow_up() -> None:
    promise = Promise("PR1", Decimal("500"), dt.date(2026, 3, 14), NOW - dt.timedelta(hours=1))
    state = loan(NOW, 3, promises=(promise,))
    messages = plan(POLICY, borrower(), state, NOW)
    dunning = by_purpose(messages, Purpose.DUNNING)
    # days 5 (Mar 12) paused; day 9 (Mar 16) falls after the follow-up day and stays planned
    assert [m.refs["step"] for m in dunning] == ["d9:early_follow_up_1", "d12:early_follow_up_2"]
    [reminder] = by_purpose(messages, Purpose.PROMISE_REMINDER)
    assert reminder.key == "promise_reminder:L1:PR1"
    assert reminder.send_at == shanghai(2026, 3, 13, 10)
    assert reminder.refs == {"promise_id": "PR1", "promised_date": "2026-03-14"}
    [follow_up] = by_purpose(messages, Purpose.BROKEN_PROMISE)
    assert follow_up.key == "broken_promise:L1:PR1"
    assert follow_up.send_at == shanghai(2026, 3, 15, 10)


def test_a_kept_promise_has_no_follow_ups() -> None:
    promise = Promise(
        "PR1", Decimal("500"), dt.date(2026, 3, 14), NOW - dt.timedelta(days=1), kept=True
    )
    messages = plan(POLICY, borrower(), loan(NOW, 3, promises=(promise,)), NOW)
    assert by_purpose(messages, Purpose.PROMISE_REMINDER) == []
    assert by_purpose(messages, Purpose.BROKEN_PROMISE) == []


def test_after_a_broken_promise_dunning_resumes_without_catching_up() -> None:
    promise = Promise("PR1", Decimal("500"), dt.date(2026, 3, 11), shanghai(2026, 3, 9, 12))
    state = loan(NOW, 3, promises=(promise,))
    # Mar 12 is the follow-up day (still paused); Mar 13 = day 6: day 5's step was paused
    on_follow_up_day = plan(POLICY, borrower(), state, shanghai(2026, 3, 12, 9))
    assert [m.purpose for m in on_follow_up_day][:1] == [Purpose.DUNNING]
    assert by_purpose(on_follow_up_day, Purpose.BROKEN_PROMISE)[0].send_at == shanghai(
        2026, 3, 12, 10
    )
    resumed = plan(POLICY, borrower(), state, shanghai(2026, 3, 13, 9))
    assert [m.refs["step"] for m in by_purpose(resumed, Purpose.DUNNING)] == [
        "d9:early_follow_up_1",
        "d12:early_follow_up_2",
    ]


def test_an_active_payment_plan_replaces_dunning_with_instalment_reminders() -> None:
    instalments = (
        Instalment(dt.date(2026, 3, 12), Decimal("400"), paid=True),
        Instalment(dt.date(2026, 3, 20), Decimal("400")),
        Instalment(dt.date(2026, 4, 20), Decimal("486.40")),
    )
    payment_plan = PaymentPlan("PL1", instalments, NOW - dt.timedelta(days=1))
    state = loan(NOW, 20, plans=(payment_plan,))
    messages = plan(POLICY, borrower(), state, NOW)
    assert by_purpose(messages, Purpose.DUNNING) == []
    reminders = by_purpose(messages, Purpose.INSTALMENT_REMINDER)
    assert keys(reminders) == [
        "instalment_reminder:L1:PL1:2026-03-20",
        "instalment_reminder:L1:PL1:2026-04-20",
    ]
    assert reminders[0].send_at == shanghai(2026, 3, 17, 10)
    assert reminders[0].refs == {"plan_id": "PL1", "instalment_due_date": "2026-03-20"}


def test_a_missed_instalment_ends_the_plan_and_dunning_resumes() -> None:
    instalments = (
        Instalment(dt.date(2026, 3, 5), Decimal("400")),
        Instalment(dt.date(2026, 4, 5), Decimal("400")),
    )
    payment_plan = PaymentPlan("PL1", instalments, NOW - dt.timedelta(days=10))
    state = loan(NOW, 20, plans=(payment_plan,))
    messages = plan(POLICY, borrower(), state, NOW)
    assert by_purpose(messages, Purpose.INSTALMENT_REMINDER) == []
    # a plan made on day 15 (Mar 5) and broken on Mar 7 skipped day 16 and 17's steps
    recent_plan = PaymentPlan(
        "PL2",
        (Instalment(dt.date(2026, 3, 7), Decimal("400")),),
        shanghai(2026, 3, 5, 12),
    )
    skipped = plan(POLICY, borrower(), loan(NOW, 20, plans=(recent_plan,)), NOW)
    assert [m.refs["step"] for m in by_purpose(skipped, Purpose.DUNNING)] == [
        "d24:negotiation_follow_up",
        "d31:negotiation_follow_up",
        "d38:negotiation_follow_up",
    ]
    # the plan ran Feb 28 – Mar 5 (the missed due date); day 17 (Mar 7) came after it, so it
    # is the stage's current step again
    assert [m.refs["step"] for m in by_purpose(messages, Purpose.DUNNING)] == [
        "d17:negotiation_invitation",
        "d24:negotiation_follow_up",
        "d31:negotiation_follow_up",
        "d38:negotiation_follow_up",
    ]


def test_visit_notice_at_least_two_days_ahead() -> None:
    visit = FieldVisit("V1", shanghai(2026, 3, 16, 9, 30), "李明", "C-0042")
    messages = plan(POLICY, borrower(), loan(NOW, 50, visits=(visit,)), NOW)
    [notice] = by_purpose(messages, Purpose.VISIT_NOTICE)
    # 10:00 on Mar 14 would be less than 48 hours ahead of 09:30 on Mar 16: a day earlier
    assert notice.send_at == shanghai(2026, 3, 13, 10)
    assert visit.visit_at - notice.send_at >= dt.timedelta(hours=48)
    assert notice.key == "visit_notice:L1:V1:20260316T013000Z"
    assert notice.refs == {"visit_id": "V1", "visit_at": "2026-03-16T01:30:00+00:00"}


def test_visit_scheduled_too_soon_is_announced_as_soon_as_allowed_with_short_notice() -> None:
    evening = shanghai(2026, 3, 10, 22)
    visit = FieldVisit("V1", shanghai(2026, 3, 11, 15), "李明", "C-0042")
    items = plan_items(POLICY, borrower(), loan(evening, 50, visits=(visit,)), evening)
    [notice] = [i for i in items if i.message.purpose is Purpose.VISIT_NOTICE]
    assert notice.message.send_at == shanghai(2026, 3, 11, 8)
    assert notice.message.refs["short_notice"] == "true"
    assert notice.timing.reason is Reason.QUIET_HOURS


def test_a_visit_that_comes_before_any_allowed_hour_gets_a_notice_withheld_as_expired() -> None:
    night = shanghai(2026, 3, 10, 23)
    visit = FieldVisit("V1", shanghai(2026, 3, 11, 7), "李明", "C-0042")
    items = plan_items(POLICY, borrower(), loan(night, 50, visits=(visit,)), night)
    [notice] = [i for i in items if i.message.purpose is Purpose.VISIT_NOTICE]
    # on the record, not dropped: the log shows the notice the policy wanted and why not
    assert notice.timing.kind is DecisionKind.SUPPRESS
    assert notice.timing.reason is Reason.EXPIRED


def test_a_rescheduled_visit_gets_a_new_notice_key() -> None:
    first = FieldVisit("V1", shanghai(2026, 3, 16, 9, 30), "李明", "C-0042")
    moved = dataclasses.replace(first, visit_at=shanghai(2026, 3, 17, 14))
    before = by_purpose(
        plan(POLICY, borrower(), loan(NOW, 50, visits=(first,)), NOW), Purpose.VISIT_NOTICE
    )
    after = by_purpose(
        plan(POLICY, borrower(), loan(NOW, 50, visits=(moved,)), NOW), Purpose.VISIT_NOTICE
    )
    assert before[0].key != after[0].key


def test_a_new_delinquency_cycle_has_new_keys() -> None:
    state = loan(NOW, 1)
    next_cycle = dataclasses.replace(state, due_date=state.due_date + dt.timedelta(days=30))
    assert not set(keys(plan(POLICY, borrower(), state, NOW))) & set(
        keys(plan(POLICY, borrower(), next_cycle, NOW))
    )


def test_every_planned_message_passes_the_gate_at_its_send_time() -> None:
    promise = Promise("PR1", Decimal("500"), dt.date(2026, 3, 14), NOW - dt.timedelta(hours=1))
    visit = FieldVisit("V1", shanghai(2026, 3, 16, 9, 30), "李明", "C-0042")
    paid = Payment("P1", Decimal("10"), NOW, Decimal("1276.40"))
    state = loan(NOW, 3, promises=(promise,), visits=(visit,), payments=(paid,))
    for message in plan(POLICY, borrower(), state, NOW):
        assert message.send_at >= NOW
        decision = gate(POLICY, borrower(), state, message, message.send_at)
        assert decision.may_send, (message.key, decision)


def test_reply_messages_for_the_pipeline() -> None:
    person = borrower()
    optout = reply_message(
        POLICY, person, Purpose.OPTOUT_CONFIRMATION, NOW, about="SM123", channel=Channel.SMS
    )
    assert optout.key == "optout_confirmation:B1:SM123"
    assert optout.template == "optout_confirmation"
    cease = reply_message(POLICY, person, Purpose.CEASE_CONFIRMATION, NOW, about="evt_9")
    assert (cease.channel, cease.template) == (Channel.EMAIL, "cease_confirmation")
    no_email = reply_message(
        POLICY, borrower(email=None), Purpose.CEASE_CONFIRMATION, NOW, about="evt_9"
    )
    assert (no_email.channel, no_email.fallback_from) == (Channel.SMS, Channel.EMAIL)


def test_steps_go_at_local_hours_for_a_borrower_behind_the_lenders_zone() -> None:
    new_york = ZoneInfo("America/New_York")
    new_yorker = borrower(
        address=Address(country="US", region="NY"), phones=("+12125550142",), timezone=None
    )
    # 14:00 on Mar 9 in New York is already Mar 10 in Shanghai: the loan is a day late now,
    # and it is daytime for the borrower, so the first notice goes at once
    afternoon = dt.datetime(2026, 3, 9, 14, tzinfo=new_york)
    messages = plan(POLICY, new_yorker, loan(afternoon, 1), afternoon)
    assert messages[0].refs["step"] == "d1:early_first_notice"
    assert messages[0].send_at == afternoon
    # the next step at its hour on its own date, in New York
    assert messages[1].send_at == dt.datetime(2026, 3, 11, 10, tzinfo=new_york)
    # reported in the borrower's evening: next morning at eight, deferred for quiet hours
    evening = dt.datetime(2026, 3, 9, 21, 30, tzinfo=new_york)
    [first, *_] = plan_items(POLICY, new_yorker, loan(evening, 1), evening)
    assert first.message.send_at == dt.datetime(2026, 3, 10, 8, tzinfo=new_york)
    assert first.timing.reason is Reason.QUIET_HOURS
    # reported early on the same date in both calendars: the step's own hour
    dawn = dt.datetime(2026, 3, 10, 6, tzinfo=new_york)
    assert plan(POLICY, new_yorker, loan(dawn, 1), dawn)[0].send_at == dt.datetime(
        2026, 3, 10, 10, tzinfo=new_york
    )
    assert SHANGHAI.key == POLICY.day_boundary_zone.key


def test_a_later_step_never_aims_before_the_lenders_day_for_it() -> None:
    tokyo = borrower(address=Address(country="JP"), phones=(), timezone=None)
    # 09:00 Tokyo on Mar 11 is 08:00 in Shanghai: day 2 of the loan has begun there
    messages = plan(POLICY, tokyo, loan(NOW, 1), NOW)
    assert messages[1].send_at == dt.datetime(2026, 3, 11, 10, tzinfo=ZoneInfo("Asia/Tokyo"))
    # with the lender on Los Angeles time, 10:00 in Shanghai on day 2's date comes before
    # that date has begun in Los Angeles: it waits for the lender's midnight
    document = default_document()
    document["day_boundary_zone"] = "America/Los_Angeles"
    western_lender = policy_from(document)
    los_angeles = ZoneInfo("America/Los_Angeles")
    reported = dt.datetime(2026, 3, 10, 9, tzinfo=los_angeles)
    state = dataclasses.replace(loan(reported, 1), due_date=dt.date(2026, 3, 9))
    messages = plan(western_lender, borrower(), state, reported)
    assert messages[1].refs["step"] == "d2:early_first_notice"
    assert messages[1].send_at == dt.datetime(2026, 3, 11, 0, tzinfo=los_angeles)


# -- properties ------------------------------------------------------------------------------


PLACES = {
    "shanghai": {"address": Address(country="CN"), "phones": ("+8613812345678",)},
    "new_york": {"address": Address(country="US", region="NY"), "phones": ("+12125550142",)},
    "alaska": {"address": None, "phones": ("+19075550142",)},
    "london_and_chicago": {
        "address": Address(country="US", region="IL"),
        "phones": ("+442079460142",),
    },
    "taipei": {"address": Address(country="TW"), "phones": ()},
}


@st.composite
def loan_events(draw: st.DrawFn, now: dt.datetime, state: LoanState) -> LoanState:
    """Maybe a promise, a payment plan, a field visit and a payment, around `now`."""
    today = now.date()
    days = st.integers
    if draw(st.booleans()):
        promised = today + dt.timedelta(days=draw(days(-4, 8)))
        made = now + dt.timedelta(days=draw(days(-6, 0)))
        kept = draw(st.booleans())
        state = dataclasses.replace(
            state, promises=(Promise("PR", Decimal("50"), promised, made, kept),)
        )
    if draw(st.booleans()):
        offsets = draw(st.lists(st.tuples(days(-5, 40), st.booleans()), min_size=1, max_size=3))
        instalments = tuple(
            Instalment(today + dt.timedelta(days=offset), Decimal("10"), paid)
            for offset, paid in offsets
        )
        made = now + dt.timedelta(days=draw(days(-10, 0)))
        state = dataclasses.replace(state, plans=(PaymentPlan("PL", instalments, made),))
    if draw(st.booleans()):
        visit_at = now + dt.timedelta(hours=draw(days(-5, 150)))
        state = dataclasses.replace(state, visits=(FieldVisit("V", visit_at, "李明", "C-1"),))
    if draw(st.booleans()):
        paid_at = now - dt.timedelta(hours=draw(days(0, 100)))
        state = dataclasses.replace(
            state, payments=(Payment("P", Decimal("10"), paid_at, Decimal("90")),)
        )
    return state


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    days_past_due=st.integers(min_value=-6, max_value=130),
    aged_days=st.integers(min_value=0, max_value=4),
    instant=st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 12, 1)),
    place=st.sampled_from(sorted(PLACES)),
    hardship=st.booleans(),
    sms_consent=st.booleans(),
    data=st.data(),
)
def test_planning_properties(
    days_past_due: int,
    aged_days: int,
    instant: dt.datetime,
    place: str,
    hardship: bool,
    sms_consent: bool,
    data: st.DataObject,
) -> None:
    now = instant.replace(tzinfo=dt.UTC)
    person = borrower(
        consent_sms=sms_consent,
        tags=frozenset({"hardship"}) if hardship else frozenset(),
        **PLACES[place],  # type: ignore[arg-type]
    )
    state = data.draw(loan_events(now, loan(now - dt.timedelta(days=aged_days), days_past_due)))
    items = plan_items(POLICY, person, state, now)
    messages = [item.message for item in items]
    # deterministic, and each key once
    assert plan(POLICY, person, state, now) == messages
    assert len({m.key for m in messages}) == len(messages)
    current = effective_days_past_due(POLICY, state, now)
    dunning = [m for m in messages if m.purpose is Purpose.DUNNING]
    due = [m for m in dunning if int(m.refs["days_past_due"]) <= current]
    # never a burst of catch-up: at most the steps of the one day that has come
    assert len({m.refs["days_past_due"] for m in due}) <= 1
    assert {m.stage for m in dunning} <= {POLICY.stage_for(current)}
    for item in items:
        message = item.message
        assert message.send_at >= now
        if item.timing.kind is DecisionKind.SUPPRESS:
            continue
        # the chosen instant is inside the window in every zone, and the gate, asked then on
        # the state known now, lets it go; only the channel the borrower gave no consent for
        # may stop it (an instalment is not missed before its day: a payment may yet come)
        assert next_allowed_instant(POLICY, person, message.send_at).may_send
        decision = gate(POLICY, person, state, message, message.send_at, known_at=now)
        assert decision.may_send or decision.reason is Reason.NO_CONSENT, (message.key, decision)
        if item.timing.kind is DecisionKind.WAIT:
            assert item.timing.until == message.send_at > item.target


# -- first contact, wherever the borrower lives (issue 16) ------------------------------------

FAR_WEST = ("America/Los_Angeles", "Pacific/Honolulu", "America/Anchorage")
SEASONS = {"winter": dt.date(2026, 1, 13), "summer": dt.date(2026, 7, 14)}


def first_day_report(zone: ZoneInfo, local_date: dt.date, at: dt.time) -> tuple[Any, LoanState]:
    reported = dt.datetime.combine(local_date, at, tzinfo=zone)
    return reported, loan(reported, 1)


@pytest.mark.parametrize("season", sorted(SEASONS))
@pytest.mark.parametrize("zone_name", FAR_WEST)
def test_a_first_notice_reported_in_the_borrowers_late_evening_still_goes(
    zone_name: str, season: str
) -> None:
    zone = ZoneInfo(zone_name)
    person = borrower(timezone=zone_name, address=None, phones=("+12135550142",))
    reported, state = first_day_report(zone, SEASONS[season], dt.time(21, 30))
    items = plan_items(POLICY, person, state, reported)
    [first] = [i for i in items if i.message.refs.get("step") == "d1:early_first_notice"]
    assert first.timing.kind is DecisionKind.WAIT and first.timing.reason is Reason.QUIET_HOURS
    send_at = first.message.send_at
    local = send_at.astimezone(zone)
    assert (local.date(), local.time()) == (SEASONS[season] + dt.timedelta(days=1), dt.time(8))
    # at its hour the lender's day 2 may have begun (its step is an email): the text still goes
    decision = gate(POLICY, person, state, first.message, send_at)
    assert decision.may_send, decision
    assert effective_days_past_due(POLICY, state, send_at) <= 3


def test_a_step_pushed_past_its_same_channel_successor_is_on_the_record_as_superseded() -> None:
    # holidays from the day-1 step through day 4: the text can only go on day 5, when the
    # day-5 text takes over
    document = default_document()
    start = dt.date(2026, 3, 10)
    document["holidays"]["CN"] = [start + dt.timedelta(days=n) for n in range(4)]
    policy = policy_from(document)
    reported = shanghai(2026, 3, 10, 9)
    items = plan_items(policy, borrower(), loan(reported, 1), reported)
    [first] = [i for i in items if i.message.refs.get("step") == "d1:early_first_notice"]
    assert first.timing.kind is DecisionKind.SUPPRESS
    assert first.timing.reason is Reason.SUPERSEDED
    assert first.timing.detail["by"] == "d5:early_follow_up_1"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    zone_name=st.sampled_from(sorted(available_timezones() - {"Factory", "localtime"})),
    local_date=st.dates(min_value=dt.date(2026, 1, 5), max_value=dt.date(2027, 11, 20)),
    minute=st.integers(min_value=0, max_value=24 * 60 - 1),
)
def test_a_day_one_report_plans_a_text_inside_the_first_three_days_anywhere(
    zone_name: str, local_date: dt.date, minute: int
) -> None:
    """Reported on the loan's first day late at any minute in any zone: a dunning text that
    the gate lets go at its hour, within the lender's first three days of delinquency (or a
    holiday or a stage rule on the record)."""
    zone = ZoneInfo(zone_name)
    person = borrower(timezone=zone_name, address=None, phones=("+12135550142",))
    reported = dt.datetime.combine(local_date, dt.time(minute // 60, minute % 60), tzinfo=zone)
    state = loan(reported, 1)
    holidays = contact_rules(POLICY, person).holidays
    first_days = {local_day(POLICY, reported) + dt.timedelta(days=n) for n in range(-1, 4)}
    assume(not {d + dt.timedelta(days=s) for d in first_days for s in (-1, 0, 1)} & holidays)
    texts = [
        item.message
        for item in plan_items(POLICY, person, state, reported)
        if item.message.purpose is Purpose.DUNNING
        and item.message.channel is Channel.SMS
        and item.timing.kind is not DecisionKind.SUPPRESS
    ]
    assert texts, "no text planned"
    first = min(texts, key=lambda m: m.send_at)
    assert effective_days_past_due(POLICY, state, first.send_at) <= 3
    assert gate(POLICY, person, state, first, first.send_at).may_send
