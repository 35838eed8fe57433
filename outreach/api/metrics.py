"""`GET /metrics` (SPEC §8): Prometheus text, the same from whichever web process answers.

- `outreach_messages{status,channel}` and `outreach_events{type,outcome}`: read from the
  database, the truth of both (kept by triggers on PostgreSQL, `store/counts.py`, so a scrape
  costs a sum over a few rows, not a scan of the log); every status and channel is shown,
  at 0 when none is in it, and every event type with the outcomes an alert watches
  (pending, applied, failed, dead_letter).
- `outreach_messages_due`: scheduled or deferred messages whose send_at has passed.
- `outreach_provider_requests_total{provider,result}`,
  `outreach_provider_request_seconds{provider}` (histogram) and `outreach_clock_leader{clock}`:
  counted by the processes that call providers or run a clock and pushed through Redis
  (`outreach/meters.py` says why not prometheus_client's multiprocess mode);
  `outreach_dispatch_dead_letters_total{channel}`: messages a worker dead-lettered.

Each scrape is one collector's, read when asked: nothing is kept in prometheus_client's
global registry, whose process metrics would describe only the process that answers. A part
whose source is unreachable is left out and `outreach_metrics_source_up{source}` says 0, so
a scrape during an outage still answers what it can.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator

import redis
from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from outreach import meters
from outreach.domain import Channel, Status
from outreach.service.parse import DATA_MODELS
from outreach.settings import Settings
from outreach.store import counts
from outreach.store.db import transaction
from outreach.wiring import Services

log = logging.getLogger(__name__)

# the text format `generate_latest` writes (Prometheus' classic text format)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# shown for every event type, at 0 when none has it: the ones an alert watches
EVENT_OUTCOMES_SHOWN = ("pending", "applied", "failed", "dead_letter")


def provider_names(settings: Settings) -> list[str]:
    """The providers this deployment sends through, named as the metrics name them."""
    return sorted({settings.sms_provider, settings.email_provider})


def _bound(value: float) -> str:
    return f"{value:g}"


class ServiceCollector(Collector):
    """The metrics of the whole service, read when collected."""

    def __init__(self, services: Services, now: dt.datetime | None = None) -> None:
        self.services = services
        self.now = now

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "outreach_metrics_source_up",
            "Whether this scrape could read the source of its metrics (database, redis).",
            labels=["source"],
        )
        database_ok = True
        try:
            yield from self._database()
        except Exception as error:
            database_ok = False
            log.debug("metrics: database not read: %s", error)
        up.add_metric(["database"], 1 if database_ok else 0)
        redis_ok = True
        try:
            yield from self._redis()
        except (redis.RedisError, OSError) as error:
            redis_ok = False
            log.debug("metrics: redis not read: %s", error)
        up.add_metric(["redis"], 1 if redis_ok else 0)
        yield up

    def _database(self) -> Iterator[Metric]:
        runtime = self.services.runtime
        now = self.now or dt.datetime.now(dt.UTC)
        with transaction(runtime.sessions) as session:
            counts.fold(session)
        with runtime.sessions() as session:
            by_status = counts.message_counts(session)
            by_outcome = counts.event_counts(session)
            due = counts.messages_due(session, now)
        messages = GaugeMetricFamily(
            "outreach_messages",
            "Messages now in each status, by channel.",
            labels=["status", "channel"],
        )
        shown = {(status.value, channel.value) for status in Status for channel in Channel}
        for status, channel in sorted(shown | set(by_status)):
            messages.add_metric([status, channel], by_status.get((status, channel), 0))
        yield messages
        yield GaugeMetricFamily(
            "outreach_messages_due",
            "Messages scheduled or deferred whose send_at has passed.",
            value=due,
        )
        events = GaugeMetricFamily(
            "outreach_events",
            "Inbox events (webhook events stored), by type and outcome.",
            labels=["type", "outcome"],
        )
        shown_events = {(kind, outcome) for kind in DATA_MODELS for outcome in EVENT_OUTCOMES_SHOWN}
        for kind, outcome in sorted(shown_events | set(by_outcome)):
            events.add_metric([kind, outcome], by_outcome.get((kind, outcome), 0))
        yield events

    def _redis(self) -> Iterator[Metric]:
        client = self.services.runtime.redis.client
        # this process's own requests first (in `outreach run` the worker is this process)
        meters.PROVIDERS.flush(client)
        totals = meters.read_provider_totals(client)
        clocks = meters.read_clocks(client)
        requests = CounterMetricFamily(
            "outreach_provider_requests",
            "Requests that reached a provider (a hand-over), by how they ended.",
            labels=["provider", "result"],
        )
        shown = {
            (provider, result)
            for provider in provider_names(self.services.runtime.settings)
            for result in meters.RESULTS
        }
        for provider, result in sorted(shown | set(totals.requests)):
            requests.add_metric([provider, result], totals.requests.get((provider, result), 0))
        yield requests
        seconds = HistogramMetricFamily(
            "outreach_provider_request_seconds",
            "How long a provider took to answer a request.",
            labels=["provider"],
        )
        configured = provider_names(self.services.runtime.settings)
        for provider in sorted(set(totals.buckets) | set(configured)):
            counts_of = totals.buckets.get(provider, [0] * (len(meters.BUCKETS) + 1))
            cumulative, buckets = 0, []
            for bound, n in zip((*map(_bound, meters.BUCKETS), "+Inf"), counts_of, strict=True):
                cumulative += n
                buckets.append((bound, float(cumulative)))
            seconds.add_metric([provider], buckets, sum_value=totals.seconds.get(provider, 0.0))
        yield seconds
        leader = GaugeMetricFamily(
            "outreach_clock_leader",
            "1 on the clock that leads (releases due messages), 0 on one that stands by.",
            labels=["clock"],
        )
        for name, leads in sorted(clocks.items()):
            leader.add_metric([name], 1 if leads else 0)
        yield leader
        dead = meters.read_dispatch_dead_letters(client)
        dead_letters = CounterMetricFamily(
            "outreach_dispatch_dead_letters",
            "Messages a worker gave up on after its dispatch failed the same way again and "
            "again (failed / dispatch_failed, flagged for a person).",
            labels=["channel"],
        )
        for channel in sorted({c.value for c in Channel} | set(dead)):
            dead_letters.add_metric([channel], dead.get(channel, 0))
        yield dead_letters


def render(services: Services, now: dt.datetime | None = None) -> bytes:
    """The Prometheus text of one scrape."""
    return generate_latest(ServiceCollector(services, now))
