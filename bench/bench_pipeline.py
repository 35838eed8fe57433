"""Pipeline throughput: events accepted per second at POST /v1/events, and messages
dispatched per second end to end (clock → Redis broker → workers → provider → log), on
PostgreSQL and Redis, beside the machine's raw Redis and PostgreSQL rates in the same run.

    .venv/bin/python bench/bench_pipeline.py [--events 6000] [--web 2] [--workers 2]

Runs real `outreach web`, `outreach worker` and `outreach clock` processes against a fresh
PostgreSQL database; the provider is `simulated` (answers at once, in memory).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import psycopg
import redis
from sqlalchemy import Engine, create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from outreach.store.db import make_engine  # noqa: E402
from outreach.store.migrate import upgrade  # noqa: E402
from tests.factories import borrower_upserted, loan_updated, zone_at_local_hour  # noqa: E402
from tests.support import claim_redis_database, free_port  # noqa: E402

PG_ADMIN = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS") or claim_redis_database()
SECRET = "bench-secret"
LINK_SECRET = "bench-link-secret-0123456789"


def raw_redis_rate(seconds: float = 2.0) -> float:
    client = redis.Redis.from_url(REDIS_URL)
    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        client.incr("bench:raw")
        count += 1
    client.close()
    return count / seconds


def raw_postgres_rate(database_url: str, seconds: float = 2.0) -> float:
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("CREATE TEMP TABLE bench_raw (id serial primary key, body text)")
        count = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            connection.execute("INSERT INTO bench_raw (body) VALUES (%s)", ("x" * 200,))
            count += 1
    return count / seconds


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of these processes so far."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-u", "postgres"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


class CpuSplit:
    """Where a phase's CPU went: the web processes, PostgreSQL, this load generator."""

    def __init__(self, web: list[int]) -> None:
        self.web = web
        self.start = self._now()

    def _now(self) -> tuple[float, float, float]:
        own = os.times()
        return cpu_seconds(self.web), cpu_seconds(postgres_pids()), own.user + own.system

    def per_event_ms(self, events: int) -> str:
        spent = [(b - a) / events * 1000 for a, b in zip(self.start, self._now(), strict=True)]
        return "web {:.2f}, PostgreSQL {:.2f}, load generator {:.2f}".format(*spent)


def signed(body: bytes) -> str:
    timestamp = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


async def post_all(urls: list[str], bodies: list[bytes], concurrency: int) -> tuple[float, int]:
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for index, body in enumerate(bodies):
        queue.put_nowait((index, body))
    accepted = 0

    async def worker(session: aiohttp.ClientSession, number: int) -> None:
        nonlocal accepted
        while True:
            try:
                index, body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            url = urls[index % len(urls)]
            async with session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json", "X-Outreach-Signature": signed(body)},
            ) as response:
                await response.read()
                if response.status == 202:
                    accepted += 1
                elif response.status != 200:
                    raise RuntimeError(f"{response.status}: {await response.text()}")

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session, n) for n in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, accepted


