"""Policy benchmark: gate decisions per second (pure) and cap reservations per second (Redis).

    .venv/bin/python bench/bench_policy.py [--seconds 3] [--redis-url redis://127.0.0.1:6379/15]

The raw Redis round-trip rate (PING, and INCR) is measured in the same run, so the cap figure
can be read against what the machine's Redis can do at all: a reservation is one EVALSHA of
a script doing a handful of sorted-set commands, so it cannot beat one round trip.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from outreach.caps import CapReserver  # noqa: E402
from outreach.domain import (  # noqa: E402
    Address,
    BorrowerState,
    Channel,
    LoanState,
    PlannedMessage,
    Purpose,
)
from outreach.policy import Policy, gate, load_policy, plan  # noqa: E402

SHANGHAI = ZoneInfo("Asia/Shanghai")


@dataclasses.dataclass(frozen=True)
class Rate:
    count: int
    wall: float
    cpu: float

    @property
    def per_second(self) -> float:
        return self.count / self.wall

    @property
    def per_cpu_second(self) -> float:
        """Steadier than wall time on a machine shared with other work."""
        return self.count / self.cpu if self.cpu else float("nan")


def rate(operation: Callable[[int], object], seconds: float) -> Rate:
    """How often `operation(i)` runs in about `seconds`, measured in batches of 100."""
    count = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    deadline = started + seconds
    while True:
        for _ in range(100):
            operation(count)
            count += 1
        now = time.perf_counter()
        if now >= deadline:
            return Rate(count, now - started, time.process_time() - cpu_started)


def sample_cases(policy: Policy) -> list[tuple[BorrowerState, LoanState, PlannedMessage]]:
    """Borrowers from several places, loans at several stages, their planned messages."""
    now = dt.datetime(2026, 3, 10, 11, tzinfo=SHANGHAI)
    people = [
        BorrowerState(
            id="B-cn",
            name="王芳",
            locale="zh-CN",
            phones=("+8613812345678",),
            email="wf@mail.example",
            address=Address(country="CN"),
            consent_sms=True,
            consent_email=True,
        ),
        BorrowerState(
            id="B-us",
            name="Jordan Lee",
            locale="en-US",
            phones=("+12125550142", "+19075550142"),
            email="jl@mail.example",
            address=Address(country="US", region="MA"),
            consent_sms=True,
            consent_email=True,
        ),
        BorrowerState(
            id="B-tw",
            name="陳怡君",
            locale="zh-TW",
            phones=("+886912345678",),
            timezone="Asia/Taipei",
            consent_sms=True,
            consent_email=False,
            tags=frozenset({"hardship"}),
        ),
    ]
    cases = []
    for person, days_past_due in itertools.product(people, (-3, 1, 8, 20, 50, 95)):
        loan = LoanState(
            id=f"L-{person.id}-{days_past_due}",
            borrower_id=person.id,
            product="personal",
            currency="CNY",
            amount_due=Decimal("1286.40"),
            balance=Decimal("15600"),
            days_past_due=days_past_due,
            due_date=now.date() - dt.timedelta(days=days_past_due),
            account_number="6222020200112233",
            as_of=now,
        )
        for message in plan(policy, person, loan, now):
            cases.append((person, loan, dataclasses.replace(message, send_at=now)))
    return cases


def bench_gate(policy: Policy, seconds: float) -> tuple[Rate, int]:
    cases = sample_cases(policy)
    instants = [dt.datetime(2026, 3, 10, hour, tzinfo=SHANGHAI) for hour in (3, 9, 11, 15, 20, 23)]

    def one(i: int) -> object:
        person, loan, message = cases[i % len(cases)]
        return gate(policy, person, loan, message, instants[i % len(instants)])

    return rate(one, seconds), len(cases)


def bench_plan(policy: Policy, seconds: float) -> Rate:
    cases = sample_cases(policy)
    now = dt.datetime(2026, 3, 10, 11, tzinfo=SHANGHAI)

    def one(i: int) -> object:
        person, loan, _ = cases[i % len(cases)]
        return plan(policy, person, loan, now)

    return rate(one, seconds)


def bench_redis(policy: Policy, url: str, seconds: float) -> dict[str, Rate]:
    client = redis.Redis.from_url(url)
    client.ping()
    prefix = f"bench:caps:{uuid.uuid4().hex[:8]}:"
    counter = f"{prefix}counter"
    reserver = CapReserver(client, policy, history=lambda borrower_id, since: [], prefix=prefix)
    try:
        ping = rate(lambda i: client.ping(), seconds)
        incr = rate(lambda i: client.incr(counter), seconds)

        day_ms = 86_400_000
        start_ms = int(time.time() * 1000)

        # one borrower whose set is loaded; each message 8 days after the last, so granted
        def reserve_granted(i: int) -> object:
            at_ms = start_ms + i * 8 * day_ms
            return reserver.reserve("hot", Channel.SMS, f"g{i}", Purpose.DUNNING, now_ms=at_ms)

        # a borrower not seen for a week each time: the set is rebuilt from the log first
        def reserve_rebuilding(i: int) -> object:
            return reserver.reserve(f"cold{i}", Channel.SMS, f"c{i}", Purpose.DUNNING)

        # one borrower at the cap: every reservation is refused (with the instant it frees)
        def reserve_refused(i: int) -> object:
            return reserver.reserve("busy", Channel.SMS, f"r{i}", Purpose.DUNNING)

        granted = rate(reserve_granted, seconds)
        rebuilding = rate(reserve_rebuilding, seconds)
        refused = rate(reserve_refused, seconds)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()
    return {
        "ping": ping,
        "incr": incr,
        "granted": granted,
        "rebuilding": rebuilding,
        "refused": refused,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("OUTREACH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
    )
    parser.add_argument("--policy", default=str(ROOT / "schedules" / "default.yaml"))
    args = parser.parse_args()
    policy = load_policy(args.policy)

    python = platform.python_version()
    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load {load:.1f}, Python {python}")
    gate, cases = bench_gate(policy, args.seconds)
    planned = bench_plan(policy, args.seconds)
    print("pure policy, 1 thread                 per wall s   per CPU s")
    for label, measured in ((f"gate decisions ({cases} messages)", gate), ("plans", planned)):
        wall, cpu = measured.per_second, measured.per_cpu_second
        print(f"  {label:<30} {wall:10,.0f}  {cpu:10,.0f}")
    figures = bench_redis(policy, args.redis_url, args.seconds)
    info = redis.Redis.from_url(args.redis_url).info("server")
    ping = figures["ping"].per_second
    version = info.get("redis_version")
    print(f"redis {version} at {args.redis_url}, 1 connection, sequential, per wall s")
    for label, key in (
        ("raw PING round trips", "ping"),
        ("raw INCR round trips", "incr"),
        ("cap reservations, granted", "granted"),
        ("cap reservations, refused", "refused"),
        ("  granted after a rebuild", "rebuilding"),
    ):
        per_second = figures[key].per_second
        print(f"  {label:<30} {per_second:10,.0f}  ({per_second / ping:.0%} of PING)")


if __name__ == "__main__":
    main()
