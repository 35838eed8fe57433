"""The web app: the routers of each audience, composed (`create_app`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from dramatiq.brokers.redis import RedisBroker
from fastapi import FastAPI

from outreach import __version__
from outreach.api import campaigns, events, health, ops, problems, providers
from outreach.api import openapi as openapi_document
from outreach.api.edge import install as install_edge
from outreach.ui import mount as mount_pages
from outreach.wiring import Services
from outreach.worker import build_broker

# how long a stopping web process may spend applying the events it accepted
SETTLE_SECONDS = 20


def create_app(services: Services, broker: RedisBroker | None = None) -> FastAPI:
    """The app; `broker` is the one `/ready` checks (by default one built on the
    configured Redis, as the clock and workers build theirs)."""
    checked_broker = broker if broker is not None else build_broker(services.runtime.redis.url)

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
        # no Swagger UI or ReDoc: FastAPI's load their scripts from a CDN at run time, and the
        # service fetches nothing from outside; /openapi.json stays for any viewer or client
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    app.state.broker = checked_broker
    for router in (health.router, events.router, ops.router, campaigns.router, providers.router):
        app.include_router(router)
    mount_pages(app)
    problems.install(app)
    app.state.intake = events.mount_receiver(app, services)
    install_edge(app, services)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document.build(app, services)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
