"""Quiet hours: candidate zones, the earliest allowed instant (exact, across DST), holidays."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outreach.domain import Address, DecisionKind, InconvenientWindow, Reason
from outreach.policy import (
    DailyWindow,
    candidate_zones,
    contact_rules,
    earliest_allowed,
    next_allowed_instant,
    window_closes_at,
)
from tests.unit.policy_fixtures import borrower, default_policy, us_borrower

UTC = dt.UTC
WINDOW = DailyWindow(dt.time(8), dt.time(21))
NO_HOLIDAYS: frozenset[dt.date] = frozenset()
WEEK = dt.timedelta(days=7)


def zone_keys(zones: Sequence[ZoneInfo]) -> list[str]:
    return [zone.key for zone in zones]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


# -- candidate zones -------------------------------------------------------------------------


def test_explicit_zone_comes_first_then_address_then_phones() -> None:
    person = borrower(
        timezone="Europe/London",
        address=Address(country="US", region="MA"),
        phones=("+8613812345678",),
    )
    assert zone_keys(candidate_zones(default_policy(), person)) == [
        "Europe/London",
        "America/New_York",
        "Asia/Shanghai",
    ]


def test_alaska_number_gives_both_of_its_zones() -> None:
    person = borrower(address=None, phones=("+19075550142",))
    assert sorted(zone_keys(candidate_zones(default_policy(), person))) == [
        "America/Adak",
        "America/Anchorage",
    ]


def test_toll_free_number_says_nothing_about_location() -> None:
    person = borrower(address=None, phones=("+18005550142",))
    assert zone_keys(candidate_zones(default_policy(), person)) == ["Asia/Shanghai"]
    with_address = borrower(address=Address(country="TW"), phones=("+18005550142",))
    assert zone_keys(candidate_zones(default_policy(), with_address)) == ["Asia/Taipei"]


def test_number_of_a_country_with_many_zones_says_nothing() -> None:
    # an Australian mobile maps to eight zones
    person = borrower(address=None, phones=("+61412345678",))
    assert zone_keys(candidate_zones(default_policy(), person)) == ["Asia/Shanghai"]


def test_nothing_known_means_the_policy_default_zone() -> None:
    person = borrower(address=None, phones=(), timezone=None)
    assert zone_keys(candidate_zones(default_policy(), person)) == ["Asia/Shanghai"]


def test_unknown_explicit_zone_is_ignored() -> None:
    person = borrower(timezone="Mars/Olympus_Mons", address=Address(country="HK"), phones=())
    assert zone_keys(candidate_zones(default_policy(), person)) == ["Asia/Hong_Kong"]


@pytest.mark.parametrize(
    ("address", "zones"),
    [
        (Address(country="US", region="TX"), ["America/Chicago", "America/Denver"]),
        (Address(country="US", region="Massachusetts"), ["America/New_York"]),
        (Address(country="us", region="US-ca"), ["America/Los_Angeles"]),
        (Address(country="CA", region="QC"), ["America/Toronto", "America/Halifax"]),
        (Address(country="CA", region="Saskatchewan"), ["America/Regina", "America/Edmonton"]),
        (Address(country="AU", region="VIC"), ["Australia/Melbourne"]),
        (Address(country="AU", region="NSW", postal_code="2000"), ["Australia/Sydney"]),
        (Address(country="AU", region="NSW", postal_code="2898"), ["Australia/Lord_Howe"]),
        (
            Address(country="AU", region="NSW"),
            ["Australia/Sydney", "Australia/Broken_Hill", "Australia/Lord_Howe"],
        ),
        (Address(country="CN", region="XJ"), ["Asia/Shanghai"]),
        (Address(country="TW"), ["Asia/Taipei"]),
        (Address(country="HK"), ["Asia/Hong_Kong"]),
        (Address(country="GB", region="SCT"), ["Europe/London"]),
    ],
)
def test_address_zones(address: Address, zones: list[str]) -> None:
    person = borrower(address=address, phones=())
    assert zone_keys(candidate_zones(default_policy(), person)) == zones


def test_country_only_us_address_covers_every_state_zone_but_not_territories() -> None:
    person = borrower(address=Address(country="US"), phones=())
    keys = set(zone_keys(candidate_zones(default_policy(), person)))
    assert {"America/New_York", "America/Los_Angeles", "Pacific/Honolulu"} <= keys
    assert "Pacific/Guam" not in keys


# -- the earliest allowed instant: chosen cases ----------------------------------------------


def test_an_allowed_instant_is_sent_at_once() -> None:
    decision = next_allowed_instant(default_policy(), borrower(), utc(2026, 3, 10, 3))
    assert decision.kind is DecisionKind.SEND


def test_three_am_waits_for_eight() -> None:
    # 03:00 in Shanghai
    decision = next_allowed_instant(default_policy(), borrower(), utc(2026, 3, 9, 19))
    assert decision.kind is DecisionKind.WAIT
    assert decision.reason is Reason.QUIET_HOURS
    assert decision.until == utc(2026, 3, 10, 0)
    assert decision.detail == {"zone": "Asia/Shanghai"}


def test_end_of_window_is_exclusive() -> None:
    at_nine_pm = dt.datetime(2026, 3, 10, 21, tzinfo=ZoneInfo("Asia/Shanghai"))
    decision = next_allowed_instant(default_policy(), borrower(), at_nine_pm)
    assert decision.until == dt.datetime(2026, 3, 11, 8, tzinfo=ZoneInfo("Asia/Shanghai"))
    just_before = at_nine_pm - dt.timedelta(microseconds=1)
    assert next_allowed_instant(default_policy(), borrower(), just_before).may_send


def test_new_york_spring_forward() -> None:
    ny = us_borrower(phones=())
    # 2026-03-08 01:30 EST; clocks jump to 03:00 at 07:00 UTC; 08:00 EDT is 12:00 UTC
    decision = next_allowed_instant(default_policy(), ny, utc(2026, 3, 8, 6, 30))
    assert decision.until == utc(2026, 3, 8, 12)


def test_new_york_spring_forward_window_starting_in_the_gap() -> None:
    # 02:30 does not exist that night: the first instant at or after it is 03:00 EDT
    window = DailyWindow(dt.time(2, 30), dt.time(21))
    zone = ZoneInfo("America/New_York")
    decision = earliest_allowed([zone], window, NO_HOLIDAYS, (), utc(2026, 3, 8, 6))
    assert decision.until == utc(2026, 3, 8, 7)


def test_new_york_fall_back_window_starting_in_the_repeated_hour() -> None:
    window = DailyWindow(dt.time(1, 30), dt.time(21))
    zone = ZoneInfo("America/New_York")
    # 01:00 EDT → allowed from 01:30 EDT (05:30 UTC)
    first = earliest_allowed([zone], window, NO_HOLIDAYS, (), utc(2026, 11, 1, 5))
    assert first.until == utc(2026, 11, 1, 5, 30)
    # 01:40 EDT is allowed
    assert earliest_allowed([zone], window, NO_HOLIDAYS, (), utc(2026, 11, 1, 5, 40)).may_send
    # 01:05 EST (the hour again): before 01:30 in wall time, so it waits for 01:30 EST
    again = earliest_allowed([zone], window, NO_HOLIDAYS, (), utc(2026, 11, 1, 6, 5))
    assert again.until == utc(2026, 11, 1, 6, 30)


def test_new_york_fall_back_day() -> None:
    ny = us_borrower(phones=())
    # 2026-11-01 04:00 EST (09:00 UTC) → 08:00 EST = 13:00 UTC
    decision = next_allowed_instant(default_policy(), ny, utc(2026, 11, 1, 9))
    assert decision.until == utc(2026, 11, 1, 13)


def test_london_spring_forward_and_fall_back() -> None:
    london = borrower(address=Address(country="GB"), phones=())
    # 2026-03-29: BST from 01:00 UTC; 08:00 BST = 07:00 UTC
    assert next_allowed_instant(default_policy(), london, utc(2026, 3, 29, 0, 30)).until == (
        utc(2026, 3, 29, 7)
    )
    # 2026-10-25: GMT from 01:00 UTC; 08:00 GMT = 08:00 UTC
    assert next_allowed_instant(default_policy(), london, utc(2026, 10, 25, 0, 30)).until == (
        utc(2026, 10, 25, 8)
    )


def test_alaska_number_must_suit_both_anchorage_and_adak() -> None:
    person = borrower(address=None, phones=("+19075550142",))
    # 2026-01-15 17:30 UTC = 08:30 Anchorage (UTC-9) = 07:30 Adak (UTC-10)
    decision = next_allowed_instant(default_policy(), person, utc(2026, 1, 15, 17, 30))
    assert decision.reason is Reason.QUIET_HOURS
    assert decision.detail == {"zone": "America/Adak"}
    assert decision.until == utc(2026, 1, 15, 18)  # 08:00 Adak, 09:00 Anchorage


def test_address_and_phone_six_hours_apart_share_a_narrower_window() -> None:
    # Chicago address (UTC-6 in January), London number (UTC+0): allowed 14:00–21:00 UTC
    person = borrower(
        address=Address(country="US", region="IL"), phones=("+442079460142",), timezone=None
    )
    policy = default_policy()
    assert zone_keys(candidate_zones(policy, person)) == ["America/Chicago", "Europe/London"]
    morning = next_allowed_instant(policy, person, utc(2026, 1, 14, 10))
    assert morning.until == utc(2026, 1, 14, 14)
    assert morning.detail == {"zone": "America/Chicago"}
    evening = next_allowed_instant(policy, person, utc(2026, 1, 14, 21, 30))
    assert evening.until == utc(2026, 1, 15, 14)
    assert evening.detail == {"zone": "Europe/London"}
    assert window_closes_at(policy, person, utc(2026, 1, 14, 15)) == utc(2026, 1, 14, 21)


def test_zones_thirteen_hours_apart_share_the_edges_of_their_days() -> None:
    # New York 19:00–21:00 EST is Shanghai 08:00–10:00 the next morning
    person = us_borrower(phones=("+8613812345678",))
    winter = next_allowed_instant(default_policy(), person, utc(2026, 1, 14, 3))
    assert winter.until == utc(2026, 1, 15, 0)
    assert window_closes_at(default_policy(), person, utc(2026, 1, 15, 1)) == utc(2026, 1, 15, 2)


def test_three_zones_eight_hours_apart_leave_no_convenient_time() -> None:
    # Los Angeles address, London and Shanghai numbers: no hour is 08:00–21:00 in all three
    person = borrower(
        address=Address(country="US", region="CA"), phones=("+442079460142", "+8613812345678")
    )
    decision = next_allowed_instant(default_policy(), person, utc(2026, 1, 14, 3))
    assert decision.kind is DecisionKind.SUPPRESS
    assert decision.reason is Reason.NO_CONVENIENT_TIME
    assert decision.detail == {"horizon_days": "7"}


def test_holiday_skips_whole_days() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    night_before = dt.datetime(2026, 9, 30, 22, tzinfo=shanghai)
    decision = next_allowed_instant(default_policy(), borrower(), night_before)
    assert decision.reason is Reason.QUIET_HOURS
    assert decision.until == dt.datetime(2026, 10, 4, 8, tzinfo=shanghai)
    during = next_allowed_instant(
        default_policy(), borrower(), dt.datetime(2026, 10, 2, 12, tzinfo=shanghai)
    )
    assert during.reason is Reason.HOLIDAY
    assert during.until == dt.datetime(2026, 10, 4, 8, tzinfo=shanghai)


def test_holidays_follow_the_borrowers_country() -> None:
    policy = default_policy()
    us = us_borrower(phones=())
    independence_day = dt.datetime(2026, 7, 4, 12, tzinfo=ZoneInfo("America/New_York"))
    assert next_allowed_instant(policy, us, independence_day).reason is Reason.HOLIDAY
    # China's National Day is not a US holiday
    assert next_allowed_instant(
        policy, us, dt.datetime(2026, 10, 1, 12, tzinfo=ZoneInfo("America/New_York"))
    ).may_send
    # a Chinese mobile number brings China's holidays to a US address as well
    both = us_borrower(phones=("+8613812345678",))
    assert contact_rules(policy, both).holidays >= policy.holidays["CN"]


def test_inconvenient_lunch_hours_on_weekdays() -> None:
    lunch = InconvenientWindow(dt.time(12), dt.time(14), frozenset({1, 2, 3, 4, 5}))
    person = borrower(inconvenient_windows=(lunch,))
    shanghai = ZoneInfo("Asia/Shanghai")
    wednesday = dt.datetime(2026, 3, 11, 12, 30, tzinfo=shanghai)
    decision = next_allowed_instant(default_policy(), person, wednesday)
    assert decision.reason is Reason.INCONVENIENT_TIME
    assert decision.until == dt.datetime(2026, 3, 11, 14, tzinfo=shanghai)
    saturday = dt.datetime(2026, 3, 14, 12, 30, tzinfo=shanghai)
    assert next_allowed_instant(default_policy(), person, saturday).may_send


def test_inconvenient_window_across_midnight() -> None:
    evenings = InconvenientWindow(dt.time(19), dt.time(9))
    person = borrower(inconvenient_windows=(evenings,))
    shanghai = ZoneInfo("Asia/Shanghai")
    decision = next_allowed_instant(
        default_policy(), person, dt.datetime(2026, 3, 11, 8, 30, tzinfo=shanghai)
    )
    assert decision.reason is Reason.INCONVENIENT_TIME
    assert decision.until == dt.datetime(2026, 3, 11, 9, tzinfo=shanghai)
    late = next_allowed_instant(
        default_policy(), person, dt.datetime(2026, 3, 11, 19, 30, tzinfo=shanghai)
    )
    assert late.until == dt.datetime(2026, 3, 12, 9, tzinfo=shanghai)


def test_whole_week_declared_inconvenient_means_no_convenient_time() -> None:
    always = InconvenientWindow(dt.time(0), dt.time(0))
    person = borrower(inconvenient_windows=(always,))
    decision = next_allowed_instant(default_policy(), person, utc(2026, 3, 11, 3))
    assert decision.kind is DecisionKind.SUPPRESS
    assert decision.reason is Reason.NO_CONVENIENT_TIME


def test_window_closes_at_is_none_outside_the_window() -> None:
    assert window_closes_at(default_policy(), borrower(), utc(2026, 3, 10, 14)) is None
    assert window_closes_at(default_policy(), borrower(), utc(2026, 3, 10, 3)) == utc(
        2026, 3, 10, 13
    )


def test_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_allowed_instant(default_policy(), borrower(), dt.datetime(2026, 3, 10, 3))


def test_jurisdiction_override_applies_to_massachusetts_only() -> None:
    policy = default_policy()
    ma = us_borrower(address=Address(country="US", region="MA"))
    ny = us_borrower()
    ma_caps = {rule.name: rule.limit for rule in contact_rules(policy, ma).caps}
    ny_caps = {rule.name: rule.limit for rule in contact_rules(policy, ny).caps}
    assert ma_caps["sms_per_week"] == 2 and ma_caps["email_per_week"] == 2
    assert ny_caps["sms_per_week"] == 3 and ny_caps["email_per_week"] == 4
    assert contact_rules(policy, ma).jurisdiction == "US-MA"
    assert contact_rules(policy, ny).jurisdiction is None


# -- the earliest allowed instant: properties ------------------------------------------------

PROPERTY_ZONES = [
    "America/New_York",
    "Europe/London",
    "Asia/Shanghai",
    "America/Anchorage",
    "America/Adak",
    "America/Los_Angeles",
    "Australia/Lord_Howe",  # half-hour daylight saving shift
    "Asia/Kathmandu",  # +05:45
    "Pacific/Chatham",  # +12:45 / +13:45
    "America/St_Johns",  # -03:30 / -02:30
    "Europe/Berlin",
    "Pacific/Honolulu",
]


def naive_allowed(
    zones: Sequence[ZoneInfo],
    window: DailyWindow,
    holidays: frozenset[dt.date],
    inconvenient: Sequence[InconvenientWindow],
    moment: dt.datetime,
) -> bool:
    """A plain restatement of the rule, independent of the implementation's intervals."""
    for zone in zones:
        local = moment.astimezone(zone).replace(tzinfo=None)
        if local.date() in holidays:
            return False
        if not (window.start <= local.time() < window.end):
            return False
        for day in (local.date() - dt.timedelta(days=1), local.date()):
            for declared in inconvenient:
                if declared.weekdays and day.isoweekday() not in declared.weekdays:
                    continue
                begin = dt.datetime.combine(day, declared.start)
                end_day = day if declared.start < declared.end else day + dt.timedelta(days=1)
                if begin <= local < dt.datetime.combine(end_day, declared.end):
                    return False
    return True


