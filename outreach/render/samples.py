"""Sample render contexts, shaped exactly like the pipeline's, for lint and preview.

The data is fixed (no clock is read) so previews and lint findings are the same on every run.
Every sample borrower, lender and address is fictional; phone numbers and domains are of the
reserved example kind where the country has one.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from zoneinfo import ZoneInfo

from outreach.domain import Channel
from outreach.errors import RenderError
from outreach.render.catalog import spec_for

SAMPLE_TODAY: Final = dt.date(2025, 6, 10)
DEFAULT_SAMPLE_LOCALE: Final = "en-US"


def _sample_people() -> dict[str, dict[str, Any]]:
    return {
        "en-US": {
            "borrower_name": "Jordan Lee",
            "timezone": "America/New_York",
            "currency": "USD",
            "amount_due": Decimal("245.60"),
            "balance": Decimal("3180.00"),
            "collector_name": "Sam Rivera",
            "product": "Personal loan",
            "lender": {
                "name": "Evergreen Lending",
                "phone": "1-800-555-0142",
                "email": "care@evergreen.example.com",
                "website": "https://evergreen.example.com",
                "payment_url": "https://ev.example.com/pay",
                "hours": "Mon-Fri 9am-6pm ET",
            },
        },
        "zh-CN": {
            "borrower_name": "王芳",
            "timezone": "Asia/Shanghai",
            "currency": "CNY",
            "amount_due": Decimal("1286.40"),
            "balance": Decimal("15600.00"),
            "collector_name": "李明",
            "product": "个人消费贷款",
            "lender": {
                "name": "长青金融",
                "phone": "400-800-1234",
                "email": "kefu@evergreen.example.cn",
                "website": "https://evergreen.example.cn",
                "payment_url": "https://ev.example.cn/pay",
                "hours": "周一至周五 9:00-18:00",
            },
        },
        "zh-TW": {
            "borrower_name": "陳怡君",
            "timezone": "Asia/Taipei",
            "currency": "TWD",
            "amount_due": Decimal("8450"),
            "balance": Decimal("96000"),
            "collector_name": "林志豪",
            "product": "個人信用貸款",
            "lender": {
                "name": "長青金融",
                "phone": "0800-000-123",
                "email": "service@evergreen.example.tw",
                "website": "https://evergreen.example.tw",
                "payment_url": "https://ev.example.tw/pay",
                "hours": "週一至週五 9:00-18:00",
            },
        },
    }


def sample_context(template: str, channel: Channel | str, locale: str) -> dict[str, Any]:
    """A complete context for `template`: the base parts plus the optional parts it reads."""
    channel = Channel(channel)
    spec = spec_for(template)
    people = _sample_people()
    person = people.get(locale, people[DEFAULT_SAMPLE_LOCALE])
    tz = ZoneInfo(person["timezone"])
    amount_due: Decimal = person["amount_due"]
    due_date = SAMPLE_TODAY - dt.timedelta(days=spec.days_past_due)

    context: dict[str, Any] = {
        "borrower": {"id": "B-1001", "name": person["borrower_name"], "locale": locale},
        "loan": {
            "id": "L-20481",
            "product": person["product"],
            "currency": person["currency"],
            "amount_due": amount_due,
            "balance": person["balance"],
            "days_past_due": spec.days_past_due,
            "due_date": due_date,
            "account_number": "6222020200112347890",
        },
        "lender": dict(person["lender"]),
        "stage": spec.stage,
        "timezone": person["timezone"],
        "locale": locale,
    }
    if channel is Channel.EMAIL:
        context["unsubscribe_url"] = "https://evergreen.example.com/u/3f9a2c7d"

    tomorrow = SAMPLE_TODAY + dt.timedelta(days=1)
    yesterday = SAMPLE_TODAY - dt.timedelta(days=1)
    if "promise" in spec.parts:
        promised = yesterday if template == "broken_promise" else tomorrow
        context["promise"] = {"amount": amount_due, "promised_date": promised}
    if "instalment" in spec.parts or "plan" in spec.parts:
        each = (person["balance"] / 6).quantize(Decimal("0.01"))
        dates = [SAMPLE_TODAY + dt.timedelta(days=3 + 30 * (n - 2)) for n in range(1, 7)]
        context["plan"] = {"instalments": [{"amount": each, "due_date": d} for d in dates]}
        context["instalment"] = {"amount": each, "due_date": dates[1], "number": 2, "count": 6}
    if "visit" in spec.parts:
        visit_day = SAMPLE_TODAY + dt.timedelta(days=3)
        context["visit"] = {
            "visit_at": dt.datetime.combine(visit_day, dt.time(14, 30), tzinfo=tz),
            "collector_name": person["collector_name"],
            "collector_id": "FC-2048",
        }
    if "payment" in spec.parts:
        paid = (amount_due / 2).quantize(Decimal("0.01"))
        context["payment"] = {
            "amount": paid,
            "paid_at": dt.datetime.combine(SAMPLE_TODAY, dt.time(9, 12), tzinfo=tz),
            "amount_due_after": amount_due - paid,
        }
    return context


# -- preview overrides ---------------------------------------------------------------------
# JSON cannot carry Decimal, date or datetime; these paths are converted back from strings.

_DECIMALS: Final = {
    "loan.amount_due",
    "loan.balance",
    "promise.amount",
    "instalment.amount",
    "payment.amount",
    "payment.amount_due_after",
    "plan.instalments.*.amount",
}
_DATES: Final = {
    "loan.due_date",
    "promise.promised_date",
    "instalment.due_date",
    "plan.instalments.*.due_date",
}
_DATETIMES: Final = {"visit.visit_at", "payment.paid_at"}
_INTEGERS: Final = {"loan.days_past_due", "instalment.number", "instalment.count"}


def merge_context(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` laid over it, dictionaries merged key by key."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_context(current, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _convert(path: str, value: Any) -> Any:
    try:
        if path in _DECIMALS and not isinstance(value, Decimal):
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError
            return Decimal(str(value))
        if path in _DATES and isinstance(value, str):
            return dt.date.fromisoformat(value)
        if path in _DATETIMES and isinstance(value, str):
            moment = dt.datetime.fromisoformat(value)
            if moment.tzinfo is None:
                raise ValueError
            return moment
        if path in _INTEGERS and not isinstance(value, int):
            return int(value)
    except (ValueError, InvalidOperation, TypeError) as exc:
        expected = (
            "a decimal amount"
            if path in _DECIMALS
            else "an ISO date"
            if path in _DATES
            else "an ISO date-time with its UTC offset"
            if path in _DATETIMES
            else "an integer"
        )
        raise RenderError(f"context.{path} must be {expected}, got {value!r}") from exc
    return value


def coerce_context(context: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Turn the JSON strings of known amount, date and time fields into their real types."""
    result: dict[str, Any] = {}
    for key, value in context.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            result[key] = coerce_context(value, f"{path}.")
        elif isinstance(value, list):
            result[key] = [
                coerce_context(item, f"{path}.*.") if isinstance(item, Mapping) else item
                for item in value
            ]
        else:
            result[key] = _convert(path, value)
    return result
