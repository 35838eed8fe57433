"""`GET /ui/`: the overview. Sends per day over the last 30 days (UTC days) by channel and
final status, as an SVG chart (a group of bars per day, one per channel, stacked by status,
each bar and stretch titled with its numbers) with a table of the same numbers beneath;
what was withheld in those days and what is deferred now, by reason in words; replies
waiting for a person; messages due within the hour; whether a clock holds the lead; and the
queues' health (the broker's queue in Redis, messages queued and being handed over, the
inbox). Each figure links to the view of the log that shows it.

The figures are `outreach/store/overview.py`'s, counted from the log in one session; the
clock's lease and the broker's queue are read from Redis."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.responses import Response

from outreach.api.auth import ServicesDep
from outreach.clock import LOCK_KEY, RENEW_SECONDS
from outreach.domain import Channel
from outreach.store import overview as figures_of
from outreach.ui.charts import CHANNEL_WORDS, DAY_STATUSES, day_chart, day_words
from outreach.ui.messages import log_href
from outreach.ui.pages import PageSession, render
from outreach.worker import QUEUE

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)

CHANNELS = tuple(channel.value for channel in Channel)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ClockLead:
    """Whether a clock holds the leader's lease in Redis (None: Redis did not say), and
    for how much longer unless it renews it."""

    held: bool | None
    seconds_left: float | None = None


def clock_lead(client: redis.Redis) -> ClockLead:
    try:
        left = client.pttl(LOCK_KEY)
    except redis.RedisError as error:
        log.warning("the clock's lease could not be read: %s", error)
        return ClockLead(None)
    milliseconds = int(left) if isinstance(left, int) else -2
    # -2: no such key; -1: a key without expiry (never set so by a clock, but held)
    if milliseconds == -2:
        return ClockLead(False)
    return ClockLead(True, milliseconds / 1000 if milliseconds >= 0 else None)


def broker_queue(request: Request) -> int | None:
    """Broker messages waiting in Redis for a worker (each carries a few message ids)."""
    try:
        return int(request.app.state.broker.do_qsize(QUEUE))
    except Exception as error:
        log.warning("the broker's queue could not be read: %s", error)
        return None


def _day_rows(activity: figures_of.Activity) -> list[dict[str, Any]]:
    """The table beneath the chart: a row per day, per channel the count of each status."""
    counts = {(e.day, e.channel, e.status): e.count for e in activity.per_day}
    rows = []
    for day in activity.days:
        since, until = activity.bounds(day)
        view = {"since": _iso(since), "until": _iso(until)}
        cells: dict[str, dict[str, Any]] = {}
        total = 0
        for channel in CHANNELS:
            by_status = {status: counts.get((day, channel, status), 0) for status in DAY_STATUSES}
            cells[channel] = {
                "by_status": by_status,
                "total": sum(by_status.values()),
                "href": log_href({**view, "channel": channel}),
            }
            total += sum(by_status.values())
        rows.append(
            {
                "day": day.isoformat(),
                "words": day_words(day),
                "cells": cells,
                "total": total,
                "href": log_href(view),
            }
        )
    return rows


@router.get("/ui/")
def overview(request: Request, _: PageSession, services: ServicesDep) -> Response:
    now = services.dispatcher.now()
    with services.runtime.sessions() as db:
        figures = figures_of.overview(db, now)
    activity = figures.activity
    counts = {(e.day, e.channel, e.status): e.count for e in activity.per_day}
    span = {"since": _iso(activity.start), "until": _iso(activity.end)}
    not_final = sum(e.count for e in activity.per_day if e.status not in DAY_STATUSES)
    withheld = [
        {
            "status": entry.status,
            "reason": entry.reason,
            "count": entry.count,
            "href": log_href(
                {
                    "status": entry.status,
                    **({"reason": entry.reason} if entry.reason else {}),
                    **span,
                }
            ),
        }
        for entry in activity.withheld
    ]
    deferred = [
        {
            "reason": entry.reason,
            "count": entry.count,
            "href": log_href(
                {"status": "deferred", **({"reason": entry.reason} if entry.reason else {})}
            ),
        }
        for entry in figures.deferred
    ]
    return render(
        request,
        "overview.html",
        {
            "page_title": "Overview",
            "nav": "overview",
            "now": now,
            "chart": day_chart(activity.days, counts, CHANNELS),
            "days": _day_rows(activity),
            "statuses": DAY_STATUSES,
            "channels": CHANNELS,
            "channel_words": CHANNEL_WORDS,
            "zone": activity.zone,
            "first_day": day_words(activity.days[0]),
            "last_day": day_words(activity.days[-1]),
            "not_final": not_final,
            "not_final_href": log_href({"status": "scheduled,deferred,queued,sending", **span}),
            "withheld": withheld,
            "deferred": deferred,
            "replies": figures.replies,
            "replies_href": log_href({"needs_human": "true"}),
            "due": figures.due,
            "due_href": log_href(
                {"status": "scheduled,deferred", "until": _iso(figures.due.until)}
            ),
            "queues": figures.queues,
            "queued_href": log_href({"status": "queued,sending"}),
            "broker_queue": broker_queue(request),
            "clock": clock_lead(services.runtime.redis.client),
            "renew_seconds": RENEW_SECONDS,
        },
    )
