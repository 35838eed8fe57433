"""The ops pages on a large log (issue 19): the message log with each single filter, first
page and later cursor pages, and the overview, over HTTP against the real `web` process on
PostgreSQL with `--messages` messages, beside raw rates measured in the same run.

    .venv/bin/python bench/bench_pages.py [--messages 1000000] [--seed 1] [--rounds 5]
        [--prefix auto|/ui|/v1] [--keep] [--reuse DATABASE]

What it does, in order:

1. creates a database of its own on 127.0.0.1:5432 (`outreach_bench_pages_<random>`, dropped
   at the end unless `--keep`) and claims a Redis database of its own (as the tests do);
   migrates it to the revision before the log's indexes (0006);
2. COPYs a log shaped like a real one into it: borrowers in zh-CN, zh-TW and en-US across
   fourteen zones with their phones and loans, `--messages` messages created at any minute
   of the last 60 days (every purpose, stage, channel, status and reason, the rendered text
   of the shipped templates for those that reached rendering, sent and delivery times,
   provider ids, replies flagged for a person), their timelines as the service writes them
   (planned, claimed, sending, accepted, delivered, withheld...), eight campaigns launched
   over the weeks (completed, cancelled, running, paused) with their members, inbound
   replies and a few inbox events pending, failed and dead; then VACUUM ANALYZE (autovacuum
   is off on this server);
3. upgrades to 0007 (the log's indexes, the overview's counts and the search table), timing
   it on the loaded log, and measures what it costs the two commonest writes (dispatch's
   `sending` mark filling a message's content, a delivery callback moving its status)
   before and after; then to head;
4. starts `outreach web` as the Procfile runs it (its environment: database, Redis, an ops
   token), logs in at POST /ui/login when the pages exist (else uses GET /v1/messages with
   the bearer token; `--prefix` chooses);
5. after one warm-up round, `--rounds` rounds in shuffled order of: the log with no filter
   and with each single filter (every status, channel, stage and purpose, a dozen reasons,
   every campaign, borrowers, loans, `needs_human`, `since`, `until`, day ranges, and text
   searches from a phone number to a word in every other message), each the first page and
   the three pages after it by their cursors; and the overview (`/ui/` when the pages
   exist), and the overview's store functions timed in this process;
6. prints each figure (p50, p95, max) beside the raw rates of the same run: a raw
   `SELECT * FROM messages ORDER BY id DESC LIMIT 50` by primary key and the same after a
   cursor, and GET /health over HTTP; then where the time went: for each case its SQL alone
   (EXPLAIN ANALYZE of the statement of the page's ids, `message_log.ids_statement`: for a
   text search that is the trigram index's route alone, which the service takes only after
   reading the newest messages) and the service call in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import html
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import claim_redis_database, clean_env, free_port  # noqa: E402

PG_SERVER = os.environ.get("BENCH_POSTGRES_SERVER", "postgresql://postgres@127.0.0.1:5432")
ADMIN_DB = "postgres"  # where CREATE/DROP DATABASE run; never the `test` database
REDIS_URL = os.environ.get("BENCH_REDIS") or claim_redis_database()
SECRET = "bench-pages-secret"
LINK_SECRET = "bench-link-secret-0123456789"
TOKEN = "bench-" + secrets.token_hex(8)
TARGET_MS = 300.0
PAGE_SIZE = 50
LATER_PAGES = 3
# the revision before the log's indexes: the book is loaded there, the rest timed after
BEFORE_INDEXES = "0006"
INDEXES = "0007"  # the log's indexes (a later revision is migrated to after, timed apart)
NULL = "\\N"  # COPY's text format


# -- the log ---------------------------------------------------------------------------------

# (zone or None: only the phone says, locale, country code, weight)
ZONES = [
    ("Asia/Shanghai", "zh-CN", "CN", 40),
    (None, "zh-CN", "CN", 6),
    ("Asia/Taipei", "zh-TW", "TW", 14),
    ("Asia/Hong_Kong", "zh-TW", "HK", 3),
    ("Asia/Singapore", "en-US", "SG", 2),
    ("America/New_York", "en-US", "US", 9),
    ("America/Chicago", "en-US", "US", 6),
    ("America/Denver", "en-US", "US", 2),
    ("America/Phoenix", "en-US", "US", 1),
    ("America/Los_Angeles", "en-US", "US", 8),
    ("Pacific/Honolulu", "en-US", "US", 1),
    ("America/Anchorage", "en-US", "US", 1),
    ("Europe/London", "en-US", "GB", 2),
    ("Australia/Sydney", "en-US", "AU", 2),
    (None, "en-US", "US", 3),
]
US_AREAS = {
    "America/New_York": ("212", "646", "718", "617", "305", "404"),
    "America/Chicago": ("312", "773", "713", "832", "512"),
    "America/Denver": ("303", "720"),
    "America/Phoenix": ("602", "480"),
    "America/Los_Angeles": ("213", "310", "415", "206"),
    "Pacific/Honolulu": ("808",),
    "America/Anchorage": ("907",),
    None: ("212", "312", "213"),
}


def _words(text: str) -> list[str]:
    return text.split()


GIVEN = {
    "zh-CN": _words("伟 芳 娜 敏 静 磊 洋 艳 勇 军 杰 娟 秀英 建华"),
    "zh-TW": _words("志明 淑芬 家豪 怡君 俊傑 雅婷 冠宇 佳穎 宗翰 詩涵"),
    "en-US": _words("Alex Jordan Maria Sam Priya Diego Emily Marcus Grace Linh Aisha Noah Olivia"),
}
FAMILY = {
    "zh-CN": _words("王 李 张 刘 陈 杨 黄 赵 吴 周 徐 孙 马 朱"),
    "zh-TW": _words("陳 林 黃 張 李 王 吳 劉 蔡 楊 許 鄭"),
    "en-US": _words("Chen Garcia Smith Nguyen Johnson Patel Lee Brown Williams Jones Kim Wong"),
}
EMAIL_DOMAINS = ["mail.example", "example.com", "example.net", "inbox.example"]
PRODUCTS = ["personal_loan", "credit_card", "auto_loan", "consumer_instalment"]
CURRENCY = {"zh-CN": "CNY", "zh-TW": "TWD", "en-US": "USD"}
# (stage, days past due from, to, weight)
STAGES = [
    ("pre_due", -3, 0, 8),
    ("early", 1, 15, 32),
    ("negotiation", 16, 45, 25),
    ("late", 46, 89, 20),
    ("pre_legal", 90, 720, 15),
]
STAGE_TEMPLATES = {
    "pre_due": ["pre_due_reminder"],
    "early": ["early_first_notice", "early_follow_up_1", "early_follow_up_2", "early_hardship"],
    "negotiation": ["negotiation_invitation", "negotiation_follow_up", "negotiation_hardship"],
    "late": ["late_formal_notice", "late_follow_up"],
    "pre_legal": ["pre_legal_notice"],
}
# (purpose, weight, about a loan)
PURPOSES = [
    ("dunning", 740, True),
    ("promise_reminder", 40, True),
    ("broken_promise", 20, True),
    ("instalment_reminder", 30, True),
    ("visit_notice", 10, True),
    ("payment_confirmation", 45, True),
    ("optout_confirmation", 6, False),
    ("optin_confirmation", 1, False),
    ("help_reply", 3, False),
    ("cease_confirmation", 2, False),
]
DIRECT = {"optout_confirmation", "optin_confirmation", "help_reply", "cease_confirmation"}
SUPPRESS_REASONS = [
    ("opted_out", 15),
    ("no_consent", 12),
    ("frequency_cap", 14),
    ("promise_pending", 10),
    ("payment_plan_active", 6),
    ("dispute", 5),
    ("cease_contact", 3),
    ("bankruptcy", 2),
    ("deceased", 0.5),
    ("attorney", 1.5),
    ("invalid_address", 3),
    ("no_address", 3),
    ("no_convenient_time", 2),
    ("superseded", 8),
    ("expired", 4),
    ("promise_kept", 3),
    ("instalment_paid", 3),
    ("visit_cancelled", 0.5),
    ("plan_broken", 1),
    ("already_confirmed", 0.5),
    ("content_rejected", 0.3),
]
CANCEL_REASONS = [("loan_closed", 35), ("loan_current", 40), ("stage_changed", 20)]
DEFER_REASONS = [
    ("quiet_hours", 55),
    ("frequency_cap", 20),
    ("holiday", 6),
    ("inconvenient_time", 6),
    ("event_pending", 5),
    ("rate_limited", 4),
    ("check_unavailable", 1),
]
# (days before now it was launched, share of the campaign messages, status, template)
CAMPAIGNS = [
    (55, 15, "completed", "campaign_hardship_relief"),
    (45, 20, "completed", "campaign_restructuring_offer"),
    (38, 12, "cancelled", "campaign_hardship_relief"),
    (28, 18, "completed", "campaign_restructuring_offer"),
    (20, 10, "completed", "campaign_hardship_relief"),
    (12, 15, "completed", "campaign_restructuring_offer"),
    (4, 8, "running", "campaign_hardship_relief"),
    (1, 2, "paused", "campaign_restructuring_offer"),
]
CAMPAIGN_SHARE = 0.10
REPLIES = {
    "opt_out": ["STOP", "TD", "退订", "取消", "unsubscribe"],
    "opt_in": ["START", "UNSTOP"],
    "help": ["HELP", "帮助", "INFO"],
    "other": [
        "I lost my job, can I pay next month?",
        "可以分期吗",
        "我已经还了",
        "請問可以延後嗎",
        "who is this",
        "I paid yesterday",
        "我下週發薪再還",
    ],
}

COPY_COLUMNS = {
    "campaigns": (
        "id, name, channel, template, segment, variants, start_at, end_at, "
        "throttle_per_minute, holdout_percent, status, created_by, launched_at, launched_by, "
        "finished_at, launch_counts, created_at, updated_at"
    ),
    "campaign_members": "campaign_id, borrower_id, loan_id, arm",
    "borrowers": (
        "id, name, locale, email, timezone, address_country, address_region, address_city, "
        "address_postal_code, consent_sms, consent_email, tags, state_as_of, created_at, "
        "updated_at"
    ),
    "borrower_phones": "borrower_id, position, phone, facts",
    "loans": (
        "id, borrower_id, product, currency, amount_due, balance, days_past_due, due_date, "
        "account_number, closed_reason, state_as_of, created_at, updated_at"
    ),
    "messages": (
        "id, idempotency_key, purpose, borrower_id, loan_id, campaign_id, variant, stage, "
        "channel, template, template_version, locale, recipient, body, subject, text, html, "
        "segments, encoding, send_at, status, reason, refs, provider_id, cap_reserved_at, "
        "sent_at, attempts, worker_lease, needs_human, created_at, updated_at"
    ),
    "message_events": "message_id, at, status, reason, detail",
    "inbound_replies": (
        "provider_id, channel, sender, body, borrower_id, classification, needs_human, received_at"
    ),
    "received_events": (
        "id, type, occurred_at, received_at, body, borrower_id, loan_id, outcome, detail, "
        "attempts, retry_at"
    ),
}
# tables with foreign keys on others: copied once those are committed
LATER = ("borrower_phones", "message_events")


def _ts(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _copy_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


class Picker:
    """A weighted choice, drawn from one random source."""

    def __init__(self, rnd: random.Random, items: Sequence[tuple[Any, ...]]) -> None:
        self.rnd = rnd
        self.values = [item[0] for item in items]
        self.weights = [float(item[-1]) for item in items]

    def __call__(self) -> Any:
        return self.rnd.choices(self.values, self.weights)[0]


@dataclass
class Texts:
    """The rendered text of every shipped template, channel and locale, from its sample
    context; a message's copy has the borrower's name and account digits put in."""

    found: dict[tuple[str, str, str], tuple[Any, ...]] = field(default_factory=dict)

    @classmethod
    def rendered(cls) -> Texts:
        from outreach.render import Renderer, sample_context
        from outreach.render.catalog import shipped_references

        renderer = Renderer(ROOT / "templates")
        texts = cls()
        for template, channels in shipped_references().items():
            for channel in channels:
                for locale in ("zh-CN", "zh-TW", "en-US"):
                    if not renderer.has(template, channel, locale):
                        continue
                    context = sample_context(template, channel, locale)
                    out = renderer.render(template, channel, locale, context)
                    name = context["borrower"]["name"]
                    digits = str(context["loan"]["account_number"])[-4:]
                    parts = (out.body, out.subject, out.text, out.html)
                    texts.found[(template, channel.value, locale)] = (
                        name,
                        digits,
                        parts,
                        out.segments,
                        out.encoding,
                        out.version,
                    )
        return texts

    def of(
        self, template: str, channel: str, locale: str, name: str, digits: str
    ) -> tuple[list[str], str, str, str]:
        """COPY fields body, subject, text, html; segments, encoding, version."""
        found = self.found.get((template, channel, locale))
        if found is None:
            return [NULL] * 4, NULL, NULL, NULL
        sample_name, sample_digits, parts, segments, encoding, version = found
        fields = [
            NULL
            if part is None
            else _copy_text(part.replace(sample_name, name).replace(sample_digits, digits))
            for part in parts
        ]
        return (
            fields,
            NULL if segments is None else str(segments),
            encoding or NULL,
            version or NULL,
        )


@dataclass
class LogStats:
    rows: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    borrowers: int = 0


class Log:
    """A generated log, reproducible from a seed: borrowers, loans, campaigns, messages with
    their timelines, replies, as text lines for COPY."""

    def __init__(self, messages: int, seed: int, now: dt.datetime) -> None:
        self.messages = messages
        self.rnd = rnd = random.Random(seed)
        self.seed = seed
        self.now = now
        self.borrowers = max(1000, messages // 5)
        self.stats = LogStats()
        self.texts = Texts.rendered()
        self.zone = Picker(rnd, ZONES)
        self.purpose = Picker(rnd, PURPOSES)
        self.stage = Picker(rnd, STAGES)
        self.suppress = Picker(rnd, SUPPRESS_REASONS)
        self.cancel = Picker(rnd, CANCEL_REASONS)
        self.defer = Picker(rnd, DEFER_REASONS)
        self.campaign_pick = Picker(rnd, [(i, c[1]) for i, c in enumerate(CAMPAIGNS)])
        # per borrower: (locale, zone, phone, email, name, loan stage, account digits)
        self.people: list[tuple[str, str | None, str, str | None, str, str, str]] = []
        self.campaign_ids = [f"cmp_bench{i}" for i in range(len(CAMPAIGNS))]
        self.members: set[tuple[int, int]] = set()

    # -- borrowers and loans

    def _phone(self, i: int, zone: str | None, country: str) -> str:
        if country == "CN":
            return f"+861{self.rnd.choice('35789')}{i:09d}"
        if country == "TW":
            return f"+8869{i:08d}"
        if country == "HK":
            return f"+8526{i % 10_000_000:07d}"
        if country == "SG":
            return f"+658{i % 10_000_000:07d}"
        if country == "GB":
            return f"+447{i % 1_000_000_000:09d}"
        if country == "AU":
            return f"+614{i % 100_000_000:08d}"
        area = self.rnd.choice(US_AREAS.get(zone, US_AREAS[None]))
        return f"+1{area}{200 + i // 10000 % 800}{i % 10000:04d}"

    def people_lines(self) -> Iterator[dict[str, list[str]]]:
        rnd = self.rnd
        stamp = _ts(self.now - dt.timedelta(days=61))
        for start in range(0, self.borrowers, 20_000):
            out: dict[str, list[str]] = {"borrowers": [], "borrower_phones": [], "loans": []}
            for i in range(start, min(start + 20_000, self.borrowers)):
                zone, locale, country, _ = ZONES[self.zone_index()]
                phone = self._phone(i, zone, country)
                email = (
                    f"user{i}.{rnd.randrange(100)}@{rnd.choice(EMAIL_DOMAINS)}"
                    if rnd.random() < 0.85
                    else None
                )
                if locale == "en-US":
                    name = f"{rnd.choice(GIVEN[locale])} {rnd.choice(FAMILY[locale])}"
                else:
                    name = rnd.choice(FAMILY[locale]) + rnd.choice(GIVEN[locale])
                stage, low, high, _ = STAGES[self._stage_index()]
                account = f"62220{rnd.randrange(10**13):013d}"
                self.people.append((locale, zone, phone, email, name, stage, account[-4:]))
                borrower_id = f"B{i:07d}"
                out["borrowers"].append(
                    f"{borrower_id}\t{name}\t{locale}\t{email or NULL}\t{zone or NULL}\t"
                    f"{country}\t{NULL}\t{NULL}\t{NULL}\t{'f' if rnd.random() < 0.05 else 't'}\t"
                    f"t\t[]\t{stamp}\t{stamp}\t{stamp}\n"
                )
                out["borrower_phones"].append(f"{borrower_id}\t0\t{phone}\t{NULL}\n")
                dpd = rnd.randint(low, high)
                amount = rnd.randrange(100, 5000)
                due = (self.now - dt.timedelta(days=dpd)).date().isoformat()
                out["loans"].append(
                    f"L{i:07d}\t{borrower_id}\t{rnd.choice(PRODUCTS)}\t{CURRENCY[locale]}\t"
                    f"{amount}.00\t{amount * 6}.00\t{dpd}\t{due}\t{account}\t{NULL}\t{stamp}\t"
                    f"{stamp}\t{stamp}\n"
                )
            self.stats.borrowers = len(self.people)
            yield out

    def zone_index(self) -> int:
        return self.rnd.choices(range(len(ZONES)), self.zone.weights)[0]

    def _stage_index(self) -> int:
        return self.rnd.choices(range(len(STAGES)), self.stage.weights)[0]

    def campaign_lines(self) -> dict[str, list[str]]:
        lines = []
        for number, (days, _, status, template) in enumerate(CAMPAIGNS):
            launched = self.now - dt.timedelta(days=days, hours=3)
            end = launched + dt.timedelta(days=3)
            finished = _ts(end) if status in ("completed", "cancelled") else NULL
            if status == "cancelled":
                finished = _ts(launched + dt.timedelta(hours=20))
            variants = json.dumps(
                [
                    {"name": "a", "template": template, "weight": 1},
                    {"name": "b", "template": "campaign_hardship_relief", "weight": 1},
                ]
            )
            lines.append(
                f"{self.campaign_ids[number]}\tBench campaign {number + 1}\tsms\t{template}\t"
                f'{{"stages": ["late", "pre_legal"]}}\t{variants}\t{_ts(launched)}\t{_ts(end)}\t'
                f"{NULL}\t10\t{status}\tbench\t{_ts(launched)}\tbench\t{finished}\t{NULL}\t"
                f"{_ts(launched - dt.timedelta(hours=1))}\t{_ts(launched)}\n"
            )
        return {"campaigns": lines}

    # -- messages

    def message_lines(self) -> Iterator[dict[str, list[str]]]:
        from outreach.service.messages import new_id, seeded_ids

        with seeded_ids(self.seed):
            for start in range(0, self.messages, 10_000):
                out: dict[str, list[str]] = {
                    "messages": [],
                    "message_events": [],
                    "campaign_members": [],
                }
                for n in range(start, min(start + 10_000, self.messages)):
                    self._message(n, out, new_id)
                yield out

    def _message(self, n: int, out: dict[str, list[str]], new_id: Callable[..., str]) -> None:
        rnd, now = self.rnd, self.now
        b = rnd.randrange(self.borrowers)
        locale, zone, phone, email, name, stage, digits = self.people[b]
        borrower_id = f"B{b:07d}"
        loan_id: str | None = f"L{b:07d}"
        campaign: int | None = None
        variant = None
        if rnd.random() < CAMPAIGN_SHARE:
            campaign = self.campaign_pick()
            days, _, campaign_status, template = CAMPAIGNS[campaign]
            if (campaign, b) in self.members:
                campaign = None  # one message per borrower per campaign
        if campaign is not None:
            days, _, campaign_status, template = CAMPAIGNS[campaign]
            self.members.add((campaign, b))
            purpose = "campaign"
            variant = "a" if rnd.random() < 0.5 else "b"
            if variant == "b":
                template = "campaign_hardship_relief"
            channel = "sms"
            created = now - dt.timedelta(days=days, hours=3)
            send_at = created + dt.timedelta(seconds=rnd.randrange(0, 2 * 86400))
            out["campaign_members"].append(
                f"{self.campaign_ids[campaign]}\t{borrower_id}\t{loan_id}\t{variant}\n"
            )
        else:
            campaign_status = None
            purpose = self.purpose()
            if purpose in DIRECT:
                loan_id = None
                template = purpose
            elif purpose == "dunning":
                template = rnd.choice(STAGE_TEMPLATES[stage])
            else:
                template = purpose
            channel = "email" if email is not None and rnd.random() < 0.35 else "sms"
            if purpose == "help_reply":
                channel = "sms"
            created = now - dt.timedelta(seconds=rnd.randrange(0, 60 * 86400))
            if purpose in DIRECT or purpose == "payment_confirmation":
                send_at = created
            else:
                draw = rnd.random()
                if draw < 0.4:
                    send_at = created + dt.timedelta(seconds=rnd.randrange(0, 600))
                elif draw < 0.75:
                    send_at = created + dt.timedelta(seconds=rnd.randrange(3600, 12 * 3600))
                else:
                    send_at = created + dt.timedelta(seconds=rnd.randrange(86400, 5 * 86400))
        message_stage = None if loan_id is None or purpose in DIRECT else stage
        if rnd.random() < 0.08 and message_stage is not None:
            message_stage = STAGES[self._stage_index()][0]  # a stage the loan was in before
        key = f"bench:{n}"
        message_id = new_id("msg_", created, name=key)
        recipient = email if channel == "email" else phone
        status, reason, steps, sent_at = self._fate(
            message_id, purpose, channel, campaign_status, created, send_at, zone
        )
        self.stats.statuses[status] += 1
        rendered = status in ("sending", "sent", "delivered", "undelivered", "failed") or (
            reason == "content_rejected"
        )
        if rendered and not (status == "failed" and reason == "render_error"):
            parts, segments, encoding, version = self.texts.of(
                template, channel, locale, name, digits
            )
        else:
            parts, segments, encoding, version = [NULL] * 4, NULL, NULL, NULL
        handed = sent_at is not None
        provider_id = NULL
        if handed:
            provider_id = (
                f"SM{rnd.getrandbits(128):032x}"
                if channel == "sms"
                else f"<{message_id}@outreach.example>"
            )
            steps = [s.replace("{provider}", provider_id) for s in steps]
        needs_human = reason in ("needs_human", "content_rejected", "outcome_unknown")
        updated = steps[-1].split("\t", 2)[1]
        refs = (
            f'{{"campaign_end_at": "{_iso(created + dt.timedelta(days=3))}"}}'
            if campaign is not None
            else "{}"
        )
        out["messages"].append(
            f"{message_id}\t{key}\t{purpose}\t{borrower_id}\t{loan_id or NULL}\t"
            f"{self.campaign_ids[campaign] if campaign is not None else NULL}\t{variant or NULL}\t"
            f"{message_stage or NULL}\t{channel}\t{template}\t{version}\t{locale}\t"
            f"{recipient or NULL}\t{parts[0]}\t{parts[1]}\t{parts[2]}\t{parts[3]}\t{segments}\t"
            f"{encoding}\t{_ts(send_at)}\t{status}\t{reason or NULL}\t{refs}\t{provider_id}\t"
            f"{_ts(sent_at) if handed else NULL}\t{_ts(sent_at) if handed else NULL}\t"
            f"{1 if handed or status == 'failed' else 0}\t{NULL}\t{'t' if needs_human else 'f'}\t"
            f"{_ts(created)}\t{updated}\n"
        )
        out["message_events"].extend(steps)

    def _fate(
        self,
        message_id: str,
        purpose: str,
        channel: str,
        campaign_status: str | None,
        created: dt.datetime,
        send_at: dt.datetime,
        zone: str | None,
    ) -> tuple[str, str | None, list[str], dt.datetime | None]:
        """Status, reason, timeline steps (COPY lines) and sent_at of one message."""
        rnd, now = self.rnd, self.now

        def step(at: dt.datetime, status: str, reason: str | None, detail: str | None) -> str:
            detail_field = NULL if detail is None else _copy_text(detail)
            return f"{message_id}\t{_ts(at)}\t{status}\t{reason or NULL}\t{detail_field}\n"

        steps = [step(created, "scheduled", "planned", None)]
        draw = rnd.random()
        # withheld before it was due, whenever it was due
        if campaign_status == "cancelled" and draw < 0.5:
            at = created + dt.timedelta(hours=20)
            steps.append(step(at, "suppressed", "campaign_cancelled", None))
            return "suppressed", "campaign_cancelled", steps, None
        if campaign_status == "paused" and send_at > now - dt.timedelta(hours=6):
            at = now - dt.timedelta(hours=6)
            steps.append(step(at, "deferred", "campaign_paused", None))
            return "deferred", "campaign_paused", steps, None
        if send_at > now:
            if draw < 0.62:
                return "scheduled", "planned", steps, None
            if draw < 0.84:
                reason = self.defer()
                until = send_at
                steps.append(
                    step(
                        min(created + dt.timedelta(minutes=5), now),
                        "deferred",
                        reason,
                        f"until={_iso(until)}" + (f" zone={zone}" if zone else ""),
                    )
                )
                return "deferred", reason, steps, None
            at = created + (min(send_at, now) - created) * rnd.random()
            if draw < 0.92:
                reason = self.suppress()
                steps.append(step(at, "suppressed", reason, None))
                return "suppressed", reason, steps, None
            reason = self.cancel() if rnd.random() < 0.95 else "ops_cancelled"
            steps.append(
                step(at, "cancelled", reason, "note=by ops" if reason[:3] == "ops" else None)
            )
            return "cancelled", reason, steps, None
        # due already: claimed, gated, handed over or withheld
        recent = send_at > now - dt.timedelta(minutes=10)
        if campaign_status == "completed" and draw < 0.06:
            at = created + dt.timedelta(days=3)
            steps.append(step(at, "suppressed", "campaign_ended", None))
            return "suppressed", "campaign_ended", steps, None
        if draw < 0.18 and not recent:
            at = created + (send_at - created) * rnd.random()
            reason = self.suppress()
            steps.append(step(at, "suppressed", reason, None))
            return "suppressed", reason, steps, None
        if draw < 0.25 and not recent:
            at = created + (send_at - created) * rnd.random()
            reason = self.cancel() if rnd.random() < 0.95 else "ops_cancelled"
            steps.append(
                step(at, "cancelled", reason, "note=by ops" if reason[:3] == "ops" else None)
            )
            return "cancelled", reason, steps, None
        claimed = send_at + dt.timedelta(milliseconds=rnd.randrange(50, 1500))
        steps.append(step(claimed, "queued", "due", None))
        if recent and draw < 0.35:
            return "queued", "due", steps, None
        marked = claimed + dt.timedelta(milliseconds=rnd.randrange(20, 800))
        steps.append(
            step(marked, "sending", None, f"attempt=1 worker=wl_{rnd.getrandbits(32):08x}")
        )
        if recent and draw < 0.45:
            return "sending", None, steps, None
        outcome = rnd.random()
        if outcome < 0.02:
            steps.append(step(marked, "failed", "provider_error", "code=21211"))
            return "failed", "provider_error", steps, None
        if outcome < 0.022:
            steps.append(step(marked, "failed", "render_error", "template did not render"))
            return "failed", "render_error", steps, None
        if outcome < 0.0225:
            steps.append(step(marked + dt.timedelta(seconds=30), "sent", "outcome_unknown", None))
            return "sent", "outcome_unknown", steps, marked
        sent = marked + dt.timedelta(milliseconds=rnd.randrange(80, 900))
        steps.append(step(sent, "sent", "accepted", "provider_id={provider}"))
        if channel == "email" or recent:
            return "sent", "accepted", steps, sent  # SMTP tells nothing after it accepts
        delivered = sent + dt.timedelta(seconds=rnd.randrange(2, 40))
        if outcome < 0.07:
            steps.append(
                step(
                    delivered,
                    "undelivered",
                    "provider_error",
                    "provider_status=undelivered code=30003",
                )
            )
            return "undelivered", "provider_error", steps, sent
        if outcome < 0.09:
            return "sent", "accepted", steps, sent  # no callback came
        steps.append(step(delivered, "delivered", "provider_status", "provider_status=delivered"))
        if outcome > 0.995 and delivered < now - dt.timedelta(hours=1):
            reply = delivered + dt.timedelta(minutes=rnd.randrange(1, 60))
            body = rnd.choice(REPLIES["other"])
            steps.append(step(reply, "delivered", "needs_human", f"reply={body}"))
            return "delivered", "needs_human", steps, sent
        return "delivered", "provider_status", steps, sent

    # -- what borrowers sent, and the inbox

    def reply_lines(self) -> dict[str, list[str]]:
        rnd, now = self.rnd, self.now
        lines = []
        kinds = Picker(rnd, [("opt_out", 30), ("opt_in", 5), ("help", 10), ("other", 55)])
        for n in range(max(100, self.messages // 50)):
            b = rnd.randrange(self.borrowers)
            phone = self.people[b][2]
            kind = kinds()
            received = now - dt.timedelta(seconds=rnd.randrange(0, 60 * 86400))
            body = _copy_text(rnd.choice(REPLIES[kind]))
            lines.append(
                f"SMr{n:08d}{rnd.getrandbits(64):016x}\tsms\t{phone}\t{body}\tB{b:07d}\t{kind}\t"
                f"{'t' if kind == 'other' else 'f'}\t{_ts(received)}\n"
            )
        events = []
        for n in range(max(100, self.messages // 20)):
            b = rnd.randrange(self.borrowers)
            outcome = "applied"
            if n < 40:
                outcome = ["pending", "failed", "dead_letter"][n % 3]
            at = now - dt.timedelta(seconds=rnd.randrange(0, 60 * 86400))
            if outcome == "pending":
                at = now - dt.timedelta(seconds=rnd.randrange(1, 30))
            body = json.dumps({"type": "loan.updated", "data": {"loan": {"id": f"L{b:07d}"}}})
            retry = _ts(now + dt.timedelta(minutes=5)) if outcome == "failed" else NULL
            detail = "ValueError: bench" if outcome in ("failed", "dead_letter") else NULL
            events.append(
                f"evt_bench_{n:08d}\tloan.updated\t{_ts(at)}\t{_ts(at)}\t{body}\tB{b:07d}\t"
                f"L{b:07d}\t{outcome}\t{detail}\t{1 if outcome != 'applied' else 0}\t{retry}\n"
            )
        return {"inbound_replies": lines, "received_events": events}


def load_log(database_url: str, log: Log) -> float:
    """COPY the log into its tables, a connection per table, as the chunks are generated;
    the phones and the timeline steps once the rows they refer to are committed."""
    started = time.perf_counter()
    later = {
        table: tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 - read after
        for table in LATER
    }
    with contextlib.ExitStack() as stack:
        copies = {}
        for table, columns in COPY_COLUMNS.items():
            if table in LATER:
                continue
            connection = stack.enter_context(psycopg.connect(database_url))
            cursor = stack.enter_context(connection.cursor())
            copies[table] = stack.enter_context(cursor.copy(f"COPY {table} ({columns}) FROM STDIN"))

        def write(chunk: dict[str, list[str]]) -> None:
            for table, rows in chunk.items():
                log.stats.rows[table] += len(rows)
                if table in later:
                    later[table].writelines(rows)
                elif rows:
                    copies[table].write("".join(rows))

        write(log.campaign_lines())
        for chunk in log.people_lines():
            write(chunk)
        for chunk in log.message_lines():
            write(chunk)
            done = log.stats.rows["messages"]
            if done % 100_000 == 0 or done == log.messages:
                print(f"  loading: {done:,} of {log.messages:,} messages")
        write(log.reply_lines())
    with psycopg.connect(database_url) as connection, connection.cursor() as cursor:
        for table in LATER:
            spool = later[table]
            spool.seek(0)
            statement = f"COPY {table} ({COPY_COLUMNS[table]}) FROM STDIN"
            with cursor.copy(statement) as copy:
                while block := spool.read(1 << 20):
                    copy.write(block)
            spool.close()
    return time.perf_counter() - started


# -- what the migrations cost ---------------------------------------------------------------


# what the two commonest writes of a message do: dispatch's `sending` mark (its content
# filled) and a provider's delivery callback (status and reason alone)
WRITES = {
    "content": (
        "SELECT id FROM messages WHERE status = 'scheduled' ORDER BY id LIMIT %s",
        "UPDATE messages SET status = 'sending', reason = NULL, body = %s, segments = 2, "
        "encoding = 'UCS-2', attempts = attempts + 1, updated_at = now() WHERE id = %s",
    ),
    "status": (
        "SELECT id FROM messages WHERE status = 'sent' AND channel = 'sms' ORDER BY id DESC "
        "LIMIT %s",
        "UPDATE messages SET status = 'delivered', reason = 'provider_status', "
        "updated_at = now() WHERE id = %s",
    ),
}
BODY = "【海港信贷】王芳您好，您尾号7890的账户应于2026年12月8日还款¥1,286.40。回复TD退订"


def update_rate(database_url: str, kind: str, rows: int = 3000) -> float:
    """Rows/s of one of WRITES, batches of 50 (a savepoint each), all rolled back so the
    log stays as loaded."""
    select_ids, update = WRITES[kind]
    with psycopg.connect(database_url) as connection:
        ids = [row[0] for row in connection.execute(select_ids, (rows,))]
        values = [(BODY, i) if kind == "content" else (i,) for i in ids]
        connection.execute("SELECT count(*) FROM messages WHERE id = ANY(%s)", (ids,))
        started = time.perf_counter()
        with connection.transaction(force_rollback=True):
            for start in range(0, len(values), 50):
                with connection.transaction(), connection.cursor() as cursor:
                    cursor.executemany(update, values[start : start + 50])
        elapsed = time.perf_counter() - started
    return len(ids) / elapsed if ids else 0.0


def write_rates(database_url: str) -> dict[str, float]:
    """Each of WRITES once to read the rows, then the best of three."""
    return {kind: max(update_rate(database_url, kind) for _ in range(4)) for kind in WRITES}


def index_sizes(database_url: str) -> list[tuple[str, int]]:
    with psycopg.connect(database_url) as connection:
        return [
            (row[0], int(row[1]))
            for row in connection.execute(
                "SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes "
                "WHERE relname = 'messages' ORDER BY 2 DESC"
            )
        ]


# -- the web process -------------------------------------------------------------------------


def start_web(env: dict[str, str], logs: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`outreach web` as the Procfile runs it, on a free port."""
    port = free_port()
    log = open(logs / "web.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "outreach", "web", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, port


def stop_web(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"web exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{base}/ready") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError("web did not become ready")


_HIDDEN = re.compile(r"<input[^>]*>", re.IGNORECASE)
_ATTR = re.compile(r'(\w[\w-]*)\s*=\s*"([^"]*)"')
_CURSOR = re.compile(r'href="([^"]*[?&](?:amp;)?cursor=[^"]*)"')


class Client:
    """The pages (a session cookie after POST /ui/login) or the API (a bearer token)."""

    def __init__(self, base: str, prefix: str) -> None:
        self.base = base
        self.prefix = prefix
        self.session: aiohttp.ClientSession | None = None

    @property
    def ui(self) -> bool:
        return self.prefix == "/ui"

    async def open(self) -> None:
        headers = {} if self.ui else {"Authorization": f"Bearer {TOKEN}"}
        self.session = aiohttp.ClientSession(
            headers=headers,
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=aiohttp.ClientTimeout(total=120),
        )
        if self.ui:
            await self.login()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def login(self) -> None:
        assert self.session is not None
        async with self.session.get(f"{self.base}/ui/login") as response:
            page = await response.text()
        form: dict[str, str] = {}
        for tag in _HIDDEN.findall(page):
            attrs = dict(_ATTR.findall(tag))
            if attrs.get("type") == "hidden" and "name" in attrs:
                form[attrs["name"]] = html.unescape(attrs.get("value", ""))
        form["token"] = TOKEN
        async with self.session.post(
            f"{self.base}/ui/login", data=form, allow_redirects=False
        ) as response:
            if response.status not in (200, 302, 303):
                raise RuntimeError(f"POST /ui/login answered {response.status}")
        if not len(self.session.cookie_jar):
            raise RuntimeError("POST /ui/login set no session cookie")

    async def log_page(
        self, params: dict[str, str], cursor: str | None
    ) -> tuple[float, str | None, int]:
        """One page of the log: seconds, the next cursor, items (JSON) or bytes (HTML)."""
        assert self.session is not None
        query = dict(params, limit=str(PAGE_SIZE))
        if cursor is not None:
            query["cursor"] = cursor
        path = "/ui/messages" if self.ui else "/v1/messages"
        started = time.perf_counter()
        async with self.session.get(f"{self.base}{path}", params=query) as response:
            raw = await response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                raise RuntimeError(f"GET {path} {query} answered {response.status}: {raw[:300]!r}")
        if self.ui:
            found = _CURSOR.findall(raw.decode())
            following = None
            for href in found:
                value = re.search(r"cursor=([^&]+)", html.unescape(href))
                if value:
                    following = value.group(1)
            return elapsed, following, len(raw)
        document = json.loads(raw)
        return elapsed, document["next_cursor"], len(document["items"])

    async def get(self, path: str) -> float:
        assert self.session is not None
        started = time.perf_counter()
        async with self.session.get(f"{self.base}{path}") as response:
            await response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                raise RuntimeError(f"GET {path} answered {response.status}")
        return elapsed


async def pages_exist(base: str) -> bool:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/ui/login", allow_redirects=False) as response,
    ):
        return response.status == 200


