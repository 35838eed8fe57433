"""The campaigns (SPEC §8): `GET /ui/campaigns` (every campaign with its progress as a bar),
`GET /ui/campaigns/new` (the create form, admins), `POST /ui/campaigns/preview` (what the
form's campaign would do, before anything is created), `POST /ui/campaigns` (create it, a
draft), `GET /ui/campaigns/{id}` (its fields, progress by status, reason, variant and
holdout, payments attributed, the comparison of the arms, its audit trail), and an admin's
`POST /ui/campaigns/{id}/launch|pause|resume|cancel` (cancel confirmed on
`GET /ui/campaigns/{id}/cancel` first).

Everything goes through the services the API uses: the form is made into the API's create
body and checked by `campaigns.parse_campaign`, the preview is `campaigns.preview_spec` (the
planning launch runs) under the id the campaign is then created with, so its figures are
what launching right after records; the transitions are `campaigns.transition_audited`
with the campaign control of the services (a pause holds hand-overs before its answer)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.exc import IntegrityError
from starlette.datastructures import FormData

from outreach.api.auth import ServicesDep
from outreach.campaign_control import CampaignCheckUnavailable
from outreach.domain import PENDING_STATUSES, CampaignStatus, Channel, Purpose
from outreach.errors import StoreUnavailable
from outreach.render.preview import template_list
from outreach.service import campaigns
from outreach.store import campaigns as campaign_store
from outreach.store.db import transaction
from outreach.ui.campaign_form import GENERAL, CampaignForm, faults_in_order, variant_key
from outreach.ui.charts import status_bar
from outreach.ui.pages import (
    EMAIL_PREVIEW_POLICY,
    AdminForm,
    PageError,
    PageSession,
    actor_of,
    render,
    see_other,
)
from outreach.ui.sessions import UISession
from outreach.wiring import Services

router = APIRouter(include_in_schema=False)

# what each transition may start from (the service refuses the rest with a 409 all the same)
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "launch": (CampaignStatus.DRAFT,),
    "pause": campaigns.LIVE_STATUSES,
    "resume": (CampaignStatus.PAUSED,),
    "cancel": (
        CampaignStatus.DRAFT,
        CampaignStatus.SCHEDULED,
        CampaignStatus.RUNNING,
        CampaignStatus.PAUSED,
    ),
}
# what the page says once a transition is done (`?done=<name>`)
DONE_WORDS: dict[str, str] = {
    "create": "Created as a draft: nothing is sent until it is launched.",
    "launch": "Launched: its messages are planned and go out from its start.",
    "pause": "Paused: nothing more of it is handed to a provider until it is resumed.",
    "resume": "Resumed: its held messages go out again.",
    "cancel": "Cancelled: every message of it not sent yet is withheld.",
}
ACTION_WORDS: dict[str, str] = {
    "campaign.create": "created",
    "campaign.launch": "launched",
    "campaign.pause": "paused",
    "campaign.resume": "resumed",
    "campaign.cancel": "cancelled",
}


async def posted_form(request: Request) -> FormData:
    """The posted form (read once: the CSRF check has read it already)."""
    return await request.form()


PostedForm = Annotated[FormData, Depends(posted_form)]


def segment_words(segment: Mapping[str, Any]) -> str:
    """`stage negotiation or late; 10 to 40 days past due; owing at least 50.00`."""
    said = []
    if segment.get("stages"):
        said.append("stage " + " or ".join(segment["stages"]))
    low, high = segment.get("dpd_min"), segment.get("dpd_max")
    if low is not None and high is not None:
        said.append(f"{low} to {high} days past due")
    elif low is not None:
        said.append(f"at least {low} days past due")
    elif high is not None:
        said.append(f"at most {high} days past due")
    if segment.get("amount_min") is not None:
        said.append(f"owing at least {segment['amount_min']}")
    if segment.get("amount_max") is not None:
        said.append(f"owing at most {segment['amount_max']}")
    for name, words, joined in (
        ("products", "product", " or "),
        ("locales", "locale", " or "),
        ("tags", "tagged", " and "),
    ):
        if segment.get(name):
            said.append(f"{words} {joined.join(segment[name])}")
    return "; ".join(said) or "every borrower with something owed"


def _summary(document: Mapping[str, Any]) -> dict[str, Any]:
    """A campaign's messages at a glance: how many, how many went out and were delivered,
    and the bar of their statuses."""
    progress = document["progress"]
    by_status: dict[str, int] = progress["by_status"]
    total = sum(by_status.values())
    arms = progress["variants"].values()
    return {
        "messages": total,
        "sent": sum(arm["sent"] for arm in arms),
        "delivered": sum(arm["delivered"] for arm in arms),
        "bar": status_bar(by_status, total),
    }


@router.get("/ui/campaigns")
def campaign_list(request: Request, _: PageSession, services: ServicesDep) -> Response:
    with services.runtime.sessions() as db:
        items = campaigns.list_all(db, services.policy)
    return render(
        request,
        "campaigns.html",
        {
            "page_title": "Campaigns",
            "nav": "campaigns",
            "campaigns": [{**item, "summary": _summary(item)} for item in items],
        },
    )


# -- the create form ------------------------------------------------------------------------


def _choices(services: Services) -> dict[str, Any]:
    return {
        "channels": [channel.value for channel in Channel],
        "templates": [
            item
            for item in template_list(services.renderer)
            if item["purpose"] == Purpose.CAMPAIGN.value
        ],
        "stages": [stage.name for stage in services.policy.stages],
        "locales": list(services.policy.locales),
    }


def _form_page(
    request: Request,
    services: Services,
    form: CampaignForm,
    *,
    faults: Mapping[str, list[str]] | None = None,
    preview: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    email_html = bool(preview) and any(s.get("html") for s in (preview or {})["samples"])
    return render(
        request,
        "campaign_new.html",
        {
            "page_title": "Preview of a new campaign" if preview else "New campaign",
            "nav": "campaigns",
            "form": form,
            "choices": _choices(services),
            "faults": faults or {},
            "fault_list": faults_in_order(faults or {}),
            "general": GENERAL,
            "variant_key": variant_key,
            "preview": preview,
            "hidden": list(form.hidden()),
        },
        status_code=status_code,
        headers={"content-security-policy": EMAIL_PREVIEW_POLICY} if email_html else None,
    )


def _must_be_admin(session: UISession, what: str) -> None:
    if not session.is_admin:
        raise PageError(403, f"Only an admin can {what}.")


@router.get("/ui/campaigns/new")
def new_campaign(request: Request, session: PageSession, services: ServicesDep) -> Response:
    _must_be_admin(session, "create a campaign")
    form = CampaignForm()
    form.values["channel"] = Channel.SMS.value
    # from the next whole hour, in UTC as the field reads it
    start = services.dispatcher.now().astimezone(dt.UTC) + dt.timedelta(hours=1)
    form.values["start_at"] = start.strftime("%Y-%m-%dT%H:00")
    return _form_page(request, services, form)


def _faulty(
    request: Request, services: Services, form: CampaignForm, errors: Sequence[tuple[str, str]]
) -> Response:
    """The form again, as it was filled in, each fault beside its field (422)."""
    return _form_page(request, services, form, faults=form.faults(errors), status_code=422)


def _checked(
    request: Request, services: Services, posted: FormData
) -> tuple[CampaignForm, campaigns.CampaignSpec | Response]:
    """The posted form, and the campaign it asks for as the API checks a create body (or
    the form again with its faults)."""
    form = CampaignForm.of(posted)
    try:
        spec = campaigns.parse_campaign(
            form.body(), services.policy, services.renderer, services.dispatcher.now()
        )
    except campaigns.CampaignInvalid as error:
        return form, _faulty(request, services, form, error.errors)
    return form, spec


@router.post("/ui/campaigns/preview")
def preview_campaign(
    request: Request, _: AdminForm, services: ServicesDep, posted: PostedForm
) -> Response:
    """What the form's campaign would do if created and launched now; creates nothing."""
    form, spec = _checked(request, services, posted)
    if isinstance(spec, Response):
        return spec
    now = services.dispatcher.now()
    with services.runtime.sessions() as db:
        # the id it will be created under (its arms are drawn from it): kept from a
        # preview before, unless a campaign took it since
        if not (
            campaigns.CAMPAIGN_ID.fullmatch(form.campaign_id)
            and campaign_store.get_campaign(db, form.campaign_id) is None
        ):
            form.campaign_id = campaigns.new_campaign_id(now)
        figures = campaigns.preview_spec(
            db,
            services.policy,
            services.renderer,
            spec,
            form.campaign_id,
            now,
            unsubscribe_url=campaigns.preview_unsubscribe_url(services.runtime.settings.public_url),
        )
    return _form_page(request, services, form, preview=figures)


