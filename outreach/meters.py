"""What only a process sees, counted in the process and pushed through Redis for `/metrics`.

Provider requests (`outreach_provider_requests_total{provider,result}`), their latencies
(`outreach_provider_request_seconds{provider}`, a histogram) and which clock leads
(`outreach_clock_leader{clock}`) happen in worker and clock processes, which serve no HTTP
and may run on other machines than the web process Prometheus scrapes. So they are not kept
in prometheus_client's multiprocess mode, which shares per-process files in one directory
(PROMETHEUS_MULTIPROC_DIR) on one host, to be wiped before the processes start and read by
a scrape on that same host: workers on a second machine would be missing from every
scrape, and a worker pool restarted under a running web process would leave files of dead
pids behind. Instead:

- each process adds its provider requests up in memory (`PROVIDERS.observe`, a lock and a
  few dict updates on the send path) and its observer thread (`outreach/observe.py`) adds
  the increments to Redis hashes every 2 s with HINCRBY / HINCRBYFLOAT, which are atomic,
  so any number of processes on any number of machines add into the same totals; a process
  that cannot reach Redis keeps its increments and adds them at the next flush. Totals only
  grow, whichever process stops or starts (a process killed outright loses at most its last
  2 s); a flushed Redis starts them at 0 again, which Prometheus reads as a counter reset.
  Any web process answers `/metrics` with the same totals (its own increments flushed first).
- each clock writes its own view (leader or standby) with an expiry into one Redis hash at
  start and on every heartbeat (5 s); `/metrics` shows every clock whose entry has not
  expired, so `sum(outreach_clock_leader)` is 1 when exactly one clock leads.

Counts the database holds (messages by status, events by outcome) are read from the
database, never counted here (`outreach/store/counts.py`).

`provider_request` wraps the call that reaches a provider (channels/), so waiting for the
shared SMS rate limiter or a closed window is neither counted nor timed; it also logs a
provider's errors (one line per provider, result and code per minute, the recipient scrubbed
from the text) and feeds the process's per-minute summary line.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, cast

import orjson
import redis

from outreach.channels.base import (
    OutcomeUnknown,
    Outgoing,
    ProviderRejected,
    ProviderUnavailable,
    Receipt,
)
from outreach.logs import fields, scrub

log = logging.getLogger("outreach.providers")
events_log = logging.getLogger("outreach.events")

PROVIDER_REQUESTS_KEY: Final = "outreach:metrics:provider_requests"
PROVIDER_SECONDS_KEY: Final = "outreach:metrics:provider_seconds"
CLOCKS_KEY: Final = "outreach:metrics:clocks"
# messages dead-lettered by a worker (worker.py), by channel: rare, added to Redis at once
DISPATCH_DEAD_LETTERS_KEY: Final = "outreach:metrics:dispatch_dead_letters"
# seconds; a Twilio call times out at 10 s, an SMTP conversation at 30 s
BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RESULTS: Final = ("accepted", "rejected", "unavailable", "unknown", "error")
# one error line per provider, result and code in this many seconds
ERROR_LINE_EVERY: Final = 60.0
_SEP: Final = "|"


def result_of(error: BaseException | None) -> str:
    """The `result` label of a provider request that raised `error` (None: accepted)."""
    if error is None:
        return "accepted"
    if isinstance(error, ProviderRejected):
        return "rejected"
    if isinstance(error, OutcomeUnknown):
        return "unknown"
    if isinstance(error, ProviderUnavailable):
        return "unavailable"
    return "error"


def bucket_of(seconds: float) -> int:
    """The index of the first bucket `seconds` falls in (len(BUCKETS): above them all)."""
    for index, bound in enumerate(BUCKETS):
        if seconds <= bound:
            return index
    return len(BUCKETS)


@dataclass
class ProviderTotals:
    """What Redis holds: requests by (provider, result); per provider the bucket counts
    (not cumulative, one past the last bound), the sum and count of seconds."""

    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    buckets: dict[str, list[int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)


class ProviderMeter:
    """This process's provider requests not yet added to Redis, and those of the current
    minute (for the summary line)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str]] = Counter()
        self._buckets: Counter[tuple[str, int]] = Counter()
        self._seconds: defaultdict[str, float] = defaultdict(float)
        self._minute: Counter[tuple[str, str]] = Counter()
        self._error_lines: dict[tuple[str, str, str], float] = {}

    def observe(self, provider: str, result: str, seconds: float) -> None:
        with self._lock:
            self._requests[provider, result] += 1
            self._buckets[provider, bucket_of(seconds)] += 1
            self._seconds[provider] += seconds
            self._minute[provider, result] += 1

    def take_minute(self) -> dict[tuple[str, str], int]:
        """Requests by (provider, result) since the last call."""
        with self._lock:
            minute, self._minute = dict(self._minute), Counter()
        return minute

    def may_log_error(self, provider: str, result: str, code: str) -> bool:
        now = time.monotonic()
        key = (provider, result, code)
        with self._lock:
            last = self._error_lines.get(key)
            if last is not None and now - last < ERROR_LINE_EVERY:
                return False
            self._error_lines[key] = now
            return True

    def flush(self, client: redis.Redis) -> None:
        """Add what this process counted since the last flush to Redis; on a Redis error
        the increments are kept for the next flush and the error raised."""
        with self._lock:
            requests, self._requests = self._requests, Counter()
            buckets, self._buckets = self._buckets, Counter()
            seconds, self._seconds = self._seconds, defaultdict(float)
        if not requests:
            return
        try:
            pipe = client.pipeline(transaction=False)
            for (provider, result), n in requests.items():
                pipe.hincrby(PROVIDER_REQUESTS_KEY, f"{provider}{_SEP}{result}", n)
            for (provider, index), n in buckets.items():
                pipe.hincrby(PROVIDER_SECONDS_KEY, f"{provider}{_SEP}{index}", n)
            for provider, total in seconds.items():
                pipe.hincrbyfloat(PROVIDER_SECONDS_KEY, f"{provider}{_SEP}sum", total)
            pipe.execute()
        except redis.RedisError:
            # a pipeline without MULTI may have applied part of it: at worst a few requests
            # counted twice after a connection lost mid-reply, never any lost
            with self._lock:
                self._requests.update(requests)
                self._buckets.update(buckets)
                for provider, total in seconds.items():
                    self._seconds[provider] += total
            raise


