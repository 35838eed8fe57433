"""A loopback Twilio for tests: the Messages API the real `twilio` client talks to.

It speaks enough of `/2010-04-01/Accounts/{sid}/Messages.json` for the client to create and
list messages (HTTP basic auth, Twilio-shaped JSON, Twilio's error JSON), follows a per-number
script (reject with a code, fail with 429/5xx a few times, answer late), records every request
it receives, and sends status callbacks and inbound messages signed the way Twilio signs them.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import itertools
import json
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"

ERROR_MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    20503: "Service unavailable",
    21211: "The 'To' number is not a valid phone number.",
    21602: "Message body is required.",
    21603: "A 'From' or 'MessagingServiceSid' parameter is required to send a message.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21611: "This 'From' number has exceeded the maximum number of queued messages",
    21614: "'To' number is not a valid mobile number",
    21635: "'To' number cannot be a landline",
    30001: "Queue overflow",
}
# Twilio's error code for an HTTP status with no finer code.
STATUS_CODES = {429: 20429, 500: 20500, 503: 20503}

GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€"
)


def segments_of(body: str) -> int:
    if all(char in GSM7 for char in body):
        single, multi, length = 160, 153, sum(2 if c in "^{}\\[~]|€" else 1 for c in body)
    else:
        single, multi, length = 70, 67, sum(2 if ord(c) > 0xFFFF else 1 for c in body)
    return 1 if length <= single else -(-length // multi)


def rfc2822(moment: dt.datetime | None) -> str | None:
    return email.utils.format_datetime(moment, usegmt=True) if moment else None


def parse_date_filter(value: str) -> dt.datetime:
    """Twilio's DateSent filters take a date; the twilio client sends YYYY-MM-DDTHH:MM:SSZ."""
    if "T" in value:
        return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), tzinfo=dt.UTC)


@dataclass
class Script:
    """How the emulator treats messages to one number, in this order.

    `fail_status` is answered `fail_times` times (with `Retry-After` when `retry_after` is set),
    then `reject_code` (400 with that Twilio code) if set, else the message is accepted.
    `delay` seconds pass before the answer; an accepted message already exists by then.
    `call_back_first`: statuses sent to the message's StatusCallback before the create is
    answered, as Twilio's callbacks can overtake its answer.
    """

    reject_code: int | None = None
    fail_status: int | None = None
    fail_times: int = 0
    retry_after: float | None = None
    delay: float = 0.0
    call_back_first: tuple[str, ...] = ()


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    authorized: bool
    status: int = 0


@dataclass
class EmulatedMessage:
    sid: str
    account_sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    status: str
    status_callback: str | None
    validity_period: int | None
    date_created: dt.datetime
    date_sent: dt.datetime | None = None
    error_code: int | None = None
    status_history: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}"
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "to": self.to,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "body": self.body,
            "status": self.status,
            "direction": "outbound-api",
            "num_segments": str(segments_of(self.body)),
            "num_media": "0",
            "price": None,
            "price_unit": "USD",
            "error_code": self.error_code,
            "error_message": ERROR_MESSAGES.get(self.error_code) if self.error_code else None,
            "date_created": rfc2822(self.date_created),
            "date_updated": rfc2822(self.date_created),
            "date_sent": rfc2822(self.date_sent),
            "uri": f"{base}.json",
            "subresource_uris": {"media": f"{base}/Media.json"},
        }


