"""Who is asking: the ops bearer tokens of OUTREACH_OPS_TOKENS and their roles (SPEC §3)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from outreach.wiring import Services

bearer = HTTPBearer(
    auto_error=False, description="An ops token: `token:role` in OUTREACH_OPS_TOKENS"
)


def services_of(request: Request) -> Services:
    """The process's services, as `create_app` was given them."""
    services: Services = request.app.state.services
    return services


def role(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
    found = services_of(request).runtime.settings.role_for(credentials.credentials)
    if found is None:
        raise HTTPException(401, "the token is not valid", {"WWW-Authenticate": "Bearer"})
    return found


def viewer(current: Annotated[str, Depends(role)]) -> str:
    return current


def admin(current: Annotated[str, Depends(role)]) -> str:
    if current != "admin":
        raise HTTPException(403, "this action needs an admin token")
    return current


Viewer = Annotated[str, Depends(viewer)]
Admin = Annotated[str, Depends(admin)]
ServicesDep = Annotated[Services, Depends(services_of)]
