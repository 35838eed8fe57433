"""Every error answers one shape, `Problem` (`detail`, and `field` where one is at fault),
FastAPI's own request validation included; a 405 names every method the path serves."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

# where FastAPI says a value came from; the field is named without it
_LOCATIONS = ("body", "query", "path", "header", "cookie")


def _field(location: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(part) for part in location]
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    return ".".join(parts) or None


async def validation_problem(request: Request, error: Exception) -> Response:
    """422 naming every field at fault, the first one as `field`."""
    assert isinstance(error, RequestValidationError)
    errors = []
    for item in error.errors():
        field = _field(item.get("loc", ()))
        message = str(item.get("msg", "is not valid"))
        if item.get("type") == "missing":
            message = "is required"
        errors.append({"field": field, "detail": message})
    first = errors[0] if errors else {"field": None, "detail": "the request is not valid"}
    detail = f"{first['field']}: {first['detail']}" if first["field"] else str(first["detail"])
    return JSONResponse(
        {"detail": detail, "field": first["field"], "errors": errors}, status_code=422
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path (several routes may share one
    path, each with its own methods)."""
    methods: set[str] = set()
    path = request.scope.get("path", "")
    for route in iter_route_contexts(request.app.router.routes):
        route_methods, route_path = route.methods, route.path
        if route_methods and route_path and compile_path(route_path)[0].match(path):
            methods |= set(route_methods)
    return sorted(methods)


async def http_problem(request: Request, error: Exception) -> Response:
    """FastAPI's answer to an HTTPException, with a whole `Allow` on a 405."""
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 405:
        methods = allowed_methods(request)
        if methods:
            error.headers = {**(error.headers or {}), "Allow": ", ".join(methods)}
    return await http_exception_handler(request, error)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_problem)
    app.add_exception_handler(StarletteHTTPException, http_problem)
