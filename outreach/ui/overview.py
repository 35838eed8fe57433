"""`GET /ui/`: a first overview, each panel a view of the log (its link opens exactly that
view): replies waiting for a person, messages due within the hour, and what failed in the
last 24 hours."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from outreach.api.auth import ServicesDep
from outreach.service import log as message_log
from outreach.ui.messages import log_href
from outreach.ui.pages import PageSession, render

router = APIRouter(include_in_schema=False)

PANEL_SIZE = 10


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@router.get("/ui/")
def overview(request: Request, _: PageSession, services: ServicesDep) -> Response:
    now = services.dispatcher.now()
    views = (
        ("Replies waiting for a person", {"needs_human": "true"}),
        (
            "Due within the hour",
            {"status": "scheduled,deferred", "until": _iso(now + dt.timedelta(hours=1))},
        ),
        (
            "Failed or undelivered, last 24 hours",
            {"status": "failed,undelivered", "since": _iso(now - dt.timedelta(hours=24))},
        ),
    )
    panels: list[dict[str, Any]] = []
    with services.runtime.sessions() as db:
        for title, params in views:
            items, more = message_log.list_messages(
                db, message_log.MessageFilter.parse(dict(params)), limit=PANEL_SIZE, cursor=None
            )
            panels.append(
                {
                    "title": title,
                    "messages": items,
                    "more": more is not None,
                    "href": log_href(params),
                }
            )
    return render(
        request, "overview.html", {"page_title": "Overview", "nav": "overview", "panels": panels}
    )
