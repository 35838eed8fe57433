"""The shared SMS rate limiter on a real Redis: bursts are paced across threads, not rejected."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from outreach.channels.rate_limit import (
    RateLimitTimeout,
    RateLimitUnavailable,
    SegmentRateLimiter,
)
from tests.support import free_port

pytestmark = pytest.mark.redis

KEY = "test:sms:rate"
# How late a woken thread may be (scheduler jitter); the slots themselves are exact.
JITTER = 0.1


def separate_clients(redis_client: redis.Redis, count: int) -> list[redis.Redis]:
    """One client per worker, each with its own connections, as separate processes would have."""
    pool = redis_client.connection_pool
    return [
        # from_pool: the client owns its pool and closes its connections with it
        redis.Redis.from_pool(
            redis.ConnectionPool(connection_class=pool.connection_class, **pool.connection_kwargs)
        )
        for _ in range(count)
    ]


@pytest.fixture
def worker_clients(redis_client: redis.Redis) -> Iterator[list[redis.Redis]]:
    clients = separate_clients(redis_client, 4)
    yield clients
    for client in clients:
        client.close()


@dataclass(frozen=True)
class Sent:
    slot: float  # the instant reserved in Redis's clock
    woke: float  # when acquire() returned, in this process's monotonic clock
    segments: int


def run_workers(clients: list[redis.Redis], rate: float, jobs: list[list[int]]) -> list[Sent]:
    """Each worker acquires its list of segment counts at once; returns them in slot order."""
    sent: list[Sent] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def work(client: redis.Redis, segments_list: list[int]) -> None:
        limiter = SegmentRateLimiter(client, rate, key=KEY)
        start.wait()
        try:
            for segments in segments_list:
                slot = limiter.acquire(segments, timeout=60)
                woke = time.monotonic()
                with lock:
                    sent.append(Sent(slot, woke, segments))
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=work, args=(client, job))
        for client, job in zip(clients, jobs, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return sorted(sent, key=lambda s: s.slot)


def most_segments_in_any_second(sent: list[Sent]) -> int:
    """The most segments whose messages start within one second of each other."""
    return max(
        sum(later.segments for later in sent[i:] if later.slot < first.slot + 1)
        for i, first in enumerate(sent)
    )


def test_burst_at_five_per_second_is_paced_across_four_workers(
    worker_clients: list[redis.Redis],
) -> None:
    # OUTREACH_SMS_RATE=5: 16 one-segment messages from 4 workers, all due at once.
    sent = run_workers(worker_clients, 5, [[1] * 4 for _ in range(4)])

    assert len(sent) == 16  # every one went: paced, none rejected
    slot_gaps = [b.slot - a.slot for a, b in itertools.pairwise(sent)]
    assert slot_gaps == [pytest.approx(0.2, abs=1e-5)] * 15
    assert most_segments_in_any_second(sent) == 5
    # and the workers really waited for their slots: 6 consecutive sends span a second
    woke = sorted(s.woke for s in sent)
    assert min(b - a for a, b in itertools.pairwise(woke)) >= 0.2 - JITTER
    assert all(woke[i + 5] - woke[i] >= 1 - JITTER for i in range(len(woke) - 5))


def test_hundred_segments_keep_the_rate_across_four_workers(
    worker_clients: list[redis.Redis],
) -> None:
    # The same pacing at 50/s, so 100 segments (1-3 per message) take about 2 s.
    rate = 50
    jobs = [[1, 2, 3, 1, 1, 2, 1, 3, 1, 2, 1, 3, 2, 2] for _ in range(4)]
    assert sum(map(sum, jobs)) == 100

    sent = run_workers(worker_clients, rate, jobs)

    assert sum(s.segments for s in sent) == 100
    # a message of n segments holds the sender for n/rate s, as Twilio drains its queue
    for earlier, later in itertools.pairwise(sent):
        assert later.slot - earlier.slot == pytest.approx(earlier.segments / rate, abs=1e-5)
    # in any second: the rate, plus at most the tail of one message that starts inside it
    assert most_segments_in_any_second(sent) <= rate + 2
    woke = sorted(s.woke for s in sent)
    assert woke[-1] - woke[0] >= (100 - sent[-1].segments) / rate - JITTER


def test_a_slot_too_far_away_is_refused_without_reserving_it(redis_client: redis.Redis) -> None:
    waits: list[float] = []
    limiter = SegmentRateLimiter(redis_client, 1, key=KEY, sleep=waits.append)
    limiter.acquire(1, timeout=0)

    with pytest.raises(RateLimitTimeout) as first:
        limiter.acquire(1, timeout=0.1)
    with pytest.raises(RateLimitTimeout) as second:
        limiter.acquire(1, timeout=0.1)
    limiter.acquire(1, timeout=5)

    # the refused callers did not push the next slot back: it is still about 1 s away
    assert 0.5 < second.value.retry_after <= first.value.retry_after <= 1
    assert waits == [pytest.approx(1, abs=0.5)]
    assert waits[0] <= first.value.retry_after
    # the schedule does not outlive its use
    assert 0 < redis_client.pttl(KEY) <= 3000


def test_redis_down_fails_closed() -> None:
    unreachable = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    limiter = SegmentRateLimiter(unreachable, 5, key=KEY)
    try:
        with pytest.raises(RateLimitUnavailable, match="Redis"):
            limiter.acquire(1, timeout=5)
    finally:
        unreachable.close()


def test_arguments_are_checked(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="rate_per_second"):
        SegmentRateLimiter(redis_client, 0)
    with pytest.raises(ValueError, match="segments"):
        SegmentRateLimiter(redis_client, 5, key=KEY).acquire(0, timeout=1)
