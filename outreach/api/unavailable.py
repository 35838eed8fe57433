"""503 for a request the database could not serve: an ops read, a page, a callback that found
PostgreSQL unreachable (refused, timed out, or every pooled connection busy past its wait)
is answered "retry later", in the API's error shape, not 500.

The writes that must not be lost answer their own way (the webhook's 503, the reply
journal); this is for everything else, which raises the error up to the framework."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from outreach.errors import StoreUnavailable
from outreach.store.db import UNREACHABLE

log = logging.getLogger("outreach.api")

# seconds a client is asked to wait before trying again
RETRY_AFTER_SECONDS = 5
DETAIL = "the database is unavailable; retry later"


def install(app: FastAPI) -> None:
    """The handlers on `app`: JSON `{"detail"}` for the API, the error page under /ui/."""

    async def unavailable(request: Request, error: Exception) -> Response:
        log.warning(
            "%s %s answered 503: %s",
            request.method,
            request.url.path,
            type(getattr(error, "orig", None) or error).__name__,
        )
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        if request.url.path.startswith("/ui/"):
            from outreach.ui.pages import render

            return render(
                request,
                "error.html",
                {
                    "page_title": "Not possible",
                    "status": 503,
                    "message": "The database is not answering. Try again in a minute.",
                },
                status_code=503,
                headers=headers,
            )
        return JSONResponse({"detail": DETAIL}, status_code=503, headers=headers)

    for kind in (StoreUnavailable, *UNREACHABLE):
        app.add_exception_handler(kind, unavailable)
    # the raw driver's own, where a statement went to psycopg without SQLAlchemy
    import psycopg

    app.add_exception_handler(psycopg.OperationalError, unavailable)
