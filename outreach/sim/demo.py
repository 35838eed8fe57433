"""`outreach demo`: a generated book through the simulator, and a report on what it did."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path

from outreach import policy as pol
from outreach.settings import Settings
from outreach.sim.book import DEMO_START, generate_book
from outreach.sim.report import campaign_lines, check_lines, message_tables, reason_tables
from outreach.sim.shards import simulate_file
from outreach.sim_checks import read_jsonl, run_checks


def run_demo(
    settings: Settings,
    *,
    borrowers: int = 300,
    days: int = 60,
    seed: int = 7,
    policy_path: Path | None = None,
    keep: Path | None = None,
    progress: bool = False,
) -> tuple[str, bool]:
    """The report, and whether every compliance check passed."""
    policy_file = policy_path or settings.policy_path
    policy = pol.load_policy(policy_file)
    events = generate_book(borrowers, days, seed, start=DEMO_START, campaign=True)
    directory = keep or Path(tempfile.mkdtemp(prefix="outreach-demo-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        events_path = directory / "EVENTS.jsonl"
        messages_path = directory / "MESSAGES.jsonl"
        with events_path.open("w", encoding="utf-8") as handle:
            for event in events:
                handle.write(json.dumps(event, ensure_ascii=False) + "\n")
        result = simulate_file(
            settings,
            events_path,
            start=DEMO_START,
            days=days,
            out=messages_path,
            policy_path=policy_file,
            seed=seed,
            progress=progress,
        )
        messages = read_jsonl(messages_path)
        checks = run_checks(policy, events, messages, until=DEMO_START + dt.timedelta(days=days))
    finally:
        if keep is None:
            shutil.rmtree(directory, ignore_errors=True)
    stats = result.stats
    kinds: dict[str, int] = {}
    for event in events:
        kinds[event["type"]] = kinds.get(event["type"], 0) + 1
    loans = len({e["data"]["loan"]["id"] for e in events if e["type"] == "loan.updated"})
    sent = sum(1 for m in messages if m.get("sent_at"))
    lines = [
        f"outreach demo: {borrowers} generated borrowers, {loans} loans, {days} days from "
        f"{DEMO_START:%Y-%m-%d} (policy {policy_file}, seed {seed})",
        "Book: " + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())),
        f"Simulated in {stats.wall_seconds:.1f} s: {stats.instants} instants visited, "
        f"{stats.replans} loan re-plans, {sum(stats.dispatches.values())} dispatches; "
        f"{len(messages)} messages, {sent} handed to the provider",
        "",
    ]
    lines += message_tables(messages)
    lines += reason_tables(messages)
    lines += campaign_lines(stats.campaigns, messages)
    lines += check_lines(checks)
    passed = all(check.passed for check in checks)
    lines.append("")
    lines.append("All compliance checks passed." if passed else "Some compliance checks FAILED.")
    if keep is not None:
        lines.append(f"EVENTS.jsonl and MESSAGES.jsonl kept in {keep}")
    return "\n".join(lines), passed
