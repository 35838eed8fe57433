"""Liveness and readiness, for a load balancer or an orchestrator; metrics, for Prometheus."""

from __future__ import annotations

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
    dead: int | None = None
    try:
        ping(runtime.engine)
        checks["database"] = "ok" if is_current(runtime.engine) else "migrations pending"
        if checks["database"] == "ok":
            with runtime.sessions() as session:
                dead = dead_letter_count(session)
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