@router.post("/ui/campaigns")
def create_campaign(
    request: Request, session: AdminForm, services: ServicesDep, posted: PostedForm
) -> Response:
    form, spec = _checked(request, services, posted)
    if isinstance(spec, Response):
        return spec
    wanted = form.campaign_id or None
    try:
        with transaction(services.runtime.sessions) as db:
            created = campaigns.create(
                db, spec, actor_of(session), services.dispatcher.now(), campaign_id=wanted
            )
            campaign_id = created.id
    except campaigns.CampaignInvalid as error:
        return _faulty(request, services, form, error.errors)
    except IntegrityError:
        # the create button pressed twice: the campaign of the first press
        with services.runtime.sessions() as db:
            existing = campaign_store.get_campaign(db, wanted) if wanted else None
        if existing is not None and existing.name == spec.name:
            return see_other(f"/ui/campaigns/{existing.id}")
        raise PageError(
            409, "A campaign was created under this form's id already: preview it again."
        ) from None
    return see_other(f"/ui/campaigns/{campaign_id}?done=create")


# -- one campaign ---------------------------------------------------------------------------


def _arm_rows(progress: Mapping[str, Any], document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each variant's row of the progress table, then the holdout's."""
    templates = {v["name"]: v for v in document["variants"]}
    rows = []
    for name, arm in progress["variants"].items():
        rows.append(
            {
                "name": name,
                "template": templates.get(name, {}).get("template"),
                "weight": templates.get(name, {}).get("weight"),
                "messages": arm["messages"],
                "sent": arm["sent"],
                "delivered": arm["delivered"],
                "paid": arm.get("paid"),
                "paid_amount": arm.get("paid_amount", {}),
                "paid_rate": arm.get("paid_rate"),
                "bar": status_bar(arm["by_status"], arm["messages"]),
            }
        )
    return rows


def _campaign_page(
    request: Request,
    session: UISession,
    services: Services,
    campaign_id: str,
    *,
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    try:
        with services.runtime.sessions() as db:
            document = campaigns.get(db, services.policy, campaign_id)
    except campaigns.CampaignNotFound:
        raise PageError(404, f"There is no campaign {campaign_id}.") from None
    progress = document["progress"]
    status = document["status"]
    actions = (
        [name for name in campaigns.TRANSITIONS if status in ALLOWED_FROM[name]]
        if session.is_admin
        else []
    )
    done = request.query_params.get("done")
    return render(
        request,
        "campaign.html",
        {
            "page_title": f"Campaign {document['name']}",
            "nav": "campaigns",
            "campaign": document,
            "progress": progress,
            "summary": _summary(document),
            "arms": _arm_rows(progress, document),
            "comparison": campaigns.comparison_text(progress.get("comparison")),
            "actions": actions,
            "notice": notice,
            "done": DONE_WORDS.get(done or "") if notice is None else None,
            "action_words": ACTION_WORDS,
            "segment": segment_words(document["segment"]),
        },
        status_code=status_code,
    )


@router.get("/ui/campaigns/{campaign_id}")
def campaign_page(
    campaign_id: str, request: Request, session: PageSession, services: ServicesDep
) -> Response:
    return _campaign_page(request, session, services, campaign_id)


@router.get("/ui/campaigns/{campaign_id}/cancel")
def confirm_cancel(
    campaign_id: str, request: Request, session: PageSession, services: ServicesDep
) -> Response:
    _must_be_admin(session, "cancel a campaign")
    with services.runtime.sessions() as db:
        campaign = campaign_store.get_campaign(db, campaign_id)
        if campaign is None:
            raise PageError(404, f"There is no campaign {campaign_id}.")
        if campaign.status not in ALLOWED_FROM["cancel"]:
            raise PageError(
                409, f"This campaign is {campaign.status}; it can no longer be cancelled."
            )
        counted = campaign_store.counts_by_arm(db, campaign_id)
    unsent = sum(n for _, status, _, n in counted if status in PENDING_STATUSES)
    return render(
        request,
        "campaign_cancel.html",
        {
            "page_title": "Cancel a campaign",
            "nav": "campaigns",
            "campaign": campaigns.to_json(campaign),
            "unsent": unsent,
        },
    )


@router.post("/ui/campaigns/{campaign_id}/{action}")
def move_campaign(
    campaign_id: str, action: str, request: Request, session: AdminForm, services: ServicesDep
) -> Response:
    """Launch, pause, resume or cancel, as `POST /v1/campaigns/{id}/<action>` does."""
    if action not in campaigns.TRANSITIONS:
        raise PageError(404, f"There is no such thing to do to a campaign: {action}.")
    try:
        campaigns.transition_audited(
            services.runtime.sessions,
            services.policy,
            services.campaigns,
            action,
            campaign_id,
            actor_of(session),
            services.dispatcher.now(),
        )
    except campaigns.CampaignNotFound:
        raise PageError(404, f"There is no campaign {campaign_id}.") from None
    except campaigns.CampaignConflict as error:
        notice = f"This campaign is {error.status}; it cannot be {error.action}."
        return _campaign_page(
            request, session, services, campaign_id, notice=notice, status_code=409
        )
    except (CampaignCheckUnavailable, StoreUnavailable):
        raise PageError(
            503, "The campaign could not be changed just now; nothing was changed. Try again."
        ) from None
    return see_other(f"/ui/campaigns/{campaign_id}?done={action}")
