"""The ops API: the message log, a borrower's timeline, the policy, template previews and
ops cancellation (SPEC §8)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from outreach.api.auth import Admin, AdminActor, ServicesDep, Viewer, services_of
from outreach.api.schemas import Problem
from outreach.domain import Channel
from outreach.errors import RenderError
from outreach.render import preview as render_preview
from outreach.render.preview import template_list
from outreach.service import log as message_log
from outreach.service.export import csv_rows
from outreach.service.messages import MessageNotFound, MessageNotPending, cancel_audited
from outreach.store import audit
from outreach.wiring import Services


class CancelRequest(BaseModel):
    note: str | None = Field(default=None, max_length=500)


class PreviewRequest(BaseModel):
    template: str
    channel: Channel
    locale: str
    context: dict[str, Any] | None = None


router = APIRouter()

# the query parameters of GET /v1/messages (its CSV export takes the filters)
MESSAGE_QUERY = frozenset(
    {item.name for item in dataclasses.fields(message_log.MessageFilter)} | {"limit", "cursor"}
)


def _message_filter(request: Request) -> message_log.MessageFilter:
    # the pages' forms send every field, empty ones too; a client of the API leaves a filter
    # out instead, and an empty one is refused rather than read as "any"
    for name, value in request.query_params.multi_items():
        if value == "" and name in MESSAGE_QUERY:
            raise message_log.MessageFilterError(name, "must not be empty (leave it out)")
    stages = [stage.name for stage in services_of(request).policy.stages]
    return message_log.MessageFilter.parse(dict(request.query_params), stages=stages)


def _filter_errors(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except message_log.MessageFilterError as error:
        raise HTTPException(422, str(error)) from None


@router.get("/v1/messages", tags=["messages"], summary="The message log, filtered, paged")
def list_messages(
    request: Request,
    _: Viewer,
    services: ServicesDep,
    borrower_id: str | None = None,
    loan_id: str | None = None,
    campaign_id: str | None = None,
    status: Annotated[str | None, Query(description="one status or a comma list")] = None,
    channel: str | None = None,
    stage: str | None = None,
    reason: str | None = None,
    purpose: str | None = None,
    needs_human: Annotated[
        str | None, Query(description="true: replies waiting for a person")
    ] = None,
    since: Annotated[str | None, Query(description="send_at ≥ (RFC 3339)")] = None,
    until: Annotated[str | None, Query(description="send_at < (RFC 3339)")] = None,
    q: Annotated[str | None, Query(description="text search in content and ids")] = None,
    limit: Annotated[str | None, Query(description="1…500, default 100")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the last page")] = None,
) -> dict[str, Any]:
    # the parameters are declared for the OpenAPI document; the filter reads them from the
    # query string, as the export does
    def page() -> dict[str, Any]:
        criteria = _message_filter(request)
        size = message_log.parse_limit(limit)
        with services.runtime.sessions() as session:
            items, next_cursor = message_log.list_messages(
                session, criteria, limit=size, cursor=cursor
            )
        return {"items": items, "next_cursor": next_cursor}

    result: dict[str, Any] = _filter_errors(page)
    return result


@router.get("/v1/messages/export.csv", tags=["messages"], summary="The filtered log as CSV")
def export_messages(request: Request, _: Viewer, services: ServicesDep) -> StreamingResponse:
    criteria: message_log.MessageFilter = _filter_errors(lambda: _message_filter(request))
    return csv_export(services, criteria)


def csv_export(services: Services, criteria: message_log.MessageFilter) -> StreamingResponse:
    """The messages `criteria` selects, as a CSV download, streamed (the API's and the
    pages' export)."""
    return StreamingResponse(
        csv_rows(services.runtime.sessions, criteria),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="messages.csv"'},
    )


@router.get("/v1/messages/{message_id}", tags=["messages"], summary="One message and timeline")
def show_message(message_id: str, _: Viewer, services: ServicesDep) -> dict[str, Any]:
    with services.runtime.sessions() as session:
        found = message_log.get_message(session, message_id)
    if found is None:
        raise HTTPException(404, f"no message {message_id}")
    return found


@router.post(
    "/v1/messages/{message_id}/cancel",
    tags=["messages"],
    summary="Cancel a message that has not been sent (admin)",
    responses={403: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Problem}},
)
def cancel_message(
    message_id: str,
    actor: AdminActor,
    services: ServicesDep,
    request_body: CancelRequest | None = None,
) -> dict[str, Any]:
    note = request_body.note if request_body and request_body.note else None
    try:
        cancel_audited(
            services.runtime.sessions,
            message_id,
            services.dispatcher.now(),
            actor=actor.name,
            role=actor.role,
            note=note,
        )
    except MessageNotFound as error:
        raise HTTPException(404, str(error)) from error
    except MessageNotPending as error:
        raise HTTPException(409, str(error)) from error
    with services.runtime.sessions() as session:
        cancelled = message_log.get_message(session, message_id)
    assert cancelled is not None
    return cancelled


