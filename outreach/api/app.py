"""The ASGI application: webhooks, the ops API and operations endpoints."""

import asyncio
import contextlib
import html
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from dramatiq.brokers.redis import RedisBroker
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.routing import Route

from outreach import __version__
from outreach.api.webhook import OPENAPI_PATH, EventReceiver, quiet_accepted_events
from outreach.domain import Channel
from outreach.errors import RenderError, StoreUnavailable
from outreach.render import preview as render_preview
from outreach.service import log as message_log
from outreach.service.dispatch import verify_unsubscribe_token
from outreach.service.export import csv_rows
from outreach.service.inbound import handle_unsubscribe
from outreach.service.inbox import Intake, dead_letter_count, dead_letters, redrive
from outreach.service.journal import SMS_REPLY, TWILIO_STATUS, JournalEntry, JournalUnavailable
from outreach.service.messages import MessageNotFound, MessageNotPending, cancel_by_ops
from outreach.store.db import ping, transaction
from outreach.store.migrate import is_current
from outreach.wiring import Services, link_secret
from outreach.worker import QUEUE, build_broker

log = logging.getLogger(__name__)

# how long a stopping web process may spend applying the events it accepted
SETTLE_SECONDS = 20

bearer = HTTPBearer(
    auto_error=False, description="An ops token: `token:role` in OUTREACH_OPS_TOKENS"
)


class Accepted(BaseModel):
    status: str = Field(examples=["accepted", "duplicate"])
    id: str


class Problem(BaseModel):
    detail: str


class CancelRequest(BaseModel):
    note: str | None = Field(default=None, max_length=500)


class PreviewRequest(BaseModel):
    template: str
    channel: Channel
    locale: str
    context: dict[str, Any] | None = None


