"""8 processes x 4 threads race to reserve for one borrower: no cap is ever exceeded.

Each reservation follows the pipeline's contract: the message is recorded in PostgreSQL as
holding a reservation *before* `reserve` is called, and marked as not holding one when
refused. That table is the message log a rebuild reads, so a FLUSHALL in the middle of the
race must still never let a cap be exceeded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import multiprocessing
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis
import yaml

from outreach.caps import CapReserver, CapUnavailable, HistoryEntry
from outreach.domain import Channel, Purpose
from outreach.policy import CapRule, Policy, load_policy_text
from tests.integration.caps_fixtures import (  # noqa: F401 - fixtures
    POSTGRES_URL,
    REDIS_URL,
    libpq_url,
    private_redis,
    private_redis_url,
    service_missing,
)
from tests.unit.policy_fixtures import default_document

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

PROCESSES = 8
THREADS = 4
BORROWER = "B-race"
# Caps loose enough that every rule, weekly ones included, binds at some point of the race.
RACE_CAPS = {
    "sms_per_day": 2,
    "sms_per_week": 5,
    "email_per_day": 2,
    "email_per_week": 6,
    "any_per_day": 3,
    "any_per_week": 9,
}
VIRTUAL_START_MS = 1_780_000_000_000
VIRTUAL_DAYS = 12


@dataclasses.dataclass(frozen=True)
class Race:
    policy_text: str
    redis_url: str
    key_prefix: str
    postgres_url: str
    table: str
    seconds: float
    # with a virtual clock the race spans VIRTUAL_DAYS, so weekly windows bind too
    virtual_clock: bool


def race_worker(race: Race, process_index: int, start: Any, results: Any) -> None:
    """One process: THREADS threads reserving as fast as they can until the race ends."""
    policy = load_policy_text(race.policy_text, "race.yaml")
    tallies: list[tuple[int, int, int, int]] = []
    ready = threading.Barrier(THREADS + 1)

    def thread_main(thread_index: int) -> None:
        tallies.append(run_thread(race, policy, f"p{process_index}t{thread_index}", start, ready))

    threads = [threading.Thread(target=thread_main, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    ready.wait()
    results.put(("ready", process_index))
    for thread in threads:
        thread.join()
    granted, refused, rebuilds, errors = (sum(column) for column in zip(*tallies, strict=True))
    results.put(("done", (granted, refused, rebuilds, errors)))


def run_thread(
    race: Race, policy: Policy, name: str, start: Any, ready: threading.Barrier
) -> tuple[int, int, int, int]:
    rng = random.Random(name)
    rebuilds = 0
    with psycopg.connect(race.postgres_url, autocommit=True) as connection:

        def history(borrower_id: str, since: dt.datetime) -> list[HistoryEntry]:
            nonlocal rebuilds
            rebuilds += 1
            rows = connection.execute(
                f"SELECT id, channel, reserved_at FROM {race.table} "
                "WHERE borrower_id = %s AND holding AND reserved_at >= %s",
                (borrower_id, since),
            ).fetchall()
            return [(row[0], Channel(row[1]), row[2]) for row in rows]

        client = redis.Redis.from_url(race.redis_url)
        # Each racer's virtual clock runs 172,800 times faster than the wall clock, so a few
        # milliseconds of scheduling between processes are hours of virtual skew: the rebuild
        # margin must cover that, as 60 s covers real workers' clocks.
        skew = dt.timedelta(days=1) if race.virtual_clock else dt.timedelta(seconds=60)
        reserver = CapReserver(
            client, policy, history=history, prefix=race.key_prefix, clock_skew=skew
        )
        ready.wait()
        start.wait()
        wall_start = time.time()
        granted = refused = errors = 0
        number = 0
        while (elapsed := time.time() - wall_start) < race.seconds:
            number += 1
            message_id = f"{name}n{number}"
            channel = rng.choice((Channel.SMS, Channel.EMAIL))
            now_ms: int | None = None
            if race.virtual_clock:
                span_ms = VIRTUAL_DAYS * 86_400_000
                now_ms = VIRTUAL_START_MS + int(elapsed / race.seconds * span_ms)
                recorded = ms_to_datetime(now_ms)
            else:
                recorded = dt.datetime.now(dt.UTC)
            # durable before Redis is touched, as the pipeline does it
            connection.execute(
                f"INSERT INTO {race.table} (id, borrower_id, channel, reserved_at, holding) "
                "VALUES (%s, %s, %s, %s, true)",
                (message_id, BORROWER, channel.value, recorded),
            )
            try:
                decision = reserver.reserve(
                    BORROWER, channel, message_id, Purpose.DUNNING, now_ms=now_ms
                )
            except CapUnavailable:
                errors += 1
                decision = None
            if decision is not None and decision.may_send:
                granted += 1
                reserved_at = ms_to_datetime(int(decision.detail["reserved_at_ms"]))
                connection.execute(
                    f"UPDATE {race.table} SET reserved_at = %s WHERE id = %s",
                    (reserved_at, message_id),
                )
            else:
                refused += 1
                connection.execute(
                    f"UPDATE {race.table} SET holding = false WHERE id = %s", (message_id,)
                )
        client.close()
    return granted, refused, rebuilds, errors


def ms_to_datetime(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def race_policy() -> tuple[str, Policy]:
    document = default_document()
    document["caps"] = dict(RACE_CAPS)
    # no jurisdiction overrides: the workers pass no borrower, so the policy's caps are the caps
    document["jurisdictions"] = {}
    text = yaml.safe_dump(document, allow_unicode=True)
    return text, load_policy_text(text, "race.yaml")


@pytest.fixture
def reservation_log() -> Iterator[tuple[str, str]]:
    """A table of this test's own in PostgreSQL: the durable message log of the race."""
    url = libpq_url(POSTGRES_URL)
    table = f"caps_race_{uuid.uuid4().hex[:12]}"
    try:
        connection = psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as error:
        service_missing("PostgreSQL", error)
    with connection:
        connection.execute(
            f"CREATE TABLE {table} (id text PRIMARY KEY, borrower_id text NOT NULL, "
            "channel text NOT NULL, reserved_at timestamptz NOT NULL, holding boolean NOT NULL)"
        )
        try:
            yield url, table
        finally:
            connection.execute(f"DROP TABLE IF EXISTS {table}")


