"""A running outreach (web + worker + clock) on real PostgreSQL and Redis, for HTTP tests."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import select

from outreach.channels.base import Outgoing, Receipt
from outreach.clock import Clock
from outreach.domain import Channel
from outreach.runtime import Runtime
from outreach.settings import OpsToken, Secret, load_settings
from outreach.store.models import ReceivedEvent
from outreach.wiring import Services
from outreach.worker import build_broker, enqueue, start_worker, stop_worker
from tests.support import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_SECRET = "test-webhook-secret"
LINK_SECRET = "test-link-secret-0123456789"
ADMIN_TOKEN = "admin-token-for-tests"
VIEWER_TOKEN = "viewer-token-for-tests"


class RecordingSender:
    """A provider that accepts at once and remembers every call (to count them)."""

    hands_over_at_once = False
    hand_over_run = 1
    finds_sent = True

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.provider = channel.value
        self.calls: list[Outgoing] = []
        self._lock = threading.Lock()

    def send(self, outgoing: Outgoing) -> Receipt:
        with self._lock:
            self.calls.append(outgoing)
            return Receipt(provider_id=f"rec-{outgoing.message_id}", status="sent")

    def find_sent(self, outgoing: Outgoing, since: dt.datetime) -> Receipt | None:
        with self._lock:
            for call in self.calls:
                if call.message_id == outgoing.message_id:
                    return Receipt(provider_id=f"rec-{call.message_id}")
        return None


def sign(body: bytes, secret: str = WEBHOOK_SECRET, at: float | None = None) -> str:
    timestamp = str(int(at if at is not None else time.time()))
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


@dataclass
class LiveService:
    base_url: str
    services: Services
    senders: dict[Channel, RecordingSender]
    clock: Clock
    broker: Any
    app: Any = None  # the ASGI app served (its state: the intake, the services)
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base_url, timeout=30)

    def post_event(
        self, event: dict[str, Any], *, signature: str | None = None, settle: bool = True
    ) -> httpx.Response:
        """POST the event; with `settle`, return once an accepted event is applied too (the
        service applies it moments after its 202)."""
        body = json.dumps(event).encode()
        response = self.client.post(
            "/v1/events",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Outreach-Signature": signature if signature is not None else sign(body),
            },
        )
        if settle and response.status_code == 202:
            self.wait_applied([response.json()["id"]])
        return response

    def outcomes(self, event_ids: list[str]) -> dict[str, str]:
        """The inbox outcome of each of these events that is stored."""
        table = ReceivedEvent.__table__
        with self.services.runtime.sessions() as session:
            rows = session.execute(
                select(table.c.id, table.c.outcome).where(table.c.id.in_(event_ids))
            )
            return {event_id: outcome for event_id, outcome in rows}

    def wait_applied(self, event_ids: list[str], timeout: float = 10) -> dict[str, str]:
        """Until none of these stored events is pending; their outcomes."""
        if not event_ids:
            return {}

        def settled() -> dict[str, str] | None:
            found = self.outcomes(event_ids)
            return None if "pending" in found.values() else found

        outcomes: dict[str, str] = self.wait_for(settled, timeout=timeout, interval=0.01)
        return outcomes

    def get(self, path: str, token: str = ADMIN_TOKEN, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})

    def messages(self, **params: Any) -> list[dict[str, Any]]:
        response = self.get("/v1/messages", **params)
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 10, interval: float = 0.05
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"condition not met within {timeout} s")


def start_live_service(
    database_url: str,
    redis_url: str,
    *,
    env: dict[str, str] | None = None,
    real_senders: bool = False,
    run_worker: bool = True,
    retry_base: dt.timedelta = dt.timedelta(milliseconds=200),
) -> Iterator[LiveService]:
    """web, worker and clock in this process; `real_senders` uses the configured providers
    (Twilio emulator, SMTP) instead of recording ones."""
    port = free_port()
    settings = load_settings(
        {
            "OUTREACH_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "OUTREACH_DATABASE_URL": database_url,
            "OUTREACH_REDIS_URL": redis_url,
            "OUTREACH_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "OUTREACH_LINK_SECRET": LINK_SECRET,
            "OUTREACH_OPS_TOKENS": f"{ADMIN_TOKEN}:admin,{VIEWER_TOKEN}:viewer",
            "OUTREACH_POLICY": str(REPO_ROOT / "schedules" / "default.yaml"),
            **(env or {}),
        }
    )
    settings = replace(
        settings,
        templates_dir=REPO_ROOT / "templates",
        ops_tokens=(
            OpsToken(Secret(ADMIN_TOKEN), "admin"),
            OpsToken(Secret(VIEWER_TOKEN), "viewer"),
        ),
    )
    runtime = Runtime.start(settings)
    senders = {channel: RecordingSender(channel) for channel in Channel}
    services = Services.build(runtime, senders=None if real_senders else dict(senders))
    services.dispatcher.retry_base = retry_base
    broker = build_broker(runtime.redis.url)
    worker = start_worker(broker, services, threads=4) if run_worker else None
    clock = Clock(services, lambda ids: enqueue(broker, ids), tick_seconds=0.5)
    clock.start()
    from outreach.api.app import create_app

    app = create_app(services, broker)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise AssertionError("the web server did not start")
        time.sleep(0.05)
    live = LiveService(f"http://127.0.0.1:{port}", services, senders, clock, broker, app)
    try:
        yield live
    finally:
        live.client.close()
        server.should_exit = True
        thread.join(timeout=10)
        clock.stop()
        if worker is not None:
            stop_worker(worker, services, 5_000)
        services.dispatcher.close_providers()
        broker.close()
        runtime.close()
