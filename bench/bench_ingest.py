"""Bulk ingest: a loan book and then the loan system's nightly batch through
`POST /v1/events/batch`, with payments arriving meanwhile — on the Procfile processes as
they are (one `web`, `outreach worker`, one `clock`), PostgreSQL and Redis, simulated
providers.

    .venv/bin/python bench/bench_ingest.py [--borrowers 5000] [--batch 1000] [--in-flight 4]

1. The book: `outreach.sim.book` for the last two days (borrowers in three locales and
   many zones, events at any minute, payments, promises, plans, visits, restrictions;
   the replies left out: they come through Twilio, not the loan system), posted in
   batches of `--batch`, in time order.
2. The nightly batch: a `loan.updated` for every loan, a day older.
All the while, a `payment.received` in full at `POST /v1/events` every 100 ms for a loan
with messages pending, timed from its 202 to the moment none of the messages pending when it
was paid is pending any more.

Each phase is timed from its first request to the moment no inbox row is `pending`. Beside
the figures: PostgreSQL's raw COPY and insert+commit rates in the same run, and the peak
resident memory of each process.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psycopg
from sqlalchemy import Engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_pipeline import (  # noqa: E402
    bench_database,
    bench_env,
    raw_postgres_rate,
    signed,
    stop,
    wait_ready,
)
from outreach.sim.book import generate_book  # noqa: E402
from tests.factories import payment_received  # noqa: E402
from tests.support import free_port  # noqa: E402

_PENDING_IDS = "SELECT id FROM messages WHERE status IN ('scheduled', 'deferred', 'queued')"


def raw_copy_rate(database_url: str, rows: int = 200_000) -> float:
    """COPY of rows as wide as an inbox row (id, type, a JSON body of ~600 bytes)."""
    body = json.dumps({"loan": {"id": "l" * 20, "note": "x" * 560}})
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(
            "CREATE TEMP TABLE bench_copy (id text primary key, type text, body jsonb)"
        )
        started = time.perf_counter()
        with (
            connection.cursor() as cursor,
            cursor.copy("COPY bench_copy (id, type, body) FROM STDIN") as copy,
        ):
            for index in range(rows):
                copy.write_row((f"evt-{index}", "loan.updated", body))
        return rows / (time.perf_counter() - started)


def peak_rss_mib(pid: int) -> float:
    """VmHWM of the process and its children (the worker forks its processes)."""
    pids = [pid]
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    pids += [int(child) for child in children.stdout.split()]
    peak = 0.0
    for each in pids:
        try:
            with open(f"/proc/{each}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return peak


def book_events(borrowers: int, seed: int) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = now - dt.timedelta(days=2)
    events = generate_book(borrowers=borrowers, days=2, seed=seed, start=start, update_every=1)
    events = [e for e in events if e["type"] != "sms.inbound" and e["occurred_at"] <= _iso(now)]
    events.sort(key=lambda event: event["occurred_at"])
    return events


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def nightly_batch(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every loan's latest state, a day older, as the loan system's nightly batch sends it."""
    latest: dict[str, dict[str, Any]] = {}
    for event in events:
        if event["type"] == "loan.updated":
            latest[event["data"]["loan"]["id"]] = event["data"]["loan"]
    now = _iso(dt.datetime.now(dt.UTC))
    batch = []
    for loan_id, loan in latest.items():
        aged = dict(loan, days_past_due=loan["days_past_due"] + 1)
        batch.append(
            {
                "id": f"nightly-{loan_id}-{uuid.uuid4().hex[:6]}",
                "type": "loan.updated",
                "occurred_at": now,
                "data": {"loan": aged},
            }
        )
    return batch


def batches(events: list[dict[str, Any]], size: int) -> list[bytes]:
    return [
        json.dumps({"events": events[index : index + size]}).encode()
        for index in range(0, len(events), size)
    ]


async def post_batches(url: str, bodies: list[bytes], in_flight: int) -> dict[str, int]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    counts: dict[str, int] = {}

    async def sender(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            while True:
                async with session.post(
                    url,
                    data=body,
                    headers={
                        "Content-Type": "application/json",
                        "X-Outreach-Signature": signed(body),
                    },
                ) as response:
                    answer = await response.read()
                    if response.status == 503:
                        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                        continue
                    if response.status != 200:
                        raise RuntimeError(f"{response.status}: {answer[:300]!r}")
                    for result in json.loads(answer)["results"]:
                        counts[result["status"]] = counts.get(result["status"], 0) + 1
                    break

    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(sender(session) for _ in range(in_flight)))
    return counts


