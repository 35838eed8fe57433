"""Money, dates and times in the borrower's language and zone; account masking."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from outreach.render.filters import (
    TemplateFilterError,
    format_local_date,
    format_local_datetime,
    format_local_time,
    format_money,
    last4,
    mask,
)

UTC = dt.UTC


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "expected"),
    [
        (Decimal("1234.5"), "USD", "en-US", "$1,234.50"),
        (Decimal("1286.40"), "CNY", "zh-CN", "¥1,286.40"),
        # CLDR gives zh-TW a bare '$' for TWD; on money owed we say which dollar
        (Decimal("8450"), "TWD", "zh-TW", "NT$8,450.00"),
        (Decimal("99.99"), "USD", "zh-TW", "US$99.99"),
        (Decimal("10"), "CNY", "en-US", "CN¥10.00"),
        ("245.60", "usd", "en-US", "$245.60"),
        (0, "USD", "en-US", "$0.00"),
    ],
)
def test_money_by_locale_and_currency(
    amount: object, currency: str, locale: str, expected: str
) -> None:
    assert format_money(amount, currency, locale) == expected


def test_money_never_rounds_away_what_is_owed() -> None:
    assert format_money(Decimal("0.01"), "USD", "en-US") == "$0.01"


@pytest.mark.parametrize("bad", ["abc", None, True, float("nan"), [1]])
def test_money_rejects_what_is_not_an_amount(bad: object) -> None:
    with pytest.raises(TemplateFilterError):
        format_money(bad, "USD", "en-US")


def test_unknown_locale_is_an_error() -> None:
    with pytest.raises(TemplateFilterError, match="unknown locale"):
        format_money(1, "USD", "xx-YY")


def test_dates_in_each_language() -> None:
    day = dt.date(2025, 6, 13)
    assert format_local_date(day, "en-US", None) == "June 13, 2025"
    assert format_local_date(day, "zh-CN", None) == "2025年6月13日"
    assert format_local_date(day, "zh-TW", None) == "2025年6月13日"
    assert format_local_date(day, "zh-CN", None, "full") == "2025年6月13日星期五"


def test_a_moment_is_shown_on_the_borrowers_calendar() -> None:
    # 20:30 UTC on the 10th is already the 11th in Shanghai and still the 10th in New York
    moment = dt.datetime(2025, 6, 10, 20, 30, tzinfo=UTC)
    assert format_local_date(moment, "zh-CN", "Asia/Shanghai") == "2025年6月11日"
    assert format_local_date(moment, "en-US", "America/New_York") == "June 10, 2025"


def test_times_use_plain_spaces_so_english_sms_stays_gsm7() -> None:
    moment = dt.datetime(2025, 6, 13, 18, 30, tzinfo=UTC)
    text = format_local_time(moment, "en-US", "America/New_York")
    assert text == "2:30 PM"
    assert "\u202f" not in format_local_datetime(moment, "en-US", "America/New_York")


def test_datetime_in_each_language() -> None:
    moment = dt.datetime(2025, 6, 13, 14, 30, tzinfo=ZoneInfo("Asia/Taipei"))
    assert format_local_datetime(moment, "zh-TW", "Asia/Taipei") == "2025年6月13日 星期五 下午2:30"
    assert format_local_datetime(moment, "zh-CN", "Asia/Shanghai") == "2025年6月13日星期五 14:30"
    assert (
        format_local_datetime(moment, "en-US", "America/New_York")
        == "Friday, June 13, 2025, 2:30 AM"
    )


def test_times_follow_daylight_saving_in_the_borrowers_zone() -> None:
    # New York moved from EST (UTC-5) to EDT (UTC-4) at 07:00 UTC on 9 March 2025
    before = dt.datetime(2025, 3, 9, 6, 30, tzinfo=UTC)
    after = dt.datetime(2025, 3, 9, 7, 30, tzinfo=UTC)
    assert format_local_time(before, "en-US", "America/New_York") == "1:30 AM"
    assert format_local_time(after, "en-US", "America/New_York") == "3:30 AM"


def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(TemplateFilterError, match="without a time zone"):
        format_local_time(dt.datetime(2025, 6, 13, 14, 30), "en-US", "America/New_York")


def test_a_time_needs_the_borrowers_zone() -> None:
    with pytest.raises(TemplateFilterError, match="timezone"):
        format_local_time(dt.datetime(2025, 6, 13, tzinfo=UTC), "en-US", None)
    with pytest.raises(TemplateFilterError, match="unknown time zone"):
        format_local_time(dt.datetime(2025, 6, 13, tzinfo=UTC), "en-US", "Mars/Base")


@pytest.mark.parametrize(
    ("account", "shown"),
    [
        ("6222020200112347890", "****7890"),
        ("LN-0012-3456", "****3456"),
        ("12 34 56 78", "****5678"),
        (123456789, "****6789"),
    ],
)
def test_mask_shows_only_the_last_four_digits(account: object, shown: str) -> None:
    assert mask(account) == shown
    assert last4(account) == shown[-4:]
