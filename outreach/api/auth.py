"""Who is asking: the ops bearer tokens of OUTREACH_OPS_TOKENS and their roles (SPEC §3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, NoReturn

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from outreach.service.campaigns import Actor
from outreach.settings import OpsToken
from outreach.store import audit
from outreach.store.db import transaction
from outreach.wiring import Services

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="OpsToken",
    description="An ops token of OUTREACH_OPS_TOKENS: a viewer reads, an admin also writes",
)


def services_of(request: Request) -> Services:
    """The process's services, as `create_app` was given them."""
    services: Services = request.app.state.services
    return services


def ops_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> OpsToken:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
    found = services_of(request).runtime.settings.ops_token(credentials.credentials)
    if found is None:
        raise HTTPException(401, "the token is not valid", {"WWW-Authenticate": "Bearer"})
    return found


def viewer(current: Annotated[OpsToken, Depends(ops_token)]) -> str:
    return current.role


def admin(request: Request, current: Annotated[OpsToken, Depends(ops_token)]) -> str:
    if current.role != "admin":
        refuse_viewer(request, current)
    return current.role


def admin_actor(request: Request, current: Annotated[OpsToken, Depends(ops_token)]) -> Actor:
    """An admin, named as the audit log shows them."""
    if current.role != "admin":
        refuse_viewer(request, current)
    return Actor(current.actor, current.role)


def refuse_viewer(request: Request, current: OpsToken) -> NoReturn:
    """403 for a viewer's token; a write it attempted is in the audit log (`api.write` /
    `forbidden`), as the pages record theirs: a viewer trying admin actions is worth
    knowing, a viewer reading the audit log is not a write."""
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        record_forbidden(
            request,
            current.actor,
            current.role,
            "api.write",
            {"why": "role", "method": request.method},
        )
    raise HTTPException(403, "this action needs an admin token")


def record_forbidden(
    request: Request, actor: str, role: str, action: str, detail: dict[str, str]
) -> None:
    """A refused write in the audit log: `action` / `forbidden` on the request's path."""
    record_action(services_of(request), actor, role, action, request.url.path, "forbidden", detail)


def record_action(
    services: Services,
    actor: str,
    role: str | None,
    action: str,
    target: str | None,
    outcome: str,
    detail: Mapping[str, str | None] | None,
) -> None:
    """One audit row, in a transaction of its own, at the service's time."""
    with transaction(services.runtime.sessions) as session:
        audit.append(
            session,
            at=services.dispatcher.now(),
            actor=actor,
            role=role,
            action=action,
            target=target,
            outcome=outcome,
            detail=detail,
        )


Viewer = Annotated[str, Depends(viewer)]
Admin = Annotated[str, Depends(admin)]
AdminActor = Annotated[Actor, Depends(admin_actor)]
ServicesDep = Annotated[Services, Depends(services_of)]