@router.get("/v1/audit", tags=["audit"], summary="Every ops write: who, when, what (admin)")
def audit_log(
    _: Admin,
    services: ServicesDep,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: Annotated[str | None, Query(description="at ≥ (RFC 3339)")] = None,
    until: Annotated[str | None, Query(description="at < (RFC 3339)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the last page")] = None,
) -> dict[str, Any]:
    bounds = {}
    for name, value in (("since", since), ("until", until)):
        if value is not None:
            try:
                bounds[name] = message_log.parse_instant(name, value)
            except message_log.MessageFilterError as error:
                raise HTTPException(422, str(error)) from None
    before_id = None
    if cursor is not None:
        if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 18:
            raise HTTPException(422, "cursor: not a cursor this API gave")
        before_id = int(cursor)
    with services.runtime.sessions() as session:
        rows = audit.entries(
            session,
            actor=actor,
            action=action,
            target=target,
            before_id=before_id,
            limit=limit + 1,
            **bounds,
        )
    items = [
        {
            "id": row.id,
            "at": row.at.isoformat().replace("+00:00", "Z"),
            "actor": row.actor,
            "role": row.role,
            "action": row.action,
            "target": row.target,
            "outcome": row.outcome,
            "detail": row.detail,
        }
        for row in rows[:limit]
    ]
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return {"items": items, "next_cursor": next_cursor}


@router.get("/v1/templates", tags=["policy"], summary="Every shipped template")
def list_templates(_: Viewer, services: ServicesDep) -> dict[str, Any]:
    return {"items": template_list(services.renderer)}


@router.get(
    "/v1/borrowers/{borrower_id}/timeline",
    tags=["messages"],
    summary="Every event, message step and reply about a borrower",
)
def borrower_timeline(borrower_id: str, _: Viewer, services: ServicesDep) -> dict[str, Any]:
    with services.runtime.sessions() as session:
        found = message_log.borrower_timeline(session, borrower_id)
    if found is None:
        raise HTTPException(404, f"no borrower {borrower_id}")
    return found


@router.get("/v1/policy", tags=["policy"], summary="The effective policy")
def effective_policy(_: Viewer, services: ServicesDep) -> dict[str, Any]:
    document: dict[str, Any] = services.policy.to_json()
    return document


@router.post("/v1/templates/preview", tags=["policy"], summary="Render a template with lint")
def preview_template(
    request_body: PreviewRequest, _: Viewer, services: ServicesDep
) -> dict[str, Any]:
    try:
        result: dict[str, Any] = render_preview(
            services.renderer,
            request_body.template,
            request_body.channel,
            request_body.locale,
            request_body.context,
            max_sms_segments=services.policy.max_sms_segments,
        )
    except RenderError as error:
        raise HTTPException(422, str(error)) from None
    return result