def create_app(services: Services, broker: RedisBroker | None = None) -> FastAPI:
    """The app; `broker` is the one `/ready` checks (by default one built on the
    configured Redis, as the clock and workers build theirs)."""
    runtime = services.runtime
    settings = runtime.settings
    checked_broker = broker if broker is not None else build_broker(runtime.redis.url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # what was accepted is applied before the process goes (or else by the clock, later)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(app.state.intake.settle(), timeout=SETTLE_SECONDS)
        if broker is None:
            checked_broker.close()

    app = FastAPI(
        lifespan=lifespan,
        title="outreach",
        version=__version__,
        summary="Collections outreach: lawful, humane SMS and email for delinquent loans.",
    )
    app.state.services = services

    def role(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
        found = settings.role_for(credentials.credentials)
        if found is None:
            raise HTTPException(401, "the token is not valid", {"WWW-Authenticate": "Bearer"})
        return found

    def viewer(current: Annotated[str, Depends(role)]) -> str:
        return current

    def admin(current: Annotated[str, Depends(role)]) -> str:
        if current != "admin":
            raise HTTPException(403, "this action needs an admin token")
        return current

    app.state.require_admin = admin
    app.state.require_viewer = viewer

    # -- operations --------------------------------------------------------------------------

    @app.get("/health", tags=["operations"], summary="Liveness: the process answers")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"], summary="Readiness: database, Redis and broker")
    def ready() -> JSONResponse:
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
            detail["broker_queue"] = int(checked_broker.do_qsize(QUEUE))
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

    # -- the loan system's webhook -------------------------------------------------------------

    webhook_secret = settings.webhook_secret.reveal().encode() if settings.webhook_secret else None
    # events arriving together are stored and applied together (group commit)
    intake = Intake(runtime.sessions, services.policy, services.dispatcher.now)
    app.state.intake = intake

    receiver = EventReceiver(webhook_secret, intake)
    quiet_accepted_events()
    # ahead of every framework route (see `webhook`)
    app.router.routes.insert(0, Route("/v1/events", receiver, methods=["POST"]))

    @app.get(
        "/v1/events/dead",
        tags=["webhooks"],
        summary="Accepted events that failed to apply for good (their messages are held)",
    )
    def list_dead_letters(
        _: Annotated[str, Depends(viewer)],
        limit: Annotated[int, Query(ge=1, le=500, description="1…500, default 100")] = 100,
    ) -> dict[str, Any]:
        with runtime.sessions() as session:
            return {"items": dead_letters(session, limit), "total": dead_letter_count(session)}

    @app.post(
        "/v1/events/dead/{event_id}/retry",
        tags=["webhooks"],
        summary="Apply a dead letter again, now (admin)",
        responses={403: {"model": Problem}, 404: {"model": Problem}},
    )
    def retry_dead_letter(event_id: str, _: Annotated[str, Depends(admin)]) -> dict[str, Any]:
        result = redrive(runtime.sessions, services.policy, event_id, services.dispatcher.now)
        if result is None:
            raise HTTPException(404, f"no dead letter {event_id}")
        outcome, detail = result
        return {"id": event_id, "outcome": outcome, "detail": detail}

    # -- the ops API ---------------------------------------------------------------------------

    def message_filter(request: Request) -> message_log.MessageFilter:
        return message_log.MessageFilter.parse(dict(request.query_params))

    def filter_errors(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except message_log.MessageFilterError as error:
            raise HTTPException(422, str(error)) from None

    @app.get("/v1/messages", tags=["messages"], summary="The message log, filtered, paged")
    def list_messages(
        request: Request,
        _: Annotated[str, Depends(viewer)],
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
        def page() -> dict[str, Any]:
            criteria = message_filter(request)
            size = message_log.parse_limit(limit)
            with runtime.sessions() as session:
                items, next_cursor = message_log.list_messages(
                    session, criteria, limit=size, cursor=cursor
                )
            return {"items": items, "next_cursor": next_cursor}

        result: dict[str, Any] = filter_errors(page)
        return result

    @app.get("/v1/messages/export.csv", tags=["messages"], summary="The filtered log as CSV")
    def export_messages(request: Request, _: Annotated[str, Depends(viewer)]) -> StreamingResponse:
        criteria: message_log.MessageFilter = filter_errors(lambda: message_filter(request))
        return StreamingResponse(
            csv_rows(runtime.sessions, criteria),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="messages.csv"'},
        )

    @app.get("/v1/messages/{message_id}", tags=["messages"], summary="One message and timeline")
    def show_message(message_id: str, _: Annotated[str, Depends(viewer)]) -> dict[str, Any]:
        with runtime.sessions() as session:
            found = message_log.get_message(session, message_id)
        if found is None:
            raise HTTPException(404, f"no message {message_id}")
        return found

    @app.post(
        "/v1/messages/{message_id}/cancel",
        tags=["messages"],
        summary="Cancel a message that has not been sent (admin)",
        responses={403: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Problem}},
    )
    def cancel_message(
        message_id: str,
        _: Annotated[str, Depends(admin)],
        request_body: CancelRequest | None = None,
    ) -> dict[str, Any]:
        note = request_body.note if request_body and request_body.note else None
        try:
            with transaction(runtime.sessions) as session:
                cancel_by_ops(session, message_id, services.dispatcher.now(), note)
                cancelled = message_log.get_message(session, message_id)
        except MessageNotFound as error:
            raise HTTPException(404, str(error)) from error
        except MessageNotPending as error:
            raise HTTPException(409, str(error)) from error
        assert cancelled is not None
        return cancelled

    @app.get(
        "/v1/borrowers/{borrower_id}/timeline",
        tags=["messages"],
        summary="Every event, message step and reply about a borrower",
    )
    def borrower_timeline(borrower_id: str, _: Annotated[str, Depends(viewer)]) -> dict[str, Any]:
        with runtime.sessions() as session:
            found = message_log.borrower_timeline(session, borrower_id)
        if found is None:
            raise HTTPException(404, f"no borrower {borrower_id}")
        return found

    @app.get("/v1/policy", tags=["policy"], summary="The effective policy")
    def effective_policy(_: Annotated[str, Depends(viewer)]) -> dict[str, Any]:
        document: dict[str, Any] = services.policy.to_json()
        return document

    @app.post("/v1/templates/preview", tags=["policy"], summary="Render a template with lint")
    def preview_template(
        request_body: PreviewRequest, _: Annotated[str, Depends(viewer)]
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

    # -- provider callbacks --------------------------------------------------------------------

    twilio_token = settings.twilio_auth_token.reveal() if settings.twilio_auth_token else None

    async def signed_twilio_form(request: Request, path: str) -> dict[str, str] | None:
        """The callback's form fields, or None when X-Twilio-Signature does not match."""
        from twilio.request_validator import RequestValidator

        form = await request.form()
        params = {key: str(value) for key, value in form.multi_items()}
        signature = request.headers.get("X-Twilio-Signature", "")
        if twilio_token is None or not signature:
            return None
        url = settings.public_url + path
        if not RequestValidator(twilio_token).validate(url, params, signature):
            return None
        return params

    @app.post(
        "/v1/providers/twilio/status",
        tags=["providers"],
        summary="Twilio delivery status callback (signed)",
        responses={403: {"model": Problem}},
    )
    async def twilio_status(request: Request) -> JSONResponse:
        params = await signed_twilio_form(request, "/v1/providers/twilio/status")
        if params is None:
            return JSONResponse({"detail": "X-Twilio-Signature is not valid"}, status_code=403)
        sid = params.get("MessageSid") or params.get("SmsSid")
        status = params.get("MessageStatus") or params.get("SmsStatus")
        if not sid or not status:
            return JSONResponse({"detail": "MessageSid and MessageStatus are required"}, 422)

        fields = {"MessageSid": sid, "MessageStatus": status}
        if params.get("ErrorCode"):
            fields["ErrorCode"] = params["ErrorCode"]
        entry = JournalEntry(TWILIO_STATUS, fields, services.dispatcher.now())
        try:
            # applied, or kept in the journal while the database is unreachable
            outcome = await run_in_threadpool(services.replies.receive, entry)
        except StoreUnavailable:
            return JSONResponse({"detail": "not stored; retry"}, status_code=503)
        return JSONResponse({"status": outcome})

    @app.post(
        "/v1/providers/twilio/inbound",
        tags=["providers"],
        summary="An SMS a borrower sent us (signed)",
        responses={403: {"model": Problem}},
    )
    async def twilio_inbound(request: Request) -> Response:
        params = await signed_twilio_form(request, "/v1/providers/twilio/inbound")
        if params is None:
            return JSONResponse({"detail": "X-Twilio-Signature is not valid"}, status_code=403)
        sender = params.get("From")
        if not sender:
            return JSONResponse({"detail": "From is required"}, status_code=422)

        fields = {"From": sender, "Body": params.get("Body", "")}
        sid = params.get("MessageSid") or params.get("SmsSid")
        if sid:
            fields["MessageSid"] = sid
        entry = JournalEntry(SMS_REPLY, fields, services.dispatcher.now())
        try:
            # Twilio never retries this webhook: what the database cannot take now is kept
            # in the journal and applied once it can; 503 only when Redis is down too
            await run_in_threadpool(services.replies.receive, entry)
        except StoreUnavailable:
            return JSONResponse({"detail": "not stored; retry"}, status_code=503)
        # replies go out as recorded, gated messages, not as TwiML
        return Response("<Response/>", media_type="application/xml")

    # -- unsubscribe links (RFC 8058 one-click, and a page for people) --------------------------

    link_key = link_secret(settings)

    @app.get("/v1/unsubscribe/{token}", tags=["providers"], summary="Unsubscribe page")
    def unsubscribe_page(token: str) -> HTMLResponse:
        if verify_unsubscribe_token(link_key, token) is None:
            return HTMLResponse(UNSUBSCRIBE_INVALID, status_code=404)
        return HTMLResponse(UNSUBSCRIBE_FORM.format(token=html.escape(token)))

    @app.post("/v1/unsubscribe/{token}", tags=["providers"], summary="Unsubscribe (one-click)")
    def unsubscribe(token: str) -> HTMLResponse:
        found = verify_unsubscribe_token(link_key, token)
        if found is None:
            return HTMLResponse(UNSUBSCRIBE_INVALID, status_code=404)
        channel, recipient = found
        with transaction(runtime.sessions) as session:
            handle_unsubscribe(
                session,
                services.policy,
                channel=channel,
                recipient=recipient,
                now=services.dispatcher.now(),
            )
        return HTMLResponse(UNSUBSCRIBE_DONE)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schema["paths"] = {"/v1/events": OPENAPI_PATH, **schema["paths"]}
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (Accepted, Problem):
                components[model.__name__] = model.model_json_schema()
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


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
