"""Logging in with an ops token, and out: `GET`/`POST /ui/login`, `POST /ui/logout`; `/`
sends people to the pages."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from outreach.api.auth import ServicesDep, record_action
from outreach.ui.pages import (
    CSRF_FIELD,
    SESSION_COOKIE,
    FormSession,
    PageError,
    cookie_is_secure,
    current_session,
    new_form_token,
    render,
    safe_next,
    see_other,
    session_store,
)
from outreach.wiring import Services

# the login form's CSRF token, before there is a session: the form and this cookie carry the
# same random value (a page of another site can neither read the cookie nor set it)
LOGIN_COOKIE = "outreach_login"
LOGIN_FORM_SECONDS = 60 * 60

router = APIRouter(include_in_schema=False)


@router.get("/")
def root() -> RedirectResponse:
    return see_other("/ui/")


@router.get("/ui")
def ui_root() -> RedirectResponse:
    return see_other("/ui/")


@router.get("/ui/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    if current_session(request) is not None:
        return see_other(safe_next(next))
    return _login_page(request, next, None, 200)


def _login_page(request: Request, next: str | None, problem: str | None, status: int) -> Response:
    form_token = new_form_token()
    response = render(
        request,
        "login.html",
        {
            "page_title": "Log in",
            "form_token": form_token,
            "next": safe_next(next),
            "problem": problem,
        },
        status_code=status,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        form_token,
        max_age=LOGIN_FORM_SECONDS,
        path="/ui/login",
        httponly=True,
        samesite="strict",
        secure=cookie_is_secure(request),
    )
    return response


@router.post("/ui/login")
def log_in(
    request: Request,
    services: ServicesDep,
    token: Annotated[str, Form(max_length=500)] = "",
    csrf_token: Annotated[str, Form(alias=CSRF_FIELD, max_length=100)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/ui/",
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), csrf_token.encode()):
        raise PageError(403, "This login form has expired. Open the login page again.")
    found = services.runtime.settings.ops_token(token.strip()) if token.strip() else None
    client = request.client.host if request.client else None
    if found is None:
        _audit(services, "unknown", None, "refused", {"client": client})
        return _login_page(request, next, "That token is not valid.", 401)
    store = session_store(request)
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:
        store.close(previous)
    session_id, session = store.open(found)
    _audit(services, session.actor, session.role, "ok", {"client": client})
    response = see_other(safe_next(next))
    # a browser-session cookie: the server ends the session after IDLE_SECONDS without a
    # request (sessions.py), however long the browser keeps the cookie
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        path="/",
        httponly=True,
        samesite="strict",
        secure=cookie_is_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path="/ui/login")
    return response


@router.post("/ui/logout")
def log_out(request: Request, session: FormSession, services: ServicesDep) -> Response:
    session_store(request).close(request.cookies.get(SESSION_COOKIE, ""))
    _audit(services, session.actor, session.role, "ok", None, action="ui.logout")
    response = see_other("/ui/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _audit(
    services: Services,
    actor: str,
    role: str | None,
    outcome: str,
    detail: dict[str, str | None] | None,
    *,
    action: str = "ui.login",
) -> None:
    record_action(services, actor, role, action, None, outcome, detail)
