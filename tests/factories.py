"""Loan-system events as the webhook receives them (SPEC §4)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

_ids = itertools.count(1)


def event_id() -> str:
    return f"evt-{next(_ids):06d}-{dt.datetime.now(dt.UTC).timestamp():.6f}"


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def envelope(
    kind: str, data: dict[str, Any], occurred_at: dt.datetime | None = None, id: str | None = None
) -> dict[str, Any]:
    return {
        "id": id or event_id(),
        "type": kind,
        "occurred_at": iso(occurred_at or dt.datetime.now(dt.UTC)),
        "data": data,
    }


def borrower_upserted(
    borrower_id: str,
    *,
    timezone: str | None = None,
    phones: list[str] | None = None,
    email: str | None = None,
    locale: str = "en-US",
    name: str = "Alex Chen",
    sms: bool = True,
    email_consent: bool = True,
    tags: list[str] | None = None,
    address: dict[str, str] | None = None,
    occurred_at: dt.datetime | None = None,
) -> dict[str, Any]:
    borrower: dict[str, Any] = {
        "id": borrower_id,
        "name": name,
        "locale": locale,
        "phones": phones if phones is not None else ["+15005550006"],
        "consent": {"sms": sms, "email": email_consent},
        "tags": tags or [],
    }
    if email is not None:
        borrower["email"] = email
    if timezone is not None:
        borrower["timezone"] = timezone
    if address is not None:
        borrower["address"] = address
    return envelope("borrower.upserted", {"borrower": borrower}, occurred_at)


def loan_updated(
    loan_id: str,
    borrower_id: str,
    *,
    days_past_due: int,
    amount_due: str = "250.00",
    balance: str = "1800.00",
    currency: str = "USD",
    occurred_at: dt.datetime | None = None,
    due_date: dt.date | None = None,
) -> dict[str, Any]:
    moment = occurred_at or dt.datetime.now(dt.UTC)
    due = due_date or (moment.date() - dt.timedelta(days=days_past_due))
    return envelope(
        "loan.updated",
        {
            "loan": {
                "id": loan_id,
                "borrower_id": borrower_id,
                "product": "personal_loan",
                "currency": currency,
                "amount_due": amount_due,
                "balance": balance,
                "days_past_due": days_past_due,
                "due_date": due.isoformat(),
                "account_number": "6222020012345678",
            }
        },
        moment,
    )


def payment_received(
    loan_id: str, *, amount: str, amount_due_after: str, occurred_at: dt.datetime | None = None
) -> dict[str, Any]:
    moment = occurred_at or dt.datetime.now(dt.UTC)
    return envelope(
        "payment.received",
        {
            "loan_id": loan_id,
            "payment_id": f"pay-{next(_ids)}",
            "amount": amount,
            "paid_at": iso(moment),
            "amount_due_after": amount_due_after,
        },
        moment,
    )


def zone_at_local_hour(hour: int, now: dt.datetime | None = None) -> str:
    """An IANA fixed-offset zone in which it is now `hour` o'clock (Etc/GMT-N is UTC+N)."""
    now = now or dt.datetime.now(dt.UTC)
    offset = (hour - now.hour) % 24
    if offset > 14:
        offset -= 24
    if offset == 0:
        return "Etc/GMT"
    return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"
