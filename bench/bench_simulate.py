"""Simulation benchmark: a generated book of 5,000 loans over 60 days through `outreach simulate`.

    .venv/bin/python bench/bench_simulate.py [--loans 5000] [--days 60] [--seed 1]
                                             [--stories] [--keep DIR]

The book has one borrower per loan and a `loan.updated` for every loan every day (the loan
system's nightly run: 300,000 events for 5,000 loans over 60 days); `--stories` adds the
demo's payments, promises, plans, visits, restrictions and replies. The book is written to
EVENTS.jsonl first; then `outreach simulate` runs as a child process, so its wall time is
measured alone. It splits the book between one process per CPU (`--jobs`); its peak memory
is the sum of every one of its processes' peaks, as `outreach simulate` reports it (the
largest single process is printed too). Targets: under 60 s and under 1 GiB on the
project's 2-core machine.

The book is generated in a process of its own: a process's peak memory survives the exec of a
child on Linux, so a child started from a bench holding the generated book would report the
bench's memory as its own. Beside the run the bench measures the machine's raw SQLite
insert rate and a pure-Python reference (JSON lines of the book parsed per second), before
and after, and reports the run's rates as ratios to them: this machine's speed drifts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_SECONDS = 60
TARGET_BYTES = 1 << 30
# the simulation's start (outreach.sim.book.DEMO_START), not imported: this process stays small
START = "2026-09-14T00:00:00+00:00"


def write_book(path: Path, loans: int, days: int, seed: int, stories: bool) -> None:
    from outreach.sim.book import DEMO_START, generate_book

    assert DEMO_START.isoformat() == START
    events = generate_book(loans, days, seed, start=DEMO_START, update_every=1, stories=stories)
    with path.open("w", encoding="utf-8") as handle:
        for event in events:
            handle.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")


def write_book_apart(path: Path, loans: int, days: int, seed: int, stories: bool) -> int:
    """`write_book` in a process of its own; returns the number of events written."""
    process = multiprocessing.get_context("spawn").Process(
        target=write_book, args=(path, loans, days, seed, stories)
    )
    process.start()
    process.join()
    if process.exitcode != 0:
        raise SystemExit(f"writing the book failed (exit {process.exitcode})")
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def raw_sqlite_rate(directory: Path, seconds: float = 2.0) -> float:
    """Rows/s inserted into an indexed table of event-sized rows, 2,000 per commit, with
    the simulation's durability (none): the store the simulation runs on, at its fastest."""
    path = directory / "raw.db"
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=MEMORY")
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("CREATE TABLE raw (id TEXT PRIMARY KEY, at TEXT, owner TEXT, body TEXT)")
    connection.execute("CREATE INDEX raw_owner ON raw (owner)")
    body = "x" * 300
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        rows = [
            (f"row-{count + index:09d}", "2026-09-14 18:00:00", f"L{index % 5000:05d}", body)
            for index in range(2000)
        ]
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO raw VALUES (?, ?, ?, ?)", rows)
        connection.execute("COMMIT")
        count += len(rows)
    rate = count / (time.perf_counter() - started)
    connection.close()
    path.unlink()
    return rate


def raw_parse_rate(book: Path, seconds: float = 2.0) -> float:
    """Lines of the book parsed by the standard library's json per second (one process):
    a reference for what a second of this machine's Python does."""
    with book.open("rb") as handle:
        lines = [line for _, line in zip(range(20_000), handle, strict=False)]
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for line in lines:
            json.loads(line)
        count += len(lines)
    return count / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loans", type=int, default=5000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stories", action="store_true", help="add the demo's stories")
    parser.add_argument("--keep", type=Path, help="keep EVENTS.jsonl and MESSAGES.jsonl here")
    parser.add_argument("--jobs", type=int, help="processes for `outreach simulate --jobs`")
    args = parser.parse_args()

    directory = args.keep or Path(tempfile.mkdtemp(prefix="bench-simulate-"))
    directory.mkdir(parents=True, exist_ok=True)
    events_path = directory / "EVENTS.jsonl"
    messages_path = directory / "MESSAGES.jsonl"
    started = time.perf_counter()
    count = write_book_apart(events_path, args.loans, args.days, args.seed, args.stories)
    print(
        f"book: {args.loans} loans, {args.days} days, {count:,} events "
        f"({events_path.stat().st_size / 1e6:.0f} MB), written in "
        f"{time.perf_counter() - started:.1f} s"
    )

    env = {k: v for k, v in os.environ.items() if k != "OUTREACH_REDIS_URL"}
    command = [
        sys.executable,
        "-m",
        "outreach",
        "simulate",
        "--events",
        str(events_path),
        "--start",
        START,
        "--days",
        str(args.days),
        "--out",
        str(messages_path),
        "--seed",
        str(args.seed),
    ]
    if args.jobs is not None:
        command += ["--jobs", str(args.jobs)]
    sqlite_before, parse_before = raw_sqlite_rate(directory), raw_parse_rate(events_path)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    sqlite_after, parse_after = raw_sqlite_rate(directory), raw_parse_rate(events_path)
    if result.returncode != 0:
        print(result.stdout + result.stderr, file=sys.stderr)
        return result.returncode
    print(result.stdout.strip())

    messages = sent = 0
    with messages_path.open(encoding="utf-8") as handle:
        for line in handle:
            messages += 1
            if '"sent_at":null' not in line and '"sent_at": null' not in line:
                sent += 1
    # as the command reports them: the sum of its processes' peaks, and the largest one (a
    # run in one process reports only the first). This process's rusage cannot tell: it
    # counts the process that wrote the book, and the split's processes are children of the
    # command's fork server. Their CPU time is not shown for the same reason.
    reported = re.search(
        r"peak memory (\d+) MiB(?: \(the largest process (\d+) MiB\))?", result.stdout
    )
    if reported is None:
        print("the command reported no peak memory", file=sys.stderr)
        return 1
    peak = int(reported.group(1)) * 2**20
    largest = int(reported.group(2) or reported.group(1)) * 2**20
    print(f"simulate: {elapsed:.1f} s wall")
    print(
        f"messages: {messages:,} in MESSAGES.jsonl, {sent:,} handed to the provider; "
        f"{messages / elapsed:,.0f} messages/s, {sent / elapsed:,.0f} sent/s, "
        f"{count / elapsed:,.0f} events/s"
    )
    print(
        f"peak memory (sum of each simulate process's peak): {peak / 2**20:.0f} MiB; "
        f"the largest single process {largest / 2**20:.0f} MiB"
    )
    sqlite_rate = (sqlite_before + sqlite_after) / 2
    parse_rate = (parse_before + parse_after) / 2
    print(
        f"raw SQLite inserts/s (before, after): {sqlite_before:,.0f}, {sqlite_after:,.0f}; "
        f"raw JSON lines parsed/s: {parse_before:,.0f}, {parse_after:,.0f}"
    )
    print(
        f"ratios: events/s to raw SQLite inserts/s {count / elapsed / sqlite_rate:.4f}; "
        f"events/s to raw JSON lines/s {count / elapsed / parse_rate:.4f}; "
        f"wall time x raw JSON lines/s {elapsed * parse_rate / 1e6:.2f} M"
    )
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, "
        f"Python {platform.python_version()}"
    )
    if (args.loans, args.days) == (5000, 60):
        ok = elapsed < TARGET_SECONDS and peak < TARGET_BYTES
        print(f"target (< {TARGET_SECONDS} s, < 1 GiB): " + ("met" if ok else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
