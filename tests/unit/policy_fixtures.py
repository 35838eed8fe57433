"""Builders for policy tests: the default policy, borrowers and loans with plain values."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from outreach.domain import Address, BorrowerState, LoanState
from outreach.policy import Policy, load_policy, load_policy_text

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY_PATH = REPO_ROOT / "schedules" / "default.yaml"

UTC = dt.UTC
SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")


@functools.cache
def default_policy() -> Policy:
    return load_policy(DEFAULT_POLICY_PATH)


def default_document() -> dict[str, Any]:
    """The default policy as parsed YAML, to be changed by a test and loaded as text."""
    document: dict[str, Any] = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    return document


def policy_from(document: dict[str, Any], name: str = "test.yaml") -> Policy:
    return load_policy_text(yaml.safe_dump(document, allow_unicode=True), name)


def borrower(**changes: Any) -> BorrowerState:
    """A Shanghai borrower reachable on both channels, with consent."""
    base = BorrowerState(
        id="B1",
        name="王芳",
        locale="zh-CN",
        phones=("+8613812345678",),
        email="wang.fang@mail.example",
        address=Address(country="CN", region="SH", city="上海"),
        consent_sms=True,
        consent_email=True,
    )
    return dataclasses.replace(base, **changes)


def us_borrower(**changes: Any) -> BorrowerState:
    base = borrower(
        id="B2",
        name="Jordan Lee",
        locale="en-US",
        phones=("+12125550142",),
        email="jordan@mail.example",
        address=Address(country="US", region="NY", city="New York"),
    )
    return dataclasses.replace(base, **changes)


def loan(now: dt.datetime, days_past_due: int = 1, **changes: Any) -> LoanState:
    """A loan `days_past_due` days late as of `now` (due date consistent with it)."""
    today = now.astimezone(SHANGHAI).date()
    base = LoanState(
        id="L1",
        borrower_id="B1",
        product="personal",
        currency="CNY",
        amount_due=Decimal("1286.40"),
        balance=Decimal("15600.00"),
        days_past_due=days_past_due,
        due_date=today - dt.timedelta(days=days_past_due),
        account_number="6222020200112233",
        as_of=now,
    )
    return dataclasses.replace(base, **changes)


def shanghai(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)
