"""Campaigns at scale (issue 18): preview, create + launch, dispatch and pause of a campaign
reaching every open loan of a generated book on PostgreSQL, against the Procfile processes
as they are (one `web`, two `worker`, one `clock`), beside the raw PostgreSQL rates of the
same run.

    .venv/bin/python bench/bench_campaigns.py [--loans 1000000] [--seed 1]
        [--dispatch-seconds 60] [--cadence-loans 20000] [--profile DIR]

What it does, in order:

1. creates a database of its own on 127.0.0.1:5432 (dropped at the end) and claims a Redis
   database of its own (as the tests do), runs `outreach db upgrade`;
2. measures the raw PostgreSQL rates: COPY of loan-shaped and of message-shaped rows into
   copies of `loans` and `messages` (same columns and indexes), an executemany INSERT of
   message-shaped rows in batches of 1,000, and single-row insert+commit;
3. loads a book of `--loans` open loans with COPY straight into the tables (borrowers in
   zh-CN, zh-TW and en-US across Asia/Shanghai, Asia/Taipei and a dozen US zones, with
   phone numbers of those places, emails, a share without consent, opted out, invalid,
   restricted — dispute, cease_contact, bankruptcy, deceased, attorney, inconvenient
   times —, promises pending, kept and broken, payment plans active and broken, payments,
   field visits, closed and current loans beside the open ones, loans in every stage),
   then VACUUM ANALYZE, and times a raw read of the segment's join (the rows a preview
   must read at the least);
4. starts `outreach web`, 2 x `outreach worker`, `outreach clock` with the simulated
   providers, and records every process's peak resident memory (VmHWM) all along;
5. cadence phase: plans the cadence of `--cadence-loans` loans of borrowers in daytime
   zones with the service's own planner (`plan_batch`, as applying a `loan.updated` does)
   and measures their dispatch (messages handed to the simulated provider per second, from
   the sent_at of the rows) — the cadence rate the campaign's is compared with;
6. over HTTP (aiohttp): creates a campaign with an empty segment (every open loan), channel
   sms, the two shipped campaign templates as variants, holdout 10 %; times its preview;
   times create + launch (one transaction: every message row exists when it answers, and
   the rows are counted to check); measures the campaign's dispatch over
   `--dispatch-seconds`; pauses it while it runs and checks that no message of it got a
   sent_at after the pause's 200; resumes it, then cancels it (both timed);
7. prints a summary: every figure beside the raw rate it depends on (and the ratio), peak
   memory of every process, the CPU each phase cost per process, the SQL PostgreSQL was
   busy with (sampled from pg_stat_activity), the load average; with `--profile DIR`,
   py-spy samples the web process during preview and launch and the workers during
   dispatch, summarised as text.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import collections
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import psutil
import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import claim_redis_database, free_port  # noqa: E402

PG_SERVER = os.environ.get("BENCH_POSTGRES_SERVER", "postgresql://postgres@127.0.0.1:5432")
ADMIN_DB = "postgres"  # where CREATE/DROP DATABASE run; never the `test` database
REDIS_URL = os.environ.get("BENCH_REDIS") or claim_redis_database()
SECRET = "bench-campaigns-secret"
LINK_SECRET = "bench-link-secret-0123456789"
TOKEN = "bench-" + secrets.token_hex(8)
SHANGHAI = ZoneInfo("Asia/Shanghai")

PREVIEW_TARGET_S = 15.0
LAUNCH_TARGET_S = 60.0
MEMORY_TARGET = 1 << 30
PAUSE_TARGET_S = 1.0


# -- the book --------------------------------------------------------------------------------

_GIVEN = {
    "zh-CN": [
        "伟",
        "芳",
        "娜",
        "敏",
        "静",
        "磊",
        "洋",
        "艳",
        "勇",
        "军",
        "杰",
        "娟",
        "涛",
        "明",
        "超",
        "秀英",
        "桂英",
        "建华",
        "志强",
        "海燕",
    ],
    "zh-TW": [
        "志明",
        "淑芬",
        "家豪",
        "怡君",
        "俊傑",
        "雅婷",
        "冠宇",
        "佳穎",
        "宗翰",
        "詩涵",
        "承恩",
        "欣怡",
    ],
    "en-US": [
        "Alex",
        "Jordan",
        "Maria",
        "Sam",
        "Priya",
        "Diego",
        "Emily",
        "Marcus",
        "Grace",
        "Wei",
        "Linh",
        "Aisha",
        "Noah",
        "Olivia",
        "Liam",
        "Sofia",
        "Mateo",
        "Chloe",
        "Ethan",
        "Hannah",
    ],
}
_FAMILY = {
    "zh-CN": [
        "王",
        "李",
        "张",
        "刘",
        "陈",
        "杨",
        "黄",
        "赵",
        "吴",
        "周",
        "徐",
        "孙",
        "马",
        "朱",
        "胡",
        "郭",
    ],
    "zh-TW": ["陳", "林", "黃", "張", "李", "王", "吳", "劉", "蔡", "楊", "許", "鄭"],
    "en-US": [
        "Chen",
        "Garcia",
        "Smith",
        "Nguyen",
        "Johnson",
        "Patel",
        "Lee",
        "Brown",
        "Williams",
        "Jones",
        "Miller",
        "Davis",
        "Rodriguez",
        "Martinez",
        "Hernandez",
        "Lopez",
        "Wilson",
        "Anderson",
        "Kim",
        "Wong",
    ],
}
# (city, region, postal code prefix, weight); China is on one legal time
_CN_PLACES = [
    ("上海", "SH", "200", 8),
    ("北京", "BJ", "100", 7),
    ("广州", "GD", "510", 5),
    ("深圳", "GD", "518", 5),
    ("成都", "SC", "610", 4),
    ("杭州", "ZJ", "310", 4),
    ("武汉", "HB", "430", 3),
    ("西安", "SN", "710", 2),
]
_TW_PLACES = [
    ("台北市", "TPE", "100", 6),
    ("新北市", "NWT", "220", 6),
    ("台中市", "TXG", "400", 4),
    ("高雄市", "KHH", "800", 4),
    ("桃園市", "TAO", "330", 3),
]
# (zone, area codes, region, city, postal code prefix, weight); a region's zones (TX, FL,
# AZ, AK) may be more than one: the borrower's window must suit every one of them
_US_PLACES = [
    ("America/New_York", ("212", "646", "718"), "NY", "New York", "100", 10),
    ("America/New_York", ("617", "857"), "MA", "Boston", "021", 3),
    ("America/New_York", ("305", "786"), "FL", "Miami", "331", 3),
    ("America/New_York", ("404", "470"), "GA", "Atlanta", "303", 3),
    ("America/Chicago", ("312", "773"), "IL", "Chicago", "606", 5),
    ("America/Chicago", ("713", "832"), "TX", "Houston", "770", 5),
    ("America/Chicago", ("512", "737"), "TX", "Austin", "787", 2),
    ("America/Denver", ("303", "720"), "CO", "Denver", "802", 2),
    ("America/Phoenix", ("602", "480"), "AZ", "Phoenix", "850", 2),
    ("America/Los_Angeles", ("213", "310", "323"), "CA", "Los Angeles", "900", 8),
    ("America/Los_Angeles", ("415", "628"), "CA", "San Francisco", "941", 4),
    ("America/Los_Angeles", ("206", "425"), "WA", "Seattle", "981", 3),
    ("Pacific/Honolulu", ("808",), "HI", "Honolulu", "968", 1),
    ("America/Anchorage", ("907",), "AK", "Anchorage", "995", 1),
]
CURRENCY = {"zh-CN": "CNY", "zh-TW": "TWD", "en-US": "USD"}
AMOUNT_SCALE = {"CNY": 7, "TWD": 30, "USD": 1}
PRODUCTS = ["personal_loan", "credit_card", "auto_loan", "consumer_instalment"]
CLOSED_REASONS = ["paid_off", "settled", "charged_off", "sold"]
EMAIL_DOMAINS = ["mail.example", "example.com", "example.net", "inbox.example"]
# (stage, days past due from, to, share of open loans)
STAGES = [
    ("pre_due", -3, 0, 8),
    ("early", 1, 15, 32),
    ("negotiation", 16, 45, 25),
    ("late", 46, 89, 20),
    ("pre_legal", 90, 720, 15),
]
# per borrower, in this order of precedence for one draw
RESTRICTIONS = [
    ("dispute", True, 0.015),
    ("dispute", False, 0.005),  # resolved
    ("cease_contact", True, 0.008),
    ("bankruptcy", True, 0.004),
    ("deceased", True, 0.001),
    ("attorney", True, 0.003),
    ("inconvenient_times", True, 0.015),
]
INCONVENIENT_WINDOWS = [
    '[{"start": "12:00:00", "end": "14:00:00", "days": [1, 2, 3, 4, 5]}]',
    '[{"start": "08:00:00", "end": "10:00:00", "days": [1, 2, 3, 4, 5]}]',
    '[{"start": "18:00:00", "end": "21:00:00", "days": [1, 2, 3, 4, 5, 6, 7]}]',
    '[{"start": "08:00:00", "end": "21:00:00", "days": [6, 7]}]',
]

BORROWER_COLUMNS = (
    "id, name, locale, email, timezone, address_country, address_region, address_city, "
    "address_postal_code, consent_sms, consent_email, tags, state_as_of, created_at, updated_at"
)
LOAN_COLUMNS = (
    "id, borrower_id, product, currency, amount_due, balance, days_past_due, due_date, "
    "account_number, closed_reason, state_as_of, created_at, updated_at"
)
COPY_COLUMNS = {
    "borrowers": BORROWER_COLUMNS,
    "borrower_phones": "borrower_id, position, phone, facts",
    "loans": LOAN_COLUMNS,
    "opt_outs": "channel, recipient, borrower_id, opted_out, source, updated_at",
    "invalid_recipients": "channel, recipient, code, recorded_at",
    "contact_restrictions": "borrower_id, restriction, active, windows, state_as_of, updated_at",
    "promises": "id, loan_id, amount, promised_date, created_at",
    "payment_plans": "id, loan_id, instalments, created_at",
    "payments": "id, loan_id, amount, paid_at, amount_due_after",
    "field_visits": "id, loan_id, visit_at, collector_name, collector_id, created_at",
    "messages": (
        "id, idempotency_key, purpose, borrower_id, loan_id, stage, channel, template, "
        "template_version, locale, recipient, body, subject, text, segments, encoding, send_at, "
        "status, reason, refs, provider_id, cap_reserved_at, sent_at, attempts, needs_human, "
        "created_at, updated_at"
    ),
    "message_events": "message_id, at, status, reason, detail",
}
# the message log of the weeks before: what cadence sent each open loan (one SMS for most,
# an email for some), by stage
HISTORY_TEMPLATES = {
    "pre_due": "pre_due_reminder",
    "early": "early_first_notice",
    "negotiation": "negotiation_invitation",
    "late": "late_formal_notice",
    "pre_legal": "pre_legal_notice",
}
HISTORY_SMS = {
    "zh-CN": "【海港信贷】您尾号5678的账户已逾期，应还金额请于方便时处理。回复TD退订。",
    "zh-TW": "【海港信貸】您尾號5678的帳戶已逾期，請於方便時處理應繳金額。回覆T取消。",
    "en-US": (
        "Harbor Lending: your account ending 5678 is past due. Pay at "
        "pay.harborlending.example/en or call 1-888-555-0142. Reply STOP to opt out."
    ),
}


NULL = "\\N"  # COPY's text format
# numbers are made from the borrower's index (unique, as the unique opt-out rows need); a
# second number from the index plus this
SECOND = 5_000_000


def _ts(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S+00")


def _weighted(items: Sequence[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], list[int]]:
    return list(items), [item[-1] for item in items]


def _zones_of(timezone: str | None, country: str | None, region: str | None, phones: list[str]):
    """The borrower's candidate zones as the service works them out (its own functions)."""
    from outreach.domain import Address
    from outreach.policy.zones import address_zones, phone_zones

    names: list[str] = []
    if timezone:
        names.append(timezone)
    if country:
        names.extend(address_zones(Address(country, region, None, None)))
    for phone in phones:
        names.extend(phone_zones(phone))
    return frozenset(names) or frozenset({"Asia/Shanghai"})


