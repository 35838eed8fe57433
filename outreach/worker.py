"""dramatiq: the Redis broker and the actor, which only loads by id and dispatches.

The broker carries message ids, never content; the database says what is due. dramatiq
delivers at least once, so the actor is safe to run twice (see service.dispatch). A broker
message carries a few ids, dispatched together (`Dispatcher.dispatch_many`): one gate
transaction for the batch instead of one each.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from outreach.errors import TransientError
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

_services: Services | None = None


def build_broker(redis_url: str) -> RedisBroker:
    middleware = [
        AgeLimit(),
        TimeLimit(time_limit=120_000),
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
    log.debug("dispatched %s", outcomes)


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
