"""Liveness and readiness, for a load balancer or an orchestrator; metrics, for Prometheus."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as WaitedTooLong
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from outreach.api import metrics
from outreach.api.auth import ServicesDep, Viewer
from outreach.service.journal import JournalUnavailable
from outreach.store.db import ping
from outreach.store.inbox import dead_letter_count
from outreach.store.migrate import is_current
from outreach.worker import QUEUE

router = APIRouter(tags=["operations"])

# seconds `/ready` waits for the database to answer its check: a load balancer's probe is
# answered "not ready" in time even when PostgreSQL takes packets and answers none
DATABASE_CHECK_SECONDS = 3.0


class BoundedCheck:
    """A check run in a thread of its own and waited for at most `seconds`. While a check
    that outlived its wait is still stuck (a connection to a server that answers nothing),
    later probes wait on that same one instead of piling more threads onto it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ready-check")
        self._lock = threading.Lock()
        self._running: Future[Any] | None = None

    def run(self, check: Callable[[], Any]) -> Any:
        """`check()`'s value; TimeoutError when it has not answered within `seconds`."""
        with self._lock:
            running = self._running
            if running is None or running.done():
                running = self._running = self._executor.submit(check)
        try:
            return running.result(timeout=self.seconds)
        except WaitedTooLong:
            raise TimeoutError(f"no answer within {self.seconds:g} s") from None


_CHECK_MADE = threading.Lock()


def _database_check(request: Request) -> BoundedCheck:
    """The app's own (a process may serve more than one app, as the tests do)."""
    with _CHECK_MADE:
        check: BoundedCheck | None = getattr(request.app.state, "database_check", None)
        if check is None:
            check = request.app.state.database_check = BoundedCheck(DATABASE_CHECK_SECONDS)
        return check


@router.get("/health", summary="Liveness: the process answers")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: database, Redis and broker")
def ready(request: Request, services: ServicesDep) -> JSONResponse:
    runtime = services.runtime
    checks: dict[str, Any] = {}

    # events that failed to apply for good: the messages they are about are held until
    # ops re-drive them. Counted, not a failing check: this process serves as well with
    # them, and taking every web process out of rotation would stop the events (payments,
    # restrictions) that let held messages go or stop them for good
    def database() -> tuple[str, int | None]:
        ping(runtime.engine)
        if not is_current(runtime.engine):
            return "migrations pending", None
        with runtime.sessions() as session:
            return "ok", dead_letter_count(session)

    dead: int | None = None
    try:
        checks["database"], dead = _database_check(request).run(database)
    except Exception as error:
        checks["database"] = f"unreachable: {type(error).__name__}"
    detail: dict[str, Any] = {}
    try:
        runtime.redis.client.ping()
        checks["redis"] = "ok"
    except Exception as error:
        checks["redis"] = f"unreachable: {type(error).__name__}"
    try:
        # a round trip through the broker's own connections and script: its queue length
        detail["broker_queue"] = int(request.app.state.broker.do_qsize(QUEUE))
        checks["broker"] = "ok"
    except Exception as error:
        checks["broker"] = f"unreachable: {type(error).__name__}"
    try:
        journal = services.replies.journal
        detail["replies_journaled"] = journal.waiting()
        detail["replies_set_aside"] = journal.set_aside()
    except JournalUnavailable:
        pass  # Redis is reported above
    is_ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {
            "status": "ready" if is_ready else "not ready",
            "checks": checks,
            "detail": detail,
            "dead_letters": dead,
        },
        status_code=200 if is_ready else 503,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics (either role)",
    response_class=Response,
    responses={200: {"content": {metrics.CONTENT_TYPE: {}}}},
)
def metrics_text(_: Viewer, services: ServicesDep) -> Response:
    """Messages by status and channel, due messages, inbox events by type and outcome (from
    the database), provider requests and latencies, and which clock leads (through Redis):
    the same totals from whichever web process answers."""
    return Response(metrics.render(services), media_type=metrics.CONTENT_TYPE)
