"""The loan system's side: `POST /v1/events` and `POST /v1/events/batch` (ASGI routes of their
own, `webhook.py`) and the dead letters of events that failed to apply for good."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query
from starlette.routing import Route

from outreach.api.auth import Admin, ServicesDep, Viewer
from outreach.api.schemas import Problem
from outreach.api.webhook import BatchReceiver, EventReceiver, quiet_accepted_events
from outreach.service.inbox import Intake, redrive
from outreach.store.inbox import dead_letter_count, dead_letters
from outreach.wiring import Services

router = APIRouter(tags=["webhooks"])


def mount_receiver(app: FastAPI, services: Services) -> Intake:
    """Serve `POST /v1/events` and `POST /v1/events/batch` ahead of every framework route (see
    `webhook`); returns the process's `Intake`, which stores the events arriving together in
    one commit."""
    settings = services.runtime.settings
    secret = settings.webhook_secret.reveal().encode() if settings.webhook_secret else None
    intake = Intake(services.runtime.sessions, services.policy, services.dispatcher.now)
    quiet_accepted_events()
    app.router.routes[0:0] = [
        Route("/v1/events", EventReceiver(secret, intake), methods=["POST"]),
        Route("/v1/events/batch", BatchReceiver(secret, intake), methods=["POST"]),
    ]
    return intake


@router.get(
    "/v1/events/dead",
    summary="Accepted events that failed to apply for good (their messages are held)",
)
def list_dead_letters(
    _: Viewer,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=500, description="1…500, default 100")] = 100,
) -> dict[str, Any]:
    with services.runtime.sessions() as session:
        return {"items": dead_letters(session, limit), "total": dead_letter_count(session)}


@router.post(
    "/v1/events/dead/{event_id}/retry",
    summary="Apply a dead letter again, now (admin)",
    responses={403: {"model": Problem}, 404: {"model": Problem}},
)
def retry_dead_letter(event_id: str, _: Admin, services: ServicesDep) -> dict[str, Any]:
    now = services.dispatcher.now
    result = redrive(services.runtime.sessions, services.policy, event_id, now)
    if result is None:
        raise HTTPException(404, f"no dead letter {event_id}")
    outcome, detail = result
    return {"id": event_id, "outcome": outcome, "detail": detail}
