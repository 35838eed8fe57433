"""The message log and one message: `GET /ui/messages` (every filter of `GET /v1/messages`
as a form whose view is its URL, cursor pages), `GET /ui/messages/export.csv` (that view as
CSV), `GET /ui/messages/{id}` (the text as sent, the timeline in words), and an admin's
cancellation (`GET`/`POST /ui/messages/{id}/cancel`, confirmed on a page of its own)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import fields
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response, StreamingResponse
from starlette.datastructures import QueryParams

from outreach.api.auth import ServicesDep
from outreach.api.ops import csv_export
from outreach.domain import Channel, Purpose, Reason, Status
from outreach.policy.zones import candidate_zones
from outreach.render.filters import mask_recipient
from outreach.service import log as message_log
from outreach.service.messages import MessageNotFound, MessageNotPending, cancel_audited
from outreach.store.borrowers import load_borrower
from outreach.ui.pages import (
    EMAIL_PREVIEW_POLICY,
    AdminForm,
    PageError,
    PageSession,
    render,
    see_other,
)
from outreach.wiring import Services

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
FILTER_NAMES = tuple(item.name for item in fields(message_log.MessageFilter))
# what a datetime-local field sends: a time in UTC without its offset
_FIELD_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?")


def filter_params(query: QueryParams) -> dict[str, str]:
    """The log's filters as `GET /v1/messages` takes them, from the form's fields: statuses
    ticked one by one become its comma list, and a time without an offset is UTC."""
    params: dict[str, str] = {}
    for name in FILTER_NAMES:
        values = [value for value in query.getlist(name) if value.strip()]
        if name == "status":
            values = [part.strip() for value in values for part in value.split(",")]
            if values:
                params[name] = ",".join(part for part in values if part)
        elif values:
            params[name] = values[-1].strip() if name != "q" else values[-1]
    for name in ("since", "until"):
        if name in params and _FIELD_TIME.fullmatch(params[name]):
            params[name] += "Z"
    return params


def _field_time(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M") if value else ""


def log_href(params: dict[str, str], **extra: str) -> str:
    """The log's URL for these filters."""
    query = urlencode({**params, **extra})
    return "/ui/messages" + (f"?{query}" if query else "")


@router.get("/ui/messages")
def message_log_page(request: Request, session: PageSession, services: ServicesDep) -> Response:
    params = filter_params(request.query_params)
    query = request.query_params
    problem = None
    items: list[dict[str, Any]] = []
    next_href = None
    criteria = message_log.MessageFilter()
    size = PAGE_SIZE
    try:
        criteria = message_log.MessageFilter.parse(dict(params))
        size = message_log.parse_limit(query.get("limit") or str(PAGE_SIZE))
        with services.runtime.sessions() as db:
            items, next_cursor = message_log.list_messages(
                db, criteria, limit=size, cursor=query.get("cursor") or None
            )
        if next_cursor:
            paging = {"limit": str(size)} if size != PAGE_SIZE else {}
            next_href = log_href(params, **paging, cursor=next_cursor)
    except message_log.MessageFilterError as error:
        problem = str(error)
    return render(
        request,
        "messages.html",
        {
            "page_title": "Messages",
            "nav": "messages",
            "items": items,
            "params": params,
            "form": {
                **{name: params.get(name, "") for name in FILTER_NAMES},
                "since": _field_time(criteria.since) or params.get("since", ""),
                "until": _field_time(criteria.until) or params.get("until", ""),
                "statuses": set(params.get("status", "").split(",")),
            },
            "choices": _choices(services),
            "problem": problem,
            "next_href": next_href,
            "first_href": log_href(params) if query.get("cursor") else None,
            "export_href": "/ui/messages/export.csv" + (f"?{urlencode(params)}" if params else ""),
        },
        status_code=422 if problem else 200,
    )


def _choices(services: Services) -> dict[str, list[str]]:
    return {
        "status": [status.value for status in Status],
        "channel": [channel.value for channel in Channel],
        "stage": [stage.name for stage in services.policy.stages],
        "purpose": [purpose.value for purpose in Purpose],
        "reason": sorted(reason.value for reason in Reason),
    }


@router.get("/ui/messages/export.csv")
def export_view(request: Request, _: PageSession, services: ServicesDep) -> StreamingResponse:
    try:
        criteria = message_log.MessageFilter.parse(dict(filter_params(request.query_params)))
    except message_log.MessageFilterError as error:
        raise PageError(422, str(error)) from None
    return csv_export(services, criteria)


def _borrower_zone(services: Services, borrower_id: str | None) -> tuple[ZoneInfo, str | None]:
    """The zone the borrower's times are shown in (their most explicit one), and their name."""
    if borrower_id is None:
        return services.policy.default_zone, None
    with services.runtime.sessions() as db:
        borrower = load_borrower(db, borrower_id)
    if borrower is None:
        return services.policy.default_zone, None
    return candidate_zones(services.policy, borrower)[0], borrower.name


def _message_or_404(services: Services, message_id: str) -> dict[str, Any]:
    with services.runtime.sessions() as db:
        found = message_log.get_message(db, message_id)
    if found is None:
        raise PageError(404, f"There is no message {message_id}.")
    return found


@router.get("/ui/messages/{message_id}")
def message_page(
    message_id: str, request: Request, session: PageSession, services: ServicesDep
) -> Response:
    message = _message_or_404(services, message_id)
    zone, name = _borrower_zone(services, message["borrower_id"])
    return render(
        request,
        "message.html",
        {
            "page_title": f"Message {message_id}",
            "nav": "messages",
            "message": message,
            "borrower_name": name,
            "zone": zone,
            "recipient": mask_recipient(message["to"]),
            "may_cancel": session.is_admin and Status(message["status"]).is_pending,
        },
        headers={"content-security-policy": EMAIL_PREVIEW_POLICY} if message["html"] else None,
    )


@router.get("/ui/messages/{message_id}/cancel")
def confirm_cancel(
    message_id: str, request: Request, session: PageSession, services: ServicesDep
) -> Response:
    if not session.is_admin:
        raise PageError(403, "Only an admin can cancel a message.")
    message = _message_or_404(services, message_id)
    if not Status(message["status"]).is_pending:
        raise PageError(409, f"This message is {message['status']}: it can no longer be cancelled.")
    zone, name = _borrower_zone(services, message["borrower_id"])
    return render(
        request,
        "cancel.html",
        {
            "page_title": "Cancel a message",
            "nav": "messages",
            "message": message,
            "borrower_name": name,
            "zone": zone,
        },
    )


@router.post("/ui/messages/{message_id}/cancel")
def cancel(
    message_id: str,
    session: AdminForm,
    services: ServicesDep,
    note: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    try:
        cancel_audited(
            services.runtime.sessions,
            message_id,
            services.dispatcher.now(),
            actor=session.actor,
            role=session.role,
            note=note.strip() or None,
            via="ui",
        )
    except MessageNotFound:
        raise PageError(404, f"There is no message {message_id}.") from None
    except MessageNotPending as error:
        raise PageError(409, f"Not cancelled: {error}.") from None
    return see_other(f"/ui/messages/{message_id}")
