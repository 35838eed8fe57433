"""A process's observer thread: watches PostgreSQL and Redis, pushes its counters, sums up.

Each long-running process (`outreach run`, `web`, each `worker` process, `clock`) starts one
(`observe_process`) after its runtime. Once a second it may:

- ask Redis (PING, every 2 s) and PostgreSQL (a new connection and `SELECT 1`, with a 3 s
  connect timeout, every 5 s) whether they answer, and log a change of state once: WARNING
  when one stops answering, INFO when it answers again with how long it was out and how many
  repeated warnings were left out (`logs.OUTAGES`);
- add this process's provider requests to Redis (`meters.PROVIDERS.flush`, every 2 s);
- every minute, when there was anything to say, write one INFO line of what the process did:
  requests to each provider by result (messages handed over), webhook events by result.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from typing import Any, Final

import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from outreach import meters
from outreach.logs import OUTAGES, fields
from outreach.runtime import Runtime

log = logging.getLogger("outreach.summary")

TICK_SECONDS: Final = 1.0
REDIS_EVERY: Final = 2.0
DATABASE_EVERY: Final = 5.0
FLUSH_EVERY: Final = 2.0
SUMMARY_EVERY: Final = 60.0
PROBE_TIMEOUT: Final = 3


class ProcessObserver:
    def __init__(
        self,
        runtime: Runtime,
        process: str,
        *,
        summary_every: float = SUMMARY_EVERY,
        watch_database: bool = True,
    ) -> None:
        self.process = process
        self.summary_every = summary_every
        self._redis = redis.Redis.from_url(
            runtime.redis.url, socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT
        )
        url = runtime.engine.url
        # SQLite is a file of this process: nothing to watch
        self._probe: Engine | None = (
            create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": PROBE_TIMEOUT})
            if watch_database and url.get_backend_name() == "postgresql"
            else None
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"observer-{process}", daemon=True)
        self._last: dict[str, float] = defaultdict(float)
        self._minute_started = time.monotonic()

    def start(self) -> ProcessObserver:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread; push what is left and write the last summary."""
        self._stop.set()
        self._thread.join(timeout=10)
        self._flush()
        self.summarize()
        self._redis.close()
        if self._probe is not None:
            self._probe.dispose()

    def _due(self, what: str, every: float, now: float) -> bool:
        if now - self._last[what] < every:
            return False
        self._last[what] = now
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                self.tick(now)
            except Exception:  # the observer must outlive anything it observes
                log.debug("observer tick failed", exc_info=True)
            self._stop.wait(TICK_SECONDS)

    def tick(self, now: float) -> None:
        if self._due("redis", REDIS_EVERY, now):
            self.probe_redis()
        if self._probe is not None and self._due("database", DATABASE_EVERY, now):
            self.probe_database()
        if self._due("flush", FLUSH_EVERY, now):
            self._flush()
        if now - self._minute_started >= self.summary_every:
            self.summarize()

    def probe_redis(self) -> bool:
        try:
            self._redis.ping()
        except (redis.RedisError, OSError) as error:
            OUTAGES.went_down("Redis", error)
            return False
        OUTAGES.came_back("Redis")
        return True

    def probe_database(self) -> bool:
        if self._probe is None:
            return True
        try:
            with self._probe.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as error:
            OUTAGES.went_down("PostgreSQL", getattr(error, "orig", None) or error)
            return False
        OUTAGES.came_back("PostgreSQL")
        return True

    def _flush(self) -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            # kept for the next flush; the Redis probe says it is out
            meters.PROVIDERS.flush(self._redis)

    def summarize(self) -> None:
        """One INFO line of the last minute's provider requests and webhook events, when
        there were any."""
        self._minute_started = time.monotonic()
        requests = meters.PROVIDERS.take_minute()
        events = meters.EVENTS.take_minute()
        if not requests and not events:
            return
        by_provider: dict[str, dict[str, int]] = defaultdict(dict)
        for (provider, result), n in sorted(requests.items()):
            by_provider[provider][result] = n
        parts = []
        for provider, results in by_provider.items():
            handed = ", ".join(f"{n} {result}" for result, n in results.items())
            parts.append(f"{provider}: {sum(results.values())} requests ({handed})")
        if events:
            counted = ", ".join(f"{n} {status}" for status, n in sorted(events.items()))
            parts.append(f"events: {sum(events.values())} ({counted})")
        summary: dict[str, Any] = {}
        if by_provider:
            summary["provider_requests"] = dict(by_provider)
        if events:
            summary["events"] = events
        log.info("in the last minute: %s", "; ".join(parts), extra=fields(**summary))


def observe_process(runtime: Runtime, process: str) -> ProcessObserver:
    """Start the observer of this process (stop it with `.stop()` before the runtime)."""
    return ProcessObserver(runtime, process).start()
