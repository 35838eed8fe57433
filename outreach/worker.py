"""dramatiq: the Redis broker and the actor, which only loads by id and dispatches.

The broker carries message ids, never content; the database says what is due. dramatiq
delivers at least once, so the actor is safe to run twice (see service.dispatch). A broker
message carries a few ids, dispatched together (`Dispatcher.dispatch_many`): one gate
transaction for the batch instead of one each.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from outreach import meters
from outreach.channels.twilio_sms import DEFAULT_RATE_WAIT_SECONDS, REQUEST_TIMEOUT_SECONDS
from outreach.errors import TransientError
from outreach.logs import fields
from outreach.service.messages import dead_letter_dispatch
from outreach.worker_leases import WorkerLease

if TYPE_CHECKING:  # wiring builds the dispatcher this module's actor calls
    from outreach.wiring import Services

log = logging.getLogger(__name__)

QUEUE = "outreach-messages"
BATCH_ACTOR = "send_messages"
# ids per broker message: enough to share a gate transaction, few enough that a release of
# hundreds of due messages still spreads over every worker thread
IDS_PER_BROKER_MESSAGE = 20
NAMESPACE = "outreach"

# the longest a broker message may take: each of its messages may wait for its SMS slot as
# long as a paced send waits and then for Twilio's answer, plus a minute for the gate's and
# the records' transactions (each bounded by the statement timeout of store/db.py). Past it
# dramatiq interrupts the actor, which must never happen to a batch still paced normally
BATCH_TIME_LIMIT_SECONDS = (
    IDS_PER_BROKER_MESSAGE * (DEFAULT_RATE_WAIT_SECONDS + REQUEST_TIMEOUT_SECONDS) + 60
)
# failures of one message's dispatch on an error retrying cannot cure (not TransientError:
# a bug, a row the code cannot read) after which it is dead-lettered instead of enqueued
# again by the clock every STALE_QUEUED_AFTER, forever; counted in Redis for a day
DISPATCH_ATTEMPTS = 3
FAILED_DISPATCH_KEY = "outreach:dispatch:failures:"
FAILED_DISPATCH_TTL = 24 * 3600

_services: Services | None = None


def build_broker(redis_url: str) -> RedisBroker:
    middleware = [
        AgeLimit(),
        TimeLimit(time_limit=int(BATCH_TIME_LIMIT_SECONDS * 1000)),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        # infrastructure hiccups (database, Redis) retry quickly; provider retries are
        # scheduled in the database instead, so they survive a flushed broker
        Retries(min_backoff=1_000, max_backoff=60_000, max_retries=20),
    ]
    broker: RedisBroker = RedisBroker(  # type: ignore[no-untyped-call]
        url=redis_url, namespace=NAMESPACE, middleware=middleware
    )
    return broker


def send_messages(message_ids: list[str]) -> None:
    if _services is None:
        raise RuntimeError("worker services are not configured")
    try:
        outcomes = _services.dispatcher.dispatch_many(message_ids)
    except TransientError as error:
        # redelivered whole: the messages already past `queued` are skipped the second time
        log.warning("dispatch of %s will be retried: %s", ", ".join(message_ids), error)
        raise
    except Exception as error:  # a poison message, not an outage: found and set apart
        dispatch_apart(_services, message_ids, error)
        return
    log.debug("dispatched %s", outcomes)


def dispatch_apart(services: Services, message_ids: Sequence[str], error: Exception) -> None:
    """A batch that failed on an error retrying cannot cure, one message at a time, so the
    message at fault fails alone and the others go on; each failure of one message alone is
    counted (`failed_dispatch`). A transient error meanwhile is raised for the broker to
    redeliver the batch (what went on is skipped the second time)."""
    if len(message_ids) == 1:
        failed_dispatch(services, message_ids[0], error)
        return
    log.info(
        "a batch of %d messages failed (%s); dispatching them one by one",
        len(message_ids),
        type(error).__name__,
    )
    transient: TransientError | None = None
    for message_id in message_ids:
        try:
            services.dispatcher.dispatch_many([message_id])
        except TransientError as busy:
            transient = transient or busy
        except Exception as own:
            failed_dispatch(services, message_id, own)
    if transient is not None:
        raise transient


def failed_dispatch(services: Services, message_id: str, error: Exception) -> None:
    """One more failure of this message's dispatch: after DISPATCH_ATTEMPTS, a dead letter
    (failed / dispatch_failed, logged at ERROR, counted in the metrics); before, it stays
    queued and the clock enqueues it again once it has waited STALE_QUEUED_AFTER."""
    reason = " ".join(f"{type(error).__name__}: {error}".split())[:500]
    client = services.runtime.redis.client
    key = FAILED_DISPATCH_KEY + message_id
    try:
        pipe = client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, FAILED_DISPATCH_TTL)
        attempts = int(pipe.execute()[0])
    except redis.RedisError as unreachable:
        # not counted: it stays queued, and nothing is sent while Redis is out anyway
        log.warning("dispatch of %s failed (%s); not counted: %s", message_id, reason, unreachable)
        return
    if attempts < DISPATCH_ATTEMPTS:
        log.warning(
            "dispatch of %s failed (attempt %d of %d): %s",
            message_id,
            attempts,
            DISPATCH_ATTEMPTS,
            reason,
            exc_info=error,
        )
        return
    detail = f"dispatch failed {attempts} times: {reason}"
    channel = dead_letter_dispatch(
        services.runtime.sessions, message_id, detail, services.dispatcher.now()
    )
    if channel is None:
        return  # it went on meanwhile
    with contextlib.suppress(redis.RedisError):
        client.delete(key)
        meters.count_dispatch_dead_letter(client, channel)
    log.error(
        "message %s is a dead letter after %d failed dispatches (failed / dispatch_failed, "
        "flagged for a person): %s",
        message_id,
        attempts,
        reason,
        exc_info=error,
        extra=fields(message=message_id, attempts=attempts, reason="dispatch_failed"),
    )


def declare(broker: RedisBroker, services: Services) -> None:
    global _services
    _services = services
    if BATCH_ACTOR not in broker.actors:
        dramatiq.Actor(
            send_messages,
            broker=broker,
            actor_name=BATCH_ACTOR,
            queue_name=QUEUE,
            priority=0,
            options={},
        )


def enqueue(broker: RedisBroker, message_ids: Sequence[str]) -> None:
    ids = list(message_ids)
    for start in range(0, len(ids), IDS_PER_BROKER_MESSAGE):
        broker.enqueue(
            dramatiq.Message(
                queue_name=QUEUE,
                actor_name=BATCH_ACTOR,
                args=(ids[start : start + IDS_PER_BROKER_MESSAGE],),
                kwargs={},
                options={},
            )
        )


def start_worker(broker: RedisBroker, services: Services, threads: int) -> dramatiq.Worker:
    """Start the process's worker threads, and its lease (outreach/worker_leases.py) first: every
    `sending` mark it makes names that lease. Stop it with `stop_worker`."""
    runtime = services.runtime
    lease = WorkerLease(runtime.redis.new_client(), runtime.settings.worker_lease_seconds)
    lease.start()
    services.dispatcher.lease = lease
    declare(broker, services)
    worker = dramatiq.Worker(broker, queues={QUEUE}, worker_threads=threads, worker_timeout=200)
    # no broker message waits in this process for a free thread (dramatiq fetches twice as
    # many): what it fetched it works on, so if it dies its lease's held ids name them all
    worker.queue_prefetch = threads
    worker.start()
    return worker


def stop_worker(worker: dramatiq.Worker, services: Services, timeout_ms: int) -> None:
    """Stop the threads, then give the lease up (nothing is in flight any more) and the
    providers' connections."""
    worker.stop(timeout=timeout_ms)
    services.dispatcher.close_providers()
    lease = services.dispatcher.lease
    if lease is not None:
        services.dispatcher.lease = None
        lease.stop()


def _process_main(threads: int) -> None:
    from outreach.logs import configure_logging
    from outreach.observe import observe_process
    from outreach.runtime import Runtime
    from outreach.settings import load_settings
    from outreach.wiring import Services

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format, "worker")
    runtime = Runtime.start(settings)
    observer = observe_process(runtime, "worker")
    services = Services.build(runtime)
    broker = build_broker(runtime.redis.url)
    worker = start_worker(broker, services, threads)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    stop_worker(worker, services, 30_000)
    broker.close()
    observer.stop()
    runtime.close()


def run_workers(processes: int, threads: int) -> None:
    """`outreach worker`: N processes of M threads; SIGINT/SIGTERM stops them gracefully."""
    if processes == 1:
        _process_main(threads)
        return
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_process_main, args=(threads,)) for _ in range(processes)]
    for child in children:
        child.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1):
        if not any(child.is_alive() for child in children):
            break
    for child in children:
        if child.is_alive() and child.pid is not None:
            import os

            os.kill(child.pid, signal.SIGTERM)
    for child in children:
        child.join(timeout=40)
