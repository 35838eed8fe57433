"""The security headers of every answer, API and pages alike, in one place.

Nearly every answer carries personal data (the log, a borrower's timeline, a campaign's
samples, the pages), so every one is `Cache-Control: no-store` (no proxy or browser cache
keeps it) except the pages' static files; none may be framed (`frame-ancestors 'none'`,
`X-Frame-Options: DENY`) or leak its URL onwards (`Referrer-Policy: no-referrer`), and none
is sniffed into another type. The Content-Security-Policy is the pages' own (`ui.pages`:
their files only, never inline script) under `/ui/` and at `/`; the unsubscribe pages' (their
inline styles, a form posting to themselves); and for everything else, JSON and text that no
browser should run anything of, nothing at all. A route that sets its own policy (the
message page, for an email's styles) keeps it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from outreach.ui.pages import CONTENT_SECURITY_POLICY as PAGES_POLICY

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
UNSUBSCRIBE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_COMMON = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
_NO_STORE = (b"cache-control", b"no-store")


def policy_for(path: str) -> str:
    if path == "/" or path == "/ui" or path.startswith("/ui/"):
        return PAGES_POLICY
    if path.startswith("/v1/unsubscribe/"):
        return UNSUBSCRIBE_POLICY
    return API_POLICY


class SecurityHeaders:
    """Adds the headers above to every HTTP answer that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        policy = policy_for(path).encode()
        no_store = not path.startswith("/ui/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", policy))
                headers.extend(item for item in _COMMON if item[0] not in present)
                if no_store:
                    headers = [item for item in headers if item[0].lower() != b"cache-control"]
                    headers.append(_NO_STORE)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