@dataclass
class BookStats:
    rows: collections.Counter[str] = field(default_factory=collections.Counter)
    borrowers: int = 0
    open_loans: int = 0
    # per borrower index: the id of its set of candidate zones (for choosing daytime ones)
    zone_set_of: array.array = field(default_factory=lambda: array.array("H"))
    zone_sets: list[frozenset[str]] = field(default_factory=list)
    # per borrower index: 1 when nothing stands in the way of an SMS (consent, no opt-out,
    # no restriction, no promise or plan), for the cadence phase
    plain: bytearray = field(default_factory=bytearray)


class Book:
    """A generated book, reproducible from a seed, as text lines for COPY, by chunks of
    borrowers. Borrower i has id B{i:07d} and its first open loan L{i:07d}."""

    def __init__(self, loans: int, seed: int, now: dt.datetime) -> None:
        self.loans = loans
        self.rnd = random.Random(seed)
        self.now = now
        # the loan system's nightly report: 01:00 in Beijing, the latest before now
        local = now.astimezone(SHANGHAI)
        report = local.replace(hour=1, minute=0, second=0, microsecond=0)
        if report > local:
            report -= dt.timedelta(days=1)
        self.as_of = report.astimezone(dt.UTC)
        self.today = report.date()
        self.as_of_text = _ts(self.as_of)
        self.day_texts = [_ts(self.as_of - dt.timedelta(days=d, hours=3)) for d in range(800)]
        self.stats = BookStats()
        self._zone_set_ids: dict[frozenset[str], int] = {}
        self._place_zones: dict[tuple[Any, ...], frozenset[str]] = {}
        self.cn = _weighted(_CN_PLACES)
        self.tw = _weighted(_TW_PLACES)
        self.us = _weighted(_US_PLACES)
        self.stage_table = _weighted(STAGES)
        self._payment = 0

    def _zone_set(self, key: tuple[Any, ...], zones: Callable[[], frozenset[str]]) -> int:
        found = self._place_zones.get(key)
        if found is None:
            found = self._place_zones[key] = zones()
        index = self._zone_set_ids.get(found)
        if index is None:
            index = self._zone_set_ids[found] = len(self.stats.zone_sets)
            self.stats.zone_sets.append(found)
        return index

    def chunks(self, size: int = 20_000) -> Iterator[dict[str, list[str]]]:
        index = 0
        while self.stats.open_loans < self.loans:
            lines: dict[str, list[str]] = {table: [] for table in COPY_COLUMNS}
            for _ in range(size):
                if self.stats.open_loans >= self.loans:
                    break
                self._borrower(index, lines)
                index += 1
            self.stats.borrowers = index
            for table, rows in lines.items():
                self.stats.rows[table] += len(rows)
            yield lines

    def _us_phone(self, place: tuple[Any, ...], n: int) -> str:
        """A number of the place's area codes; unique for n below 8,000,000."""
        area = self.rnd.choice(place[1])
        return f"+1{area}{200 + n // 10000 % 800}{n % 10000:04d}"

    def _borrower(self, i: int, out: dict[str, list[str]]) -> None:
        rnd = self.rnd
        borrower_id = f"B{i:07d}"
        draw = rnd.random()
        locale = "zh-CN" if draw < 0.5 else "zh-TW" if draw < 0.7 else "en-US"
        # where the borrower lives: mostly where the language is spoken; some abroad
        lives = {"zh-CN": "CN", "zh-TW": "TW", "en-US": "US"}[locale]
        abroad = rnd.random()
        if locale != "en-US" and abroad < 0.05:
            lives = "US"
        elif locale == "en-US" and abroad < 0.02:
            lives = "CN"
        if locale == "en-US":
            name = f"{rnd.choice(_GIVEN[locale])} {rnd.choice(_FAMILY[locale])}"
        else:
            name = rnd.choice(_FAMILY[locale]) + rnd.choice(_GIVEN[locale])
        timezone = country = region = city = postal = None
        phones: list[str] = []
        if lives == "CN":
            place = rnd.choices(self.cn[0], self.cn[1])[0]
            phones.append(f"+861{rnd.choice('35789')}{i:09d}")
            if rnd.random() < 0.6:
                timezone = "Asia/Shanghai"
            if rnd.random() < 0.7:
                country, region, city = "CN", place[1], place[0]
                postal = f"{place[2]}{rnd.randrange(1000):03d}"
            if rnd.random() < 0.05:
                phones.append(f"+861{rnd.choice('35789')}{SECOND + i:09d}")
            zkey: tuple[Any, ...] = ("CN", timezone)
        elif lives == "TW":
            place = rnd.choices(self.tw[0], self.tw[1])[0]
            phones.append(f"+8869{i:08d}")
            if rnd.random() < 0.8:
                timezone = "Asia/Taipei"
            if rnd.random() < 0.8:
                country, region, city = "TW", place[1], place[0]
                postal = f"{place[2]}{rnd.randrange(100):02d}"
            zkey = ("TW", timezone)
        else:
            place = rnd.choices(self.us[0], self.us[1])[0]
            phones.append(self._us_phone(place, i))
            if rnd.random() < 0.85:
                timezone = place[0]
            if rnd.random() < 0.9:
                country, region, city = "US", place[2], place[3]
                postal = f"{place[4]}{rnd.randrange(100):02d}"
            zkey = ("US", place[3], timezone, country)
            if rnd.random() < 0.08:
                # a second number from another state: the borrower may be in either place
                other = rnd.choices(self.us[0], self.us[1])[0]
                phones.append(self._us_phone(other, SECOND + i))
                zkey = (*zkey, other[3])
        key_phones = list(phones)
        self.stats.zone_set_of.append(
            self._zone_set(zkey, lambda: _zones_of(timezone, country, region, key_phones))
        )
        email = None
        if rnd.random() < 0.85:
            email = f"user{i}.{rnd.randrange(100)}@{rnd.choice(EMAIL_DOMAINS)}"
        consent_draw = rnd.random()
        consent_sms = "f" if consent_draw < 0.07 else "t"
        consent_email = "f" if 0.07 <= consent_draw < 0.19 else "t"
        tag_draw = rnd.random()
        tags = (
            '["hardship"]'
            if tag_draw < 0.07
            else '["hardship", "medical"]'
            if tag_draw < 0.08
            else '["vip"]'
            if tag_draw < 0.09
            else "[]"
        )
        created = self.day_texts[rnd.randrange(60, 800)]
        updated = self.day_texts[rnd.randrange(1, 60)]
        out["borrowers"].append(
            f"{borrower_id}\t{name}\t{locale}\t{email or NULL}\t{timezone or NULL}\t"
            f"{country or NULL}\t{region or NULL}\t{city or NULL}\t{postal or NULL}\t"
            f"{consent_sms}\t{consent_email}\t{tags}\t{updated}\t{created}\t{updated}\n"
        )
        for position, phone in enumerate(phones):
            out["borrower_phones"].append(f"{borrower_id}\t{position}\t{phone}\n")
        plain = consent_sms == "t"
        # opt-outs (a row per recipient), opt-backs-in, numbers and addresses that bounce
        optout = rnd.random()
        if optout < 0.03:
            out["opt_outs"].append(f"sms\t{phones[0]}\t{borrower_id}\tt\tsms_reply\t{updated}\n")
            plain = False
        elif optout < 0.035:
            out["opt_outs"].append(f"sms\t{phones[0]}\t{borrower_id}\tf\tsms_reply\t{updated}\n")
        if email and rnd.random() < 0.02:
            out["opt_outs"].append(
                f"email\t{email}\t{borrower_id}\tt\tunsubscribe_link\t{updated}\n"
            )
        bounce = rnd.random()
        if bounce < 0.003:
            out["invalid_recipients"].append(f"sms\t{phones[0]}\t21211\t{updated}\n")
            plain = False
        elif email and bounce < 0.005:
            out["invalid_recipients"].append(f"email\t{email}\t550\t{updated}\n")
        restriction = rnd.random()
        for kind, active, share in RESTRICTIONS:
            if restriction < share:
                windows = rnd.choice(INCONVENIENT_WINDOWS) if kind == "inconvenient_times" else None
                out["contact_restrictions"].append(
                    f"{borrower_id}\t{kind}\t{'t' if active else 'f'}\t{windows or NULL}\t"
                    f"{updated}\t{updated}\n"
                )
                plain = plain and not active
                break
            restriction -= share
        # loans: one open loan each, a second for some; closed and current ones beside
        first = self._loan(f"L{i:07d}", borrower_id, locale, out, True, phones[0], email)
        plain = first and plain
        if rnd.random() < 0.05 and self.stats.open_loans < self.loans:
            self._loan(f"L{i:07d}-2", borrower_id, locale, out, True, phones[0], email)
        extra = rnd.random()
        if extra < 0.03:
            self._loan(f"L{i:07d}-c", borrower_id, locale, out, False, closed=True)
        elif extra < 0.05:
            self._loan(f"L{i:07d}-p", borrower_id, locale, out, False, closed=False)
        self.stats.plain.append(1 if plain else 0)

    def _loan(
        self,
        loan_id: str,
        borrower_id: str,
        locale: str,
        out: dict[str, list[str]],
        open_: bool,
        phone: str | None = None,
        email: str | None = None,
        *,
        closed: bool = False,
    ) -> bool:
        """One loan row and what is recorded about it; True when nothing (promise, plan)
        pauses its dunning."""
        rnd = self.rnd
        currency = CURRENCY[locale]
        scale = AMOUNT_SCALE[currency]
        amount = rnd.randrange(100, 10_000) * scale
        balance = amount * rnd.randrange(1, 9)
        closed_reason = NULL
        if open_:
            stage = rnd.choices(self.stage_table[0], self.stage_table[1])[0]
            dpd = rnd.randint(stage[1], stage[2])
            self.stats.open_loans += 1
        elif closed:
            closed_reason = rnd.choice(CLOSED_REASONS)
            dpd = rnd.randint(0, 200)
            if closed_reason in ("paid_off", "settled"):
                amount, balance = 0, 0
        else:  # current: nothing owed now
            dpd = rnd.randint(-20, 0)
            amount = 0
        due_date = (self.today - dt.timedelta(days=dpd)).isoformat()
        created = self.day_texts[min(799, max(dpd, 0) + rnd.randrange(30, 400))]
        out["loans"].append(
            f"{loan_id}\t{borrower_id}\t{rnd.choice(PRODUCTS)}\t{currency}\t{amount}.00\t"
            f"{balance}.00\t{dpd}\t{due_date}\t{rnd.randrange(10**15, 10**16)}\t"
            f"{closed_reason}\t{self.as_of_text}\t{created}\t{self.as_of_text}\n"
        )
        if not open_:
            return False
        self._history(loan_id, borrower_id, locale, stage[0], dpd, phone, email, out)
        plain = True
        story = rnd.random()
        if dpd > 0 and story < 0.05:  # a promise pending
            promised = self.today + dt.timedelta(days=rnd.randint(1, 10))
            made = self.day_texts[rnd.randint(1, 5)]
            out["promises"].append(
                f"P{loan_id}\t{loan_id}\t{amount // 2}.00\t{promised.isoformat()}\t{made}\n"
            )
            plain = False
        elif dpd > 10 and story < 0.065:  # a promise broken
            promised = self.today - dt.timedelta(days=rnd.randint(2, 9))
            made = self.day_texts[rnd.randint(10, 15)]
            out["promises"].append(
                f"P{loan_id}\t{loan_id}\t{amount // 2}.00\t{promised.isoformat()}\t{made}\n"
            )
        elif dpd > 10 and story < 0.075:  # a promise kept (paid after it was made)
            promised = self.today - dt.timedelta(days=rnd.randint(0, 5))
            made = self.day_texts[rnd.randint(6, 10)]
            out["promises"].append(
                f"P{loan_id}\t{loan_id}\t{amount // 4}.00\t{promised.isoformat()}\t{made}\n"
            )
            self._pay(loan_id, amount // 4, self.day_texts[rnd.randint(1, 5)], amount, out)
        elif dpd > 15 and story < 0.105:  # a payment plan, active or (a third) broken
            broken = rnd.random() < 0.33
            agreed_days = rnd.randint(10, 50)
            agreed = self.as_of - dt.timedelta(days=agreed_days)
            count = rnd.randint(3, 6)
            part = max(amount // count, 1)
            instalments = []
            for n in range(count):
                due = (agreed + dt.timedelta(days=7 + 30 * n)).date()
                instalments.append(f'{{"due_date": "{due.isoformat()}", "amount": "{part}.00"}}')
                if due < self.today and not broken:
                    paid_at = agreed + dt.timedelta(days=5 + 30 * n)
                    self._pay(loan_id, part, _ts(paid_at), amount, out)
            out["payment_plans"].append(
                f"PP{loan_id}\t{loan_id}\t[{', '.join(instalments)}]\t{_ts(agreed)}\n"
            )
            plain = plain and broken
        elif story < 0.185:  # a partial payment in the last two months
            self._pay(
                loan_id, max(amount // 10, 1), self.day_texts[rnd.randint(1, 60)], amount, out
            )
        if dpd > 30 and rnd.random() < 0.005:  # a field visit announced
            visit = self.now + dt.timedelta(days=rnd.randint(3, 14), hours=rnd.randint(0, 8))
            out["field_visits"].append(
                f"V{loan_id}\t{loan_id}\t{_ts(visit)}\t{rnd.choice(_FAMILY['zh-CN'])}专员\t"
                f"C{rnd.randrange(1000):04d}\t{self.day_texts[1]}\n"
            )
        return plain

    def _history(
        self,
        loan_id: str,
        borrower_id: str,
        locale: str,
        stage: str,
        dpd: int,
        phone: str | None,
        email: str | None,
        out: dict[str, list[str]],
    ) -> None:
        """The loan's messages of the last 30 days: an SMS for 60 %, an email for 30 %;
        mostly delivered, some undelivered or failed, a few withheld."""
        rnd = self.rnd
        template = HISTORY_TEMPLATES[stage]
        for number, (channel, share) in enumerate((("sms", 0.6), ("email", 0.3))):
            recipient = phone if channel == "sms" else email
            if recipient is None or rnd.random() >= share or (dpd < -1 and channel == "sms"):
                continue
            message_id = f"msg_h{loan_id}{number}"
            sent = self.now - dt.timedelta(seconds=rnd.randrange(3600, 30 * 86400))
            outcome = rnd.random()
            status, reason = ("delivered", "provider_status")
            if outcome < 0.03:
                status, reason = "undelivered", "provider_status"
            elif outcome < 0.05:
                status, reason = "failed", "provider_error"
            elif outcome < 0.09:
                status, reason = "suppressed", "frequency_cap"
            handed = status in ("delivered", "undelivered")
            sent_text = _ts(sent) if handed else NULL
            planned = _ts(sent - dt.timedelta(hours=1))
            if channel == "sms":
                body, subject, text = HISTORY_SMS[locale], NULL, NULL
                segments, encoding = (1, "UCS-2") if locale != "en-US" else (1, "GSM-7")
            else:
                body, subject, text = NULL, "Your account / 您的账户", HISTORY_SMS[locale]
                segments, encoding = NULL, NULL
            provider = f"SMh{loan_id}{number}" if handed else NULL
            touched = _ts(sent + dt.timedelta(seconds=5))
            out["messages"].append(
                f"{message_id}\thistory:{loan_id}:{number}\tdunning\t{borrower_id}\t{loan_id}\t"
                f"{stage}\t{channel}\t{template}\t1\t{locale}\t{recipient}\t{body}\t{subject}\t"
                f"{text}\t{segments}\t{encoding}\t{planned}\t{status}\t{reason}\t{{}}\t{provider}\t"
                f"{sent_text}\t{sent_text}\t1\tf\t{planned}\t{touched}\n"
            )
            steps = out["message_events"]
            steps.append(f"{message_id}\t{planned}\tscheduled\tplanned\t{NULL}\n")
            if handed:
                steps.append(f"{message_id}\t{sent_text}\tsent\taccepted\tprovider_id={provider}\n")
                steps.append(f"{message_id}\t{touched}\t{status}\tprovider_status\t{NULL}\n")
            else:
                steps.append(f"{message_id}\t{_ts(sent)}\t{status}\t{reason}\t{NULL}\n")

    def _pay(self, loan_id: str, amount: int, at: str, due: int, out: dict[str, list[str]]) -> None:
        self._payment += 1
        out["payments"].append(f"PAY{self._payment:08d}\t{loan_id}\t{amount}.00\t{at}\t{due}.00\n")


def _with_phone_facts(lines: list[str]) -> str:
    from outreach.policy.zones import phone_facts_text

    return "".join(
        f"{line.rstrip(chr(10))}\t{phone_facts_text(line.rsplit(chr(9), 1)[1].strip())}\n"
        for line in lines
    )


def load_book(database_url: str, loans: int, seed: int, now: dt.datetime) -> tuple[Book, float]:
    """COPY the book into its tables: every table but two in a connection of its own, all
    at once as the chunks are generated; the phones and the timeline steps (foreign keys on
    borrowers and messages) once those are committed."""
    book = Book(loans, seed, now)
    started = time.perf_counter()
    later = {
        table: tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 - read after
        for table in ("borrower_phones", "message_events")
    }
    with contextlib.ExitStack() as stack:
        copies = {}
        for table, columns in COPY_COLUMNS.items():
            if table in later:
                continue
            connection = stack.enter_context(psycopg.connect(database_url))
            cursor = stack.enter_context(connection.cursor())
            copies[table] = stack.enter_context(cursor.copy(f"COPY {table} ({columns}) FROM STDIN"))
        for chunk in book.chunks():
            for table, rows in chunk.items():
                if table in later:
                    later[table].writelines(rows)
                elif rows:
                    copies[table].write("".join(rows))
            print(
                f"\r  loading: {book.stats.open_loans:,} of {loans:,} open loans",
                end="",
                flush=True,
            )
    for spool in later.values():
        spool.seek(0)
    # what each number says of where its owner is, as the webhook stores it beside the
    # number (`policy.zones.phone_facts_text`): worked out on every core, a block at a time
    with (
        psycopg.connect(database_url) as connection,
        connection.cursor() as cursor,
        multiprocessing.get_context("fork").Pool() as pool,
    ):
        columns = COPY_COLUMNS["borrower_phones"]
        with cursor.copy(f"COPY borrower_phones ({columns}) FROM STDIN") as copy:
            blocks = iter(lambda: later["borrower_phones"].readlines(1 << 20), [])
            for block in pool.imap(_with_phone_facts, blocks):
                copy.write(block)
        columns = COPY_COLUMNS["message_events"]
        with cursor.copy(f"COPY message_events ({columns}) FROM STDIN") as copy:
            while block := later["message_events"].read(1 << 20):
                copy.write(block)
    for spool in later.values():
        spool.close()
    print()
    return book, time.perf_counter() - started


# -- raw PostgreSQL rates --------------------------------------------------------------------


def _loan_lines(count: int, prefix: str) -> list[str]:
    return [
        f"{prefix}{n:08d}\tB{n % 50000:07d}\tpersonal_loan\tCNY\t{1000 + n % 9000}.00\t"
        f"{5000 + n % 9000}.00\t{n % 120}\t2026-11-01\t6222020012345678\t\\N\t"
        f"2026-12-02 17:00:00+00\t2026-06-01 00:00:00+00\t2026-12-02 17:00:00+00\n"
        for n in range(count)
    ]


MESSAGE_COLUMNS = (
    "id, idempotency_key, purpose, borrower_id, loan_id, campaign_id, variant, stage, "
    "channel, template, template_version, locale, recipient, send_at, status, reason, refs, "
    "attempts, needs_human, created_at, updated_at"
)
_MESSAGE_ROW = (
    "{id}",
    "campaign:cmp_raw:{borrower}",
    "campaign",
    "{borrower}",
    "L{borrower}",
    "cmp_raw",
    "hardship_relief",
    "early",
    "sms",
    "campaign_hardship_relief",
    None,
    "zh-CN",
    "+8613812345678",
    dt.datetime(2026, 12, 3, 9, tzinfo=dt.UTC),
    "scheduled",
    "planned",
    "{}",
    0,
    False,
    dt.datetime(2026, 12, 3, 9, tzinfo=dt.UTC),
    dt.datetime(2026, 12, 3, 9, tzinfo=dt.UTC),
)


def _message_values(count: int, prefix: str) -> list[tuple[Any, ...]]:
    rows = []
    for n in range(count):
        borrower = f"{prefix}B{n:08d}"
        row = list(_MESSAGE_ROW)
        row[0] = f"msg_{prefix}{n:012d}"
        row[1] = f"campaign:cmp_raw:{borrower}"
        row[3] = borrower
        row[4] = f"L{borrower}"
        rows.append(tuple(row))
    return rows


def _message_lines(count: int, prefix: str) -> list[str]:
    lines = []
    for row in _message_values(count, prefix):
        fields = [
            "\\N"
            if value is None
            else _ts(value)
            if isinstance(value, dt.datetime)
            else ("t" if value else "f")
            if isinstance(value, bool)
            else str(value)
            for value in row
        ]
        lines.append("\t".join(fields) + "\n")
    return lines


@dataclass
class RawRates:
    copy_loans: float = 0.0
    copy_messages: float = 0.0
    executemany_messages: float = 0.0
    insert_commit: float = 0.0

    def line(self) -> str:
        return (
            f"COPY loan rows {self.copy_loans:,.0f}/s, COPY message rows "
            f"{self.copy_messages:,.0f}/s, executemany INSERT message rows "
            f"{self.executemany_messages:,.0f}/s, single-row insert+commit "
            f"{self.insert_commit:,.0f}/s"
        )


def raw_rates(database_url: str, tag: str, rows: int = 200_000) -> RawRates:
    """The machine's raw PostgreSQL rates into copies of `loans` and `messages` (same columns
    and indexes), on one connection; the copies are dropped after."""
    rates = RawRates()
    loan_text = "".join(_loan_lines(rows, f"R{tag}"))
    message_text = "".join(_message_lines(rows, f"c{tag}"))
    values = _message_values(60_000, f"e{tag}")
    with psycopg.connect(database_url, autocommit=True) as connection:
        for table, like in (("raw_loans", "loans"), ("raw_messages", "messages")):
            connection.execute(f"DROP TABLE IF EXISTS {table}")
            connection.execute(f"CREATE TABLE {table} (LIKE {like} INCLUDING ALL)")
        with connection.cursor() as cursor:
            started = time.perf_counter()
            statement = f"COPY raw_loans ({LOAN_COLUMNS}) FROM STDIN"
            with connection.transaction(), cursor.copy(statement) as copy:
                copy.write(loan_text)
            rates.copy_loans = rows / (time.perf_counter() - started)
            started = time.perf_counter()
            statement = f"COPY raw_messages ({MESSAGE_COLUMNS}) FROM STDIN"
            with connection.transaction(), cursor.copy(statement) as copy:
                copy.write(message_text)
            rates.copy_messages = rows / (time.perf_counter() - started)
            placeholders = ", ".join(["%s"] * len(_MESSAGE_ROW))
            insert = f"INSERT INTO raw_messages ({MESSAGE_COLUMNS}) VALUES ({placeholders})"  # noqa: S608
            started = time.perf_counter()
            for start in range(0, len(values), 1000):
                with connection.transaction():
                    cursor.executemany(insert, values[start : start + 1000])
            rates.executemany_messages = len(values) / (time.perf_counter() - started)
        connection.execute("CREATE TEMP TABLE raw_single (id serial primary key, body text)")
        count = 0
        started = time.perf_counter()
        while time.perf_counter() - started < 2.0:
            connection.execute("INSERT INTO raw_single (body) VALUES (%s)", ("x" * 200,))
            count += 1
        rates.insert_commit = count / (time.perf_counter() - started)
        for table in ("raw_loans", "raw_messages"):
            connection.execute(f"DROP TABLE {table}")
    return rates


SEGMENT_SQL = """
SELECT loans.id, loans.borrower_id, loans.product, loans.amount_due, loans.days_past_due,
       loans.state_as_of, borrowers.locale, borrowers.tags
FROM loans JOIN borrowers ON borrowers.id = loans.borrower_id
WHERE loans.closed_reason IS NULL AND loans.amount_due > 0
ORDER BY loans.borrower_id, loans.id
"""


def raw_segment_read(database_url: str) -> tuple[int, float]:
    """Rows/s of the segment's join (the query `segment_candidates` runs) read through a
    server-side cursor in batches of 5,000: the least a preview has to read."""
    with psycopg.connect(database_url) as connection:
        started = time.perf_counter()
        count = 0
        with connection.cursor(name="raw_segment") as cursor:
            cursor.itersize = 5000
            cursor.execute(SEGMENT_SQL)
            for _ in cursor:
                count += 1
        return count, count / (time.perf_counter() - started)


# -- processes, memory, CPU, what PostgreSQL is busy with ---------------------------------------


def _vm_hwm(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Watch:
    """Every process of the run (the Procfile processes and their children): the peak of
    each (VmHWM, sampled twice a second, so a process that exits keeps its last figure)."""

    def __init__(self, roots: dict[str, subprocess.Popen[bytes]]) -> None:
        self.roots = roots
        self.names: dict[int, str] = {}
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        self._thread.join(timeout=5)

    def pids(self, role: str | None = None) -> list[int]:
        return [pid for pid, name in self.names.items() if role is None or name.startswith(role)]

    def sample(self) -> None:
        for name, process in self.roots.items():
            try:
                root = psutil.Process(process.pid)
                family = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for number, member in enumerate(family):
                label = name if number == 0 else f"{name}/child{number}"
                self.names.setdefault(member.pid, label)
                peak = _vm_hwm(member.pid)
                if peak is not None:
                    self.peaks[member.pid] = max(self.peaks.get(member.pid, 0), peak)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def peak_of(self, role: str) -> int:
        return max((self.peaks.get(pid, 0) for pid in self.pids(role)), default=0)


def _cpu(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


class ActivitySampler:
    """Samples pg_stat_activity of the bench database every 50 ms while a phase is on: which
    statements PostgreSQL was running (and waiting on), and the CPU of its backends."""

    def __init__(self, database_url: str, name: str) -> None:
        self.database_url = database_url
        self.name = name
        self.phase: str | None = None
        self.samples: dict[str, int] = collections.Counter()
        self.busy: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.backends: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def backend_pids(self) -> list[int]:
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            rows = connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.name,)
            ).fetchall()
        return [row[0] for row in rows]

    def _run(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            while not self._stop.wait(0.05):
                phase = self.phase
                if phase is None:
                    continue
                rows = connection.execute(
                    "SELECT pid, coalesce(wait_event_type, ''), query FROM pg_stat_activity "
                    "WHERE datname = %s AND state = 'active' AND pid <> pg_backend_pid() "
                    "AND query NOT LIKE 'SELECT pid%%'",
                    (self.name,),
                ).fetchall()
                self.samples[phase] += 1
                for pid, waiting, query in rows:
                    self.backends.add(pid)
                    text = re.sub(r"\s+", " ", query).strip()[:140]
                    label = f"{text}" + (f"  [waiting: {waiting}]" if waiting else "")
                    self.busy[phase][label] += 1

    def report(self, phase: str, top: int = 6) -> list[str]:
        samples = self.samples.get(phase, 0)
        if not samples:
            return []
        lines = []
        busy = self.busy.get(phase, collections.Counter())
        for label, count in busy.most_common(top):
            lines.append(f"    {100 * count / samples:5.1f} %  {label}")
        return lines


@dataclass
class Phase:
    """CPU seconds each kind of process spent in a phase, and the load average."""

    name: str
    watch: Watch
    sampler: ActivitySampler
    started: float = 0.0
    cpu_start: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pg_pids: list[int] = field(default_factory=list)

    def _now(self) -> dict[str, float]:
        own = os.times()
        return {
            "web": _cpu(self.watch.pids("web")),
            "workers": _cpu(self.watch.pids("worker")),
            "clock": _cpu(self.watch.pids("clock")),
            "postgres": _cpu(self.pg_pids),
            "bench": own.user + own.system,
        }

    def __enter__(self) -> Phase:
        self.watch.sample()
        self.pg_pids = self.sampler.backend_pids()
        self.cpu_start = self._now()
        self.sampler.phase = self.name
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.started
        self.sampler.phase = None
        # backends opened during the phase count from their start
        known = set(self.pg_pids)
        self.pg_pids = sorted(known | set(self.sampler.backend_pids()))
        end = self._now()
        self.cpu = {key: end[key] - self.cpu_start.get(key, 0.0) for key in end}
        self.load = os.getloadavg()
        self.watch.sample()

    def cpu_line(self) -> str:
        parts = ", ".join(f"{key} {value:.1f}" for key, value in self.cpu.items())
        return f"CPU s: {parts} (load average {self.load[0]:.2f})"


class Profiler:
    """py-spy record of a process (and its children) while a phase runs, in py-spy's raw
    (collapsed stacks) format, summarised as text."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.reports: dict[str, list[str]] = {}

    @contextlib.contextmanager
    def record(self, label: str, pid: int, *, subprocesses: bool = False) -> Iterator[None]:
        if self.directory is None:
            yield
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        out = self.directory / f"{label}.txt"
        command = [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "50",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ]
        if subprocesses:
            command.append("--subprocesses")
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        try:
            yield
        finally:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
            if out.exists():
                self.reports[label] = summarise_stacks(out)

    def lines(self) -> list[str]:
        result = []
        for label, lines in self.reports.items():
            result.append(f"  py-spy, {label}:")
            result.extend(lines)
        return result


_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("path")
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match.group('function')} ({path})"


def summarise_stacks(path: Path, top: int = 22) -> list[str]:
    """Inclusive and self sample shares per function from py-spy's raw output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(frame) for frame in stack.split(";")]
        # py-spy puts the thread (and process) first
        frames = [f for f in frames if not f.startswith(("thread ", "process "))]
        if not frames:
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    if not total:
        return ["    (no samples)"]
    lines = [f"    {total} samples; inclusive (outreach frames, and the heaviest others):"]
    shown = 0
    for name, count in inclusive.most_common():
        if shown >= top:
            break
        if count / total < 0.02:
            break
        if "threading.py" in name or "concurrent/futures" in name or "anyio" in name:
            continue
        if name.startswith(("<module>", "run (", "_bootstrap")):
            continue
        lines.append(f"      {100 * count / total:5.1f} %  {name}")
        shown += 1
    lines.append("    self (leaf frames):")
    for name, count in own.most_common(12):
        lines.append(f"      {100 * count / total:5.1f} %  {name}")
    return lines


def start_processes(env: dict[str, str], logs: Path) -> tuple[dict[str, Any], int]:
    port = free_port()
    commands = {
        "web": ["web", "--host", "127.0.0.1", "--port", str(port)],
        "worker.1": ["worker"],
        "worker.2": ["worker"],
        "clock": ["clock"],
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    for name, args in commands.items():
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        processes[name] = subprocess.Popen(
            [sys.executable, "-m", "outreach", *args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return processes, port


def stop_processes(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_ready(base: str, processes: dict[str, subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 120
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            for name, process in processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}")
            try:
                async with session.get(f"{base}/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("web did not become ready")


# -- the phases ------------------------------------------------------------------------------


def in_window(zones: frozenset[str], now: dt.datetime, margin: dt.timedelta) -> bool:
    """Whether every zone is inside 08:00-21:00 from now until `margin` later."""
    for name in zones:
        zone = ZoneInfo(name)
        for moment in (now, now + margin):
            local = moment.astimezone(zone)
            if not 8 <= local.hour < 21:
                return False
    return True


@dataclass
class DispatchFigures:
    sent: int = 0
    seconds: float = 0.0
    by_channel: dict[str, int] = field(default_factory=dict)
    due: int = 0
    first_after_s: float | None = None

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


IN_FLIGHT = "status IN ('queued', 'sending')"
DUE = "status IN ('scheduled', 'deferred') AND send_at <= now()"


def measure_dispatch(
    connection: psycopg.Connection[Any],
    where: str,
    params: dict[str, Any],
    since: dt.datetime,
    window: float,
    *,
    leave: float = 0.0,
    timeout: float = 900.0,
) -> tuple[DispatchFigures, dt.datetime, dt.datetime]:
    """Waits for the first message matching `where` handed over after `since`, then for
    `window` seconds or until what is left due of them is `leave` (a share) of what was due
    at the first look; the rate is the messages whose sent_at falls in [first, first +
    window] (or [first, last]) over that span."""
    started = time.monotonic()
    first: dt.datetime | None = None
    while time.monotonic() - started < timeout:
        row = connection.execute(
            f"SELECT min(sent_at) FROM messages WHERE sent_at >= %(since)s AND {where}",  # noqa: S608
            {**params, "since": since},
        ).fetchone()
        if row and row[0] is not None:
            first = row[0]
            break
        time.sleep(0.2)
    if first is None:
        raise RuntimeError("nothing was dispatched")
    first_after = (first - since).total_seconds()
    last_check = 0.0
    due_at_first: int | None = None
    checking = True
    while True:
        time.sleep(0.5)
        now = dt.datetime.now(dt.UTC)
        if (now - first).total_seconds() >= window:
            break
        if checking and time.monotonic() - last_check >= 1:
            last_check = time.monotonic()
            waiting = connection.execute(
                f"SELECT count(*) FROM messages WHERE {IN_FLIGHT} AND {where}",  # noqa: S608
                params,
            ).fetchone()[0]
            due = connection.execute(
                f"SELECT count(*) FROM messages WHERE {DUE} AND {where}",  # noqa: S608
                params,
            ).fetchone()[0]
            if due_at_first is None:
                due_at_first = waiting + due
            if waiting + due <= leave * due_at_first:
                break
            # counting a large backlog costs PostgreSQL what dispatch needs: with one that
            # takes long to count, the window alone ends the measure
            checking = time.monotonic() - last_check < 0.5
    end_row = connection.execute(
        f"SELECT max(sent_at) FROM messages WHERE sent_at >= %(since)s AND {where}",  # noqa: S608
        {**params, "since": since},
    ).fetchone()
    last = min(end_row[0], first + dt.timedelta(seconds=window))
    span = "sent_at >= %(first)s AND sent_at <= %(last)s"
    rows = connection.execute(
        f"SELECT channel, count(*) FROM messages WHERE {span} AND {where} GROUP BY 1",  # noqa: S608
        {**params, "first": first, "last": last},
    ).fetchall()
    figures = DispatchFigures(
        sent=sum(count for _, count in rows),
        seconds=max((last - first).total_seconds(), 0.001),
        by_channel=dict(rows),
        first_after_s=first_after,
    )
    return figures, first, last


def cadence_phase(
    database_url: str, book: Book, count: int, seed: int
) -> tuple[int, int, float, dt.datetime]:
    """Plan the cadence of `count` loans of borrowers in daytime zones with the service's
    planner, in batches as applying events does; returns (loans, messages due now,
    seconds, when planning began)."""
    from outreach import policy as pol
    from outreach.service.planner import PlanWork, plan_batch
    from outreach.store.db import make_engine, make_session_factory, transaction

    now = dt.datetime.now(dt.UTC)
    daytime = {
        index
        for index, zones in enumerate(book.stats.zone_sets)
        if in_window(zones, now, dt.timedelta(minutes=30))
    }
    chosen = [
        i
        for i, zone_set in enumerate(book.stats.zone_set_of)
        if zone_set in daytime and book.stats.plain[i]
    ]
    random.Random(seed).shuffle(chosen)
    chosen = sorted(chosen[:count])
    if not chosen:
        return 0, 0, 0.0, now
    policy = pol.load_policy(ROOT / "schedules" / "default.yaml")
    engine = make_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    sessions = make_session_factory(engine)
    started = time.perf_counter()
    # in batches as applying events plans, in one transaction: the workers see the messages
    # all at once, so their dispatch is measured apart from the planning
    with transaction(sessions) as session:
        for start in range(0, len(chosen), 256):
            work = [PlanWork((f"L{i:07d}",)) for i in chosen[start : start + 256]]
            plan_batch(session, policy, work, dt.datetime.now(dt.UTC))
    seconds = time.perf_counter() - started
    engine.dispose()
    with psycopg.connect(database_url) as connection:
        due = connection.execute(
            "SELECT count(*) FROM messages WHERE purpose = 'dunning' AND send_at <= now() "
            "AND created_at >= %s AND status IN "
            "('scheduled', 'deferred', 'queued', 'sending', 'sent', 'delivered')",
            (now,),
        ).fetchone()[0]
    return len(chosen), due, seconds, now


class Api:
    def __init__(self, base: str) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {TOKEN}"}

    async def post(
        self, session: aiohttp.ClientSession, path: str, body: Any = None
    ) -> tuple[int, Any, float, float]:
        """(status, JSON, seconds, time.time() when the answer was read)."""
        started = time.perf_counter()
        async with session.post(
            f"{self.base}{path}", json=body if body is not None else {}, headers=self.headers
        ) as response:
            document = await response.json(content_type=None)
            answered = time.time()
            return response.status, document, time.perf_counter() - started, answered

    async def get(self, session: aiohttp.ClientSession, path: str) -> tuple[int, Any, float]:
        started = time.perf_counter()
        async with session.get(f"{self.base}{path}", headers=self.headers) as response:
            document = await response.json(content_type=None)
            return response.status, document, time.perf_counter() - started


def _check(status: int, document: Any, expected: int, what: str) -> None:
    if status != expected:
        raise RuntimeError(f"{what}: {status} {json.dumps(document)[:2000]}")


def campaign_body() -> dict[str, Any]:
    return {
        "name": "Bench: every open loan",
        "channel": "sms",
        "segment": {},
        "start_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        "variants": [
            {"name": "hardship_relief", "template": "campaign_hardship_relief", "weight": 1},
            {"name": "restructuring", "template": "campaign_restructuring_offer", "weight": 1},
        ],
        "holdout_percent": 10,
    }


def _mib(value: float) -> str:
    return f"{value / (1 << 20):,.0f} MiB"


def _ratio(value: float, raw: float) -> str:
    return f"{value / raw:.4f}" if raw else "n/a"


# -- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loans", type=int, default=1_000_000, help="open loans in the book")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--dispatch-seconds", type=float, default=60.0, help="campaign dispatch window"
    )
    parser.add_argument(
        "--cadence-loans", type=int, help="loans planned for the cadence phase (default 2 %%)"
    )
    parser.add_argument("--profile", type=Path, help="py-spy raw profiles into this folder")
    parser.add_argument("--keep", action="store_true", help="keep the database (prints its URL)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]

    def interrupted(number: int, _frame: object) -> None:
        # stopped from outside: clean up (processes, database) on the way out
        raise SystemExit(f"stopped by signal {number}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "outreach"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    revision += f" ({len(dirty.splitlines())} files under outreach/ changed)" if dirty else ""
    cadence_loans = args.cadence_loans or max(2000, min(20_000, args.loans // 50))

    run_started = time.perf_counter()
    load_at_start = os.getloadavg()
    name = f"outreach_bench_campaigns_{uuid.uuid4().hex[:8]}"
    database_url = f"{PG_SERVER}/{name}"
    with psycopg.connect(f"{PG_SERVER}/{ADMIN_DB}", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    redis.Redis.from_url(REDIS_URL).flushdb()
    logs = Path(tempfile.mkdtemp(prefix="bench-campaigns-"))
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OUTREACH_", "TWILIO_", "SMTP_", "EMAIL_"))
        },
        "OUTREACH_DATABASE_URL": database_url,
        "OUTREACH_REDIS_URL": REDIS_URL,
        "OUTREACH_WEBHOOK_SECRET": SECRET,
        "OUTREACH_LINK_SECRET": LINK_SECRET,
        "OUTREACH_OPS_TOKENS": f"{TOKEN}:admin:bench",
        "OUTREACH_SMS_PROVIDER": "simulated",
        "OUTREACH_EMAIL_PROVIDER": "simulated",
        "OUTREACH_SMS_RATE": "100000",
        "OUTREACH_LOG_LEVEL": "WARNING",
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    watch: Watch | None = None
    sampler: ActivitySampler | None = None
    profiler = Profiler(args.profile)
    out: list[str] = []
    failures: list[str] = []
    try:
        upgrade = subprocess.run(
            [sys.executable, "-m", "outreach", "db", "upgrade"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if upgrade.returncode != 0:
            raise RuntimeError(f"outreach db upgrade failed: {upgrade.stderr}")

        print(f"database {name}, Redis {REDIS_URL}, logs in {logs}")
        raw_before = raw_rates(database_url, "a")
        print(f"raw rates (before): {raw_before.line()}")

        now = dt.datetime.now(dt.UTC)
        book, load_seconds = load_book(database_url, args.loans, args.seed, now)
        total_rows = sum(book.stats.rows.values())
        print(
            f"book: {book.stats.borrowers:,} borrowers, {book.stats.open_loans:,} open loans, "
            f"{total_rows:,} rows in {load_seconds:.1f} s ({total_rows / load_seconds:,.0f} rows/s)"
        )
        started = time.perf_counter()
        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute("VACUUM ANALYZE")
        vacuum_seconds = time.perf_counter() - started
        segment_rows, segment_rate = raw_segment_read(database_url)
        print(
            f"VACUUM ANALYZE {vacuum_seconds:.1f} s; raw read of the segment join: "
            f"{segment_rows:,} rows at {segment_rate:,.0f} rows/s"
        )

        processes, port = start_processes(env, logs)
        base = f"http://127.0.0.1:{port}"
        asyncio.run(wait_ready(base, processes))
        watch = Watch(processes)
        watch.start()
        sampler = ActivitySampler(database_url, name)
        sampler.start()
        processes_started = time.perf_counter()
        print(f"processes up: {', '.join(f'{n} {p.pid}' for n, p in processes.items())}")

        monitor = psycopg.connect(database_url, autocommit=True)

        # -- cadence phase ------------------------------------------------------------------
        with Phase("cadence planning", watch, sampler) as planning:
            planned, cadence_due, plan_seconds, plan_started = cadence_phase(
                database_url, book, cadence_loans, args.seed
            )
        cadence_planned_at = dt.datetime.now(dt.UTC)
        print(
            f"cadence: {planned:,} loans planned in {plan_seconds:.1f} s, {cadence_due:,} "
            "messages due now"
        )
        with Phase("cadence dispatch", watch, sampler) as cadence_dispatch:
            cadence, _, _ = measure_dispatch(
                monitor, "purpose = 'dunning'", {}, plan_started, window=600.0
            )
        print(
            f"cadence dispatch: {cadence.sent:,} in {cadence.seconds:.1f} s = "
            f"{cadence.rate:,.0f}/s {cadence.by_channel}"
        )

        # -- the campaign over HTTP ---------------------------------------------------------
        # autovacuum is off on this server: what it would have done after the cadence phase
        monitor.execute("ANALYZE messages, message_events")
        api = Api(base)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)

        async def campaign() -> dict[str, Any]:
            result: dict[str, Any] = {}
            async with aiohttp.ClientSession(timeout=timeout) as session:
                status, created, create_s, _ = await api.post(
                    session, "/v1/campaigns", campaign_body()
                )
                _check(status, created, 201, "create")
                campaign_id = created["id"]
                result.update(id=campaign_id, create_s=create_s)
                with (
                    Phase("preview", watch, sampler) as phase,
                    profiler.record("web-preview", processes["web"].pid),
                ):
                    status, preview, preview_s, _ = await api.post(
                        session, f"/v1/campaigns/{campaign_id}/preview"
                    )
                _check(status, preview, 200, "preview")
                result.update(preview=preview, preview_s=preview_s, preview_phase=phase)
                print(f"preview: {preview_s:.1f} s, targeted {preview['targeted']:,}")
                launched_since = dt.datetime.now(dt.UTC)
                with (
                    Phase("launch", watch, sampler) as phase,
                    profiler.record("web-launch", processes["web"].pid),
                ):
                    status, launched, launch_s, launched_at = await api.post(
                        session, f"/v1/campaigns/{campaign_id}/launch"
                    )
                _check(status, launched, 200, "launch")
                result.update(
                    launched=launched,
                    launch_s=launch_s,
                    launch_phase=phase,
                    launched_at=launched_at,
                    launched_since=launched_since,
                )
                print(f"launch: {launch_s:.1f} s, status {launched['status']}")
            return result

        figures = asyncio.run(campaign())
        campaign_id = figures["id"]
        # autovacuum is off on this server: analyse the table launching grew, as autovacuum
        # would within its minute
        started = time.perf_counter()
        monitor.execute("ANALYZE messages, message_events, campaign_members")
        analyze_after_launch = time.perf_counter() - started
        rows = monitor.execute(
            "SELECT count(*), count(send_at), count(*) FILTER (WHERE status IN "
            "('scheduled', 'deferred', 'queued', 'sending', 'sent', 'delivered')), "
            "count(*) FILTER (WHERE status = 'suppressed') FROM messages "
            "WHERE campaign_id = %s",
            (campaign_id,),
        ).fetchone()
        members, holdouts = monitor.execute(
            "SELECT count(*), count(*) FILTER (WHERE arm = 'holdout') FROM campaign_members "
            "WHERE campaign_id = %s",
            (campaign_id,),
        ).fetchone()
        steps = monitor.execute(
            "SELECT count(*) FROM message_events JOIN messages ON messages.id = "
            "message_events.message_id WHERE messages.campaign_id = %s "
            "AND message_events.at <= %s",
            (campaign_id, dt.datetime.fromisoformat(figures["launched"]["launched_at"])),
        ).fetchone()[0]
        counts = figures["launched"].get("launch") or {}
        expected_rows = counts.get("targeted", 0) - counts.get("holdout", 0)
        message_rows, with_send_at, live_rows, suppressed_rows = rows
        if message_rows != expected_rows or with_send_at != message_rows:
            failures.append(
                f"launch wrote {message_rows:,} message rows ({with_send_at:,} with send_at), "
                f"expected {expected_rows:,} (targeted - holdout)"
            )
        if holdouts != counts.get("holdout", 0):
            failures.append(f"{holdouts:,} holdout rows, launch counted {counts.get('holdout')}")

        # -- dispatch, pause, resume, cancel -------------------------------------------------
        where = "campaign_id = %(campaign)s"
        params = {"campaign": campaign_id}
        with (
            Phase("campaign dispatch", watch, sampler) as dispatch_phase,
            profiler.record("workers-dispatch", processes["worker.1"].pid, subprocesses=True),
        ):
            dispatch, dispatch_first, dispatch_last = measure_dispatch(
                monitor,
                where,
                params,
                figures["launched_since"],
                window=args.dispatch_seconds,
                leave=0.5,
            )
        print(
            f"campaign dispatch: {dispatch.sent:,} in {dispatch.seconds:.1f} s = "
            f"{dispatch.rate:,.0f}/s"
        )
        all_sent = monitor.execute(
            "SELECT purpose, count(*) FROM messages WHERE sent_at >= %s AND sent_at <= %s "
            "GROUP BY 1 ORDER BY 2 DESC",
            (dispatch_first, dispatch_last),
        ).fetchall()
        # the clock's claim of due rows, as it runs against this backlog (no FOR UPDATE: the
        # plan is the same, and nothing is locked)
        claim_plan = [
            row[0]
            for row in monitor.execute(
                "EXPLAIN (ANALYZE, BUFFERS) SELECT id FROM messages WHERE status IN "
                "('scheduled', 'deferred') AND send_at <= now() ORDER BY send_at, id LIMIT 500"
            ).fetchall()
        ]
        still_due = monitor.execute(
            "SELECT count(*) FROM messages WHERE campaign_id = %s AND (status IN "
            "('queued', 'sending') OR (status IN ('scheduled', 'deferred') AND send_at <= now()))",
            (campaign_id,),
        ).fetchone()[0]

        def held_by_pause() -> dict[str, int]:
            rows = monitor.execute(
                "SELECT status || coalesce('/' || reason, ''), count(*) FROM messages "
                "WHERE campaign_id = %s AND status IN ('scheduled', 'deferred', 'queued', "
                "'sending') GROUP BY 1",
                (campaign_id,),
            ).fetchall()
            return dict(rows)

        async def control() -> dict[str, Any]:
            result: dict[str, Any] = {"attempts": {}}

            async def move(session: aiohttp.ClientSession, name: str) -> tuple[float, float]:
                """POST the transition; a 503 ("try again") is tried again, up to 5 times.
                Returns (seconds of the answer that succeeded, when it was read)."""
                attempts = result["attempts"].setdefault(name, [])
                for _ in range(5):
                    status, document, seconds, answered = await api.post(
                        session, f"/v1/campaigns/{campaign_id}/{name}"
                    )
                    attempts.append((status, round(seconds, 2), str(document)[:200]))
                    if status != 503:
                        _check(status, document, 200, name)
                        return seconds, answered
                    await asyncio.sleep(1)
                raise RuntimeError(f"{name}: 503 five times: {attempts}")

            async with aiohttp.ClientSession(timeout=timeout) as session:
                # sends in the 2 s before the pause: dispatch was running
                result["asked_at"] = time.time()
                sampler.phase = "pause"
                result["pause_s"], result["paused_at"] = await move(session, "pause")
                sampler.phase = "pause, resume, cancel"
                await asyncio.sleep(5)
                result["held_by_pause"] = await asyncio.to_thread(held_by_pause)
                sampler.phase = "resume"
                result["resume_s"], result["resumed_at"] = await move(session, "resume")
                sampler.phase = "pause, resume, cancel"
                await asyncio.sleep(10)
                try:
                    sampler.phase = "cancel"
                    result["cancel_s"], result["cancelled_at"] = await move(session, "cancel")
                    sampler.phase = "pause, resume, cancel"
                except RuntimeError as error:
                    failures.append(str(error)[:500])
                    result["cancel_s"], result["cancelled_at"] = None, time.time()
                await asyncio.sleep(3)
                status, shown, show_s = await api.get(session, f"/v1/campaigns/{campaign_id}")
                _check(status, shown, 200, "get")
                result.update(show_s=show_s)
            return result

        with (
            Phase("pause, resume, cancel", watch, sampler) as control_phase,
            profiler.record("web-control", processes["web"].pid),
        ):
            control_figures = asyncio.run(control())

        def at(seconds: float) -> dt.datetime:
            return dt.datetime.fromtimestamp(seconds, dt.UTC)

        paused_at = at(control_figures["paused_at"])
        resumed_at = at(control_figures["resumed_at"])
        asked_at = at(control_figures["asked_at"])
        cancelled_at = at(control_figures["cancelled_at"])
        window_rows = monitor.execute(
            "SELECT count(*) FILTER (WHERE sent_at >= %(a)s - interval '2 seconds' "
            "AND sent_at < %(a)s), "
            "count(*) FILTER (WHERE sent_at >= %(a)s AND sent_at <= %(p)s), "
            "count(*) FILTER (WHERE sent_at > %(p)s AND sent_at < %(r)s), "
            "max(sent_at) FILTER (WHERE sent_at < %(r)s), "
            "count(*) FILTER (WHERE sent_at >= %(r)s AND sent_at <= %(c)s), "
            "count(*) FILTER (WHERE sent_at > %(c)s), max(sent_at) "
            "FROM messages WHERE campaign_id = %(id)s AND sent_at >= %(a)s - interval '2 seconds'",
            {"a": asked_at, "p": paused_at, "r": resumed_at, "c": cancelled_at, "id": campaign_id},
        ).fetchone()
        (
            sent_before_pause,
            sent_while_pausing,
            sent_while_paused,
            latest_before_resume,
            sent_after_resume,
            sent_after_cancel,
            latest,
        ) = window_rows
        pause_margin = (
            (latest_before_resume - paused_at).total_seconds() if latest_before_resume else None
        )
        cancel_margin = (latest - cancelled_at).total_seconds() if latest else None
        if sent_while_paused:
            failures.append(f"{sent_while_paused} campaign messages sent after the pause's 200")
        late_sends: list[str] = []
        if sent_after_cancel:
            failures.append(f"{sent_after_cancel} campaign messages sent after the cancel's 200")
            for message_id, status, reason, sent_at in monitor.execute(
                "SELECT id, status, reason, sent_at FROM messages WHERE campaign_id = %s "
                "AND sent_at > %s ORDER BY sent_at LIMIT 3",
                (campaign_id, cancelled_at),
            ).fetchall():
                steps_of = monitor.execute(
                    "SELECT at, status, reason, detail FROM message_events WHERE message_id = %s "
                    "ORDER BY id",
                    (message_id,),
                ).fetchall()
                late_sends.append(
                    f"    {message_id} {status}/{reason} sent_at {sent_at:%H:%M:%S.%f}: "
                    + "; ".join(
                        f"{a:%H:%M:%S.%f} {st}/{rs} {dl or ''}".strip()
                        for a, st, rs, dl in steps_of
                    )
                )
        final_counts = dict(
            monitor.execute(
                "SELECT status || coalesce('/' || reason, ''), count(*) FROM messages "
                "WHERE campaign_id = %s GROUP BY 1 ORDER BY 2 DESC",
                (campaign_id,),
            ).fetchall()
        )
        replanned, replanned_loans, replan_first, replan_last = monitor.execute(
            "SELECT count(*), count(DISTINCT loan_id), min(created_at), max(created_at) "
            "FROM messages WHERE purpose = 'dunning' AND created_at > %s",
            (cadence_planned_at,),
        ).fetchone()
        monitor.close()
        watch.stop()
        sampler.stop()
        clock_uptime = time.perf_counter() - processes_started
        raw_after = raw_rates(database_url, "b")
        print(f"raw rates (after): {raw_after.line()}")
    finally:
        stop_processes(processes)
        if sampler is not None:
            sampler.stop()
        if not args.keep:
            with psycopg.connect(f"{PG_SERVER}/{ADMIN_DB}", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print(f"kept {database_url}")
        redis.Redis.from_url(REDIS_URL).flushdb()

    # -- the summary ------------------------------------------------------------------------
    def mean(a: float, b: float) -> float:
        return (a + b) / 2

    copy_loans = mean(raw_before.copy_loans, raw_after.copy_loans)
    copy_messages = mean(raw_before.copy_messages, raw_after.copy_messages)
    executemany = mean(raw_before.executemany_messages, raw_after.executemany_messages)
    insert_commit = mean(raw_before.insert_commit, raw_after.insert_commit)
    preview = figures["preview"]
    preview_s = figures["preview_s"]
    launch_s = figures["launch_s"]
    create_launch_s = figures["create_s"] + launch_s
    targeted = preview["targeted"]
    written = message_rows + steps + members
    peak = max(watch.peaks.values(), default=0)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    with psycopg.connect(f"{PG_SERVER}/{ADMIN_DB}") as connection:
        server = connection.info.server_version
    out.append(
        f"campaigns benchmark, {stamp}, {os.cpu_count()} cores, load average at start "
        f"{load_at_start[0]:.2f} / end {os.getloadavg()[0]:.2f}; PostgreSQL {server}; "
        f"code at {revision}"
    )
    out.append(
        f"book: {book.stats.borrowers:,} borrowers, {book.stats.open_loans:,} open loans; rows "
        + ", ".join(f"{table} {count:,}" for table, count in book.stats.rows.items())
    )
    out.append(
        f"  loaded by COPY in {load_seconds:.1f} s ({total_rows / load_seconds:,.0f} rows/s, "
        f"generation included), VACUUM ANALYZE {vacuum_seconds:.1f} s"
    )
    out.append(f"raw PostgreSQL, before: {raw_before.line()}")
    out.append(f"raw PostgreSQL, after:  {raw_after.line()}")
    out.append(
        f"raw read of the segment join (server-side cursor, 5,000 a fetch): "
        f"{segment_rows:,} rows in {segment_rows / segment_rate:.1f} s = {segment_rate:,.0f} rows/s"
    )
    out.append("")
    out.append(
        f"preview: {preview_s:.1f} s (target {PREVIEW_TARGET_S:.0f} s: "
        f"{'met' if preview_s <= PREVIEW_TARGET_S else 'NOT met'}); {targeted:,} targeted = "
        f"{targeted / preview_s:,.0f} borrowers/s; ratio to the raw segment read "
        f"{_ratio(targeted / preview_s, segment_rate)}, to raw COPY of loan rows "
        f"{_ratio(targeted / preview_s, copy_loans)}"
    )
    out.append(
        f"  eligible {preview['eligible']:,}, holdout {preview['holdout']:,}, variants "
        f"{preview['variants']}, suppressed {preview['suppressed']}, deferred "
        f"{preview['deferred']}"
    )
    out.append(f"  {figures['preview_phase'].cpu_line()}")
    out.extend(sampler.report("preview"))
    out.append(
        f"create + launch: {create_launch_s:.1f} s (create {figures['create_s'] * 1000:.0f} ms, "
        f"launch {launch_s:.1f} s; target {LAUNCH_TARGET_S:.0f} s: "
        f"{'met' if create_launch_s <= LAUNCH_TARGET_S else 'NOT met'})"
    )
    out.append(
        f"  rows when it answered: {message_rows:,} messages (all with send_at; "
        f"{live_rows:,} to send, {suppressed_rows:,} suppressed), {steps:,} timeline steps, "
        f"{members:,} members ({holdouts:,} held out) = {written:,} rows, "
        f"{written / launch_s:,.0f} rows/s; ratio to "
        f"raw executemany {_ratio(written / launch_s, executemany)}, to raw COPY of message rows "
        f"{_ratio(written / launch_s, copy_messages)} (those rows alone by COPY: "
        f"{written / copy_messages:.1f} s)"
    )
    out.append(f"  {figures['launch_phase'].cpu_line()}")
    out.append(f"  (ANALYZE after launch, as autovacuum would: {analyze_after_launch:.1f} s)")
    out.extend(sampler.report("launch"))
    out.append(
        f"peak memory (VmHWM): largest process {_mib(peak)} (target 1 GiB: "
        f"{'met' if peak <= MEMORY_TARGET else 'NOT met'}); "
        + ", ".join(
            f"{watch.names[pid]} {_mib(value)}"
            for pid, value in sorted(watch.peaks.items(), key=lambda item: watch.names[item[0]])
        )
    )
    out.append("")
    out.append(
        f"cadence dispatch ({planned:,} loans planned by plan_batch in {plan_seconds:.1f} s, "
        f"{cadence_due:,} messages due): {cadence.sent:,} handed over in "
        f"{cadence.seconds:.1f} s = {cadence.rate:,.0f}/s {cadence.by_channel}; ratio to raw "
        f"insert+commit {_ratio(cadence.rate, insert_commit)}"
    )
    out.append(f"  {cadence_dispatch.cpu_line()}")
    out.extend(sampler.report("cadence dispatch", top=4))
    verdict = "no slower" if dispatch.rate >= cadence.rate * 0.95 else "SLOWER"
    out.append(
        f"campaign dispatch: {dispatch.sent:,} handed over in {dispatch.seconds:.1f} s = "
        f"{dispatch.rate:,.0f}/s (first {dispatch.first_after_s:.1f} s after the launch was "
        f"asked); ratio to cadence {_ratio(dispatch.rate, cadence.rate)} ({verdict}), to raw "
        f"insert+commit {_ratio(dispatch.rate, insert_commit)}; {still_due:,} still due"
    )
    out.append(
        "  everything handed over in that span, by purpose: "
        + ", ".join(f"{purpose} {count:,}" for purpose, count in all_sent)
    )
    out.append(f"  {dispatch_phase.cpu_line()}")
    out.append("  the clock's claim of due rows (EXPLAIN ANALYZE, after the window):")
    out.extend(f"    {line}" for line in claim_plan if "->" in line or "Execution" in line)
    out.extend(sampler.report("campaign dispatch", top=5))
    out.append(
        f"pause: answered in {control_figures['pause_s'] * 1000:.0f} ms (target 1 s: "
        f"{'met' if control_figures['pause_s'] <= PAUSE_TARGET_S else 'NOT met'}); "
        f"{sent_before_pause} sent in the 2 s before it was asked, {sent_while_pausing} "
        f"while it was answering, {sent_while_paused} after its 200 (target 0 within 1 s: "
        f"{'met' if not sent_while_paused else 'NOT met'}); latest sent_at minus the 200: "
        + (f"{pause_margin * 1000:+.0f} ms" if pause_margin is not None else "none sent")
    )
    if latest_before_resume:
        halted_after = (latest_before_resume - asked_at).total_seconds()
        out.append(
            f"  the last hand-over came {halted_after * 1000:+.0f} ms after the pause was asked"
        )
    out.extend(sampler.report("pause", top=4))
    out.append(
        f"resume: answered in {control_figures['resume_s']:.2f} s, {sent_after_resume:,} sent "
        f"in the {(cancelled_at - resumed_at).total_seconds():.0f} s until the cancel"
    )
    attempts = control_figures["attempts"]
    out.append(
        "  held while paused (5 s after the pause's 200): "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(control_figures["held_by_pause"].items()))
    )
    out.append(
        "  answers: "
        + "; ".join(
            f"{name} " + ", ".join(f"{status} in {seconds} s" for status, seconds, _ in tries)
            for name, tries in attempts.items()
        )
    )
    out.extend(sampler.report("resume", top=4))
    cancel_s = control_figures["cancel_s"]
    out.append(
        ("cancel: FAILED" if cancel_s is None else f"cancel: answered in {cancel_s:.1f} s")
        + f", {sent_after_cancel} sent "
        "after its 200"
        + (f" (latest sent_at minus the 200: {cancel_margin * 1000:+.0f} ms)" if latest else "")
        + f"; GET of the campaign {control_figures['show_s']:.2f} s"
    )
    out.extend(sampler.report("cancel", top=4))
    out.extend(late_sends)
    out.append(f"  {control_phase.cpu_line()}")
    out.extend(sampler.report("pause, resume, cancel", top=4))
    out.append(
        "  messages of the campaign at the end: "
        + ", ".join(f"{key} {value:,}" for key, value in final_counts.items())
    )
    replan_line = (
        f"clock's re-plan of every open loan (its first 10 min after it starts): {replanned:,} "
        f"dunning messages of {replanned_loans:,} loans planned besides the cadence phase's"
    )
    if replanned and replan_last > replan_first:
        span = (replan_last - replan_first).total_seconds()
        replan_line += (
            f", from {replan_first:%H:%M:%S} to {replan_last:%H:%M:%S} UTC "
            f"({replanned_loans / span:,.0f} loans/s: a pass over {book.stats.open_loans:,} "
            f"open loans would take {book.stats.open_loans / (replanned_loans / span) / 60:,.0f} "
            "min)"
        )
    out.append(f"{replan_line}; processes up {clock_uptime:.0f} s")
    out.append(f"  {planning.cpu_line()} (cadence planning, in the bench process)")
    out.append(f"whole run {time.perf_counter() - run_started:.0f} s")
    out.extend(profiler.lines())
    if failures:
        out.append("FAILURES: " + "; ".join(failures))
    print()
    print("\n".join(out))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