def post_and_apply(
    engine: Engine, urls: list[str], bodies: list[bytes], concurrency: int
) -> tuple[float, int]:
    """Post every body; the time until the last one is answered and every accepted event
    is applied (its inbox row no longer pending), and how many were accepted."""
    started = time.perf_counter()
    _, accepted = asyncio.run(post_all(urls, bodies, concurrency))
    while True:
        with engine.connect() as connection:
            pending = connection.execute(
                text("SELECT count(*) FROM received_events WHERE outcome = 'pending'")
            ).scalar_one()
        if not pending:
            return time.perf_counter() - started, accepted
        time.sleep(0.005)


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("web process exited")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("web did not become ready")


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def bench_database(name: str) -> tuple[Engine, str, Engine]:
    """A fresh, migrated database `name`, and the run's Redis database emptied: the server's
    admin engine (to drop it at the end), its URL, an engine on it."""
    admin = create_engine(
        PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    database_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    engine = make_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    upgrade(engine)
    redis.Redis.from_url(REDIS_URL).flushdb()
    return admin, database_url, engine


def bench_env(database_url: str, admin_token: str) -> dict[str, str]:
    """The Procfile processes' environment on that database, simulated providers."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OUTREACH_", "TWILIO_"))},
        "OUTREACH_DATABASE_URL": database_url,
        "OUTREACH_REDIS_URL": REDIS_URL,
        "OUTREACH_WEBHOOK_SECRET": SECRET,
        "OUTREACH_LINK_SECRET": LINK_SECRET,
        "OUTREACH_OPS_TOKENS": f"{admin_token}:admin",
        "OUTREACH_SMS_PROVIDER": "simulated",
        "OUTREACH_EMAIL_PROVIDER": "simulated",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=6000, help="events to post (half loans)")
    parser.add_argument("--web", type=int, default=2, help="web processes")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    name = f"outreach_bench_{uuid.uuid4().hex[:8]}"
    admin, database_url, engine = bench_database(name)
    env = bench_env(database_url, "bench-pipeline-admin")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        redis_rate = raw_redis_rate()
        postgres_rate = raw_postgres_rate(database_url)

        ports = [free_port() for _ in range(args.web)]
        for port in ports:
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "outreach",
                        "web",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port, process in zip(ports, processes, strict=True):
            wait_ready(port, process)

        # daytime borrowers whose first message is due at once
        zone = zone_at_local_hour(14)
        loans = args.events // 2
        borrowers = [
            json.dumps(
                borrower_upserted(f"bench-b{i}", timezone=zone, phones=[f"+1500555{i % 10000:04d}"])
            ).encode()
            for i in range(loans)
        ]
        updates = [
            json.dumps(loan_updated(f"bench-l{i}", f"bench-b{i}", days_past_due=1)).encode()
            for i in range(loans)
        ]
        urls = [f"http://127.0.0.1:{port}/v1/events" for port in ports]
        web_pids = [process.pid for process in processes]
        split = CpuSplit(web_pids)
        elapsed_b, accepted_b = post_and_apply(engine, urls, borrowers, args.concurrency)
        borrower_cpu = split.per_event_ms(len(borrowers))
        split = CpuSplit(web_pids)
        elapsed_l, accepted_l = post_and_apply(engine, urls, updates, args.concurrency)
        loan_cpu = split.per_event_ms(len(updates))
        accepted = accepted_b + accepted_l
        events_rate = accepted / (elapsed_b + elapsed_l)
        stop(processes)
        processes.clear()

        with engine.connect() as connection:
            due = connection.execute(
                text(
                    "SELECT count(*) FROM messages WHERE send_at <= now() "
                    "AND status IN ('scheduled','deferred')"
                )
            ).scalar_one()
        # now release them all: workers first, then the clock
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "outreach",
                    "worker",
                    "--processes",
                    str(args.workers),
                    "--threads",
                    str(args.threads),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        time.sleep(4)
        started = time.perf_counter()
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "outreach", "clock"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        sent = 0
        first_sent_at = None
        last_sent_at = None
        while time.perf_counter() - started < 600:
            with engine.connect() as connection:
                sent, waiting = connection.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE sent_at IS NOT NULL), "
                        "count(*) FILTER (WHERE status IN ('queued', 'sending') OR "
                        "(status IN ('scheduled', 'deferred') AND send_at <= now())) "
                        "FROM messages"
                    )
                ).one()
            moment = time.perf_counter()
            if sent and first_sent_at is None:
                first_sent_at = moment
            if sent:
                last_sent_at = moment
            # done when nothing due is left waiting (a magic number's rejection is handed over
            # too, and counts; a capped message is deferred past now)
            if sent and not waiting:
                break
            time.sleep(0.25)
        # rate over the span from the first hand-over seen to the last, one poll each side
        dispatch_elapsed = (last_sent_at or started) - (first_sent_at or started) + 0.25
        dispatch_rate = sent / dispatch_elapsed
    finally:
        stop(processes)
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"pipeline benchmark, {now}, {os.cpu_count()} cores")
    print(f"raw Redis INCR round trips/s (1 client):      {redis_rate:10.0f}")
    print(f"raw PostgreSQL insert+commit/s (1 conn):      {postgres_rate:10.0f}")
    print(
        f"events accepted and applied/s ({args.web} web, {args.concurrency} in flight): "
        f"{events_rate:8.0f}"
        f"   ({accepted} events; ratio to raw PG inserts {events_rate / postgres_rate:.3f})"
    )
    print(f"  borrower.upserted {accepted_b / elapsed_b:6.0f}/s; CPU ms per event: {borrower_cpu}")
    print(f"  loan.updated      {accepted_l / elapsed_l:6.0f}/s; CPU ms per event: {loan_cpu}")
    print(
        f"messages dispatched/s ({args.workers}x{args.threads} workers):   {dispatch_rate:8.0f}"
        f"   ({sent} of {due} due; ratio to raw PG inserts {dispatch_rate / postgres_rate:.3f})"
    )


if __name__ == "__main__":
    main()
