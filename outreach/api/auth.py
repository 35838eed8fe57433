"""Who is asking: the ops bearer tokens of OUTREACH_OPS_TOKENS and their roles (SPEC §3)."""

from __future__ import annotations

from typing import Annotated, NoReturn

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from outreach.service.campaigns import Actor
from outreach.settings import OpsToken
from outreach.store import audit
from outreach.store.db import transaction
from outreach.wiring import Services

bearer = HTTPBearer(
    auto_error=False, description="An ops token: `token:role` in OUTREACH_OPS_TOKENS"
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
        services = services_of(request)
        with transaction(services.runtime.sessions) as session:
            audit.append(
                session,
                at=services.dispatcher.now(),
                actor=current.actor,
                role=current.role,
                action="api.write",
                target=request.url.path,
                outcome="forbidden",
                detail={"why": "role", "method": request.method},
            )
    raise HTTPException(403, "this action needs an admin token")


Viewer = Annotated[str, Depends(viewer)]
Admin = Annotated[str, Depends(admin)]
AdminActor = Annotated[Actor, Depends(admin_actor)]
ServicesDep = Annotated[Services, Depends(services_of)]
