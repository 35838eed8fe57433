"""The ASGI application."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from outreach import __version__
from outreach.runtime import Runtime
from outreach.store.db import ping
from outreach.store.migrate import is_current


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="outreach",
        version=__version__,
        summary="Collections outreach: lawful, humane SMS and email for delinquent loans.",
    )
    app.state.runtime = runtime

    @app.get("/health", tags=["operations"], summary="Liveness: the process answers")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"], summary="Readiness: database, Redis and broker")
    def ready() -> JSONResponse:
        checks: dict[str, Any] = {}
        try:
            ping(runtime.engine)
            checks["database"] = "ok" if is_current(runtime.engine) else "migrations pending"
        except Exception as error:
            checks["database"] = f"unreachable: {type(error).__name__}"
        try:
            runtime.redis.client.ping()
            checks["redis"] = "ok"
            checks["broker"] = "ok"
        except Exception as error:
            checks["redis"] = f"unreachable: {type(error).__name__}"
            checks["broker"] = checks["redis"]
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    return app
