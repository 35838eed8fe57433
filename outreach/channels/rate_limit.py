"""Provider throughput held across every worker process: SMS segments per second, in Redis.

The limiter is a GCRA (generic cell rate algorithm) that *reserves* a slot rather than
answering yes/no: each caller atomically moves a shared "theoretical arrival time" forward by
the cost of its message and then sleeps until its own slot. A burst of due messages at 08:00
therefore leaves evenly paced, in arrival order, with no polling and no thundering herd.

The clock is Redis `TIME`, so workers on machines with skewed clocks still share one schedule.
A message of `n` segments starts at its slot and the next message may start `n / rate`
seconds later: that is how Twilio itself drains a sender's queue, so its queue never grows.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from outreach.errors import TransientError
from outreach.lua import lua_script

DEFAULT_KEY = "outreach:sms:rate"

# KEYS[1]: the theoretical arrival time (TAT), microseconds of Redis time.
# ARGV[1]: microseconds per segment; ARGV[2]: segments; ARGV[3]: longest acceptable wait (µs).
# Returns {reserved (1|0), wait in µs, the slot in µs of Redis time}. Nothing is reserved when
# the wait would be too long, so a caller that gives up does not push everyone else's slot back.
_RESERVE_SLOT = lua_script("rate_reserve_slot")


class RateLimitError(TransientError):
    """Raised when no send slot could be obtained; the message waits and is tried again."""


class RateLimitTimeout(RateLimitError):
    """Raised when the next free slot is further away than the caller is willing to wait."""

    def __init__(self, wait: float, timeout: float) -> None:
        super().__init__(
            f"the next SMS slot is {wait:.1f} s away, longer than the {timeout:.1f} s allowed"
        )
        self.retry_after = wait


class RateLimitUnavailable(RateLimitError):
    """Raised when Redis cannot be reached: without the shared schedule nothing is sent."""


class SegmentRateLimiter:
    """Paces SMS segments to `rate_per_second` across every process sharing one Redis."""

    def __init__(
        self,
        redis_client: redis.Redis,
        rate_per_second: float,
        key: str = DEFAULT_KEY,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError(f"rate_per_second must be positive, got {rate_per_second}")
        self._redis = redis_client
        self._key = key
        self._sleep = sleep
        self.rate_per_second = rate_per_second
        # whole microseconds: Lua numbers are doubles, exact for integers far beyond Redis TIME
        self._interval_us = max(1, round(1_000_000 / rate_per_second))
        self._reserve = redis_client.register_script(_RESERVE_SLOT)

    def acquire(self, segments: int, timeout: float) -> float:
        """Wait until `segments` may be handed to the provider; return the slot's Unix time.

        The slot is in Redis's clock (useful in logs and tests). Raises RateLimitTimeout
        without reserving anything when the slot is more than `timeout` seconds away, and
        RateLimitUnavailable when Redis cannot be asked.
        """
        if segments < 1:
            raise ValueError(f"segments must be at least 1, got {segments}")
        max_wait_us = max(0, int(timeout * 1_000_000))
        try:
            reserved, wait_us, slot_us = self._reserve(
                keys=[self._key], args=[self._interval_us, segments, max_wait_us]
            )
        except redis.RedisError as error:
            raise RateLimitUnavailable(
                f"the SMS rate limiter cannot reach Redis ({type(error).__name__}); "
                "not sending until it can"
            ) from error
        wait = int(wait_us) / 1_000_000
        if not int(reserved):
            raise RateLimitTimeout(wait, timeout)
        if wait > 0:
            self._sleep(wait)
        return int(slot_us) / 1_000_000
