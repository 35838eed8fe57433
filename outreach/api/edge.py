"""What every request passes through before and after its route: the bounds of `limits`
(body sizes, rates per client address), the security headers of `headers`, and 503 for a
database that cannot serve it (`unavailable`)."""

from __future__ import annotations

from fastapi import FastAPI

from outreach.api import unavailable
from outreach.api.headers import SecurityHeaders
from outreach.api.limits import EdgeLimits
from outreach.wiring import Services


def install(app: FastAPI, services: Services) -> None:
    unavailable.install(app)
    runtime = services.runtime
    # the last added runs first: headers on every answer, the limits' own 413 and 429 too
    app.add_middleware(EdgeLimits, limits=runtime.settings.rate_limits, redis_url=runtime.redis.url)
    app.add_middleware(SecurityHeaders)