class TwilioEmulator:
    """Start with `start()` (or as a context manager); `base_url` goes in TWILIO_API_BASE_URL."""

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.account_sid = account_sid or "AC" + uuid.uuid4().hex
        self.auth_token = auth_token or uuid.uuid4().hex
        self._host = host
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._scripts: dict[str, Script] = {}
        self._messages: dict[str, EmulatedMessage] = {}
        self._sids = itertools.count(1)
        self.requests: list[RecordedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> TwilioEmulator:
        emulator = self

        class Handler(_Handler):
            pass

        Handler.emulator = emulator
        server = ThreadingHTTPServer((self._host, 0), Handler)
        # Join handler threads on close, so no socket outlives the test (ResourceWarning).
        server.daemon_threads = False
        server.block_on_close = True
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # cuts scripted delays short
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> TwilioEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """Where it listens; after `stop()` still its old address, which then refuses."""
        if self._port is None:
            raise RuntimeError("the emulator was never started")
        return f"http://{self._host}:{self._port}"

    # -- scripting and inspection ----------------------------------------------------------------

    def script(
        self,
        to: str,
        *,
        reject_code: int | None = None,
        fail_status: int | None = None,
        fail_times: int = 0,
        retry_after: float | None = None,
        delay: float = 0.0,
        call_back_first: tuple[str, ...] = (),
    ) -> None:
        """Decide how messages to `to` are answered (see Script)."""
        if fail_status is not None and fail_times == 0:
            fail_times = 1
        with self._lock:
            self._scripts[to] = Script(
                reject_code, fail_status, fail_times, retry_after, delay, call_back_first
            )

    @property
    def create_requests(self) -> list[RecordedRequest]:
        """Every POST to Messages.json, answered or not: the provider calls a test counts."""
        with self._lock:
            return [
                r for r in self.requests if r.method == "POST" and r.path.endswith("/Messages.json")
            ]

    def messages(self, to: str | None = None) -> list[EmulatedMessage]:
        with self._lock:
            return [m for m in self._messages.values() if to is None or m.to == to]

    def message(self, sid: str) -> EmulatedMessage:
        with self._lock:
            return self._messages[sid]

    def add_message(
        self,
        to: str,
        body: str,
        *,
        status: str = "sent",
        created: dt.datetime | None = None,
        from_: str = "+15005550006",
    ) -> EmulatedMessage:
        """Put a message in the account as if an earlier, interrupted call had created it."""
        created = created or dt.datetime.now(dt.UTC)
        message = EmulatedMessage(
            sid=self._new_sid(),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            messaging_service_sid=None,
            body=body,
            status=status,
            status_callback=None,
            validity_period=None,
            date_created=created,
            date_sent=created if status not in ("queued", "accepted") else None,
            status_history=[status],
        )
        with self._lock:
            self._messages[message.sid] = message
        return message

    # -- calls back to the application -----------------------------------------------------------

    def sign(self, url: str, params: Mapping[str, str], auth_token: str | None = None) -> str:
        signature: str = RequestValidator(auth_token or self.auth_token).compute_signature(
            url, dict(params)
        )
        return signature

    def send_status(
        self,
        sid: str,
        status: str,
        error_code: int | None = None,
        *,
        url: str | None = None,
        signature: str | None = None,
    ) -> httpx.Response:
        """POST a status callback for message `sid`, signed, to its StatusCallback (or `url`)."""
        with self._lock:
            message = self._messages[sid]
            message.status = status
            message.status_history.append(status)
            if error_code is not None:
                message.error_code = error_code
            if status in ("sent", "delivered", "undelivered") and message.date_sent is None:
                message.date_sent = dt.datetime.now(dt.UTC)
            target = url or message.status_callback
            params = {
                "AccountSid": message.account_sid,
                "ApiVersion": API_VERSION,
                "From": message.from_ or "",
                "To": message.to,
                "MessageSid": message.sid,
                "SmsSid": message.sid,
                "MessageStatus": status,
                "SmsStatus": status,
            }
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        if target is None:
            raise ValueError(f"message {sid} has no StatusCallback; pass url=")
        return self._post_signed(target, params, signature)

    def send_inbound(
        self,
        url: str,
        from_: str,
        body: str,
        *,
        to: str = "+15005550006",
        signature: str | None = None,
    ) -> httpx.Response:
        """POST an inbound SMS webhook as Twilio does when a borrower writes to our number."""
        sid = self._new_sid()
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "MessageSid": sid,
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "From": from_,
            "To": to,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": str(segments_of(body)),
            "SmsStatus": "received",
        }
        return self._post_signed(url, params, signature)

    def _post_signed(
        self, url: str, params: dict[str, str], signature: str | None
    ) -> httpx.Response:
        headers = {
            "X-Twilio-Signature": signature if signature is not None else self.sign(url, params),
            "User-Agent": "TwilioProxy/1.1",
        }
        with httpx.Client(timeout=10) as client:
            return client.post(url, data=params, headers=headers)

    # -- the HTTP side ---------------------------------------------------------------------------

    def _new_sid(self) -> str:
        return f"SM{next(self._sids):032x}"

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.account_sid and password == self.auth_token

    def handle(
        self, method: str, path: str, query: dict[str, str], form: dict[str, str], auth: bool
    ) -> tuple[int, dict[str, Any], dict[str, str], float]:
        """Answer one request: status, JSON body, extra headers, delay before answering."""
        prefix = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"
        if not auth:
            return (*error_body(401, 20003), {"WWW-Authenticate": 'Basic realm="Twilio API"'}, 0)
        if path != prefix:
            return (*error_body(404, 20404), {}, 0)
        if method == "GET":
            return 200, self._list(query), {}, 0
        if method != "POST":
            return (*error_body(405, 20004), {}, 0)
        return self._create(form)

    def _create(self, form: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str], float]:
        to = form.get("To", "")
        with self._lock:
            script = self._scripts.get(to, Script())
            if script.fail_status is not None and script.fail_times > 0:
                script.fail_times -= 1
                headers = {}
                if script.retry_after is not None:
                    headers["Retry-After"] = f"{script.retry_after:g}"
                code = STATUS_CODES.get(script.fail_status, 20500)
                return (*error_body(script.fail_status, code), headers, script.delay)
        if not to:
            return (*error_body(400, 21604), {}, script.delay)
        if not form.get("Body"):
            return (*error_body(400, 21602), {}, script.delay)
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return (*error_body(400, 21603), {}, script.delay)
        if script.reject_code is not None:
            return (*error_body(400, script.reject_code), {}, script.delay)
        service = form.get("MessagingServiceSid")
        # With a Messaging Service and no From, Twilio answers `accepted` and picks a sender.
        status = "accepted" if service and not form.get("From") else "queued"
        validity = form.get("ValidityPeriod")
        message = EmulatedMessage(
            sid=self._new_sid(),
            account_sid=self.account_sid,
            to=to,
            from_=form.get("From"),
            messaging_service_sid=service,
            body=form["Body"],
            status=status,
            status_callback=form.get("StatusCallback"),
            validity_period=int(validity) if validity else None,
            date_created=dt.datetime.now(dt.UTC),
            status_history=[status],
        )
        with self._lock:
            self._messages[message.sid] = message
        answer = message.as_json()
        for status in script.call_back_first:
            self.send_status(message.sid, status)
        return 201, answer, {}, script.delay

    def _list(self, query: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            found = list(self._messages.values())
        if "To" in query:
            found = [m for m in found if m.to == query["To"]]
        if "DateSent>" in query:
            after = parse_date_filter(query["DateSent>"])
            found = [m for m in found if m.date_sent is not None and m.date_sent >= after]
        if "DateSent<" in query:
            before = parse_date_filter(query["DateSent<"])
            found = [m for m in found if m.date_sent is not None and m.date_sent <= before]
        found.sort(key=lambda m: m.date_created, reverse=True)
        page_size = int(query.get("PageSize", "50"))
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"
        return {
            "messages": [m.as_json() for m in found[:page_size]],
            "end": min(page_size, len(found)) - 1,
            "first_page_uri": f"{uri}?PageSize={page_size}&Page=0",
            "next_page_uri": None,
            "page": 0,
            "page_size": page_size,
            "previous_page_uri": None,
            "start": 0,
            "uri": f"{uri}?PageSize={page_size}&Page=0",
        }

    def wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)


def error_body(status: int, code: int) -> tuple[int, dict[str, Any]]:
    return status, {
        "code": code,
        "message": ERROR_MESSAGES.get(code, HTTPStatus(status).phrase),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class _Handler(BaseHTTPRequestHandler):
    emulator: TwilioEmulator
    server_version = "TwilioEmulator/1.0"

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def _answer(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        form = {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        authorized = self.emulator._authorized(self.headers.get("Authorization"))
        recorded = RecordedRequest(
            self.command, parts.path, query, form, dict(self.headers.items()), authorized
        )
        self.emulator.record(recorded)
        status, body, headers, delay = self.emulator.handle(
            self.command, parts.path, query, form, authorized
        )
        recorded.status = status
        if delay:
            self.emulator.wait(delay)
        payload = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a scripted delay beyond its timeout)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet
