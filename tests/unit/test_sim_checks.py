"""The compliance checks catch what they are for, on hand-made output."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from outreach import policy as pol
from outreach.sim_checks import (
    Book,
    check_after_opt_out,
    check_after_payment,
    check_after_restriction,
    check_campaign_window,
    check_caps,
    check_contact_window,
    check_first_contact,
    check_sent_once,
    reply_kind,
    run_checks,
    sent_messages,
    zones_of,
)
from tests.conftest import REPO_ROOT

T0 = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def policy() -> pol.Policy:
    return pol.load_policy(REPO_ROOT / "schedules" / "default.yaml")


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def upsert(borrower_id: str = "B1", **fields: Any) -> dict[str, Any]:
    return {
        "id": f"u-{borrower_id}",
        "type": "borrower.upserted",
        "occurred_at": iso(T0 - dt.timedelta(days=1)),
        "data": {
            "borrower": {
                "id": borrower_id,
                "name": "N",
                "locale": "en-US",
                "phones": ["+12125550143"],
                "email": "b@mail.example",
                "timezone": "America/New_York",
                "consent": {"sms": True, "email": True},
                **fields,
            }
        },
    }


def event(kind: str, at: dt.datetime, **data: Any) -> dict[str, Any]:
    return {"id": f"{kind}-{at.timestamp()}", "type": kind, "occurred_at": iso(at), "data": data}


_counter = iter(range(10**6))


def message(
    at: dt.datetime | None,
    *,
    purpose: str = "dunning",
    channel: str = "sms",
    borrower_id: str = "B1",
    loan_id: str | None = "L1",
    to: str = "+12125550143",
) -> dict[str, Any]:
    return {
        "id": f"msg_{next(_counter)}",
        "purpose": purpose,
        "borrower_id": borrower_id,
        "loan_id": loan_id,
        "channel": channel,
        "to": to,
        "status": "delivered" if at else "suppressed",
        "sent_at": iso(at) if at else None,
        "events": [{"at": iso(at), "status": "sent", "reason": "accepted", "detail": None}]
        if at
        else [],
    }


# 15:00 UTC in March is 10:00 in New York (EST) and 23:00 in Beijing
NOON_NY = T0 + dt.timedelta(hours=17)


def test_a_send_outside_the_window_in_any_zone_fails(policy: pol.Policy) -> None:
    book = Book([upsert()])
    ok = check_contact_window(policy, book, sent_messages([message(NOON_NY)]))
    assert ok.passed and ok.checked == 1
    night = check_contact_window(policy, book, sent_messages([message(T0 + dt.timedelta(hours=6))]))
    assert not night.passed and "America/New_York" in night.violations[0]
    # a second phone in Los Angeles: 06:00 there while 09:00 in New York
    two = Book([upsert(phones=["+12125550143", "+14155550123"])])
    early = check_contact_window(policy, two, sent_messages([message(T0 + dt.timedelta(hours=14))]))
    assert not early.passed and "America/Los_Angeles" in early.violations[0]


def test_direct_replies_may_go_at_any_hour(policy: pol.Policy) -> None:
    night = message(T0 + dt.timedelta(hours=6), purpose="optout_confirmation", loan_id=None)
    assert check_contact_window(policy, Book([upsert()]), sent_messages([night])).passed


def test_caps_over_rolling_windows(policy: pol.Policy) -> None:
    book = Book([upsert()])
    days = [NOON_NY + dt.timedelta(days=d) for d in (0, 2, 4)]
    assert check_caps(policy, book, sent_messages([message(at) for at in days])).passed
    # two SMS 23 hours apart break sms_per_day
    close = [message(NOON_NY), message(NOON_NY + dt.timedelta(hours=23))]
    result = check_caps(policy, book, sent_messages(close))
    assert not result.passed and "sms_per_day" in result.violations[0]
    # four SMS in a week break sms_per_week, even a day apart each
    week = [message(NOON_NY + dt.timedelta(days=d)) for d in (0, 2, 4, 6)]
    assert "sms_per_week" in check_caps(policy, book, sent_messages(week)).violations[0]
    # exactly 24 hours apart is allowed; confirmations count against no cap
    edge = [message(NOON_NY), message(NOON_NY + dt.timedelta(days=1))]
    assert check_caps(policy, book, sent_messages(edge)).passed
    exempt = [
        message(NOON_NY),
        message(NOON_NY + dt.timedelta(hours=1), purpose="payment_confirmation"),
    ]
    assert check_caps(policy, book, sent_messages(exempt)).passed


def test_massachusetts_caps_are_stricter(policy: pol.Policy) -> None:
    book = Book([upsert(address={"country": "US", "region": "MA", "city": "Boston"})])
    three = [message(NOON_NY + dt.timedelta(days=d)) for d in (0, 2, 4)]
    result = check_caps(policy, book, sent_messages(three))
    assert not result.passed and "sms_per_week" in result.violations[0]


def test_nothing_after_payment_in_full_but_its_confirmation() -> None:
    paid = NOON_NY + dt.timedelta(days=1)
    book = Book(
        [
            upsert(),
            event("payment.received", paid, loan_id="L1", amount="10", amount_due_after="0"),
        ]
    )
    before = message(NOON_NY)
    confirmation = message(paid, purpose="payment_confirmation")
    assert check_after_payment(book, sent_messages([before, confirmation])).passed
    after = message(paid + dt.timedelta(days=1))
    result = check_after_payment(book, sent_messages([after]))
    assert not result.passed and "paid in full" in result.violations[0]
    # owed again later (a new loan.updated with an amount due): messages may resume
    again = paid + dt.timedelta(days=3)
    reopened = Book(
        [
            *book.events_as_dicts(),
            event("loan.updated", again, loan={"id": "L1", "amount_due": "50"}),
        ]
    )
    later = message(again + dt.timedelta(hours=1))
    assert check_after_payment(reopened, sent_messages([later])).passed


def test_one_confirmation_after_stop_and_nothing_else() -> None:
    stop = NOON_NY
    book = Book([upsert(), event("sms.inbound", stop, **{"from": "+12125550143", "body": "stop"})])
    confirmation = message(stop, purpose="optout_confirmation", loan_id=None)
    assert check_after_opt_out(book, sent_messages([confirmation]), []).passed
    twice = [confirmation, message(stop, purpose="optout_confirmation", loan_id=None)]
    assert not check_after_opt_out(book, sent_messages(twice), []).passed
    dunning = message(stop + dt.timedelta(days=1))
    assert not check_after_opt_out(book, sent_messages([dunning]), []).passed
    # email is another channel; START opts back in
    email = message(stop + dt.timedelta(days=1), channel="email", to="b@mail.example")
    assert check_after_opt_out(book, sent_messages([email]), []).passed
    start = stop + dt.timedelta(hours=2)
    back = Book(
        [
            *book.events_as_dicts(),
            event("sms.inbound", start, **{"from": "+12125550143", "body": "START"}),
        ]
    )
    assert check_after_opt_out(back, sent_messages([dunning]), []).passed


def test_the_provider_saying_unsubscribed_counts_as_an_opt_out() -> None:
    failed = message(None)
    failed["status"] = "failed"
    failed["events"] = [
        {"at": iso(NOON_NY), "status": "failed", "reason": "provider_error", "detail": "code=21610"}
    ]
    later = message(NOON_NY + dt.timedelta(days=1))
    result = check_after_opt_out(Book([upsert()]), sent_messages([later]), [failed])
    assert not result.passed


def test_restrictions() -> None:
    ceased = NOON_NY
    book = Book(
        [
            upsert(),
            event(
                "contact.restricted",
                ceased,
                borrower_id="B1",
                restriction="cease_contact",
                active=True,
            ),
        ]
    )
    confirmation = message(ceased, purpose="cease_confirmation", loan_id=None, channel="email")
    assert check_after_restriction(book, sent_messages([confirmation])).passed
    later = message(ceased + dt.timedelta(days=2), purpose="payment_confirmation")
    assert not check_after_restriction(book, sent_messages([later])).passed
    disputed = Book(
        [
            upsert(),
            event(
                "contact.restricted", ceased, borrower_id="B1", restriction="dispute", active=True
            ),
        ]
    )
    assert not check_after_restriction(disputed, sent_messages([message(NOON_NY)])).passed
    payment = message(NOON_NY, purpose="payment_confirmation")
    assert check_after_restriction(disputed, sent_messages([payment])).passed


def test_a_message_accepted_twice_is_caught() -> None:
    twice = message(NOON_NY)
    twice["events"] = twice["events"] * 2
    assert not check_sent_once([twice]).passed
    assert check_sent_once([message(NOON_NY)]).passed


def test_run_checks_names_every_check(policy: pol.Policy) -> None:
    results = run_checks(policy, [upsert()], [message(NOON_NY)])
    assert [r.name for r in results] == [
        "contact_window",
        "frequency_caps",
        "after_payment",
        "after_opt_out",
        "after_restriction",
        "sent_once",
        "first_contact",
        "campaign_window",
    ]
    assert all(r.passed for r in results)


def launched(
    at: dt.datetime,
    start_at: dt.datetime,
    end_at: dt.datetime | None = None,
    campaign_id: str | None = "cmp_a",
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "Relief",
        "channel": "sms",
        "template": "campaign_hardship_relief",
        "start_at": iso(start_at),
    }
    if end_at is not None:
        data["end_at"] = iso(end_at)
    document: dict[str, Any] = {
        "type": "campaign.launched",
        "occurred_at": iso(at),
        "data": data,
    }
    if campaign_id is not None:
        document["id"] = campaign_id
    return document


def of_campaign(
    at: dt.datetime | None, campaign_id: str = "cmp_a", **fields: Any
) -> dict[str, Any]:
    record = message(at, purpose="campaign", borrower_id=fields.pop("borrower_id", "B1"))
    return {**record, "campaign_id": campaign_id, **fields}


def test_campaign_messages_go_only_inside_their_campaign_window() -> None:
    starts, ends = NOON_NY, NOON_NY + dt.timedelta(days=2)
    book = Book([upsert(), upsert("B2"), launched(starts - dt.timedelta(hours=1), starts, ends)])
    inside = [of_campaign(starts), of_campaign(starts + dt.timedelta(days=1), borrower_id="B2")]
    result = check_campaign_window(book, inside)
    assert result.passed and result.checked == 2

    early = check_campaign_window(book, [of_campaign(starts - dt.timedelta(minutes=1))])
    assert not early.passed and "before campaign cmp_a opened" in early.violations[0]
    late = check_campaign_window(book, [of_campaign(ends)])
    assert not late.passed and "had ended" in late.violations[0]
    twice = check_campaign_window(book, [of_campaign(starts), of_campaign(starts)])
    assert not twice.passed and "a second message" in twice.violations[0]
    unknown = check_campaign_window(book, [of_campaign(starts, campaign_id="cmp_b")])
    assert not unknown.passed and "not launched" in unknown.violations[0]


def test_a_campaign_message_still_waiting_after_the_end_fails() -> None:
    starts, ends = NOON_NY, NOON_NY + dt.timedelta(days=2)
    book = Book([launched(starts, starts, ends)])
    waiting = of_campaign(None, status="deferred")
    after = ends + dt.timedelta(hours=1)
    assert not check_campaign_window(book, [waiting], until=after).passed
    # the run ended before the campaign did: it may wait still
    assert check_campaign_window(book, [waiting], until=ends - dt.timedelta(hours=1)).passed
    withheld = of_campaign(None, status="suppressed", reason="campaign_ended")
    assert check_campaign_window(book, [withheld], until=after).passed


def test_a_campaign_line_without_an_id_is_named_by_its_line() -> None:
    book = Book([upsert(), launched(NOON_NY, NOON_NY, campaign_id=None)])
    assert check_campaign_window(book, [of_campaign(NOON_NY, campaign_id="cmp_line2")]).passed


def test_campaign_messages_are_held_to_the_other_rules_as_well(policy: pol.Policy) -> None:
    book = Book(
        [
            upsert(),
            event(
                "sms.inbound",
                NOON_NY - dt.timedelta(hours=1),
                **{"from": "+12125550143"},
                body="STOP",
            ),
            event(
                "contact.restricted",
                NOON_NY - dt.timedelta(hours=1),
                borrower_id="B1",
                restriction="dispute",
                active=True,
            ),
            event(
                "payment.received",
                NOON_NY - dt.timedelta(hours=1),
                loan_id="L1",
                amount="100.00",
                amount_due_after="0.00",
            ),
        ]
    )
    night = sent_messages([of_campaign(T0 + dt.timedelta(hours=6))])
    assert not check_contact_window(policy, book, night).passed
    close = sent_messages(
        [message(NOON_NY - dt.timedelta(hours=3)), of_campaign(NOON_NY - dt.timedelta(hours=2))]
    )
    assert not check_caps(policy, book, close).passed
    after = sent_messages([of_campaign(NOON_NY)])
    assert not check_after_opt_out(book, after, []).passed
    assert not check_after_restriction(book, after).passed
    assert not check_after_payment(book, after).passed


def loan_reported(at: dt.datetime, days_past_due: int = 1, loan_id: str = "L1") -> dict[str, Any]:
    due = at.astimezone(SHANGHAI_ZONE).date() - dt.timedelta(days=days_past_due)
    return event(
        "loan.updated",
        at,
        loan={
            "id": loan_id,
            "borrower_id": "B1",
            "amount_due": "100.00",
            "days_past_due": days_past_due,
            "due_date": due.isoformat(),
        },
    )


def text(
    sent: dt.datetime | None, *, status: str = "delivered", step: dict[str, str] | None = None
) -> dict[str, Any]:
    record = message(sent)
    record["status"] = status
    planned = {"at": iso(REPORTED), "status": "scheduled", "reason": "planned", "detail": None}
    record["events"] = [planned, *([step] if step else []), *record["events"]]
    return record


# the first day late begins at midnight in Beijing on Mar 3
REPORTED = dt.datetime(2026, 3, 3, 9, tzinfo=dt.UTC)
SHANGHAI_ZONE = dt.timezone(dt.timedelta(hours=8))
UNTIL = T0 + dt.timedelta(days=10)


def test_a_loan_reported_on_its_first_day_late_must_get_a_text_within_three_days(
    policy: pol.Policy,
) -> None:
    book = Book([upsert(), loan_reported(REPORTED)])
    nothing = check_first_contact(policy, book, [], UNTIL)
    assert nothing.checked == 1 and not nothing.passed
    assert "no text sent" in nothing.violations[0]
    in_time = check_first_contact(policy, book, [text(REPORTED + dt.timedelta(hours=2))], UNTIL)
    assert in_time.passed
    too_late = check_first_contact(policy, book, [text(REPORTED + dt.timedelta(days=4))], UNTIL)
    assert not too_late.passed
    # withheld on the record, or held by a cap: explained
    opted_out = text(None, status="suppressed")
    assert check_first_contact(policy, book, [opted_out], UNTIL).passed
    held = {
        "at": iso(REPORTED + dt.timedelta(hours=1)),
        "status": "deferred",
        "reason": "frequency_cap",
        "detail": "rule=sms_per_day",
    }
    capped = text(REPORTED + dt.timedelta(days=4), step=held)
    assert check_first_contact(policy, book, [capped], UNTIL).passed


def test_first_contact_is_owed_only_where_the_policy_promises_it(policy: pol.Policy) -> None:
    late_report = Book([upsert(), loan_reported(REPORTED + dt.timedelta(days=2), 3)])
    assert check_first_contact(policy, late_report, [], UNTIL).checked == 0
    no_texts = Book([upsert(consent={"sms": False, "email": True}), loan_reported(REPORTED)])
    assert check_first_contact(policy, no_texts, [], UNTIL).checked == 0
    hardship = Book([upsert(tags=["hardship"]), loan_reported(REPORTED)])  # email first
    assert check_first_contact(policy, hardship, [], UNTIL).checked == 0
    paid = event(
        "payment.received",
        REPORTED + dt.timedelta(hours=1),
        loan_id="L1",
        amount_due_after="0.00",
    )
    assert (
        check_first_contact(
            policy, Book([upsert(), loan_reported(REPORTED), paid]), [], UNTIL
        ).checked
        == 0
    )
    # the run ends before the three days are over: not judged
    assert (
        check_first_contact(policy, Book([upsert(), loan_reported(REPORTED)]), [], REPORTED).checked
        == 0
    )


def test_the_checks_derive_zones_and_replies_themselves(policy: pol.Policy) -> None:
    book = Book(
        [
            upsert(
                timezone=None,
                phones=["+19075550142", "+18005550199"],
                address={"country": "US", "region": "hi"},
            )
        ]
    )
    borrower = book.borrower("B1", T0)
    assert borrower is not None
    names = [zone.key for zone in zones_of(policy, borrower)]
    # Hawaii by the address, Alaska by the number; the toll-free number places no one
    assert names == ["Pacific/Honolulu", "America/Adak", "America/Anchorage"]
    nowhere = Book([upsert(timezone=None, phones=[], address=None)]).borrower("B1", T0)
    assert nowhere is not None
    assert [zone.key for zone in zones_of(policy, nowhere)] == ["Asia/Shanghai"]
    assert reply_kind("Please stop texting me.") == "opt_out"
    assert reply_kind(" td ") == "opt_out"
    assert reply_kind("不要再发短信给我") == "opt_out"
    assert reply_kind("I can't stop worrying about this loan") == "other"
    assert reply_kind("start") == "opt_in"