# -- the cases -------------------------------------------------------------------------------


@dataclass
class Case:
    filter: str  # the filter's name, as the figures are grouped
    params: dict[str, str]
    first: list[float] = field(default_factory=list)
    later: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        if not self.params:
            return "(no filter)"
        return "&".join(f"{k}={v}" for k, v in self.params.items())


def _sample(connection: psycopg.Connection[Any], sql: str, seed: int) -> list[Any]:
    return [row[0] for row in connection.execute(sql.replace("SEED", str(seed)))]


def build_cases(database_url: str, seed: int, now: dt.datetime) -> list[Case]:
    """Every single filter, with values a person would type, drawn from the loaded log."""
    from outreach.domain import Purpose, Status

    cases = [Case("none", {})]
    cases += [Case("status", {"status": s.value}) for s in Status]
    cases.append(Case("status", {"status": "sent,delivered"}))
    cases += [Case("channel", {"channel": c}) for c in ("sms", "email")]
    cases += [Case("stage", {"stage": s[0]}) for s in STAGES]
    cases += [Case("purpose", {"purpose": p.value}) for p in Purpose]
    reasons = [
        "provider_status",
        "accepted",
        "planned",
        "quiet_hours",
        "frequency_cap",
        "opted_out",
        "promise_pending",
        "provider_error",
        "campaign_cancelled",
        "campaign_paused",
        "needs_human",
        "outcome_unknown",
        "content_rejected",
        "ops_cancelled",
    ]
    cases += [Case("reason", {"reason": r}) for r in reasons]
    cases.append(Case("needs_human", {"needs_human": "true"}))
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for delta in (dt.timedelta(hours=1), dt.timedelta(days=1), dt.timedelta(days=7)):
        cases.append(Case("since", {"since": _iso(now - delta)}))
    cases.append(Case("since", {"since": _iso(now - dt.timedelta(days=30))}))
    for days in (1, 7, 30, 59):
        cases.append(Case("until", {"until": _iso(now - dt.timedelta(days=days))}))
    for start, length in ((1, 1), (30, 1), (47, 7)):
        since = day - dt.timedelta(days=start)
        until = since + dt.timedelta(days=length)
        cases.append(Case("since+until", {"since": _iso(since), "until": _iso(until)}))
    with psycopg.connect(database_url) as connection:
        for campaign_id in _sample(connection, "SELECT id FROM campaigns ORDER BY id", seed):
            cases.append(Case("campaign_id", {"campaign_id": campaign_id}))
        sampled = connection.execute(
            "SELECT borrower_id, loan_id, recipient, channel, provider_id FROM messages "
            "TABLESAMPLE SYSTEM (1) REPEATABLE (%s) WHERE loan_id IS NOT NULL "
            "AND provider_id IS NOT NULL LIMIT 200",
            (seed,),
        ).fetchall()
        rnd = random.Random(seed)
        rnd.shuffle(sampled)
        for row in sampled[:8]:
            cases.append(Case("borrower_id", {"borrower_id": row[0]}))
        for row in sampled[8:16]:
            cases.append(Case("loan_id", {"loan_id": row[1]}))
        phones = [row[2] for row in sampled if row[3] == "sms"]
        emails = [row[2] for row in sampled if row[3] == "email"]
        names = _sample(
            connection,
            "SELECT b.name FROM borrowers b TABLESAMPLE SYSTEM (5) REPEATABLE (SEED) "
            "WHERE b.locale = 'zh-CN' LIMIT 3",
            seed,
        )
        en_names = _sample(
            connection,
            "SELECT b.name FROM borrowers b TABLESAMPLE SYSTEM (5) REPEATABLE (SEED) "
            "WHERE b.locale = 'en-US' LIMIT 2",
            seed,
        )
    searches = [
        phones[0],  # a phone number, whole
        phones[1][-8:],  # its last eight digits
        emails[0],  # an email address
        "example.net",  # a quarter of the addresses
        sampled[20][1],  # a loan id
        sampled[21][4],  # a provider's id
        "early_follow_up_2",  # a template
        "hardship",  # a word of some templates
        "逾期",  # two characters in many Chinese texts
        "分期付款",  # a phrase
        names[0],
        en_names[0],
        "Reply STOP",  # in every other English SMS
        "zqxjkv",  # nowhere
    ]
    cases += [Case("q", {"q": value}) for value in searches if value]
    return cases


