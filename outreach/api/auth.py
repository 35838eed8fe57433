"""Who is asking: the ops bearer tokens of OUTREACH_OPS_TOKENS and their roles (SPEC §3)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from outreach.service.campaigns import Actor
from outreach.settings import OpsToken
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


def admin(current: Annotated[OpsToken, Depends(ops_token)]) -> str:
    if current.role != "admin":
        raise HTTPException(403, "this action needs an admin token")
    return current.role


def admin_actor(current: Annotated[OpsToken, Depends(ops_token)]) -> Actor:
    """An admin, named as the audit log shows them."""
    if current.role != "admin":
        raise HTTPException(403, "this action needs an admin token")
    return Actor(current.actor, current.role)


Viewer = Annotated[str, Depends(viewer)]
Admin = Annotated[str, Depends(admin)]
AdminActor = Annotated[Actor, Depends(admin_actor)]
ServicesDep = Annotated[Services, Depends(services_of)]
