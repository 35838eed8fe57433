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


def rate(operation: Callable[[int], object], seconds: float) -> tuple[float, int]:
    """Calls per second of `operation(i)` over about `seconds`, measured in batches."""
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(100):
            operation(count)
            count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started), count


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


def bench_gate(policy: Policy, seconds: float) -> tuple[float, int, int]:
    cases = sample_cases(policy)
    instants = [dt.datetime(2026, 3, 10, hour, tzinfo=SHANGHAI) for hour in (3, 9, 11, 15, 20, 23)]

    def one(i: int) -> object:
        person, loan, message = cases[i % len(cases)]
        return gate(policy, person, loan, message, instants[i % len(instants)])

    per_second, count = rate(one, seconds)
    return per_second, count, len(cases)


def bench_plan(policy: Policy, seconds: float) -> float:
    cases = sample_cases(policy)
    now = dt.datetime(2026, 3, 10, 11, tzinfo=SHANGHAI)

    def one(i: int) -> object:
        person, loan, _ = cases[i % len(cases)]
        return plan(policy, person, loan, now)

    return rate(one, seconds)[0]


def bench_redis(policy: Policy, url: str, seconds: float) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    client.ping()
    prefix = f"bench:caps:{uuid.uuid4().hex[:8]}:"
    counter = f"{prefix}counter"
    reserver = CapReserver(client, policy, history=lambda borrower_id, since: [], prefix=prefix)
    try:
        ping = rate(lambda i: client.ping(), seconds)[0]
        incr = rate(lambda i: client.incr(counter), seconds)[0]

        # a fresh borrower each time: every reservation is granted (the full write path)
        def reserve_granted(i: int) -> object:
            return reserver.reserve(f"b{i}", Channel.SMS, f"m{i}", Purpose.DUNNING)

        # one borrower: after the first, every reservation is refused (read path + until)
        def reserve_refused(i: int) -> object:
            return reserver.reserve("busy", Channel.SMS, f"r{i}", Purpose.DUNNING)

        granted = rate(reserve_granted, seconds)[0]
        refused = rate(reserve_refused, seconds)[0]
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()
    return {"ping": ping, "incr": incr, "granted": granted, "refused": refused}


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
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {python}")
    gate_rate, gate_count, cases = bench_gate(policy, args.seconds)
    print(
        f"gate decisions/s (pure, 1 thread):   {gate_rate:10,.0f}"
        f"  ({gate_count:,} decisions over {cases} messages)"
    )
    print(f"plans/s (one loan, pure):            {bench_plan(policy, args.seconds):10,.0f}")
    figures = bench_redis(policy, args.redis_url, args.seconds)
    info = redis.Redis.from_url(args.redis_url).info("server")
    print(f"redis {info.get('redis_version')} at {args.redis_url} (1 connection, sequential):")
    print(f"  raw PING round trips/s:            {figures['ping']:10,.0f}")
    print(f"  raw INCR round trips/s:            {figures['incr']:10,.0f}")
    print(
        f"  cap reservations/s, granted:       {figures['granted']:10,.0f}"
        f"  ({figures['granted'] / figures['ping']:.0%} of PING)"
    )
    print(
        f"  cap reservations/s, refused:       {figures['refused']:10,.0f}"
        f"  ({figures['refused'] / figures['ping']:.0%} of PING)"
    )


if __name__ == "__main__":
    main()