def run_race(
    race: Race, flush: redis.Redis | None = None, flushes: int = 0
) -> tuple[int, int, int, int]:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()
    processes = [
        context.Process(target=race_worker, args=(race, index, start, results))
        for index in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        for _ in range(PROCESSES):
            kind, _ = results.get(timeout=60)
            assert kind == "ready"
        start.set()
        for flush_number in range(flushes):
            time.sleep(race.seconds / (flushes + 1))
            assert flush is not None
            flush.flushall()
            del flush_number
        totals = [0, 0, 0, 0]
        for _ in range(PROCESSES):
            kind, counts = results.get(timeout=race.seconds + 60)
            assert kind == "done"
            totals = [total + count for total, count in zip(totals, counts, strict=True)]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert all(process.exitcode == 0 for process in processes)
    granted, refused, rebuilds, errors = totals
    return granted, refused, rebuilds, errors


def held(postgres_url: str, table: str) -> list[tuple[str, Channel, dt.datetime]]:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        rows = connection.execute(
            f"SELECT id, channel, reserved_at FROM {table} WHERE holding ORDER BY reserved_at"
        ).fetchall()
    return [(row[0], Channel(row[1]), row[2]) for row in rows]


def recorded_ids(postgres_url: str, table: str) -> set[str]:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        return {row[0] for row in connection.execute(f"SELECT id FROM {table}").fetchall()}


def worst_window(times: list[dt.datetime], window: dt.timedelta) -> int:
    """The most reservations any half-open window [t, t + window) holds."""
    ordered = sorted(times)
    return max(
        (sum(1 for other in ordered if start <= other < start + window) for start in ordered),
        default=0,
    )


def assert_within_caps(
    holdings: list[tuple[str, Channel, dt.datetime]], rules: tuple[CapRule, ...]
) -> dict[str, int]:
    worst = {}
    for rule in rules:
        times = [at for _, channel, at in holdings if rule.counts(channel)]
        worst[rule.name] = worst_window(times, rule.window)
        assert worst[rule.name] <= rule.limit, (rule.name, worst[rule.name], rule.limit)
    return worst


@pytest.mark.timeout(180)
def test_racing_workers_never_exceed_a_cap_on_redis_time(
    reservation_log: tuple[str, str],
) -> None:
    """The shared Redis server, its own clock: within seconds, the daily caps bind."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as error:
        service_missing("Redis", error)
    postgres_url, table = reservation_log
    prefix = f"test:caps-race:{uuid.uuid4().hex[:12]}:"
    policy_text, policy = race_policy()
    race = Race(policy_text, REDIS_URL, prefix, postgres_url, table, 3.0, virtual_clock=False)
    try:
        granted, refused, _, errors = run_race(race)
        holdings = held(postgres_url, table)
        worst = assert_within_caps(holdings, policy.caps)
        assert errors == 0, (granted, refused, errors)
        assert refused > 100, "the race must actually contend"
        # within seconds the daily cap across channels is reached, never passed
        assert worst["any_per_day"] == RACE_CAPS["any_per_day"] == granted
        # Redis holds nothing the log does not know. (It may hold a little more than the log
        # says is held: if the suite's other tests flush the shared server just as a message
        # is refused, the rebuild counts it until its own retry or release takes it out. That
        # errs on the side of sending less.)
        reserver = CapReserver(client, policy, history=lambda b, s: [], prefix=prefix)
        in_redis = {entry[0] for entry in reserver.holdings(BORROWER)}
        assert in_redis <= recorded_ids(postgres_url, table)
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()


@pytest.mark.timeout(180)
def test_flushall_in_the_middle_of_the_race_never_lets_a_cap_be_exceeded(
    reservation_log: tuple[str, str],
    private_redis: redis.Redis,  # noqa: F811
    private_redis_url: str,  # noqa: F811
) -> None:
    """A private Redis server (FLUSHALL is safe there) and twelve virtual days."""
    postgres_url, table = reservation_log
    policy_text, policy = race_policy()
    race = Race(policy_text, private_redis_url, "outreach:caps:", postgres_url, table, 6.0, True)
    granted, refused, rebuilds, errors = run_race(race, flush=private_redis, flushes=2)
    holdings = held(postgres_url, table)
    worst = assert_within_caps(holdings, policy.caps)
    assert errors == 0
    assert refused > 100
    # at least one rebuild after each FLUSHALL (the first reservation also rebuilds)
    assert rebuilds >= 3
    assert granted == len(holdings)
    # daily and weekly caps were reached, so the windows really rolled during the race
    assert worst["any_per_day"] == RACE_CAPS["any_per_day"]
    assert worst["any_per_week"] == RACE_CAPS["any_per_week"]