minutes = st.integers(min_value=0, max_value=23 * 60 + 59)


@st.composite
def windows(draw: st.DrawFn) -> DailyWindow:
    start = draw(st.integers(min_value=0, max_value=22 * 60))
    end = draw(st.integers(min_value=start + 60, max_value=23 * 60 + 59))
    return DailyWindow(dt.time(*divmod(start, 60)), dt.time(*divmod(end, 60)))


@st.composite
def inconvenient_windows(draw: st.DrawFn) -> InconvenientWindow:
    start, end = draw(minutes), draw(minutes)
    weekdays = draw(st.frozensets(st.integers(min_value=1, max_value=7), max_size=3))
    return InconvenientWindow(dt.time(*divmod(start, 60)), dt.time(*divmod(end, 60)), weekdays)


instants = st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 12, 20)).map(
    lambda naive: naive.replace(tzinfo=UTC)
)


def check_minimal(
    zones: Sequence[ZoneInfo],
    window: DailyWindow,
    holidays: frozenset[dt.date],
    inconvenient: Sequence[InconvenientWindow],
    at: dt.datetime,
) -> None:
    decision = earliest_allowed(zones, window, holidays, inconvenient, at, WEEK)
    if decision.kind is DecisionKind.SEND:
        assert naive_allowed(zones, window, holidays, inconvenient, at)
        return
    assert not naive_allowed(zones, window, holidays, inconvenient, at)
    if decision.kind is DecisionKind.SUPPRESS:
        assert decision.reason is Reason.NO_CONVENIENT_TIME
        last = at + WEEK
    else:
        assert decision.until is not None
        assert decision.reason in (Reason.QUIET_HOURS, Reason.HOLIDAY, Reason.INCONVENIENT_TIME)
        assert at < decision.until <= at + WEEK
        assert naive_allowed(zones, window, holidays, inconvenient, decision.until)
        last = decision.until
    # every boundary of the rule falls on a whole minute (all offsets are whole minutes), so
    # checking each whole minute before the answer proves no earlier allowed instant exists
    probe = at.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    while probe < last:
        assert not naive_allowed(zones, window, holidays, inconvenient, probe), probe
        probe += dt.timedelta(minutes=1)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    at=instants,
    zone_names=st.lists(st.sampled_from(PROPERTY_ZONES), min_size=1, max_size=3, unique=True),
    window=windows(),
)
def test_earliest_allowed_is_allowed_everywhere_and_minimal(
    at: dt.datetime, zone_names: list[str], window: DailyWindow
) -> None:
    check_minimal([ZoneInfo(name) for name in zone_names], window, NO_HOLIDAYS, (), at)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    at=instants,
    zone_names=st.lists(st.sampled_from(PROPERTY_ZONES), min_size=1, max_size=2, unique=True),
    window=windows(),
    holiday_offsets=st.frozensets(st.integers(min_value=-1, max_value=3), max_size=2),
    inconvenient=st.lists(inconvenient_windows(), max_size=2),
)
def test_earliest_allowed_with_holidays_and_inconvenient_times(
    at: dt.datetime,
    zone_names: list[str],
    window: DailyWindow,
    holiday_offsets: frozenset[int],
    inconvenient: list[InconvenientWindow],
) -> None:
    holidays = frozenset(at.date() + dt.timedelta(days=offset) for offset in holiday_offsets)
    check_minimal([ZoneInfo(name) for name in zone_names], window, holidays, inconvenient, at)


@pytest.mark.parametrize(
    ("zone", "transition"),
    [
        ("America/New_York", utc(2026, 3, 8, 7)),
        ("America/New_York", utc(2026, 11, 1, 6)),
        ("Europe/London", utc(2026, 3, 29, 1)),
        ("Europe/London", utc(2026, 10, 25, 1)),
    ],
)
def test_minimal_around_each_dst_transition(zone: str, transition: dt.datetime) -> None:
    """Every quarter hour of the six hours around a transition, with windows near it."""
    zones = [ZoneInfo(zone)]
    for window in (
        DailyWindow(dt.time(8), dt.time(21)),
        DailyWindow(dt.time(1, 30), dt.time(2, 30)),
        DailyWindow(dt.time(0, 15), dt.time(1, 15)),
        DailyWindow(dt.time(2), dt.time(3)),
    ):
        at = transition - dt.timedelta(hours=3)
        while at < transition + dt.timedelta(hours=3):
            check_minimal(zones, window, NO_HOLIDAYS, (), at)
            at += dt.timedelta(minutes=15)
