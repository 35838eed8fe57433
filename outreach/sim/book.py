"""A generated loan book for the demo and the benchmark: varied, reproducible from a seed.

Borrowers in mainland China, Taiwan and the United States (three locales, their own zones,
phone numbers that place them, a Massachusetts address for the stricter caps, an Alaskan
number for a borrower in two zones), some in hardship, some reachable on one channel only,
a few on Twilio's magic test numbers; loans at every stage of delinquency; and what happens
to them over the weeks: payments in full and in part, promises kept and broken, payment
plans kept and missed, field visits, cease-contact requests, disputes opened and closed,
STOP, START and HELP replies. The loan system reports each loan again every
`update_every` days, aged as the days pass.

With `campaign`, ops launch a campaign a few days in (two variants and a holdout group, over
the loans then in negotiation or late), and some of the borrowers it may reach pay part of
what they owe in the days after it starts, whichever arm they fall in: the book does not
know the arms, so any difference between them in the report is chance.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

DEMO_START = dt.datetime(2026, 9, 14, tzinfo=dt.UTC)  # a Monday; the Golden Week falls inside

_GIVEN = {
    "zh-CN": ["伟", "芳", "娜", "敏", "静", "磊", "洋", "艳", "勇", "军"],
    "zh-TW": ["志明", "淑芬", "家豪", "怡君", "俊傑", "雅婷", "冠宇", "佳穎"],
    "en-US": ["Alex", "Jordan", "Maria", "Sam", "Priya", "Diego", "Emily", "Marcus", "Grace"],
}
_FAMILY = {
    "zh-CN": ["王", "李", "张", "刘", "陈", "杨", "黄", "赵"],
    "zh-TW": ["陳", "林", "黃", "張", "李", "王", "吳", "劉"],
    "en-US": ["Chen", "Garcia", "Smith", "Nguyen", "Johnson", "Patel", "Lee", "Brown"],
}
# (zone, area code, address region, city) for US borrowers
_US_PLACES = [
    ("America/New_York", "212", "NY", "New York"),
    ("America/Los_Angeles", "415", "CA", "San Francisco"),
    ("America/Chicago", "312", "IL", "Chicago"),
    ("America/New_York", "617", "MA", "Boston"),
    ("America/Denver", "303", "CO", "Denver"),
    ("America/Los_Angeles", "206", "WA", "Seattle"),
]
# Twilio's magic test numbers (SPEC §10) and the one that always works
MAGIC_NUMBERS = ["+15005550001", "+15005550004", "+15005550009", "+15005550002"]
CURRENCY = {"zh-CN": "CNY", "zh-TW": "TWD", "en-US": "USD"}
PRODUCTS = ["personal_loan", "credit_card", "auto_loan", "consumer_instalment"]
# the demo's campaign: launched on this day of the book, at 09:00 in Beijing, to start an
# hour later and run for two weeks
CAMPAIGN_ID = "cmp_autumn_relief"
CAMPAIGN_DAY = 3
CAMPAIGN_WEEKS = 2
CAMPAIGN_STAGES = ["negotiation", "late"]
# those stages' days past due in the shipped policy: the borrowers who may hear of it
CAMPAIGN_DAYS_PAST_DUE = range(16, 90)
# of those (without another story), the share who pay part of what is due after it starts
CAMPAIGN_RESPONSE = 0.3


@dataclass
class BookGenerator:
    borrowers: int = 300
    days: int = 60
    seed: int = 7
    start: dt.datetime = DEMO_START
    # how often the loan system reports each loan again (1: daily, as in the benchmark)
    update_every: int = 7
    # share of borrowers given each kind of story (the rest just age)
    stories: bool = True
    # a campaign launched a few days in, and borrowers who pay after it
    campaign: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)
        # the campaign's draws apart: with it, the borrowers and their stories stay the same
        self.campaign_random = random.Random(f"{self.seed}:campaign")
        self._ids = 0

    # -- helpers --------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self._ids:07d}"

    def emit(self, kind: str, at: dt.datetime, data: dict[str, Any]) -> None:
        self.events.append(
            {
                "id": self._id("evt"),
                "type": kind,
                "occurred_at": _iso(at),
                "data": data,
            }
        )

    def day(self, offset: float, hour_utc: float | None = None) -> dt.datetime:
        """An instant `offset` days into the book, at a random (or the given) UTC hour."""
        base = self.start + dt.timedelta(days=int(offset))
        hour = hour_utc if hour_utc is not None else self.random.uniform(0, 24)
        return base + dt.timedelta(hours=hour)

    # -- the book -------------------------------------------------------------------------

    @property
    def campaign_starts(self) -> dt.datetime:
        return self.start + dt.timedelta(days=CAMPAIGN_DAY, hours=2)

    @property
    def _with_campaign(self) -> bool:
        return self.campaign and self.days > CAMPAIGN_DAY

    def generate(self) -> list[dict[str, Any]]:
        for index in range(self.borrowers):
            self._borrower(index)
        if self._with_campaign:
            self._launch_campaign()
        return self.events

    def _launch_campaign(self) -> None:
        starts = self.campaign_starts
        self.events.append(
            {
                "id": CAMPAIGN_ID,
                "type": "campaign.launched",
                "occurred_at": _iso(starts - dt.timedelta(hours=1)),
                "data": {
                    "name": "Autumn relief offer",
                    "channel": "sms",
                    "segment": {"stages": CAMPAIGN_STAGES},
                    "variants": [
                        {
                            "name": "hardship_relief",
                            "template": "campaign_hardship_relief",
                            "weight": 1,
                        },
                        {
                            "name": "restructuring_offer",
                            "template": "campaign_restructuring_offer",
                            "weight": 1,
                        },
                    ],
                    "holdout_percent": 20,
                    "start_at": _iso(starts),
                    "end_at": _iso(starts + dt.timedelta(weeks=CAMPAIGN_WEEKS)),
                },
            }
        )

    def _borrower(self, index: int) -> None:
        rnd = self.random
        locale = rnd.choices(["zh-CN", "zh-TW", "en-US"], weights=[5, 2, 3])[0]
        borrower_id = f"B{index:05d}"
        name = rnd.choice(_FAMILY[locale]) + rnd.choice(_GIVEN[locale])
        if locale == "en-US":
            name = f"{rnd.choice(_GIVEN[locale])} {rnd.choice(_FAMILY[locale])}"
        borrower: dict[str, Any] = {
            "id": borrower_id,
            "name": name,
            "locale": locale,
            "phones": [],
            "consent": {"sms": True, "email": True},
            "tags": [],
        }
        if locale == "zh-CN":
            borrower["phones"] = [f"+861{rnd.choice('3589')}{rnd.randrange(10**9):09d}"]
            if rnd.random() < 0.6:
                borrower["timezone"] = "Asia/Shanghai"
            if rnd.random() < 0.5:
                borrower["address"] = {"country": "CN", "city": "上海"}
        elif locale == "zh-TW":
            borrower["phones"] = [f"+8869{rnd.randrange(10**8):08d}"]
            borrower["timezone"] = "Asia/Taipei"
            borrower["address"] = {"country": "TW", "city": "台北市"}
        else:
            zone, area, region, city = rnd.choice(_US_PLACES)
            borrower["phones"] = [f"+1{area}55501{rnd.randrange(100):02d}"]
            borrower["timezone"] = zone
            borrower["address"] = {"country": "US", "region": region, "city": city}
            if index % 37 == 5:
                # an Alaskan number too: the borrower may be in three zones
                borrower["phones"].append(f"+190755501{rnd.randrange(100):02d}")
            if index % 41 == 3:
                borrower["phones"] = [MAGIC_NUMBERS[(index // 41) % len(MAGIC_NUMBERS)]]
        if rnd.random() < 0.8:
            borrower["email"] = f"{borrower_id.lower()}@mail.example"
        consent = rnd.random()
        if consent < 0.1:
            borrower["consent"] = {"sms": False, "email": True}
        elif consent < 0.18:
            borrower["consent"] = {"sms": True, "email": False}
        if rnd.random() < 0.1:
            borrower["tags"] = ["hardship"]
        self.emit("borrower.upserted", self.start - dt.timedelta(days=2), {"borrower": borrower})
        self._loan(index, borrower)

    def _loan(self, index: int, borrower: dict[str, Any]) -> None:
        rnd = self.random
        loan_id = f"L{index:05d}"
        dpd0 = rnd.choice(
            [-3, -2, -1, 0, 1, 2, 3, 5, 8, 12, 15, 20, 28, 35, 44, 50, 62, 75, 88, 95]
        )
        amount = Decimal(rnd.randrange(200, 5000) * (30 if borrower["locale"] == "zh-TW" else 1))
        loan = {
            "id": loan_id,
            "borrower_id": borrower["id"],
            "product": rnd.choice(PRODUCTS),
            "currency": CURRENCY[borrower["locale"]],
            "amount_due": f"{amount:.2f}",
            "balance": f"{amount * 6:.2f}",
            "days_past_due": dpd0,
            "due_date": (self.start.date() - dt.timedelta(days=max(dpd0, 0))).isoformat()
            if dpd0 > 0
            else (self.start.date() + dt.timedelta(days=-dpd0)).isoformat(),
            "account_number": f"62220200{rnd.randrange(10**8):08d}",
        }
        reported = self.start - dt.timedelta(hours=6)
        self.emit("loan.updated", reported, {"loan": dict(loan)})
        story = self._story(index) if self.stories else None
        self._amounts: list[tuple[dt.datetime, Decimal]] = []
        paid_off_on: int | None = None
        if story is not None:
            paid_off_on = story(loan, amount, borrower)
        elif self._with_campaign and dpd0 + CAMPAIGN_DAY in CAMPAIGN_DAYS_PAST_DUE:
            self._pays_after_campaign(loan, amount)
        # the loan system reports the loan again as it ages, with what is still due
        for offset in range(self.update_every, self.days, self.update_every):
            if paid_off_on is not None and offset >= paid_off_on:
                break
            at = self._reporting_instant(offset)
            due = amount
            for since, after in self._amounts:
                if since <= at:
                    due = after
            aged = dict(
                loan,
                amount_due=f"{due:.2f}",
                days_past_due=dpd0 + (at.date() - reported.date()).days,
            )
            self.emit("loan.updated", at, {"loan": aged})

    def _reporting_instant(self, offset: int) -> dt.datetime:
        # the loan system's nightly run: 01:00 in Beijing, after the day has turned over
        local = dt.datetime.combine(
            (self.start + dt.timedelta(days=offset)).astimezone(_SHANGHAI).date(),
            dt.time(1, 0),
            tzinfo=_SHANGHAI,
        )
        return local.astimezone(dt.UTC)

    def _story(self, index: int) -> Any:
        stories = [
            (0.10, self._pays_in_full),
            (0.05, self._pays_in_part),
            (0.06, self._keeps_promise),
            (0.06, self._breaks_promise),
            (0.04, self._payment_plan),
            (0.03, self._field_visit),
            (0.03, self._ceases_contact),
            (0.03, self._disputes),
            (0.04, self._replies_stop),
            (0.01, self._replies_help),
        ]
        draw = self.random.random()
        for share, story in stories:
            if draw < share:
                return story
            draw -= share
        return None

    # -- stories: each returns the day the loan stops being reported, if it does ----------

    def _pays_in_full(self, loan: dict[str, Any], amount: Decimal, _: dict[str, Any]) -> int:
        day = self.random.randrange(2, max(3, self.days - 5))
        at = self.day(day)
        self.emit("payment.received", at, _payment(self, loan["id"], amount, at, Decimal(0)))
        if self.random.random() < 0.5:
            self.emit(
                "loan.closed",
                at + dt.timedelta(hours=2),
                {"loan_id": loan["id"], "reason": "paid_off"},
            )
        return day

    def _pays_after_campaign(self, loan: dict[str, Any], amount: Decimal) -> None:
        rnd = self.campaign_random
        if rnd.random() >= CAMPAIGN_RESPONSE:
            return
        # within the attribution window of a message sent at the start, or a little after
        at = self.campaign_starts + dt.timedelta(hours=rnd.uniform(6, 10 * 24))
        part = (amount / 2).quantize(Decimal("0.01"))
        self.emit("payment.received", at, _payment(self, loan["id"], part, at, amount - part))

    def _pays_in_part(self, loan: dict[str, Any], amount: Decimal, _: dict[str, Any]) -> None:
        at = self.day(self.random.randrange(2, max(3, self.days - 5)))
        part = (amount / 3).quantize(Decimal("0.01"))
        self.emit("payment.received", at, _payment(self, loan["id"], part, at, amount - part))

    def _promise(self, loan: dict[str, Any], amount: Decimal) -> tuple[str, dt.date, int]:
        day = self.random.randrange(1, max(2, self.days - 12))
        promised = (self.start + dt.timedelta(days=day + self.random.randrange(4, 8))).date()
        promise_id = self._id("ptp")
        self.emit(
            "promise_to_pay.created",
            self.day(day),
            {
                "loan_id": loan["id"],
                "promise_id": promise_id,
                "amount": f"{amount:.2f}",
                "promised_date": promised.isoformat(),
            },
        )
        return promise_id, promised, day

    def _keeps_promise(self, loan: dict[str, Any], amount: Decimal, _: dict[str, Any]) -> int:
        promised = self._promise(loan, amount)[1]
        # paid on the promised date, Beijing afternoon
        at = dt.datetime.combine(promised, dt.time(15, 0), tzinfo=_SHANGHAI).astimezone(dt.UTC)
        self.emit("payment.received", at, _payment(self, loan["id"], amount, at, Decimal(0)))
        return (at - self.start).days + 1

    def _breaks_promise(self, loan: dict[str, Any], amount: Decimal, _: dict[str, Any]) -> None:
        self._promise(loan, amount)

    def _payment_plan(self, loan: dict[str, Any], amount: Decimal, _: dict[str, Any]) -> None:
        day = self.random.randrange(1, 10)
        instalment = (amount / 3).quantize(Decimal("0.01"))
        dates = [(self.start + dt.timedelta(days=day + 7 + 14 * k)).date() for k in range(3)]
        self.emit(
            "payment_plan.created",
            self.day(day),
            {
                "loan_id": loan["id"],
                "plan_id": self._id("plan"),
                "instalments": [
                    {"due_date": due.isoformat(), "amount": f"{instalment:.2f}"} for due in dates
                ],
            },
        )
        # the first instalment is paid on time; the second is missed
        at = dt.datetime.combine(dates[0], dt.time(12, 0), tzinfo=_SHANGHAI).astimezone(dt.UTC)
        self.emit(
            "payment.received",
            at,
            _payment(self, loan["id"], instalment, at, amount - instalment),
        )

    def _field_visit(self, loan: dict[str, Any], _: Decimal, borrower: dict[str, Any]) -> None:
        day = self.random.randrange(1, max(2, self.days - 10))
        zone = ZoneInfo(borrower.get("timezone") or "Asia/Shanghai")
        ahead = self.random.choice([1, 5, 6])  # one day ahead is short notice
        visit_day = (self.start + dt.timedelta(days=day + ahead)).astimezone(zone).date()
        visit_at = dt.datetime.combine(visit_day, dt.time(14, 30), tzinfo=zone)
        self.emit(
            "field_visit.scheduled",
            self.day(day),
            {
                "loan_id": loan["id"],
                "visit_id": self._id("visit"),
                "visit_at": _iso(visit_at),
                "collector_name": "Officer Lin" if borrower["locale"] != "en-US" else "Sam Reed",
                "collector_id": f"C{self.random.randrange(100, 999)}",
            },
        )

    def _ceases_contact(self, loan: dict[str, Any], _: Decimal, borrower: dict[str, Any]) -> None:
        self.emit(
            "contact.restricted",
            self.day(self.random.randrange(1, max(2, self.days - 5))),
            {"borrower_id": borrower["id"], "restriction": "cease_contact", "active": True},
        )

    def _disputes(self, loan: dict[str, Any], _: Decimal, borrower: dict[str, Any]) -> None:
        opened = self.random.randrange(1, max(2, self.days - 20))
        self.emit(
            "contact.restricted",
            self.day(opened),
            {"borrower_id": borrower["id"], "restriction": "dispute", "active": True},
        )
        if self.random.random() < 0.5:
            self.emit(
                "contact.restricted",
                self.day(opened + self.random.randrange(5, 15)),
                {"borrower_id": borrower["id"], "restriction": "dispute", "active": False},
            )

    def _replies_stop(self, loan: dict[str, Any], _: Decimal, borrower: dict[str, Any]) -> None:
        if not borrower["phones"]:
            return
        day = self.random.randrange(1, max(2, self.days - 10))
        word = {"zh-CN": "退订", "zh-TW": "STOP", "en-US": "STOP"}[borrower["locale"]]
        if self.random.random() < 0.2:
            word = "please stop texting me"
        phone = borrower["phones"][0]
        self.emit("sms.inbound", self.day(day), {"from": phone, "body": word})
        if self.random.random() < 0.25:
            self.emit("sms.inbound", self.day(day + 6), {"from": phone, "body": "START"})

    def _replies_help(self, loan: dict[str, Any], _: Decimal, borrower: dict[str, Any]) -> None:
        if borrower["phones"]:
            self.emit(
                "sms.inbound",
                self.day(self.random.randrange(1, max(2, self.days - 3))),
                {"from": borrower["phones"][0], "body": "HELP"},
            )


_SHANGHAI = ZoneInfo("Asia/Shanghai")


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _payment(
    generator: BookGenerator, loan_id: str, amount: Decimal, at: dt.datetime, due_after: Decimal
) -> dict[str, Any]:
    generator._amounts.append((at, max(due_after, Decimal(0))))
    return {
        "loan_id": loan_id,
        "payment_id": generator._id("pay"),
        "amount": f"{amount:.2f}",
        "paid_at": _iso(at),
        "amount_due_after": f"{max(due_after, Decimal(0)):.2f}",
    }


def generate_book(
    borrowers: int = 300,
    days: int = 60,
    seed: int = 7,
    *,
    start: dt.datetime = DEMO_START,
    update_every: int = 7,
    stories: bool = True,
    campaign: bool = False,
) -> list[dict[str, Any]]:
    """The events of a generated book, in the order generated (not sorted by time)."""
    generator = BookGenerator(
        borrowers=borrowers,
        days=days,
        seed=seed,
        start=start,
        update_every=update_every,
        stories=stories,
        campaign=campaign,
    )
    return generator.generate()
