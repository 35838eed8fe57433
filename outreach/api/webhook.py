"""POST /v1/events and /v1/events/batch (SPEC §4): the loan system's signed events, as bare
ASGI apps.

It is by far the busiest route: the loan system posts every borrower and loan change, and a
nightly run posts one report per open loan. Served through the framework's request handling
(dependency solving, response models, exception middleware) it spent about as much CPU per
event as storing and planning a borrower's event; as a plain ASGI app it reads the body,
checks the signature, validates and hands the event to the process's `Intake`, nothing else.
It is mounted ahead of the framework's routes; `api/openapi.py` documents it in /openapi.json.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from outreach.errors import StoreUnavailable
from outreach.meters import EVENTS
from outreach.service.inbox import RETRY_AFTER_SECONDS, Intake
from outreach.service.parse import Event, EventError, parse_event

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 1024 * 1024
MAX_BATCH_BYTES = 5 * 1024 * 1024
MAX_BATCH_EVENTS = 1000
SIGNATURE_TOLERANCE_SECONDS = 300
SIGNATURE_HEADER = "X-Outreach-Signature"
_SIGNATURE_KEY = SIGNATURE_HEADER.lower().encode()

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

Answer = tuple[int, dict[str, str | None]]

Reply = tuple[int, dict[str, Any]]

_TOO_LARGE: Answer = (413, {"detail": "body larger than 1 MiB"})
_BATCH_TOO_LARGE: Answer = (413, {"detail": "body larger than 5 MiB"})
_UNSIGNED: Answer = (
    401,
    {"detail": f"{SIGNATURE_HEADER} is missing, wrong or outside the 300 s window"},
)
_NOT_STORED: Answer = (503, {"detail": "the event could not be stored; retry later"})
_RETRY_AFTER = str(RETRY_AFTER_SECONDS).encode()


def signature_for(secret: bytes, body: bytes, at: float) -> str:
    """The signature header's value for `body` sent at unix time `at`."""
    timestamp = str(int(at))
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def signature_valid(secret: bytes, header: str | None, body: bytes, now: float) -> bool:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`, within the replay window; more
    than one v1 is allowed while the secret is rotated. Anything else is not valid, however
    long or whatever its characters: only ASCII digits for `t`, lowercase or uppercase hex
    of the digest's length for each `v1`, compared as bytes."""
    if not header or len(header) > _LONGEST_SIGNATURE_HEADER or not header.isascii():
        return False
    timestamp: str | None = None
    candidates: list[bytes] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1" and _HEX_DIGEST.fullmatch(value):
            candidates.append(value.lower().encode())
    if timestamp is None or not _UNIX_SECONDS.fullmatch(timestamp) or not candidates:
        return False
    if abs(now - int(timestamp)) > SIGNATURE_TOLERANCE_SECONDS:
        return False
    expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    valid = False
    for candidate in candidates:
        valid |= hmac.compare_digest(expected.encode(), candidate)
    return valid


# a header with a few v1 values during a rotation is well under this
_LONGEST_SIGNATURE_HEADER = 1024
# `t` within the replay window of any date this side of year 2286 has at most 10 digits
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


class EventReceiver:
    """The ASGI app of POST /v1/events: 202 accepted, 200 duplicate, 401 unsigned, 413 too
    large, 422 invalid (naming the field), 503 not stored."""

    max_bytes = MAX_EVENT_BYTES
    too_large = _TOO_LARGE

    def __init__(self, secret: bytes | None, intake: Intake) -> None:
        self.secret = secret
        self.intake = intake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared: int | None = None
        signature: str | None = None
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                declared = int(value)
            elif name == _SIGNATURE_KEY:
                signature = value.decode("latin-1")
        try:
            status, payload = await self._answer(declared, signature, receive)
        except _Disconnected:
            return  # nothing was stored; no one is left to answer
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if status == 503:
            # not stored (the database, or a full backlog): the loan system sends it again
            headers.append((b"retry-after", _RETRY_AFTER))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, declared: int | None, signature: str | None, receive: Receive) -> Reply:
        if declared is not None and declared > self.max_bytes:
            return self.too_large
        raw = await _read_body(receive, self.max_bytes)
        if raw is None:
            return self.too_large
        if self.secret is None or not signature_valid(self.secret, signature, raw, time.time()):
            return _UNSIGNED
        return await self.handle(raw)

    async def handle(self, raw: bytes) -> Reply:
        """The answer to a signed body of at most `max_bytes`."""
        try:
            event = parse_event(raw)
        except EventError as error:
            return 422, {"detail": str(error), "field": error.field}
        try:
            result = await self.intake.submit(event)
        except StoreUnavailable as error:
            log.warning("event %s not stored: %s", event.id, error)
            return _NOT_STORED
        EVENTS.count(result.status)
        status = 202 if result.status == "accepted" else 200
        return status, {"status": result.status, "id": result.id}


class BatchReceiver(EventReceiver):
    """The ASGI app of POST /v1/events/batch: up to MAX_BATCH_EVENTS events in one signed
    body, stored in one transaction; 200 with each event's result in the order sent (an
    invalid one is not stored and does not stop the others), 422 when the body is no object
    with an `events` list, 401, 413 and 503 as for one event."""

    max_bytes = MAX_BATCH_BYTES
    too_large = _BATCH_TOO_LARGE

    async def handle(self, raw: bytes) -> Reply:
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            return 422, {"detail": f"not valid JSON ({error})", "field": "body"}
        items = document.get("events") if isinstance(document, dict) else None
        if not isinstance(items, list):
            return 422, {"detail": "must be an object with an `events` list", "field": "events"}
        if len(items) > MAX_BATCH_EVENTS:
            detail = f"{len(items)} events; at most {MAX_BATCH_EVENTS} per batch"
            return 422, {"detail": detail, "field": "events"}
        results: list[dict[str, Any]] = []
        valid: list[tuple[int, Event]] = []
        for index, item in enumerate(items):
            try:
                event = parse_event(item) if isinstance(item, dict) else None
            except EventError as error:
                # `item` is a dict here: parse_event raised on it
                named = item.get("id")
                problem = {"field": error.field, "detail": str(error)}
                results.append(
                    {"id": named if isinstance(named, str) else None, "status": "invalid"}
                    | {"error": problem}
                )
                continue
            if event is None:
                problem = {"field": "body", "detail": "body: must be a JSON object"}
                results.append({"id": None, "status": "invalid", "error": problem})
                continue
            results.append({"id": event.id, "status": "accepted"})
            valid.append((index, event))
        try:
            stored = await self.intake.submit_many([event for _, event in valid])
        except StoreUnavailable as error:
            log.warning("a batch of %d events was not stored: %s", len(valid), error)
            return _NOT_STORED
        for (index, _), result in zip(valid, stored, strict=True):
            results[index]["status"] = result.status
        EVENTS.batch(results)
        return 200, {"results": results}


class _Disconnected(Exception):
    """The client went away before its whole body arrived."""


async def _read_body(receive: Receive, max_bytes: int) -> bytes | None:
    """The whole body, or None once it passes `max_bytes`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class QuietAcceptedEvents(logging.Filter):
    """Keeps uvicorn's access log from writing a line per accepted or duplicate event: each
    of those is in the inbox with its received time and outcome (the borrower's timeline
    shows it), and at a nightly run's rate the log line cost a third of the request's
    HTTP handling. Rejections (401, 413, 422, 503) and every other route are still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            _, method, path, _, status = args
            if method == "POST" and path == "/v1/events" and status in (200, 202):
                return False
        return True


def quiet_accepted_events() -> None:
    """Install `QuietAcceptedEvents` on uvicorn's access log (once)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, QuietAcceptedEvents) for f in access.filters):
        access.addFilter(QuietAcceptedEvents())
