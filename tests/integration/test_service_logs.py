"""The Procfile processes as an operator runs them (issue 21 §2): two `outreach web`, one
`outreach worker` of two processes and one `outreach clock` on the test PostgreSQL and Redis,
SMS through the real twilio client against the loopback emulator, email through a loopback
SMTP relay. A small book of borrowers with names, phone numbers and email addresses goes in
through the webhook; messages are sent, one text and one email refused by the provider with
the recipient in the refusal's text (as Twilio and real relays write it).

Every line every process wrote at the default level is then read: none carries a borrower's
name, phone number (in any spelling), email address or a rendered message; the JSON lines
(`OUTREACH_LOG_FORMAT=json`) parse and carry their fields; the text lines are one per line
with time, level and process; nothing of APScheduler's routine; the lines worth knowing are
there. And `/metrics` answers the same provider totals from either web process, equal to what
the emulator and the relay received, with one clock leading.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine, func, select, text

from outreach.store import counts
from outreach.store import models as m
from tests import twilio_emulator
from tests.conftest import REDIS_URL, REPO_ROOT, truncate_all
from tests.factories import borrower_upserted, loan_updated, zone_at_local_hour
from tests.live import LINK_SECRET, WEBHOOK_SECRET, sign
from tests.smtp_relay import Relay, running_relay
from tests.support import OUTREACH, clean_env, free_port
from tests.twilio_emulator import TwilioEmulator
from tests.twilio_fixtures import twilio_env

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

ADMIN = "logs-test-admin-token"
VIEWER = "logs-test-viewer-token"
REFUSED_NUMBER = "+15005550173"
REFUSED_ADDRESS = "nobody-mei@bounce.example"

# (id, name, locale, phone, email, days past due): day 1 of lateness is a text, day 2 an
# email. The +1 500 numbers are reachable at any hour; the Chinese and Taiwanese ones are
# held by the hours of their country, and must stay out of the log all the same.
BOOK = [
    ("b-ada", "Ada Quintero-Lovelace", "en-US", "+15005550171", "ada.quintero@harbor.example", 1),
    ("b-chen", "陈晓明", "zh-CN", "+15005550172", "xiaoming.chen@harbor.example", 2),
    ("b-zoe", "Zoë Okonkwo", "en-US", REFUSED_NUMBER, "zoe.okonkwo@harbor.example", 1),
    ("b-mei", "張美玲", "zh-TW", "+15005550174", REFUSED_ADDRESS, 2),
    ("b-li", "李娜", "zh-CN", "+8613812345678", "li.na@harbor.example", 1),
    ("b-wang", "王大明", "zh-TW", "+886912345678", "daming.wang@harbor.example", 2),
]
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR|CRITICAL) (web|clock)\[\d+\] "
    r"[\w.]+: "
)


@pytest.fixture
def relay() -> Iterator[Relay]:
    with running_relay(REFUSED_ADDRESS) as running:
        yield running


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[TwilioEmulator]:
    # Twilio's own words for 21211 name the number
    monkeypatch.setitem(
        twilio_emulator.ERROR_MESSAGES,
        21211,
        f"The 'To' number {REFUSED_NUMBER} is not a valid phone number.",
    )
    with TwilioEmulator() as running:
        running.script(REFUSED_NUMBER, reject_code=21211)
        yield running


class Procfile:
    """The processes of one run, each writing its output to a file of its own."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str, cwd: Path = REPO_ROOT, **env: str) -> None:
        output = (self.folder / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [*OUTREACH, *args],
            cwd=cwd,
            env={**self.env, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        output.close()

    def output(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(encoding="utf-8")

    def diagnosis(self) -> str:
        """What each process wrote so far, and the messages' statuses (for a failure)."""
        parts = [f"\n--- {name} ---\n{self.output(name)}" for name in self.processes]
        database = create_engine(self.env["OUTREACH_DATABASE_URL"])
        with database.connect() as connection:
            rows = connection.execute(
                text("SELECT borrower_id, channel, status, reason, send_at FROM messages")
            ).all()
        database.dispose()
        return "".join(parts) + "\n--- messages ---\n" + "\n".join(map(str, rows))

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for(predicate: Any, timeout: float, what: str, procfile: Procfile | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    outputs = "" if procfile is None else procfile.diagnosis()
    raise AssertionError(f"{what}: not within {timeout} s{outputs}")


def answering(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def signed_post(url: str, path: str, document: Any) -> httpx.Response:
    body = json.dumps(document).encode()
    return httpx.post(
        f"{url}{path}",
        content=body,
        headers={"Content-Type": "application/json", "X-Outreach-Signature": sign(body)},
        timeout=30,
    )


def provider_totals(url: str) -> dict[tuple[str, str], float]:
    response = httpx.get(
        f"{url}/metrics", headers={"Authorization": f"Bearer {VIEWER}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "outreach_provider_requests_total":
                found[sample.labels["provider"], sample.labels["result"]] = sample.value
            if sample.name == "outreach_clock_leader":
                found["clock", sample.labels["clock"]] = sample.value
    return found


def spellings(phone: str) -> list[str]:
    """A number as a log line might write it: with and without `+`, national, spaced."""
    digits = phone.lstrip("+")
    national = {"1": digits[1:], "86": digits[2:], "886": "0" + digits[3:]}
    local = next(value for prefix, value in national.items() if digits.startswith(prefix))
    spaced = f"{local[:3]} {local[3:6]} {local[6:]}"
    dashed = f"{local[:3]}-{local[3:6]}-{local[6:]}"
    return [phone, digits, local, spaced, dashed]


@pytest.fixture
def run(
    tmp_path: Path,
    postgres_engine: Engine,
    redis_client: redis.Redis,
    emulator: TwilioEmulator,
    relay: Relay,
) -> Iterator[tuple[Procfile, list[str]]]:
    truncate_all(postgres_engine)
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    env = clean_env(
        OUTREACH_DATABASE_URL=postgres_engine.url.render_as_string(hide_password=False),
        OUTREACH_REDIS_URL=REDIS_URL,
        OUTREACH_WEBHOOK_SECRET=WEBHOOK_SECRET,
        OUTREACH_LINK_SECRET=LINK_SECRET,
        OUTREACH_OPS_TOKENS=f"{ADMIN}:admin,{VIEWER}:viewer",
        OUTREACH_PUBLIC_URL=urls[0],
        OUTREACH_EMAIL_PROVIDER="smtp",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(relay.port),
        EMAIL_FROM="Harbor Lending <care@harborlending.example>",
        OUTREACH_SMS_RATE="50",
        **twilio_env(emulator),
    )
    procfile = Procfile(tmp_path, env)
    try:
        # both formats: the first web process and the clock write text, the rest JSON
        procfile.start("web-1", "web", "--host", "127.0.0.1", "--port", str(ports[0]))
        procfile.start(
            "web-2",
            "web",
            "--host",
            "127.0.0.1",
            "--port",
            str(ports[1]),
            OUTREACH_LOG_FORMAT="json",
        )
        procfile.start(
            "worker", "worker", "--processes", "2", "--threads", "2", OUTREACH_LOG_FORMAT="json"
        )
        procfile.start("clock", "clock")
        for url in urls:
            wait_for(lambda url=url: answering(url), 60, f"{url} answering")
        yield procfile, urls
    finally:
        procfile.stop()
        truncate_all(postgres_engine)


def settled(engine: Engine) -> bool:
    """What is due has been handed over (or refused): nothing due, queued or sending."""
    table = m.Message.__table__
    with engine.connect() as connection:
        in_flight = connection.execute(
            select(func.count()).where(table.c.status.in_(["queued", "sending"]))
        ).scalar_one()
        due = connection.execute(
            select(func.count()).where(
                table.c.status.in_(counts.DUE_STATUSES),
                table.c.send_at <= dt.datetime.now(dt.UTC),
            )
        ).scalar_one()
    return in_flight == 0 and due == 0


def test_a_run_logs_what_an_operator_needs_and_nothing_personal(
    run: tuple[Procfile, list[str]],
    postgres_engine: Engine,
    emulator: TwilioEmulator,
    relay: Relay,
) -> None:
    procfile, urls = run
    zone = zone_at_local_hour(14)
    borrowers = [
        borrower_upserted(b, name=name, locale=locale, phones=[phone], email=email, timezone=zone)
        for b, name, locale, phone, email, _ in BOOK
    ]
    loans = [loan_updated(f"l-{b}", b, days_past_due=days) for b, *_, days in BOOK]
    # half in one batch to the first web process, the rest one by one to the second
    batch = signed_post(urls[0], "/v1/events/batch", {"events": borrowers[:3]})
    assert batch.status_code == 200, batch.text
    for event in borrowers[3:]:
        assert signed_post(urls[1], "/v1/events", event).status_code == 202
    time.sleep(1)  # the borrowers applied before their loans (each web process applies its own)
    batch = signed_post(urls[0], "/v1/events/batch", {"events": loans})
    assert batch.status_code == 200, batch.text
    # an ops search by name: its query string must not reach the access log
    search = httpx.get(
        f"{urls[0]}/v1/messages",
        params={"q": "Ada Quintero-Lovelace"},
        headers={"Authorization": f"Bearer {VIEWER}"},
    )
    assert search.status_code == 200

    wait_for(
        lambda: len(emulator.create_requests) >= 2 and relay.accepted and relay.refused,
        90,
        "texts and emails handed over",
        procfile,
    )
    wait_for(lambda: settled(postgres_engine), 90, "every due message handed over", procfile)
    # the workers push their counts every 2 s: both web processes answer the same totals,
    # those the emulator and the relay saw
    creates = emulator.create_requests
    expected = {
        ("twilio", "accepted"): float(sum(1 for r in creates if r.status == 201)),
        ("twilio", "rejected"): float(sum(1 for r in creates if r.status == 400)),
        ("smtp", "accepted"): float(len(relay.accepted)),
        ("smtp", "rejected"): float(len(relay.refused)),
    }
    assert expected["twilio", "rejected"] >= 1 and expected["smtp", "rejected"] >= 1

    def agreed() -> dict[tuple[str, str], float] | None:
        first, second = (provider_totals(url) for url in urls)
        wanted = {key: first.get(key) for key in expected}
        return first if first == second and wanted == expected else None

    totals = wait_for(agreed, 30, "both web processes answering the same totals", procfile)
    leaders = [value for (kind, _), value in totals.items() if kind == "clock"]
    assert leaders == [1.0]

    with postgres_engine.connect() as connection:
        rendered = [
            value
            for row in connection.execute(text("SELECT body, text FROM messages"))
            for value in row
            if value
        ]
    assert rendered, "no message was rendered"
    procfile.stop()
    outputs = {name: procfile.output(name) for name in procfile.processes}
    everything = "\n".join(outputs.values())

    # nothing personal, in any process, in any spelling
    personal: list[str] = []
    for _, name, _, phone, email, _ in BOOK:
        personal += [name, email, *spellings(phone)]
    for body in rendered:
        personal += [body, body[:40]]
        personal += [line for line in body.splitlines() if len(line.strip()) > 30]
    leaked = sorted({item for item in personal if item.lower() in everything.lower()})
    assert leaked == [], f"personal data in the logs: {leaked}\n{everything}"

    # JSON lines: one object each, with their fields
    for name in ("web-2", "worker"):
        for line in outputs[name].splitlines():
            document = json.loads(line)
            assert set(document) >= {"time", "level", "process", "pid", "logger", "message"}
            assert isinstance(document["fields"], dict)
            assert document["process"] == name.split("-")[0]
            assert document["level"] != "DEBUG"
    # text lines: time, level, process (a traceback's lines follow an ERROR line)
    for name in ("web-1", "clock"):
        lines = outputs[name].splitlines()
        assert lines, f"{name} wrote nothing"
        for line in lines:
            assert TEXT_LINE.match(line) or line.startswith(("Traceback", " ")), line
        assert "ERROR" not in outputs[name], outputs[name]

    # quiet: no APScheduler routine, a clock that says little
    assert "apscheduler" not in everything
    assert "Running job" not in everything
    assert len(outputs["clock"].splitlines()) <= 10, outputs["clock"]
    # and what is worth knowing
    assert "clock started (leader)" in outputs["clock"]
    assert re.search(r"a batch of 3 events: 3 accepted", outputs["web-1"])
    assert '"GET /v1/messages HTTP/1.1" 200' in outputs["web-1"]
    worker = [json.loads(line) for line in outputs["worker"].splitlines()]
    refusals = [line for line in worker if line["logger"] == "outreach.providers"]
    assert {line["fields"]["provider"] for line in refusals} == {"twilio", "smtp"}
    assert any("****0173" in line["message"] for line in refusals)
    assert any("n***@bounce.example" in line["message"] for line in refusals)
    summaries = [line for line in worker if line["message"].startswith("in the last minute")]
    handed = sum(
        results.get("accepted", 0)
        for line in summaries
        for results in line["fields"].get("provider_requests", {}).values()
    )
    assert handed == expected["twilio", "accepted"] + expected["smtp", "accepted"]


def test_run_on_the_embedded_defaults_is_quiet(tmp_path: Path) -> None:
    """`outreach run` as on a fresh clone (no `var/` yet): its start, and then nothing while
    nothing happens (APScheduler used to write two lines a second, Alembic one a migration)."""
    port = free_port()
    procfile = Procfile(tmp_path, clean_env())
    fresh = tmp_path / "clone"
    fresh.mkdir()
    procfile.start("run", "run", "--port", str(port), cwd=fresh)
    try:
        wait_for(lambda: answering(f"http://127.0.0.1:{port}"), 60, "outreach run answering")
        started = len(procfile.output("run").splitlines())
        for _ in range(5):  # probes and scrapes are not access-logged either
            httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10)
            time.sleep(1)
        assert len(procfile.output("run").splitlines()) == started, procfile.output("run")
    finally:
        procfile.processes["run"].send_signal(signal.SIGINT)
        procfile.stop()
    output = procfile.output("run")
    assert "Running job" not in output and "executed successfully" not in output
    assert "clock started (leader)" in output
    assert "Webhook secret (OUTREACH_WEBHOOK_SECRET)" in output  # made on first start
    assert "database schema upgraded from empty to" in output
    assert "Running upgrade" not in output
    assert "Application startup complete" not in output
    # and what to try next, as commands that work from there
    assert f"outreach events post EVENTS.jsonl --url http://127.0.0.1:{port}" in output
    assert f"open http://127.0.0.1:{port}/ui/ and log in with the admin token above" in output
    assert len(output.splitlines()) <= 15, output
