"""The clock: APScheduler jobs that release due messages and keep plans fresh.

Exactly one clock acts at a time: the leader holds a Redis lock with a renewed lease, and a
second clock idles until the lease lapses. Every job is idempotent, so a leadership handover
mid-job repeats work at worst, never duplicates a message.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Sequence

import redis
from apscheduler.schedulers.background import BackgroundScheduler

from outreach import meters
from outreach.errors import StoreUnavailable, TransientError
from outreach.lua import lua_script
from outreach.service import campaigns as campaign_service
from outreach.service import dispatch as dispatch_service
from outreach.service.delivery_status import apply_parked
from outreach.service.inbox import apply_orphaned
from outreach.service.journal import JournalUnavailable
from outreach.service.planner import replan_loan
from outreach.store import callbacks, counts, overview
from outreach.store.db import transaction
from outreach.store.loans import open_loan_ids
from outreach.wiring import Services
from outreach.worker_leases import LeaseWatch

log = logging.getLogger(__name__)

LOCK_KEY = "outreach:clock:leader"
LEASE_MS = 15_000
RENEW_SECONDS = 5
TICK_SECONDS = 1.0
REPLAN_EVERY = dt.timedelta(hours=1)

_RENEW = lua_script("leader_renew")
_RELEASE = lua_script("leader_release")


class LeaderLock:
    def __init__(self, client: redis.Redis, key: str = LOCK_KEY, lease_ms: int = LEASE_MS) -> None:
        self.client = client
        self.key = key
        self.lease_ms = lease_ms
        self.token = secrets.token_hex(16)
        self.held = False

    def refresh(self) -> bool:
        """Take or renew the lease; False (and idle) when another clock holds it."""
        try:
            if self.held:
                self.held = bool(self.client.eval(_RENEW, 1, self.key, self.token, self.lease_ms))
            if not self.held:
                self.held = bool(self.client.set(self.key, self.token, nx=True, px=self.lease_ms))
        except redis.RedisError as error:
            log.warning("clock lock unavailable: %s", error)
            self.held = False
        return self.held

    def release(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.client.eval(_RELEASE, 1, self.key, self.token)
        self.held = False


class Clock:
    def __init__(
        self,
        services: Services,
        enqueue: Callable[[Sequence[str]], None],
        *,
        tick_seconds: float = TICK_SECONDS,
    ) -> None:
        self.services = services
        self.sessions = services.runtime.sessions
        self.dispatcher = services.dispatcher
        self.enqueue = enqueue
        self.lock = LeaderLock(services.runtime.redis.new_client())
        self.leases = LeaseWatch(
            services.runtime.redis.client, services.runtime.settings.worker_lease_seconds
        )
        self.tick_seconds = tick_seconds
        self.scheduler = BackgroundScheduler(timezone=dt.UTC)
        self._job_lock = threading.Lock()
        self._last_replan: dt.datetime | None = None
        # how this clock is named in `outreach_clock_leader{clock}` (GET /metrics)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def is_leader(self) -> bool:
        return self.lock.held

    def start(self) -> None:
        self.lock.refresh()
        self._publish()
        common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 30}
        self.scheduler.add_job(self.heartbeat, "interval", seconds=RENEW_SECONDS, **common)
        self.scheduler.add_job(self.release_due, "interval", seconds=self.tick_seconds, **common)
        self.scheduler.add_job(
            self.apply_journaled_replies, "interval", seconds=self.tick_seconds, **common
        )
        self.scheduler.add_job(self.housekeeping, "interval", seconds=60, **common)
        # a dead worker is known within a lease and confirmed a lease later (leases.py):
        # looking twice a lease keeps its messages' wait under three leases (60 s by default)
        self.scheduler.add_job(
            self.reconcile_orphaned, "interval", seconds=self.leases.ttl / 2, **common
        )
        self.scheduler.add_job(self.replan_all, "interval", minutes=10, **common)
        self.scheduler.add_job(
            self.advance_campaigns,
            "interval",
            seconds=campaign_service.ADVANCE_EVERY.total_seconds(),
            **common,
        )
        self.scheduler.start()
        log.info("clock started (%s)", "leader" if self.is_leader else "standby")

    def stop(self) -> None:
        self.scheduler.shutdown(wait=True)
        self.lock.release()
        with contextlib.suppress(redis.RedisError):
            meters.withdraw_clock(self.lock.client, self.lock.token)

    def heartbeat(self) -> None:
        was = self.lock.held
        now = self.lock.refresh()
        if now != was:
            log.info("clock is now %s", "leader" if now else "standby")
        self._publish()

    def _publish(self) -> None:
        """This clock's view for `outreach_clock_leader`, kept for three heartbeats."""
        with contextlib.suppress(redis.RedisError):
            meters.publish_clock(
                self.lock.client, self.lock.token, self.name, self.is_leader, 3 * RENEW_SECONDS
            )

    def release_due(self) -> int:
        if not self.is_leader:
            return 0
        with self._job_lock:
            total = 0
            while True:
                try:
                    ids = dispatch_service.release_due(self.sessions, self.dispatcher.now())
                except StoreUnavailable as error:
                    log.warning("release skipped: %s", error)
                    return total
                if ids:
                    self._enqueue(ids)
                total += len(ids)
                if len(ids) < 500:
                    return total

    def _enqueue(self, ids: Sequence[str]) -> None:
        try:
            self.enqueue(ids)
        except redis.RedisError as error:
            # rows stay `queued`; housekeeping re-enqueues them once the broker answers
            log.warning("enqueue failed, will retry: %s", error)

    def housekeeping(self) -> None:
        if not self.is_leader:
            return
        now = self.dispatcher.now()
        with transaction(self.sessions) as session:
            stale = self._unattended(dispatch_service.stale_queued(session, now))
        if stale:
            dispatch_service.touch_requeued(self.sessions, stale, now)
            self._enqueue(stale)
        self.apply_orphaned_events()
        self.apply_parked_statuses()
        self.fold_day_counts()
        self.fold_counts()

    def apply_parked_statuses(self) -> None:
        """Delivery statuses parked for a message whose acceptance is on record by now but
        whose own claim did not run (a process stopped between two commits); those no
        message claimed in a day are dropped, said in the log (`delivery_status`)."""
        now = self.dispatcher.now()
        try:
            applied = apply_parked(self.sessions, None, now)
            with transaction(self.sessions) as session:
                dropped = callbacks.drop_unclaimed(session, now)
        except StoreUnavailable as error:
            log.warning("parked delivery statuses wait: %s", error)
            return
        if applied:
            log.info("%d parked delivery statuses applied by the sweep", len(applied))
        for status in dropped:
            log.warning(
                "a %s status %s for %s was never claimed by a message: dropped",
                status.provider,
                status.status,
                status.provider_id,
            )

    def fold_counts(self) -> None:
        """Fold the metrics' counts (`store.counts.fold`), so that they stay a few rows
        between scrapes, or without any."""
        try:
            with transaction(self.sessions) as session:
                counts.fold(session)
        except StoreUnavailable as error:
            log.warning("folding the metrics' counts skipped: %s", error)

    def fold_day_counts(self) -> None:
        """Sum the overview's counts (`store.overview.fold_day_counts`), so that they stay a
        few rows a half hour."""
        try:
            with transaction(self.sessions) as session:
                overview.fold_day_counts(session)
        except StoreUnavailable as error:
            log.warning("folding the overview's counts skipped: %s", error)

    def apply_journaled_replies(self) -> int:
        """Replies and status callbacks kept in Redis while the database was unreachable,
        applied in arrival order (see `service.journal`)."""
        if not self.is_leader:
            return 0
        try:
            return int(self.services.replies.drain())
        except JournalUnavailable as error:
            log.warning("reply journal unavailable: %s", error)
            return 0

    def _unattended(self, stale: Sequence[str]) -> list[str]:
        """Of the rows queued too long, those no worker is working. A batch on a paced
        provider can hold its rows for minutes; they keep their message leases all along
        (renewed by their worker, lapsing when it dies), so what is re-enqueued is only what
        nobody holds: its broker message was lost, or its worker is gone. Without the leases,
        nothing is re-enqueued this time (the broker is on the same Redis)."""
        if not stale:
            return []
        try:
            unleased: list[str] = self.dispatcher.unleased(stale)
        except TransientError as error:
            log.warning("re-enqueue skipped: %s", error)
            return []
        return unleased

    def reconcile_orphaned(self) -> None:
        """Messages whose worker died: see `Dispatcher.reconcile_orphaned`."""
        if not self.is_leader:
            return
        try:
            held = self.dispatcher.reconcile_orphaned(self.leases)
        except StoreUnavailable as error:
            log.warning("reconciliation skipped: %s", error)
            return
        if held:
            dispatch_service.touch_requeued(self.sessions, held, self.dispatcher.now())
            self._enqueue(held)

    def apply_orphaned_events(self) -> int:
        """Webhook events stored but not applied: their web process stopped first, or their
        apply failed (see `inbox.apply_orphaned`)."""
        if not self.is_leader:
            return 0
        try:
            return apply_orphaned(self.sessions, self.services.policy, self.dispatcher.now)
        except StoreUnavailable as error:
            log.warning("applying orphaned events skipped: %s", error)
            return 0

    def advance_campaigns(self) -> list[str]:
        """Campaigns whose start or end has come, or with nothing left to send, move on
        (see `service.campaigns.advance`)."""
        if not self.is_leader:
            return []
        try:
            with transaction(self.sessions) as session:
                moved = campaign_service.advance(
                    session, self.services.campaigns, self.dispatcher.now()
                )
        except TransientError as error:
            log.warning("campaign step skipped: %s", error)
            return []
        for campaign_id in moved:
            log.info("campaign %s moved on", campaign_id)
        return moved

    def replan_all(self, force: bool = False) -> int:
        """Re-evaluate every open loan's cadence, so stage changes and new steps appear."""
        if not self.is_leader:
            return 0
        now = self.dispatcher.now()
        if not force and self._last_replan and now - self._last_replan < REPLAN_EVERY:
            return 0
        self._last_replan = now
        with self.sessions() as session:
            loan_ids = open_loan_ids(session)
        for loan_id in loan_ids:
            try:
                with transaction(self.sessions) as session:
                    replan_loan(session, self.services.policy, loan_id, now)
            except StoreUnavailable as error:
                log.warning("replan stopped: %s", error)
                break
        return len(loan_ids)