def wait_applied(engine: Engine, started: float) -> float:
    while True:
        with engine.connect() as connection:
            pending = connection.execute(
                text("SELECT count(*) FROM received_events WHERE outcome = 'pending'")
            ).scalar_one()
        if not pending:
            return time.perf_counter() - started
        time.sleep(0.05)


def ingest(
    engine: Engine, url: str, bodies: list[bytes], in_flight: int
) -> tuple[float, float, dict[str, int]]:
    """(seconds until every batch was answered, seconds until every event was applied)."""
    started = time.perf_counter()
    counts = asyncio.run(post_batches(url, bodies, in_flight))
    answered = time.perf_counter() - started
    return answered, wait_applied(engine, started), counts


class Payments(threading.Thread):
    """A payment in full every `every` seconds for a loan with messages pending (one paid
    before is not paid again), each timed from its 202 to none of its loan's messages
    pending; `phase` names what the ingest is doing meanwhile."""

    def __init__(self, engine: Engine, url: str, loans: list[str], every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.engine, self.url, self.every = engine, url, every
        # the book's loans, drawn at random: asked one by one by loan (an index), so that
        # this load's own reads cost the database next to nothing
        self.loans = list(loans)
        random.Random(1).shuffle(self.loans)
        self.phase = "book"
        self.latencies: dict[str, list[float]] = {}
        # from the 202 to the payment's inbox row applied (the rest is cancelling)
        self.applied: dict[str, list[float]] = {}
        self.stopping = threading.Event()

    def _next_loan(self) -> tuple[str, list[str]] | None:
        """A loan not paid yet with messages pending now, and their ids."""
        with self.engine.connect() as connection:
            for _ in range(20):
                if not self.loans:
                    return None
                loan_id = self.loans.pop()
                pending = list(
                    connection.execute(
                        text(_PENDING_IDS + " AND loan_id = :loan_id"), {"loan_id": loan_id}
                    ).scalars()
                )
                if pending:
                    return loan_id, pending
        return None

    def run(self) -> None:
        client = httpx.Client(timeout=30)
        waiting: list[tuple[list[str], float, str]] = []
        unapplied: dict[str, tuple[float, str]] = {}
        while not self.stopping.is_set():
            chosen = self._next_loan()
            if chosen is not None:
                loan_id, pending = chosen
                payment = payment_received(loan_id, amount="1800.00", amount_due_after="0.00")
                body = json.dumps(payment).encode()
                answer = client.post(
                    self.url,
                    content=body,
                    headers={
                        "Content-Type": "application/json",
                        "X-Outreach-Signature": signed(body),
                    },
                )
                if answer.status_code == 202 and pending:
                    waiting.append((pending, time.perf_counter(), self.phase))
                    unapplied[payment["id"]] = (time.perf_counter(), self.phase)
            waiting = self._settled(waiting)
            unapplied = self._applied(unapplied)
            time.sleep(self.every)
        deadline = time.perf_counter() + 60
        while (waiting or unapplied) and time.perf_counter() < deadline:
            waiting = self._settled(waiting)
            unapplied = self._applied(unapplied)
            time.sleep(0.01)
        client.close()

    def _applied(self, unapplied: dict[str, tuple[float, str]]) -> dict[str, tuple[float, str]]:
        if not unapplied:
            return unapplied
        with self.engine.connect() as connection:
            done = set(
                connection.execute(
                    text(
                        "SELECT id FROM received_events WHERE id = ANY(:ids) "
                        "AND outcome <> 'pending'"
                    ),
                    {"ids": list(unapplied)},
                ).scalars()
            )
        now = time.perf_counter()
        for event_id in done:
            at, phase = unapplied.pop(event_id)
            self.applied.setdefault(phase, []).append(now - at)
        return unapplied

    def _settled(
        self, waiting: list[tuple[list[str], float, str]]
    ) -> list[tuple[list[str], float, str]]:
        """Of the payments waiting, those whose loan still has a message pending that was
        pending when it was paid (a later `loan.updated` of the book may plan new ones)."""
        if not waiting:
            return waiting
        with self.engine.connect() as connection:
            still = set(
                connection.execute(
                    text(_PENDING_IDS + " AND id = ANY(:ids)"),
                    {"ids": [message_id for pending, _, _ in waiting for message_id in pending]},
                ).scalars()
            )
        now = time.perf_counter()
        left = []
        for pending, at, phase in waiting:
            if still.intersection(pending):
                left.append((pending, at, phase))
            else:
                self.latencies.setdefault(phase, []).append(now - at)
        return left


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--borrowers", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=1000, help="events per batch")
    parser.add_argument("--in-flight", type=int, default=4, help="batches posted at once")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    name = f"outreach_bench_ingest_{uuid.uuid4().hex[:8]}"
    admin, database_url, engine = bench_database(name)
    env = bench_env(database_url, "bench-ingest-admin-token")
    logs = Path(f"/tmp/bench-ingest-{uuid.uuid4().hex[:6]}")
    logs.mkdir()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        insert_rate = raw_postgres_rate(database_url)
        copy_rate = raw_copy_rate(database_url)
        events = book_events(args.borrowers, args.seed)
        nightly = nightly_batch(events)

        port = free_port()
        commands = {
            "web": ["web", "--host", "127.0.0.1", "--port", str(port)],
            "worker": ["worker"],
            "clock": ["clock"],
        }
        started: dict[str, subprocess.Popen[bytes]] = {}
        for role, command in commands.items():
            with (logs / f"{role}.log").open("wb") as output:
                started[role] = subprocess.Popen(
                    [sys.executable, "-m", "outreach", *command],
                    cwd=ROOT,
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            processes.append(started[role])
        wait_ready(port, started["web"])
        batch_url = f"http://127.0.0.1:{port}/v1/events/batch"

        loans = sorted({e["data"]["loan"]["id"] for e in events if e["type"] == "loan.updated"})
        payments = Payments(engine, f"http://127.0.0.1:{port}/v1/events", loans)
        payments.start()
        book_answered, book_applied, book_counts = ingest(
            engine, batch_url, batches(events, args.batch), args.in_flight
        )
        payments.phase = "nightly batch"
        nightly_answered, nightly_applied, nightly_counts = ingest(
            engine, batch_url, batches(nightly, args.batch), args.in_flight
        )
        payments.stopping.set()
        payments.join(timeout=90)
        memory = {role: peak_rss_mib(process.pid) for role, process in started.items()}
        with engine.connect() as connection:
            messages = connection.execute(text("SELECT count(*) FROM messages")).scalar_one()
    finally:
        stop(processes)
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    load = os.getloadavg()[0]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"ingest benchmark, {now}, {os.cpu_count()} cores, load {load:.1f}; logs in {logs}")
    print(f"raw PostgreSQL: COPY {copy_rate:,.0f} rows/s; insert+commit {insert_rate:,.0f}/s")
    for label, count, answered, applied, counts in (
        ("book", len(events), book_answered, book_applied, book_counts),
        ("nightly batch", len(nightly), nightly_answered, nightly_applied, nightly_counts),
    ):
        accepted = counts.get("accepted", 0)
        print(
            f"{label}: {count:,} events in batches of {args.batch} ({args.in_flight} in flight): "
            f"answered {count / answered:,.0f}/s, applied {accepted / applied:,.0f}/s "
            f"(ratio to raw COPY {accepted / applied / copy_rate:.4f}); {counts}"
        )
    for phase, latencies in payments.latencies.items():
        applied = payments.applied.get(phase) or [0.0]
        print(
            f"payment → its loan's pending messages cancelled, during the {phase}: "
            f"{len(latencies)} payments, p50 {statistics.median(latencies):.3f} s, "
            f"p99 {percentile(latencies, 0.99):.3f} s, max {max(latencies):.3f} s "
            f"(the payment itself applied: p50 {statistics.median(applied):.3f} s, "
            f"p99 {percentile(applied, 0.99):.3f} s)"
        )
    print(f"messages planned: {messages:,}")
    print("peak RSS (MiB): " + ", ".join(f"{role} {mib:.0f}" for role, mib in memory.items()))


if __name__ == "__main__":
    main()
