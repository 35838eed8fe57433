"""`GET /ui/campaigns`: every campaign, newest first, with its messages by status (the list
of `GET /v1/campaigns`), each linked to its messages in the log. (The campaign page, the
create form and the admin actions are still to come.)"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from outreach.api.auth import ServicesDep
from outreach.service import campaigns
from outreach.ui.pages import PageSession, render

router = APIRouter(include_in_schema=False)


@router.get("/ui/campaigns")
def campaign_list(request: Request, _: PageSession, services: ServicesDep) -> Response:
    with services.runtime.sessions() as db:
        items = campaigns.list_all(db, services.policy)
    return render(
        request,
        "campaigns.html",
        {"page_title": "Campaigns", "nav": "campaigns", "campaigns": items},
    )
