"""What providers and borrowers send back: Twilio's status and inbound callbacks (signed),
and the unsubscribe links of our emails (RFC 8058 one-click, and a page for people)."""

from __future__ import annotations

import html
import re
from typing import Final
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from outreach.api.auth import ServicesDep
from outreach.api.schemas import Problem
from outreach.channels.twilio_sms import STATUS_CALLBACK_PATH, twilio_signature_valid
from outreach.errors import StoreUnavailable
from outreach.service.dispatch import verify_unsubscribe_token
from outreach.service.inbound import handle_unsubscribe
from outreach.service.journal import SMS_REPLY, TWILIO_STATUS, JournalEntry
from outreach.service.messages import MessageNotFound
from outreach.store.db import transaction
from outreach.wiring import Services, link_keys

router = APIRouter(tags=["providers"])

INBOUND_PATH = "/v1/providers/twilio/inbound"


FORM_TYPE = "application/x-www-form-urlencoded"
# a callback has a few dozen fields; more is no callback of Twilio's
MAX_FORM_FIELDS = 200


class _NotAForm(Exception):
    """A body that is not a callback's form: the answer to it (415, 413)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.answer = JSONResponse({"detail": detail}, status_code=status)


async def _signed_twilio_form(
    request: Request, services: Services, path: str
) -> dict[str, str] | None:
    """The callback's form fields, or None when X-Twilio-Signature does not match. Only
    Twilio's form encoding is read, and only as a plain string of at most 64 KiB (the edge's
    bound, `api.limits`): no multipart, no file spilled to disk before the signature is
    checked. Raises _NotAForm for any other body."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != FORM_TYPE:
        raise _NotAForm(415, f"the body must be {FORM_TYPE}")
    body = await request.body()
    try:
        pairs = parse_qsl(
            body.decode("utf-8", "replace"),
            keep_blank_values=True,
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError:
        raise _NotAForm(413, f"more than {MAX_FORM_FIELDS} form fields") from None
    params = dict(pairs)
    settings = services.runtime.settings
    token = settings.twilio_auth_token.reveal() if settings.twilio_auth_token else ""
    signature = request.headers.get("X-Twilio-Signature")
    if not twilio_signature_valid(token, settings.public_url + path, params, signature):
        return None
    return params


_BAD_SIGNATURE = {"detail": "X-Twilio-Signature is not valid"}
# what Twilio's status callback fields look like (a sid is two letters and 32 hex digits; a
# status lower-case words; an error code digits), with room to spare: checked before they
# are stored, as what is stored is bounded
STATUS_FIELD_PATTERNS: Final = {
    "MessageSid": re.compile(r"[A-Za-z0-9_-]{1,64}"),
    "MessageStatus": re.compile(r"[a-z_]{1,20}"),
    "ErrorCode": re.compile(r"[0-9]{1,10}"),
}
STATUS_FIELD_WORDS: Final = {
    "MessageSid": "message sid (letters, digits, - and _, at most 64)",
    "MessageStatus": "message status (lower-case letters, at most 20)",
    "ErrorCode": "error code (digits, at most 10)",
}


async def _received(services: Services, entry: JournalEntry) -> str | None:
    """The callback applied, or kept in the reply journal while the database cannot take it
    (Twilio never retries these webhooks); its outcome, or None when neither could store it
    (Redis is down too)."""
    try:
        outcome: str = await run_in_threadpool(services.replies.receive, entry)
    except StoreUnavailable:
        return None
    return outcome


def _not_stored() -> JSONResponse:
    return JSONResponse({"detail": "not stored; retry"}, status_code=503)


@router.post(
    STATUS_CALLBACK_PATH,
    summary="Twilio delivery status callback (signed)",
    responses={403: {"model": Problem}},
)
async def twilio_status(request: Request, services: ServicesDep) -> JSONResponse:
    try:
        params = await _signed_twilio_form(request, services, STATUS_CALLBACK_PATH)
    except _NotAForm as refused:
        return refused.answer
    if params is None:
        return JSONResponse(_BAD_SIGNATURE, status_code=403)
    sid = params.get("MessageSid") or params.get("SmsSid")
    status = params.get("MessageStatus") or params.get("SmsStatus")
    if not sid or not status:
        return JSONResponse({"detail": "MessageSid and MessageStatus are required"}, 422)

    fields = {"MessageSid": sid, "MessageStatus": status}
    if params.get("ErrorCode"):
        fields["ErrorCode"] = params["ErrorCode"]
    for name, value in fields.items():
        if not STATUS_FIELD_PATTERNS[name].fullmatch(value):
            # signed, so from Twilio or someone holding its token: never a value Twilio sends
            detail = f"{name}: not a Twilio {STATUS_FIELD_WORDS[name]}"
            return JSONResponse({"detail": detail, "field": name}, 422)
    outcome = await _received(
        services, JournalEntry(TWILIO_STATUS, fields, services.dispatcher.now())
    )
    if outcome is None:
        return _not_stored()
    return JSONResponse({"status": outcome})


@router.post(
    INBOUND_PATH,
    summary="An SMS a borrower sent us (signed)",
    responses={403: {"model": Problem}},
)
async def twilio_inbound(request: Request, services: ServicesDep) -> Response:
    try:
        params = await _signed_twilio_form(request, services, INBOUND_PATH)
    except _NotAForm as refused:
        return refused.answer
    if params is None:
        return JSONResponse(_BAD_SIGNATURE, status_code=403)
    sender = params.get("From")
    if not sender:
        return JSONResponse({"detail": "From is required"}, status_code=422)

    fields = {"From": sender, "Body": params.get("Body", "")}
    sid = params.get("MessageSid") or params.get("SmsSid")
    if sid:
        if not STATUS_FIELD_PATTERNS["MessageSid"].fullmatch(sid):
            detail = f"MessageSid: not a Twilio {STATUS_FIELD_WORDS['MessageSid']}"
            return JSONResponse({"detail": detail, "field": "MessageSid"}, 422)
        fields["MessageSid"] = sid
    if (
        await _received(services, JournalEntry(SMS_REPLY, fields, services.dispatcher.now()))
        is None
    ):
        return _not_stored()
    # replies go out as recorded, gated messages, not as TwiML
    return Response("<Response/>", media_type="application/xml")


@router.get("/v1/unsubscribe/{token}", summary="Unsubscribe page")
def unsubscribe_page(token: str, services: ServicesDep) -> HTMLResponse:
    if verify_unsubscribe_token(link_keys(services.runtime.settings), token) is None:
        return HTMLResponse(UNSUBSCRIBE_INVALID, status_code=404)
    return HTMLResponse(UNSUBSCRIBE_FORM.format(token=html.escape(token)))


@router.post("/v1/unsubscribe/{token}", summary="Unsubscribe (one-click)")
def unsubscribe(token: str, services: ServicesDep) -> HTMLResponse:
    message_id = verify_unsubscribe_token(link_keys(services.runtime.settings), token)
    if message_id is None:
        return HTMLResponse(UNSUBSCRIBE_INVALID, status_code=404)
    try:
        with transaction(services.runtime.sessions) as session:
            handle_unsubscribe(
                session, services.policy, message_id=message_id, now=services.dispatcher.now()
            )
    except MessageNotFound:
        return HTMLResponse(UNSUBSCRIBE_INVALID, status_code=404)
    return HTMLResponse(UNSUBSCRIBE_DONE)


PAGE_STYLE = "font-family:sans-serif;max-width:36em;margin:3em auto"
UNSUBSCRIBE_FORM = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Unsubscribe</title>'
    f'</head><body style="{PAGE_STYLE}"><h1>Stop these emails?</h1>'
    "<p>Press the button to stop email about your account.<br>"
    "按下按钮即可退订邮件。<br>按下按鈕即可退訂郵件。</p>"
    '<form method="post" action="/v1/unsubscribe/{token}">'
    '<button type="submit">Unsubscribe / 退订 / 退訂</button></form></body></html>'
)
UNSUBSCRIBE_DONE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Unsubscribed</title>'
    f'</head><body style="{PAGE_STYLE}"><h1>You are unsubscribed</h1>'
    "<p>We will not email you about this account again.<br>您已退订邮件。<br>您已退訂郵件。</p>"
    "</body></html>"
)
UNSUBSCRIBE_INVALID = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Link not valid</title>'
    f'</head><body style="{PAGE_STYLE}"><h1>This unsubscribe link is not valid</h1>'
    "</body></html>"
)
