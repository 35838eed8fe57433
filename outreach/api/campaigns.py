"""Campaigns in the ops API (SPEC §8): admins create, preview, launch, pause, resume and
cancel them; viewers read them and their progress."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query
from fastapi.responses import JSONResponse

from outreach.api.auth import AdminActor, ServicesDep, Viewer
from outreach.api.schemas import Problem
from outreach.campaign_control import CampaignCheckUnavailable
from outreach.domain import CAMPAIGN_STATUSES
from outreach.errors import StoreUnavailable
from outreach.service import campaigns
from outreach.store.db import transaction

router = APIRouter(tags=["campaigns"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem},
    403: {"model": Problem},
    404: {"model": Problem},
    409: {"model": Problem},
    503: {"model": Problem},
}


def _invalid(error: campaigns.CampaignInvalid) -> JSONResponse:
    return JSONResponse(
        status_code=422,
        content={
            "detail": str(error),
            "field": error.errors[0][0] if error.errors else None,
            "errors": [{"field": name, "detail": detail} for name, detail in error.errors],
        },
    )


@router.post(
    "/v1/campaigns",
    status_code=201,
    summary="Create a campaign (a draft)",
    responses={**_ERRORS, 422: {"description": "every invalid field, named"}},
)
def create_campaign(
    actor: AdminActor,
    services: ServicesDep,
    body: Annotated[Any, Body(description="SPEC §8: name, channel, template or variants, …")],
) -> Any:
    now = services.dispatcher.now()
    try:
        spec = campaigns.parse_campaign(body, services.policy, services.renderer, now)
    except campaigns.CampaignInvalid as error:
        return _invalid(error)
    with transaction(services.runtime.sessions) as session:
        created = campaigns.create(session, spec, actor, now)
        return campaigns.to_json(created)


@router.get("/v1/campaigns", summary="Every campaign, newest first, with its progress")
def list_campaigns(
    _: Viewer,
    services: ServicesDep,
    status: Annotated[str | None, Query(description="one status or a comma list")] = None,
) -> dict[str, Any]:
    if status is not None:
        unknown = sorted(set(status.split(",")) - set(CAMPAIGN_STATUSES))
        if unknown:
            known = ", ".join(CAMPAIGN_STATUSES)
            raise HTTPException(422, f"status: unknown {', '.join(unknown)} (known: {known})")
    with services.runtime.sessions() as session:
        return {"items": campaigns.list_all(session, services.policy, status=status)}


@router.get(
    "/v1/campaigns/{campaign_id}",
    summary="One campaign with its progress per variant and holdout",
    responses=_ERRORS,
)
def show_campaign(campaign_id: str, _: Viewer, services: ServicesDep) -> dict[str, Any]:
    with services.runtime.sessions() as session:
        try:
            return campaigns.get(session, services.policy, campaign_id)
        except campaigns.CampaignNotFound as error:
            raise HTTPException(404, str(error)) from None


@router.post(
    "/v1/campaigns/{campaign_id}/preview",
    summary="What launching now would do (changes nothing)",
    responses=_ERRORS,
)
def preview_campaign(campaign_id: str, _: AdminActor, services: ServicesDep) -> dict[str, Any]:
    now = services.dispatcher.now()
    with services.runtime.sessions() as session:
        try:
            return campaigns.preview(
                session,
                services.policy,
                services.renderer,
                campaign_id,
                now,
                unsubscribe_url=campaigns.preview_unsubscribe_url(
                    services.runtime.settings.public_url
                ),
            )
        except campaigns.CampaignNotFound as error:
            raise HTTPException(404, str(error)) from None


_TRANSITION_SUMMARIES = {
    "launch": "Launch a draft: every message planned, its holdout kept aside",
    "pause": "Hold every unsent message (nothing reaches a provider after the answer)",
    "resume": "Resume a paused campaign",
    "cancel": "Cancel: every unsent message withheld as campaign_cancelled",
}


def _transition_route(name: str) -> Callable[..., dict[str, Any]]:
    """POST /v1/campaigns/{id}/<name>: the transition in one transaction; a refusal answers
    409 with the status and is recorded in the audit log all the same."""

    def move(campaign_id: str, actor: AdminActor, services: ServicesDep) -> dict[str, Any]:
        try:
            # the campaign without its progress (GET /v1/campaigns/{id} has it)
            return campaigns.transition_audited(
                services.runtime.sessions,
                services.policy,
                services.campaigns,
                name,
                campaign_id,
                actor,
                services.dispatcher.now(),
            )
        except campaigns.CampaignNotFound as error:
            raise HTTPException(404, str(error)) from None
        except campaigns.CampaignConflict as error:
            return JSONResponse(  # type: ignore[return-value]
                status_code=409, content={"detail": str(error), "status": error.status}
            )
        except (CampaignCheckUnavailable, StoreUnavailable) as error:
            raise HTTPException(503, f"{error}; nothing was changed, try again") from None

    move.__name__ = f"{name}_campaign"
    return move


for _name in campaigns.TRANSITIONS:
    router.add_api_route(
        f"/v1/campaigns/{{campaign_id}}/{_name}",
        _transition_route(_name),
        methods=["POST"],
        summary=_TRANSITION_SUMMARIES[_name],
        responses=_ERRORS,
    )