async def measure(client: Client, cases: list[Case], rounds: int, seed: int) -> None:
    """One warm-up round, then `rounds` rounds in shuffled order: each case's first page and
    the pages after it by their cursors, one request at a time."""
    rnd = random.Random(seed)
    for number in range(rounds + 1):
        order = list(cases)
        rnd.shuffle(order)
        for case in order:
            seconds, cursor, _ = await client.log_page(case.params, None)
            if number:
                case.first.append(seconds)
            for _ in range(LATER_PAGES):
                if cursor is None:
                    break
                seconds, cursor, _ = await client.log_page(case.params, cursor)
                if number:
                    case.later.append(seconds)
        print(f"  round {number} of {rounds} done")


def percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def _ms(value: float) -> str:
    return f"{value * 1000:,.1f}"


# -- raw rates, and where the time went --------------------------------------------------------


def raw_page_rates(database_url: str, samples: int = 60) -> tuple[list[float], list[float]]:
    """Seconds of a raw `SELECT * FROM messages ORDER BY id DESC LIMIT 50`, and of the same
    after a cursor (an id somewhere in the log), by primary key, fetched whole."""
    with psycopg.connect(database_url) as connection:
        ids = [
            row[0]
            for row in connection.execute(
                "SELECT id FROM messages TABLESAMPLE SYSTEM (1) REPEATABLE (7) LIMIT 500"
            )
        ]
        first, later = [], []
        for number in range(samples + 5):
            started = time.perf_counter()
            connection.execute(
                f"SELECT * FROM messages ORDER BY id DESC LIMIT {PAGE_SIZE}"  # noqa: S608
            ).fetchall()
            middle = time.perf_counter()
            connection.execute(
                f"SELECT * FROM messages WHERE id < %s ORDER BY id DESC LIMIT {PAGE_SIZE}",  # noqa: S608
                (ids[number % len(ids)],),
            ).fetchall()
            if number >= 5:
                first.append(middle - started)
                later.append(time.perf_counter() - middle)
    return first, later


