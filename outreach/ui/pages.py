"""The foundation every page builds on: templates, the session and CSRF dependencies, the
security headers, and the answers for "log in first" and "not allowed" (see the package
docstring for how to add a page)."""

from __future__ import annotations

import logging
import re
import secrets
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool

from outreach.api.auth import record_forbidden, services_of
from outreach.service.campaigns import Actor
from outreach.ui import formats
from outreach.ui.sessions import SessionStore, UISession

SESSION_COOKIE = "outreach_session"
CSRF_FIELD = "csrf_token"
# the script and style sources every page may use: its own files only, never inline script
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# a page showing an email's HTML in a sandboxed frame: the email's own inline styles apply
# (the frame inherits the page's policy); scripts still only from our files, and none run
# in the frame, whose sandbox allows none
EMAIL_PREVIEW_POLICY = CONTENT_SECURITY_POLICY.replace(
    "style-src 'self'", "style-src 'self' 'unsafe-inline'"
)

log = logging.getLogger(__name__)


def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("outreach.ui", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(formats.FILTERS)
    return environment


templates = Jinja2Templates(env=_environment())


class LoginRequired(Exception):
    """No live session: the answer is a 303 to the login page."""

    def __init__(self, next_path: str | None = None) -> None:
        super().__init__("log in first")
        self.next_path = next_path


class PageError(Exception):
    """A request the pages refuse (403, 404, 409, 422): an HTML page saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def session_store(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.ui_sessions
    return store


def current_session(request: Request) -> UISession | None:
    """The request's live session, if it has one (its idle time started again)."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    settings = services_of(request).runtime.settings
    return session_store(request).find(session_id, settings)


def page_session(request: Request) -> UISession:
    """Dependency of every page: the session, or a 303 to /ui/login."""
    session = current_session(request)
    if session is None:
        raise LoginRequired(_return_path(request))
    request.state.ui_session = session
    return session


PageSession = Annotated[UISession, Depends(page_session)]


async def form_session(request: Request, session: PageSession) -> UISession:
    """Dependency of every form post: the session, whose CSRF token the form must carry (403
    without it or with another)."""
    form = await request.form()
    given = form.get(CSRF_FIELD)
    if not session.csrf_matches(given if isinstance(given, str) else None):
        await run_in_threadpool(record_refusal, request, session, "csrf")
        raise PageError(403, "This form has expired or did not come from these pages.")
    return session


FormSession = Annotated[UISession, Depends(form_session)]


def admin_form(request: Request, session: FormSession) -> UISession:
    """Dependency of every write: a form post by an admin (403 for a viewer)."""
    if not session.is_admin:
        record_refusal(request, session, "role")
        raise PageError(403, "Only an admin can do this.")
    return session


AdminForm = Annotated[UISession, Depends(admin_form)]


def record_refusal(request: Request, session: UISession, why: str) -> None:
    """A refused post, in the audit log (`ui.post` / `forbidden`, why: `csrf` or `role`)."""
    record_forbidden(request, session.actor, session.role, "ui.post", {"why": why})


def actor_of(session: UISession) -> Actor:
    """The session's person as the audit log and the services name them (`via: ui` in
    what the audit log records of them)."""
    return Actor(session.actor, session.role, via="ui")


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """A page from `templates/`, with what base.html needs: the session (`ui`: actor, role,
    `is_admin`, `csrf` for forms) when there is one."""
    session: UISession | None = getattr(request.state, "ui_session", None)
    values = {
        "ui": session,
        "csrf_field": CSRF_FIELD,
        "page_title": "",
        "nav": "",
        **(context or {}),
    }
    response: HTMLResponse = templates.TemplateResponse(
        request, template, values, status_code=status_code, headers=headers
    )
    return response


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a page of ours, never another site."""
    if value and value.startswith("/ui") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/"


def _return_path(request: Request) -> str | None:
    # the page asked for, to come back to after logging in; its query only when it holds no
    # text search (no borrower's words in a URL we make)
    if request.method != "GET":
        return None
    query = request.url.query
    if query and "q" not in request.query_params:
        return f"{request.url.path}?{query}"
    return request.url.path


def cookie_is_secure(request: Request) -> bool:
    """Secure cookies when the pages are served over https (directly or, with uvicorn's
    --proxy-headers, behind a proxy that says so)."""
    return request.url.scheme == "https"


def new_form_token() -> str:
    return secrets.token_urlsafe(32)


_SEARCH_TEXT = re.compile(r"([?&]q=)[^&]*")


class HideSearchText(logging.Filter):
    """Keeps the text search (`q`, which may hold a borrower's name, number or words) out of
    uvicorn's access log: the line keeps the path and the other parameters."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and "q=" in str(args[2]):
            record.args = (*args[:2], _SEARCH_TEXT.sub(r"\1…", str(args[2])), *args[3:])
        return True


def hide_search_text() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, HideSearchText) for f in access.filters):
        access.addFilter(HideSearchText())


def install(app: FastAPI) -> None:
    """The session store and the two answers of the pages, on `app` (their headers are
    every answer's, `api.headers`)."""
    app.state.ui_sessions = SessionStore(app.state.services.runtime.redis.client)
    hide_search_text()

    async def login_required(request: Request, error: Exception) -> Response:
        assert isinstance(error, LoginRequired)
        target = "/ui/login"
        if error.next_path and error.next_path not in ("/ui/", "/ui"):
            target += "?" + urlencode({"next": error.next_path})
        return see_other(target)

    async def page_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, PageError)
        return render(
            request,
            "error.html",
            {"page_title": "Not possible", "status": error.status, "message": error.message},
            status_code=error.status,
        )

    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(PageError, page_error)
