"""What the edge bounds before any route reads a request: the size of its body, and how often
one client address may call the public routes (SPEC §4 and §7 routes, the unsubscribe links,
the pages' login).

**Bodies.** A route is given its body only once the whole of it has arrived within its
limit: `Content-Length` above it, or more bytes than it as they come, answer 413 before the
route parses anything (FastAPI would read any JSON body whole; Starlette's form parser
reads 1,000 fields of 1 MB and spills files to disk). The webhook's two routes bound their
own (1 MiB, 5 MiB, `webhook.py`). A request whose headers together pass 32 KiB answers 431
before any route reads one (uvicorn's httptools parser itself takes headers of any size:
a proxy in front, or `--http h11`, bounds what reaches the process).

**Rates.** Fixed windows counted in Redis per client address (one INCR and its expiry per
request, in one round trip), so every web process shares one count:

- requests to the webhook, to Twilio's callbacks and to the unsubscribe links, each route
  group its own `Rate` (`settings.RateLimits`);
- requests with one ops token (`Authorization: Bearer …`) to the ops API, counted per
  token (by a digest of it) wherever they come from;
- answers that refused a signature (401 on the webhook, 403 on Twilio's callbacks) and
  failed logins to the pages (401 from `POST /ui/login`, which records each in the audit
  log): counted after the answer, checked before the next request, so an address that
  guesses is stopped while one that signs keeps its whole rate.

Past a limit the answer is 429 with `Retry-After` (the seconds until the window ends), the
route not run. Redis unreachable: nothing is limited (an outage of Redis must not stop the
loan system's events, which the service keeps accepting), Redis is left alone for a few
seconds, and the outage is logged once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import RedisError

from outreach.logs import OUTAGES, fields
from outreach.settings import Rate, RateLimits

log = logging.getLogger("outreach.limits")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

KiB = 1024
# Twilio's callbacks are a few dozen short form fields
TWILIO_MAX_BYTES = 64 * KiB
# an ops JSON body (a campaign, a template preview's context) or a page's form
DEFAULT_MAX_BYTES = 1024 * KiB
# every header of a request together: a browser's cookies and a bearer token fit many times
MAX_HEADER_BYTES = 32 * KiB
TWILIO_PREFIX = "/v1/providers/twilio/"
UNSUBSCRIBE_PREFIX = "/v1/unsubscribe/"
WEBHOOK_PATHS = frozenset({"/v1/events", "/v1/events/batch"})
LOGIN_PATH = "/ui/login"
OPS_PREFIXES = ("/v1/", "/metrics")
KEY_PREFIX = "outreach:limits"
# seconds Redis is left alone after it failed to answer a count
REDIS_PAUSE_SECONDS = 5.0
# a count that Redis has not answered by then is let through
REDIS_TIMEOUT_SECONDS = 0.25
REDIS_NAME = "Redis (rate limits)"


def body_limit(path: str) -> int | None:
    """The most bytes a request to `path` may carry (None: the route bounds its own)."""
    if path in WEBHOOK_PATHS:
        return None
    if path.startswith((TWILIO_PREFIX, UNSUBSCRIBE_PREFIX)):
        return TWILIO_MAX_BYTES
    return DEFAULT_MAX_BYTES


@dataclass(frozen=True)
class Rule:
    """The counts one request takes part in: its requests `Rate` (counted before), and its
    refusals `Rate` with the statuses that count as one (counted after)."""

    group: str
    requests: Rate | None
    refusals: Rate | None = None
    refused_statuses: frozenset[int] = frozenset()


def rules(limits: RateLimits) -> Callable[[str, str], Rule | None]:
    """Which rule a request (method, path) falls under, if any."""
    webhook = Rule("webhook", limits.webhook, limits.unsigned, frozenset({401}))
    twilio = Rule("twilio", limits.twilio, limits.unsigned, frozenset({403}))
    unsubscribe = Rule("unsubscribe", limits.unsubscribe)
    login = Rule("login", None, limits.login_failures, frozenset({401}))
    ops = Rule("ops", limits.ops_token)

    def rule_for(method: str, path: str) -> Rule | None:
        if path in WEBHOOK_PATHS:
            return webhook
        if path.startswith(TWILIO_PREFIX):
            return twilio
        if path.startswith(UNSUBSCRIBE_PREFIX):
            return unsubscribe
        if path == LOGIN_PATH and method == "POST":
            return login
        if path.startswith(OPS_PREFIXES):
            return ops
        return None

    return rule_for


class RateCounter:
    """Fixed-window counts in Redis: `key:<window number>`, expiring with its window.

    A blocking client with a short timeout, called from the event loop: one round trip to
    a Redis on the same network costs less than a hop to a thread would, and an asyncio
    client would belong to one event loop (the tests' clients run a loop per request)."""

    def __init__(self, redis_url: str) -> None:
        self.client: redis.Redis = redis.Redis.from_url(
            redis_url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        self._paused_until = 0.0

    @staticmethod
    def key(group: str, kind: str, who: str, rate: Rate, now: float) -> tuple[str, float]:
        """The window's key, and the seconds left in it."""
        window = int(now // rate.seconds)
        left = (window + 1) * rate.seconds - now
        return f"{KEY_PREFIX}:{group}:{kind}:{who}:{window}", left

    def check(self, rule: Rule, who: str) -> float | None:
        """Count this request; the seconds to wait when it is over a limit, else None."""
        now = time.time()
        if now < self._paused_until:
            return None
        wanted: list[tuple[Rate, str, float, bool]] = []
        if rule.requests is not None and rule.requests.limited:
            key, left = self.key(rule.group, "requests", who, rule.requests, now)
            wanted.append((rule.requests, key, left, True))
        if rule.refusals is not None and rule.refusals.limited:
            key, left = self.key(rule.group, "refused", who, rule.refusals, now)
            wanted.append((rule.refusals, key, left, False))
        if not wanted:
            return None
        try:
            pipe = self.client.pipeline(transaction=False)
            for rate, key, _, counted in wanted:
                if counted:
                    pipe.incr(key)
                    pipe.expire(key, rate.seconds + 1)
                else:
                    pipe.get(key)
            answers = pipe.execute()
        except (RedisError, OSError) as error:
            self._pause(error)
            return None
        OUTAGES.came_back(REDIS_NAME)
        wait: float | None = None
        position = 0
        for rate, _, left, counted in wanted:
            value = answers[position]
            position += 2 if counted else 1
            count = int(value) if value is not None else 0
            over = count > rate.count if counted else count >= rate.count
            if over:
                wait = max(wait or 0.0, left)
        return wait

    def refused(self, rule: Rule, who: str) -> None:
        """Count a refusal (a signature refused, a failed login)."""
        rate = rule.refusals
        now = time.time()
        if rate is None or not rate.limited or now < self._paused_until:
            return
        key, left = self.key(rule.group, "refused", who, rate, now)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, rate.seconds + 1)
            count, _ = pipe.execute()
        except (RedisError, OSError) as error:
            self._pause(error)
            return
        if int(count) == rate.count:
            log.warning(
                "%s: %d refusals from %s; its requests are refused for %.0f s",
                rule.group,
                rate.count,
                who,
                left,
                extra=fields(group=rule.group, client=who, refusals=rate.count),
            )

    def close(self) -> None:
        self.client.close()

    def _pause(self, error: BaseException) -> None:
        self._paused_until = time.time() + REDIS_PAUSE_SECONDS
        OUTAGES.went_down(REDIS_NAME, error)


class EdgeLimits:
    """The ASGI middleware of both bounds (see the module docstring)."""

    def __init__(self, app: ASGIApp, limits: RateLimits, redis_url: str) -> None:
        self.app = app
        self.rule_for = rules(limits)
        self.counter = RateCounter(redis_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._closing_on_shutdown(receive), send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if sum(len(name) + len(value) for name, value in scope["headers"]) > MAX_HEADER_BYTES:
            await _problem(send, 431, f"the headers are larger than {MAX_HEADER_BYTES // KiB} KiB")
            return
        path: str = scope.get("path", "")
        rule = self.rule_for(scope["method"], path)
        who = _client(scope)
        if rule is not None and rule.group == "ops":
            token = _bearer(scope)
            # without a token the route answers 401 itself; counted per token, not address
            rule, who = (rule, token) if token is not None else (None, who)
        if rule is not None:
            wait = self.counter.check(rule, who)
            if wait is not None:
                await _too_many(scope, send, wait)
                return
        limit = body_limit(path)
        if limit is not None:
            body = await _bounded_body(scope, receive, limit)
            if body is None:
                await _problem(send, 413, f"the body is larger than {limit // KiB} KiB")
                return
            if body is _DISCONNECTED:
                return
            receive = _replay(body, receive)
        if rule is None or rule.refusals is None:
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        await self.app(scope, receive, noting_status)
        if status and status[0] in rule.refused_statuses:
            self.counter.refused(rule, who)

    def _closing_on_shutdown(self, receive: Receive) -> Receive:
        """The server's lifespan messages; at shutdown, the counter's connections closed
        (they belong to the loop that is ending)."""

        async def lifespan() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                self.counter.close()
            return message

        return lifespan


_DISCONNECTED = b"\0disconnected"


def _bearer(scope: Scope) -> str | None:
    """A digest of the request's bearer token (never the token itself in a Redis key)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = bytes(value).partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return hashlib.sha256(token.strip()).hexdigest()[:32]
    return None


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def _bounded_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None when it passes `limit` (declared or as it arrives)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length" and (not value.isdigit() or int(value) > limit):
            return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return _DISCONNECTED
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the route: the body read already, then the client's own messages (a
    disconnect)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _too_many(scope: Scope, send: Send, wait: float) -> None:
    seconds = max(1, int(wait + 0.999))
    path: str = scope.get("path", "")
    if path.startswith("/ui/"):
        minutes = max(1, (seconds + 59) // 60)
        text = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            "<title>Too many attempts</title></head><body><h1>Too many failed logins</h1>"
            f"<p>Too many failed logins from this address. Try again in {minutes} "
            f"minute{'s' if minutes != 1 else ''}.</p></body></html>"
        )
        await _answer(send, 429, text.encode(), b"text/html; charset=utf-8", seconds)
        return
    await _problem(send, 429, f"too many requests from this address; retry in {seconds} s", seconds)


async def _problem(send: Send, status: int, detail: str, retry_after: int | None = None) -> None:
    body = json.dumps({"detail": detail}, separators=(",", ":")).encode()
    await _answer(send, status, body, b"application/json", retry_after)


async def _answer(
    send: Send, status: int, body: bytes, content_type: bytes, retry_after: int | None
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