async def raw_http(base: str, samples: int = 100) -> list[float]:
    """Seconds of GET /health: what the HTTP stack costs with nothing behind it."""
    times = []
    async with aiohttp.ClientSession() as session:
        for number in range(samples + 5):
            started = time.perf_counter()
            async with session.get(f"{base}/health") as response:
                await response.read()
            if number >= 5:
                times.append(time.perf_counter() - started)
    return times


def breakdown(database_url: str, case: Case) -> tuple[float, float, list[str]]:
    """The case's first page in this process: the service call (SQL, ORM, records) in
    seconds, the SQL statement's execution time by EXPLAIN ANALYZE, and the plan's nodes."""
    from sqlalchemy.dialects import postgresql

    from outreach.service.log import MessageFilter, list_messages
    from outreach.store import message_log
    from outreach.store.db import make_engine, make_session_factory

    engine = make_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        sessions = make_session_factory(engine)
        criteria = MessageFilter.parse(dict(case.params))
        timings = []
        for _ in range(4):
            with sessions() as session:
                started = time.perf_counter()
                list_messages(session, criteria, limit=PAGE_SIZE, cursor=None)
                timings.append(time.perf_counter() - started)
        statement = message_log.ids_statement(criteria, PAGE_SIZE + 1, None)
        sql = str(
            statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
        )
    finally:
        engine.dispose()
    with psycopg.connect(database_url) as connection:
        plan = [row[0] for row in connection.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")]
    executed = next(
        (float(line.split(":")[1].split()[0]) / 1000 for line in plan if "Execution Time" in line),
        float("nan"),
    )
    nodes = [line.strip() for line in plan if "->" in line or line.startswith(("Limit", "Sort"))]
    return min(timings), executed, nodes[:4]


def overview_in_process(database_url: str, samples: int) -> dict[str, list[float]]:
    """The overview's store functions timed in this process (while /ui/ does not exist),
    each in a session of its own, and all of them together."""
    from outreach.store import overview
    from outreach.store.db import make_engine, make_session_factory

    engine = make_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    sessions = make_session_factory(engine)
    figures: dict[str, list[float]] = collections.defaultdict(list)
    try:
        for number in range(samples + 2):
            now = dt.datetime.now(dt.UTC)
            total = 0.0
            for name, call in overview.PARTS.items():
                with sessions() as session:
                    started = time.perf_counter()
                    call(session, now)
                    elapsed = time.perf_counter() - started
                total += elapsed
                if number >= 2:
                    figures[name].append(elapsed)
            with sessions() as session:
                started = time.perf_counter()
                overview.overview(session, now)
                if number >= 2:
                    figures["overview (all, one session)"].append(time.perf_counter() - started)
    finally:
        engine.dispose()
    return figures


# -- the run ---------------------------------------------------------------------------------


def migrate(database_url: str, revision: str) -> float:
    from outreach.store.db import make_engine
    from outreach.store.migrate import upgrade

    engine = make_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    started = time.perf_counter()
    try:
        upgrade(engine, revision)
    finally:
        engine.dispose()
    return time.perf_counter() - started


def figures_line(values: Sequence[float]) -> str:
    return (
        f"p50 {_ms(percentile(values, 0.5))}  p95 {_ms(percentile(values, 0.95))}  "
        f"max {_ms(max(values, default=float('nan')))}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages in the log")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds over the cases")
    parser.add_argument(
        "--prefix",
        choices=("auto", "/ui", "/v1"),
        default="auto",
        help="the pages (/ui, logging in), the API (/v1, a bearer token), or /ui when it exists",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database (prints its name)")
    parser.add_argument(
        "--reuse", metavar="DATABASE", help="measure a database kept by --keep (not dropped)"
    )
    parser.add_argument("--no-breakdown", action="store_true", help="skip EXPLAIN ANALYZE")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]

    def interrupted(number: int, _frame: object) -> None:
        # stopped from outside: clean up (the web process, the database) on the way out
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
    run_started = time.perf_counter()
    load_at_start = os.getloadavg()
    name = args.reuse or f"outreach_bench_pages_{uuid.uuid4().hex[:10]}"
    database_url = f"{PG_SERVER}/{name}"
    created = False
    if not args.reuse:
        with psycopg.connect(f"{PG_SERVER}/{ADMIN_DB}", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        created = True
    redis.Redis.from_url(REDIS_URL).flushdb()
    logs = Path(tempfile.mkdtemp(prefix="bench-pages-"))
    env = clean_env(
        OUTREACH_DATABASE_URL=database_url.replace("postgresql://", "postgresql+psycopg://"),
        OUTREACH_REDIS_URL=REDIS_URL,
        OUTREACH_WEBHOOK_SECRET=SECRET,
        OUTREACH_LINK_SECRET=LINK_SECRET,
        OUTREACH_OPS_TOKENS=f"{TOKEN}:viewer:bench",
        OUTREACH_SMS_PROVIDER="simulated",
        OUTREACH_EMAIL_PROVIDER="simulated",
        OUTREACH_LOG_LEVEL="WARNING",
    )
    web: subprocess.Popen[bytes] | None = None
    out: list[str] = []
    try:
        print(f"database {name}, Redis {REDIS_URL}, logs in {logs}")
        load_line = "log: reused"
        migration_line = ""
        write_line = ""
        now = dt.datetime.now(dt.UTC)
        if not args.reuse:
            migrate(database_url, BEFORE_INDEXES)
            log = Log(args.messages, args.seed, now)
            load_seconds = load_log(database_url, log)
            started = time.perf_counter()
            with psycopg.connect(database_url, autocommit=True) as connection:
                connection.execute("VACUUM ANALYZE")
            rows = sum(log.stats.rows.values())
            load_line = (
                f"log: {log.stats.rows['messages']:,} messages, "
                f"{log.stats.rows['message_events']:,} steps, {log.stats.borrowers:,} borrowers, "
                f"{rows:,} rows by COPY in {load_seconds:.1f} s; VACUUM ANALYZE "
                f"{time.perf_counter() - started:.1f} s; statuses "
                + ", ".join(f"{k} {v:,}" for k, v in log.stats.statuses.most_common())
            )
            print(load_line)
            before_rates = write_rates(database_url)
            migration_seconds = migrate(database_url, INDEXES)
            started = time.perf_counter()
            with psycopg.connect(database_url, autocommit=True) as connection:
                connection.execute("ANALYZE messages")
            analyze_seconds = time.perf_counter() - started
            after_rates = write_rates(database_url)
            later_seconds = migrate(database_url, "head")
            migration_line = (
                f"migration {BEFORE_INDEXES} → {INDEXES} (the log's indexes) on the loaded log: "
                f"{migration_seconds:.1f} s, then ANALYZE messages {analyze_seconds:.1f} s; "
                f"{INDEXES} → head {later_seconds:.1f} s"
            )
            write_line = f"writes, rows/s before {INDEXES} → after (batches of 50): " + "; ".join(
                f"{kind} {before_rates[kind]:,.0f} → {after_rates[kind]:,.0f} "
                f"({after_rates[kind] / before_rates[kind]:.2f})"
                for kind in WRITES
            )
            print(migration_line)
            print(write_line)
        else:
            migrate(database_url, "head")
            with psycopg.connect(database_url) as connection:
                row = connection.execute("SELECT max(created_at) FROM messages").fetchone()
                assert row is not None
                now = row[0]
        sizes = index_sizes(database_url)

        web, port = start_web(env, logs)
        base = f"http://127.0.0.1:{port}"
        asyncio.run(wait_ready(base, web))
        prefix = args.prefix
        if prefix == "auto":
            prefix = "/ui" if asyncio.run(pages_exist(base)) else "/v1"
        print(f"web up (pid {web.pid}) at {base}; measuring through {prefix}")

        health = asyncio.run(raw_http(base))
        raw_first, raw_later = raw_page_rates(database_url)
        cases = build_cases(database_url, args.seed, now)
        print(f"{len(cases)} cases, {args.rounds} rounds, first page and {LATER_PAGES} after each")

        async def run_cases() -> dict[str, list[float]]:
            client = Client(base, prefix)
            await client.open()
            try:
                await measure(client, cases, args.rounds, args.seed)
                views: dict[str, list[float]] = {}
                if client.ui:
                    times = [await client.get("/ui/") for _ in range(args.rounds * 6 + 2)]
                    views["GET /ui/"] = times[2:]
                return views
            finally:
                await client.close()

        overview_figures = asyncio.run(run_cases())
        # the overview's store functions, whatever the page reads
        overview_figures.update(overview_in_process(database_url, args.rounds * 6))
        health_after = asyncio.run(raw_http(base))
        load_at_end = os.getloadavg()
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        out.append(f"bench_pages, {stamp}, code at {revision}, {args.messages:,} messages")
        out.append(load_line)
        if migration_line:
            out.append(migration_line)
            out.append(write_line)
        out.append(
            "indexes on messages: " + ", ".join(f"{n} {size / 2**20:,.0f} MiB" for n, size in sizes)
        )
        out.extend(
            summary(cases, prefix, overview_figures, (raw_first, raw_later, health, health_after))
        )
        out.append(
            f"load average {load_at_start[0]:.1f} at start, {load_at_end[0]:.1f} at the end of "
            f"the measures; {time.perf_counter() - run_started:.0f} s so far"
        )
        print()
        print("\n".join(out))
        if not args.no_breakdown:
            print("where the time went (first page, in this process): service call / SQL alone")
            for case in cases:
                try:
                    service_s, sql_s, nodes = breakdown(database_url, case)
                except Exception as error:  # a figure missing, not the run
                    print(f"  {case.label[:60]:60} failed: {type(error).__name__}: {error}")
                    continue
                print(f"  {case.label[:60]:60} {_ms(service_s):>8} / {_ms(sql_s):>8} ms")
                for node in nodes[:2]:
                    print(f"      {node[:110]}")
    finally:
        stop_web(web)
        if created and not args.keep:
            with psycopg.connect(f"{PG_SERVER}/{ADMIN_DB}", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        elif created:
            print(f"kept {name} (--reuse {name} measures it again)")
        redis.Redis.from_url(REDIS_URL).flushdb()
    print(f"whole run {time.perf_counter() - run_started:.0f} s")
    return 0


def summary(
    cases: list[Case],
    prefix: str,
    overview_figures: dict[str, list[float]],
    raw: tuple[list[float], list[float], list[float], list[float]],
) -> list[str]:
    raw_first, raw_later, health, health_after = raw
    out = [
        f"raw, SELECT * ... ORDER BY id DESC LIMIT {PAGE_SIZE}: {figures_line(raw_first)} ms",
        f"raw, the same after a cursor (id < …): {figures_line(raw_later)} ms",
        f"raw, GET /health over HTTP: {figures_line(health)} ms; at the end "
        f"{figures_line(health_after)} ms",
        f"the log through {prefix}, {PAGE_SIZE} a page, ms (target p95 ≤ {TARGET_MS:.0f}):",
    ]
    worst = 0.0
    for case in cases:
        worst = max(worst, percentile(case.first, 0.95), percentile(case.later, 0.95))
        later = figures_line(case.later) if case.later else "(one page)"
        out.append(f"  {case.label[:60]:60}  first {figures_line(case.first)}")
        out.append(f"  {'':60}  later {later}")
    by_filter: dict[str, list[float]] = collections.defaultdict(list)
    for case in cases:
        by_filter[case.filter].extend(case.first + case.later)
    out.append("by filter, every value and page together:")
    for name, values in by_filter.items():
        out.append(f"  {name:12} {figures_line(values)} ms ({len(values)} requests)")
    verdict = "met" if worst <= TARGET_MS / 1000 else "NOT met"
    out.append(f"worst p95 of any case: {_ms(worst)} ms: target {verdict}")
    out.append("the overview, ms:")
    for part, values in overview_figures.items():
        out.append(f"  {part:34} {figures_line(values)}")
    return out


if __name__ == "__main__":
    sys.exit(main())
