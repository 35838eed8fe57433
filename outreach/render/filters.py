"""Template filters: money, dates and times in the borrower's zone and language, masking.

Each filter reads `locale` and `timezone` from the render context, so a template writes
`{{ loan.amount_due|money }}` or `{{ visit.visit_at|datetime }}` and gets the borrower's
conventions. The plain functions are usable outside templates (lint compares against them).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time
from babel.numbers import format_currency, get_currency_symbol
from jinja2 import Undefined, pass_context
from jinja2.runtime import Context
from jinja2.utils import missing

DATE_STYLES: Final = frozenset({"short", "medium", "long", "full"})

# CLDR writes a narrow or plain no-break space in some formats ("10:30\u202fPM"). A single such
# character turns an English SMS from GSM-7 into UCS-2 and more than doubles its cost, and a
# plain space reads the same in every mail client, so every filter hands out plain spaces.
_NO_BREAK_SPACES: Final = str.maketrans({"\u202f": " ", "\u00a0": " ", "\u2009": " "})


class TemplateFilterError(ValueError):
    """Raised when a filter gets a value it cannot format truthfully (naive time, bad amount)."""


@functools.lru_cache(maxsize=64)
def babel_locale(locale: str) -> Locale:
    try:
        return Locale.parse(locale.replace("-", "_"))
    except (UnknownLocaleError, ValueError) as exc:
        raise TemplateFilterError(f"unknown locale {locale!r}") from exc


@functools.lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TemplateFilterError(f"unknown time zone {name!r}") from exc


def _plain_spaces(text: str) -> str:
    return text.translate(_NO_BREAK_SPACES)


def _defined(value: object) -> object:
    """Raise jinja's own "… is undefined" error for an undefined value handed to a filter."""
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises here, naming what is missing
        raise TemplateFilterError("a value given to a filter is undefined")
    return value


def to_decimal(amount: object) -> Decimal:
    _defined(amount)
    if isinstance(amount, bool):
        raise TemplateFilterError(f"not an amount: {amount!r}")
    if isinstance(amount, Decimal):
        return amount
    if isinstance(amount, int | float | str):
        try:
            value = Decimal(str(amount))
        except InvalidOperation as exc:
            raise TemplateFilterError(f"not an amount: {amount!r}") from exc
        if value.is_finite():
            return value
    raise TemplateFilterError(f"not an amount: {amount!r}")


@functools.lru_cache(maxsize=256)
def _unambiguous_symbol(currency: str, locale: str) -> str | None:
    """A clearer symbol where the locale's own one is a bare '$' for a currency other than USD.

    CLDR gives zh-TW a bare '$' for TWD; on a statement of money owed 'NT$' leaves no doubt.
    """
    if currency == "USD" or get_currency_symbol(currency, babel_locale(locale)) != "$":
        return None
    symbol = get_currency_symbol(currency, "en")
    return symbol if symbol != "$" else None


def format_money(amount: object, currency: str, locale: str) -> str:
    return _money(to_decimal(amount), currency.upper(), locale)


@functools.lru_cache(maxsize=8192)
def _money(value: Decimal, code: str, locale: str) -> str:
    # the same amounts are written again and again (each message of a loan says what it
    # owes), and CLDR formatting costs a tenth of a millisecond each time
    text = format_currency(value, code, locale=babel_locale(locale))
    symbol = _unambiguous_symbol(code, locale)
    if symbol is not None:
        text = text.replace("$", symbol, 1)
    return _plain_spaces(text)


def _local_date(value: object, timezone: str | None) -> dt.date:
    _defined(value)
    if isinstance(value, dt.datetime):
        return _local_datetime(value, timezone).date()
    if isinstance(value, dt.date):
        return value
    raise TemplateFilterError(f"not a date: {value!r}")


def _local_datetime(value: object, timezone: str | None) -> dt.datetime:
    _defined(value)
    if not isinstance(value, dt.datetime):
        raise TemplateFilterError(f"not a date and time: {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        # Guessing the zone of a naive time could tell a borrower the wrong hour of a visit.
        raise TemplateFilterError(
            f"a time without a time zone cannot be shown to a borrower: {value!r}"
        )
    if timezone is None:
        raise TemplateFilterError("'timezone' is needed in the context to show a time")
    return value.astimezone(zone(timezone))


def format_local_date(value: object, locale: str, timezone: str | None, style: str = "long") -> str:
    return _date_text(_local_date(value, timezone), locale, style)


@functools.lru_cache(maxsize=4096)
def _date_text(day: dt.date, locale: str, style: str) -> str:
    return _plain_spaces(format_date(day, style, locale=babel_locale(locale)))


def format_local_time(
    value: object, locale: str, timezone: str | None, style: str = "short"
) -> str:
    moment = _local_datetime(value, timezone)
    return _plain_spaces(format_time(moment, style, locale=babel_locale(locale)))


def format_local_datetime(
    value: object, locale: str, timezone: str | None, style: str = "full"
) -> str:
    """The date in `style` with the short time, joined the way the locale joins them."""
    moment = _local_datetime(value, timezone)
    language = babel_locale(locale)
    day = format_date(moment.date(), style, locale=language)
    clock = format_time(moment, "short", locale=language)
    pattern = language.datetime_formats.get(style if style in DATE_STYLES else "medium")
    joined = str(pattern).replace("{1}", day).replace("{0}", clock) if pattern else f"{day} {clock}"
    return _plain_spaces(joined)


_DIGIT: Final = re.compile(r"\d")


def last4(account_number: object) -> str:
    """The last four digits of an account number, and nothing else of it."""
    digits = _DIGIT.findall(str(_defined(account_number)))
    return "".join(digits[-4:])


def mask(account_number: object) -> str:
    return "****" + last4(account_number)


def mask_recipient(recipient: str | None) -> str:
    """A phone number or email address as the ops pages show it: a number masked as account
    numbers are (`****0006`), an address by its first letter and its domain (`a***@x.org`)."""
    if not recipient:
        return ""
    local, at, domain = recipient.rpartition("@")
    if at:
        return f"{local[:1]}***@{domain}"
    return mask(recipient)


def _lookup(context: Context, name: str) -> Any:
    value = context.resolve_or_missing(name)
    if value is missing or value is None:
        raise TemplateFilterError(f"'{name}' is needed in the context for this filter")
    return value


def _optional(context: Context, name: str) -> str | None:
    value = context.resolve_or_missing(name)
    return value if isinstance(value, str) else None


@pass_context
def money_filter(context: Context, amount: object, currency: str | None = None) -> str:
    """`{{ x|money }}` in the loan's currency, or `{{ x|money('CNY') }}`."""
    if currency is None:
        loan = _lookup(context, "loan")
        currency = loan["currency"] if isinstance(loan, Mapping) else loan.currency
    return format_money(amount, str(currency), _lookup(context, "locale"))


@pass_context
def date_filter(context: Context, value: object, style: str = "long") -> str:
    return format_local_date(
        value, _lookup(context, "locale"), _optional(context, "timezone"), style
    )


@pass_context
def time_filter(context: Context, value: object, style: str = "short") -> str:
    return format_local_time(
        value, _lookup(context, "locale"), _optional(context, "timezone"), style
    )


@pass_context
def datetime_filter(context: Context, value: object, style: str = "full") -> str:
    return format_local_datetime(
        value, _lookup(context, "locale"), _optional(context, "timezone"), style
    )


FILTERS: Final[dict[str, Any]] = {
    "money": money_filter,
    "date": date_filter,
    "time": time_filter,
    "datetime": datetime_filter,
    "mask": mask,
    "last4": last4,
}
