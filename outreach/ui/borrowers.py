"""One borrower: `GET /ui/borrowers/{id}`, what holds or limits contact now (restrictions,
opt-outs, consent, promises and plans in force) above one timeline of their events,
messages and replies (`GET /v1/borrowers/{id}/timeline`'s)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from outreach.api.auth import ServicesDep
from outreach.domain import Channel
from outreach.policy.zones import candidate_zones
from outreach.render.filters import mask_recipient
from outreach.service import log as message_log
from outreach.store.borrowers import normalize_recipient
from outreach.ui.pages import PageError, PageSession, render

router = APIRouter(include_in_schema=False)


@router.get("/ui/borrowers/{borrower_id}")
def borrower_page(
    borrower_id: str, request: Request, _: PageSession, services: ServicesDep
) -> Response:
    now = services.dispatcher.now()
    with services.runtime.sessions() as db:
        timeline = message_log.borrower_timeline(db, borrower_id)
        summary = message_log.borrower_summary(db, services.policy, borrower_id, now)
    if timeline is None:
        raise PageError(404, f"There is no borrower {borrower_id}.")
    zones = (
        candidate_zones(services.policy, summary.borrower)
        if summary is not None
        else (services.policy.default_zone,)
    )
    recipients = []
    if summary is not None:
        borrower = summary.borrower
        for channel, address in [(Channel.SMS, phone) for phone in borrower.phones] + (
            [(Channel.EMAIL, borrower.email)] if borrower.email else []
        ):
            key = normalize_recipient(channel, address)
            recipients.append(
                {
                    "channel": channel.value,
                    "shown": mask_recipient(address),
                    "opted_out": key in borrower.opted_out,
                    "invalid": key in borrower.invalid_addresses,
                    "consent": borrower.consents_to(channel),
                }
            )
    return render(
        request,
        "borrower.html",
        {
            "page_title": f"Borrower {borrower_id}",
            "nav": "messages",
            "borrower_id": borrower_id,
            "timeline": timeline,
            "summary": summary,
            "zone": zones[0],
            "zones": [zone.key for zone in zones],
            "recipients": recipients,
            "currency": {loan.id: loan.currency for loan in summary.loans} if summary else {},
        },
    )