PROVIDERS = ProviderMeter()


def read_provider_totals(client: redis.Redis) -> ProviderTotals:
    """Every process's provider requests, as Redis holds them."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(PROVIDER_REQUESTS_KEY)
    pipe.hgetall(PROVIDER_SECONDS_KEY)
    raw_requests, raw_seconds = pipe.execute()
    totals = ProviderTotals()
    for key, value in raw_requests.items():
        provider, _, result = _text(key).rpartition(_SEP)
        totals.requests[provider, result] = int(value)
    for key, value in raw_seconds.items():
        provider, _, part = _text(key).rpartition(_SEP)
        if part == "sum":
            totals.seconds[provider] = float(value)
            continue
        index = int(part)
        if not 0 <= index <= len(BUCKETS):
            continue
        counts = totals.buckets.setdefault(provider, [0] * (len(BUCKETS) + 1))
        counts[index] += int(value)
    for provider, counts in totals.buckets.items():
        totals.count[provider] = sum(counts)
        totals.seconds.setdefault(provider, 0.0)
    return totals


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@contextmanager
def provider_request(provider: str, outgoing: Outgoing | None = None) -> Iterator[None]:
    """Count and time one request that reaches `provider`, by how it ended (`result_of`
    the error it raised, translated into the channel's own errors); log an error."""
    started = time.perf_counter()
    try:
        yield
    except BaseException as error:
        result = result_of(error)
        PROVIDERS.observe(provider, result, time.perf_counter() - started)
        _log_error(provider, result, error, outgoing)
        raise
    PROVIDERS.observe(provider, "accepted", time.perf_counter() - started)


def metered(
    provider: str,
) -> Callable[[Callable[[Any, Outgoing], Receipt]], Callable[[Any, Outgoing], Receipt]]:
    """A sender's `send` counted and timed whole as one `provider_request` (for providers
    that answer in memory: nothing in their `send` waits)."""

    def wrap(send: Callable[[Any, Outgoing], Receipt]) -> Callable[[Any, Outgoing], Receipt]:
        @functools.wraps(send)
        def sending(self: Any, outgoing: Outgoing) -> Receipt:
            with provider_request(provider, outgoing):
                return send(self, outgoing)

        return sending

    return wrap


def _log_error(provider: str, result: str, error: BaseException, outgoing: Outgoing | None) -> None:
    code = str(getattr(error, "code", "") or type(error).__name__)
    if not PROVIDERS.may_log_error(provider, result, code):
        return
    recipient = outgoing.to if outgoing is not None else None
    detail = scrub(" ".join(str(getattr(error, "detail", "") or error).split())[:300], recipient)
    message_id = outgoing.message_id if outgoing is not None else None
    level = logging.INFO if result == "rejected" else logging.WARNING
    log.log(
        level,
        "%s %s message %s: %s %s (further %s %s errors this minute are counted, not logged)",
        provider,
        "refused" if result == "rejected" else f"request {result} for",
        message_id,
        code,
        detail,
        provider,
        code,
        extra=fields(
            provider=provider, result=result, code=code, message_id=message_id, detail=detail
        ),
    )


class EventTally:
    """Webhook events this process answered in the current minute, by result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._minute: Counter[str] = Counter()

    def count(self, status: str, n: int = 1) -> None:
        with self._lock:
            self._minute[status] += n

    def batch(self, results: Sequence[dict[str, Any]]) -> None:
        """Count a batch's results and log one line of its size and outcome."""
        tally = Counter(str(result.get("status")) for result in results)
        with self._lock:
            self._minute.update(tally)
        events_log.info(
            "a batch of %d events: %s",
            len(results),
            ", ".join(f"{n} {status}" for status, n in sorted(tally.items())) or "none",
            extra=fields(events=len(results), **dict(tally)),
        )

    def take_minute(self) -> dict[str, int]:
        with self._lock:
            minute, self._minute = dict(self._minute), Counter()
        return minute


EVENTS = EventTally()


def publish_clock(
    client: redis.Redis, token: str, name: str, leader: bool, ttl_seconds: float
) -> None:
    """This clock's view (leader or standby), kept `ttl_seconds` unless published again."""
    entry = {"name": name, "leader": leader, "expires": time.time() + ttl_seconds}
    client.hset(CLOCKS_KEY, token, orjson.dumps(entry))


def withdraw_clock(client: redis.Redis, token: str) -> None:
    client.hdel(CLOCKS_KEY, token)


def read_clocks(client: redis.Redis) -> dict[str, bool]:
    """Each live clock's name and whether it holds the leadership; expired entries (a
    clock gone without withdrawing) are removed."""
    now = time.time()
    found: dict[str, bool] = {}
    expired: list[bytes | str] = []
    for token, raw in client.hgetall(CLOCKS_KEY).items():
        try:
            entry = orjson.loads(raw)
            if float(entry["expires"]) < now:
                expired.append(token)
                continue
            found[str(entry["name"])] = found.get(str(entry["name"]), False) or bool(
                entry["leader"]
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            expired.append(token)
    if expired:
        client.hdel(CLOCKS_KEY, *expired)
    return found


def count_dispatch_dead_letter(client: redis.Redis, channel: str) -> None:
    """One message dead-lettered by a worker (`outreach_dispatch_dead_letters_total`)."""
    client.hincrby(DISPATCH_DEAD_LETTERS_KEY, channel, 1)


def read_dispatch_dead_letters(client: redis.Redis) -> dict[str, int]:
    found = cast(dict[bytes, bytes], client.hgetall(DISPATCH_DEAD_LETTERS_KEY))
    return {_text(channel): int(count) for channel, count in found.items()}
