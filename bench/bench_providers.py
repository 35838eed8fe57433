"""Real providers end to end: messages handed to Twilio through the real `twilio` client
against the loopback emulator, and email through SMTP to a loopback server, by the Procfile
processes as they are (one `web`, `outreach worker` with its defaults, one `clock`), beside
the raw rates of the same client and of smtplib measured in the same run.

    .venv/bin/python bench/bench_providers.py [--sms 6000] [--emails 3000]

The emulator (tests/twilio_emulator.py) and the SMTP server (aiosmtpd, discarding what it
receives) run in processes of their own. The book goes in through `POST /v1/events/batch`:
borrowers in daytime with one overdue loan each, so one message each is due at once; then
the worker and the clock start, and the rate is the messages handed over (`sent_at` set) over
the span from the first to the last hand-over. Raw rates: the `twilio` client's creates from
as many processes and threads as `outreach worker` runs, each thread its own client; smtplib
sending over one connection per thread, the same count; a PostgreSQL insert+commit loop.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import signal
import smtplib
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psycopg
import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from outreach.api.webhook import signature_for  # noqa: E402
from tests.factories import borrower_upserted, loan_updated, zone_at_local_hour  # noqa: E402
from tests.support import claim_redis_database, clean_env, free_port  # noqa: E402

PG_SERVER = os.environ.get("BENCH_POSTGRES_SERVER", "postgresql://postgres@127.0.0.1:5432")
ADMIN_DB = "postgres"
REDIS_URL = os.environ.get("BENCH_REDIS") or claim_redis_database()
SECRET = "bench-secret"
LINK_SECRET = "bench-link-secret-0123456789"
ACCOUNT_SID = "AC" + "b" * 32
AUTH_TOKEN = "bench-twilio-token"
RAW_SECONDS = 6.0
# what `outreach worker` (the Procfile's) runs by default: its --processes and --threads
WORKER_PROCESSES, WORKER_THREADS = 2, 8

EMULATOR = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from tests.twilio_emulator import TwilioEmulator
    emulator = TwilioEmulator({sid!r}, {token!r}).start()
    print(emulator.base_url, flush=True)
    while True:
        time.sleep(3600)
    """
)
SMTP_SERVER = textwrap.dedent(
    """
    import time
    from aiosmtpd.controller import Controller
    class Discard:
        async def handle_DATA(self, server, session, envelope):
            return "250 OK"
    controller = Controller(Discard(), hostname="127.0.0.1", port={port})
    controller.start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)
    """
)


def start_helper(script: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


# -- raw rates ---------------------------------------------------------------------------------


def _raw_twilio_process(base_url: str, threads: int, seconds: float, counts: Any) -> None:
    from twilio.rest import Client

    def run(index: int) -> None:
        client = Client(ACCOUNT_SID, AUTH_TOKEN)
        client.api.base_url = base_url
        deadline = time.perf_counter() + seconds
        made = 0
        while time.perf_counter() < deadline:
            try:
                client.messages.create(
                    to=f"+1415{index:03d}{made % 10000:04d}", from_="+15005550006", body="raw"
                )
            except requests.RequestException:
                continue  # the emulator's listen queue overflowed: only creates count
            made += 1
        with counts.get_lock():
            counts.value += made

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def raw_twilio_rate(base_url: str, processes: int, threads: int) -> float:
    counts = multiprocessing.Value("q", 0)
    pool = [
        multiprocessing.Process(
            target=_raw_twilio_process, args=(base_url, threads, RAW_SECONDS, counts)
        )
        for _ in range(processes)
    ]
    for process in pool:
        process.start()
    for process in pool:
        process.join()
    return counts.value / RAW_SECONDS


def _raw_smtp_process(port: int, threads: int, seconds: float, counts: Any) -> None:
    def run(index: int) -> None:
        connection = smtplib.SMTP("127.0.0.1", port)
        connection.ehlo()
        deadline = time.perf_counter() + seconds
        made = 0
        while time.perf_counter() < deadline:
            message = EmailMessage()
            message["From"] = "collections@example.com"
            message["To"] = f"raw{index}-{made}@example.com"
            message["Subject"] = "raw rate"
            message.set_content("raw rate " * 60)
            connection.send_message(message)
            made += 1
        connection.quit()
        with counts.get_lock():
            counts.value += made

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def raw_smtp_rate(port: int, processes: int, threads: int) -> float:
    counts = multiprocessing.Value("q", 0)
    pool = [
        multiprocessing.Process(target=_raw_smtp_process, args=(port, threads, RAW_SECONDS, counts))
        for _ in range(processes)
    ]
    for process in pool:
        process.start()
    for process in pool:
        process.join()
    return counts.value / RAW_SECONDS


def raw_postgres_rate(database_url: str, seconds: float = 3.0) -> float:
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("CREATE TEMP TABLE bench_raw (id serial primary key, body text)")
        count = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            connection.execute("INSERT INTO bench_raw (body) VALUES (%s)", ("x" * 200,))
            count += 1
    return count / seconds


# -- the service -------------------------------------------------------------------------------


def outreach(command: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    log = (logs / f"{command[0]}-{len(list(logs.iterdir()))}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "outreach", *command],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop(processes: list[subprocess.Popen[Any]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the web process exited")
        try:
            if requests.get(f"{base}/ready", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError("the web process did not become ready")


def profile(parent: int, folder: Path | None, tag: str) -> list[subprocess.Popen[bytes]]:
    """py-spy on each worker process (the children of `outreach worker`)."""
    if folder is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    found = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True)
    children = found.stdout.split()
    spy = str(Path(sys.executable).with_name("py-spy"))
    options = ["record", "--gil", "-r", "50", "-f", "raw"]
    return [
        subprocess.Popen(
            [spy, *options, "-p", pid, "-o", str(folder / f"{tag}-worker-{pid}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in [str(parent), *children]
    ]


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of these processes so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def family(pid: int) -> list[int]:
    """The process and its children."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [pid, *(int(child) for child in found.stdout.split())]


def postgres_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-u", "postgres"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def book(prefix: str, count: int, channel: str) -> list[dict[str, Any]]:
    """Borrowers at 14:00 local time with one loan a day late: one message due at once each,
    on `channel` only (the other has no consent)."""
    zone = zone_at_local_hour(14)
    events: list[dict[str, Any]] = []
    for index in range(count):
        borrower = f"{prefix}-b{index}"
        events.append(
            borrower_upserted(
                borrower,
                timezone=zone,
                phones=[f"+1415{index // 10000 + 200:03d}{index % 10000:04d}"],
                email=f"{prefix}.{index}@example.com",
                sms=channel == "sms",
                email_consent=channel == "email",
                locale=("en-US", "zh-CN", "zh-TW")[index % 3],
            )
        )
        events.append(loan_updated(f"{prefix}-l{index}", borrower, days_past_due=1))
    return events


def post_book(base: str, events: list[dict[str, Any]], database_url: str) -> float:
    """Post through the batch endpoint; seconds until every event is applied."""
    started = time.perf_counter()
    with requests.Session() as http:
        for start in range(0, len(events), 1000):
            body = json.dumps({"events": events[start : start + 1000]}).encode()
            headers = {
                "Content-Type": "application/json",
                "X-Outreach-Signature": signature_for(SECRET.encode(), body, time.time()),
            }
            response = http.post(f"{base}/v1/events/batch", data=body, headers=headers)
            response.raise_for_status()
    with psycopg.connect(database_url, autocommit=True) as connection:
        while connection.execute(
            "SELECT count(*) FROM received_events WHERE outcome = 'pending'"
        ).fetchone()[0]:
            time.sleep(0.1)
    return time.perf_counter() - started


def measure_dispatch(
    database_url: str, channel: str, expected: int, timeout: float = 600
) -> tuple[int, float, dict[str, int]]:
    """(handed over, seconds from the first hand-over to the last, statuses at the end)."""
    started = time.monotonic()
    with psycopg.connect(database_url, autocommit=True) as connection:
        while time.monotonic() - started < timeout:
            waiting = connection.execute(
                "SELECT count(*) FROM messages WHERE channel = %s AND (status IN "
                "('queued', 'sending') OR (status IN ('scheduled', 'deferred') "
                "AND send_at <= now()))",
                (channel,),
            ).fetchone()[0]
            handed = connection.execute(
                "SELECT count(*) FROM messages WHERE channel = %s AND sent_at IS NOT NULL",
                (channel,),
            ).fetchone()[0]
            if handed and not waiting:
                break
            time.sleep(0.5)
        count, first, last = connection.execute(
            "SELECT count(*), min(sent_at), max(sent_at) FROM messages "
            "WHERE channel = %s AND sent_at IS NOT NULL",
            (channel,),
        ).fetchone()
        statuses = dict(
            connection.execute(
                "SELECT status || coalesce(':' || reason, ''), count(*) FROM messages "
                "WHERE channel = %s GROUP BY 1",
                (channel,),
            ).fetchall()
        )
        sending_twice = connection.execute(
            "SELECT count(*) FROM (SELECT recipient FROM messages WHERE channel = %s "
            "AND sent_at IS NOT NULL GROUP BY recipient HAVING count(*) > 1) twice",
            (channel,),
        ).fetchone()[0]
    if sending_twice:
        raise RuntimeError(f"{sending_twice} {channel} recipients got more than one message")
    seconds = (last - first).total_seconds() if count > 1 else 0.0
    if count < expected:
        print(f"  note: {count} of {expected} {channel} messages handed over; {statuses}")
    return count, max(seconds, 0.001), statuses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sms", type=int, default=6000, help="SMS messages due at once")
    parser.add_argument("--emails", type=int, default=3000, help="emails due at once")
    parser.add_argument("--profile", type=Path, help="py-spy raw profiles of the workers here")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]

    def interrupted(number: int, _frame: object) -> None:
        raise SystemExit(f"stopped by signal {number}")

    signal.signal(signal.SIGTERM, interrupted)

    name = f"outreach_bench_providers_{uuid.uuid4().hex[:8]}"
    database_url = f"{PG_SERVER}/{name}"
    with psycopg.connect(f"{PG_SERVER}/{ADMIN_DB}", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    redis.Redis.from_url(REDIS_URL).flushdb()
    logs = Path(tempfile.mkdtemp(prefix="bench-providers-"))
    helpers: list[subprocess.Popen[Any]] = []
    processes: list[subprocess.Popen[Any]] = []
    try:
        emulator, twilio_url = start_helper(
            EMULATOR.format(root=str(ROOT), sid=ACCOUNT_SID, token=AUTH_TOKEN)
        )
        helpers.append(emulator)
        smtp_port = free_port()
        smtp, _ = start_helper(SMTP_SERVER.format(port=smtp_port))
        helpers.append(smtp)
        web_port = free_port()
        base = f"http://127.0.0.1:{web_port}"
        env = clean_env(
            OUTREACH_DATABASE_URL=database_url,
            OUTREACH_REDIS_URL=REDIS_URL,
            OUTREACH_WEBHOOK_SECRET=SECRET,
            OUTREACH_LINK_SECRET=LINK_SECRET,
            OUTREACH_OPS_TOKENS="bench-token-0123456789:admin:bench",
            OUTREACH_PUBLIC_URL=base,
            OUTREACH_SMS_PROVIDER="twilio",
            OUTREACH_SMS_RATE="100000",
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            TWILIO_FROM="+15005550006",
            TWILIO_API_BASE_URL=twilio_url,
            OUTREACH_EMAIL_PROVIDER="smtp",
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(smtp_port),
            EMAIL_FROM="collections@example.com",
            OUTREACH_LOG_LEVEL="WARNING",
        )
        upgrade = subprocess.run(
            [sys.executable, "-m", "outreach", "db", "upgrade"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if upgrade.returncode:
            raise RuntimeError(f"db upgrade failed: {upgrade.stderr}")
        processes_n, threads_n = WORKER_PROCESSES, WORKER_THREADS
        print(f"database {name}; logs in {logs}; worker {processes_n} × {threads_n} threads")

        raw_pg = raw_postgres_rate(database_url)
        raw_twilio = raw_twilio_rate(twilio_url, processes_n, threads_n)
        raw_smtp = raw_smtp_rate(smtp_port, processes_n, threads_n)
        print(
            f"raw: twilio client creates {raw_twilio:,.0f}/s, smtplib sends (one connection "
            f"per thread) {raw_smtp:,.0f}/s, PostgreSQL insert+commit {raw_pg:,.0f}/s "
            f"({processes_n} processes × {threads_n} threads)"
        )

        web = outreach(["web", "--host", "127.0.0.1", "--port", str(web_port)], env, logs)
        processes.append(web)
        wait_ready(base, web)
        figures: dict[str, tuple[int, float, dict[str, int]]] = {}
        for channel, count in (("sms", args.sms), ("email", args.emails)):
            if not count:
                continue
            events = book(f"{channel}-{uuid.uuid4().hex[:4]}", count, channel)
            applied = post_book(base, events, database_url)
            print(f"{channel}: {len(events):,} events applied in {applied:.1f} s")
            dispatching = [outreach(["worker"], env, logs)]
            time.sleep(8)  # the worker's processes up (imports, templates) before the clock
            dispatching.append(outreach(["clock"], env, logs))
            processes.extend(dispatching)
            profilers = profile(dispatching[0].pid, args.profile, channel)
            parts = {
                "worker": family(dispatching[0].pid),
                "clock": [dispatching[1].pid],
                "PostgreSQL": postgres_pids(),
                "provider": [helpers[0 if channel == "sms" else 1].pid],
            }
            before = {part: cpu_seconds(pids) for part, pids in parts.items()}
            figures[channel] = measure_dispatch(database_url, channel, count)
            spent = {part: cpu_seconds(pids) - before[part] for part, pids in parts.items()}
            print(
                f"{channel}: CPU ms per message: "
                + ", ".join(f"{part} {1000 * cpu / count:.2f}" for part, cpu in spent.items())
            )
            for profiler in profilers:  # py-spy writes its profile on SIGINT
                profiler.send_signal(signal.SIGINT)
            for profiler in profilers:
                profiler.wait(timeout=60)
            stop(dispatching)
            handed, seconds, statuses = figures[channel]
            print(f"{channel}: {handed:,} handed over in {seconds:.1f} s; {statuses}")
    finally:
        stop(processes)
        stop(helpers)
        with psycopg.connect(f"{PG_SERVER}/{ADMIN_DB}", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\nproviders benchmark, {now}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    if "sms" in figures:
        handed, seconds, _ = figures["sms"]
        rate = handed / seconds
        print(
            f"SMS handed to Twilio end to end: {rate:,.0f}/s ({handed:,} in {seconds:.1f} s); "
            f"raw client creates {raw_twilio:,.0f}/s: ratio {rate / raw_twilio:.2f}"
        )
    if "email" in figures:
        handed, seconds, _ = figures["email"]
        rate = handed / seconds
        print(
            f"email handed to SMTP end to end: {rate:,.0f}/s ({handed:,} in {seconds:.1f} s); "
            f"raw smtplib sends {raw_smtp:,.0f}/s: ratio {rate / raw_smtp:.2f}"
        )
    print(f"raw PostgreSQL insert+commit: {raw_pg:,.0f}/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
