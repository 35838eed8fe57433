"""Readable summaries of a simulation: the one-line summary of `simulate`, the demo report."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from outreach.service import campaigns
from outreach.sim.engine import SimulationStats
from outreach.sim_checks import CheckResult

STATUS_ORDER = [
    "delivered",
    "undelivered",
    "sent",
    "sending",
    "queued",
    "scheduled",
    "deferred",
    "failed",
    "suppressed",
    "cancelled",
]
STAGE_ORDER = ["pre_due", "early", "negotiation", "late", "pre_legal", "-"]


def summary_line(stats: SimulationStats, out: Path) -> str:
    statuses = ", ".join(
        f"{stats.statuses[status]} {status}" for status in STATUS_ORDER if stats.statuses[status]
    )
    after = (
        f", {stats.events_after_end} after the end not applied" if stats.events_after_end else ""
    )
    launched = len(stats.campaigns)
    if launched:
        after = f" and {launched} campaign launch{'es' if launched > 1 else ''}{after}"
    if stats.campaigns_after_end:
        after += f", {stats.campaigns_after_end} campaign line(s) after the end not launched"
    processes = ""
    largest = ""
    if stats.processes > 1:
        processes = f" in {stats.processes} processes"
        largest = f" (the largest process {stats.largest_memory_bytes / 2**20:.0f} MiB)"
    return (
        f"simulated {stats.events_applied} events{after}: {stats.messages} messages "
        f"({statuses or 'none'}) in {stats.wall_seconds:.1f} s{processes}, peak memory "
        f"{stats.peak_memory_bytes / 2**20:.0f} MiB{largest}; wrote {out}"
    )


def _n(value: int) -> str:
    return f"{value:,}"


def _table(title: str, rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    lines = [title]
    lines.append(
        "  "
        + "  ".join(
            h.ljust(widths[i]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header)
        )
    )
    for row in rows:
        lines.append(
            "  "
            + "  ".join(
                str(cell).ljust(widths[i]) if i == 0 else str(cell).rjust(widths[i])
                for i, cell in enumerate(row)
            )
        )
    return lines


def _ordered(keys: Iterable[str], order: Sequence[str]) -> list[str]:
    return sorted(keys, key=lambda key: (order.index(key) if key in order else len(order), key))


def message_tables(messages: Sequence[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    statuses = _ordered({m["status"] for m in messages}, STATUS_ORDER)
    by_stage: Counter[tuple[str, str]] = Counter()
    by_channel: Counter[tuple[str, str]] = Counter()
    by_purpose: Counter[tuple[str, str]] = Counter()
    for message in messages:
        by_stage[(message.get("stage") or "-", message["status"])] += 1
        by_channel[(message["channel"], message["status"])] += 1
        by_purpose[(message["purpose"], message["status"])] += 1
    for title, counts, order in (
        ("Messages by stage and status", by_stage, STAGE_ORDER),
        ("Messages by channel and status", by_channel, ["sms", "email"]),
        ("Messages by purpose and status", by_purpose, []),
    ):
        keys = _ordered({key for key, _ in counts}, order)
        rows = [
            (
                key,
                *(
                    _n(counts[(key, status)]) if counts[(key, status)] else "·"
                    for status in statuses
                ),
                _n(sum(counts[(key, status)] for status in statuses)),
            )
            for key in keys
        ]
        lines += _table(title, rows, ("", *statuses, "total"))
        lines.append("")
    return lines


def reason_tables(messages: Sequence[dict[str, Any]]) -> list[str]:
    withheld: Counter[tuple[str, str]] = Counter()
    failed: Counter[str] = Counter()
    deferred: Counter[str] = Counter()
    deferred_messages: Counter[str] = Counter()
    for message in messages:
        if message["status"] in ("suppressed", "cancelled"):
            withheld[(message["reason"] or "-", message["status"])] += 1
        elif message["status"] in ("failed", "undelivered"):
            detail = next(
                (
                    step.get("detail") or ""
                    for step in reversed(message.get("events") or [])
                    if step["status"] == message["status"]
                ),
                "",
            )
            code = next((part for part in detail.split() if part.startswith("code=")), "")
            failed[f"{message['status']} {message['reason'] or '-'} {code}".strip()] += 1
        reasons = {
            step["reason"] or "-"
            for step in message.get("events") or []
            if step["status"] == "deferred"
        }
        for step in message.get("events") or []:
            if step["status"] == "deferred":
                deferred[step["reason"] or "-"] += 1
        for reason in reasons:
            deferred_messages[reason] += 1
    lines: list[str] = []
    rows = [
        (reason, status, _n(count))
        for (reason, status), count in sorted(withheld.items(), key=lambda item: -item[1])
    ]
    lines += _table(
        "Suppressed and cancelled, by reason",
        rows or [("none", "", "")],
        ("reason", "status", "messages"),
    )
    lines.append("")
    rows = [
        (reason, _n(deferred_messages[reason]), _n(count))
        for reason, count in sorted(deferred.items(), key=lambda item: -item[1])
    ]
    lines += _table(
        "Deferrals, by reason", rows or [("none", "", "")], ("reason", "messages", "deferrals")
    )
    lines.append("")
    if failed:
        failures = [
            (what, _n(count)) for what, count in sorted(failed.items(), key=lambda item: -item[1])
        ]
        lines += _table("Provider failures", failures, ("outcome", "messages"))
        lines.append("")
    return lines


def check_lines(results: Sequence[CheckResult]) -> list[str]:
    lines = ["Compliance checks (computed from MESSAGES.jsonl and the input book)"]
    width = max(len(result.name) for result in results)
    for result in results:
        mark = "PASS" if result.passed else "FAIL"
        what = f"{_n(result.checked)} checked"
        if not result.passed:
            what += f", {_n(result.violation_count)} violations"
        lines.append(
            f"  {mark}  {result.name.ljust(width)}  {what.rjust(22)}  {result.description}"
        )
        for violation in result.violations:
            lines.append(f"        - {violation}")
    return lines


# -- campaigns --------------------------------------------------------------------------------


def _when(value: str | None) -> str:
    """An RFC 3339 instant of a campaign document, shortly (they are all UTC)."""
    return value.replace("T", " ").removesuffix("Z")[:16] + " UTC" if value else "-"


def _percent(rate: float | None) -> str:
    return f"{rate * 100:.1f}%" if rate is not None else "-"


def _segment_text(segment: Mapping[str, Any]) -> str:
    parts = []
    for name, value in segment.items():
        shown = ", ".join(str(item) for item in value) if isinstance(value, list) else value
        parts.append(f"{name} {shown}")
    return "; ".join(parts) or "every open loan"


def campaign_summaries(reports: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per campaign of a run, for `simulate`."""
    lines = []
    for report in reports:
        progress = report["progress"]
        statuses = ", ".join(f"{count} {status}" for status, count in progress["by_status"].items())
        arms = [
            f"{name} {arm.get('paid', 0)}/{arm['sent']}"
            for name, arm in progress["variants"].items()
        ]
        if progress.get("holdout"):
            arms.append(f"holdout {progress.get('holdout_paid', 0)}/{progress['holdout']}")
        lines.append(
            f"campaign {report['id']} ({report['status']}): {progress['targeted']} targeted, "
            f"{progress['holdout']} held out, messages {statuses or 'none'}; paid within "
            f"{progress['attribution_days']} days: {', '.join(arms)}"
        )
    return lines


def campaign_lines(
    reports: Sequence[Mapping[str, Any]], messages: Sequence[Mapping[str, Any]] = ()
) -> list[str]:
    """Each campaign of a run as its progress (SPEC §8) shows it, for the demo report; with
    the run's messages, why those of each campaign not sent were withheld."""
    withheld_by: dict[str, Counter[str]] = {}
    for message in messages:
        if message.get("campaign_id") and message["status"] in ("suppressed", "cancelled"):
            reason = message["reason"] or "-"
            withheld_by.setdefault(message["campaign_id"], Counter())[reason] += 1
    lines: list[str] = []
    for report in reports:
        progress = report["progress"]
        templates = {variant["name"]: variant["template"] for variant in report["variants"]}
        lines.append(
            f"Campaign {report['name']!r} ({report['id']}, {report['channel']}, "
            f"{report['status']}): {_segment_text(report['segment'])}; "
            f"{report['holdout_percent']}% held out"
        )
        lines.append(
            f"  launched {_when(report['launched_at'])}; runs from {_when(report['start_at'])} "
            f"to {_when(report['end_at'])}; finished {_when(report['finished_at'])}"
        )
        withheld = ", ".join(
            f"{reason} {_n(count)}"
            for reason, count in sorted(
                withheld_by.get(report["id"], Counter()).items(), key=lambda item: -item[1]
            )
        )
        lines.append(
            f"  targeted {_n(progress['targeted'])}, eligible {_n(progress['eligible'])}, "
            f"held out {_n(progress['holdout'])}"
            + (f"; messages withheld: {withheld}" if withheld else "")
        )
        lines.append("")
        statuses = _ordered(
            {status for arm in progress["variants"].values() for status in arm["by_status"]},
            STATUS_ORDER,
        )
        rows = [
            (
                name,
                *(
                    _n(arm["by_status"][status]) if arm["by_status"].get(status) else "·"
                    for status in statuses
                ),
                _n(arm["messages"]),
            )
            for name, arm in progress["variants"].items()
        ]
        lines += _table("  Messages by variant and status", rows, ("", *statuses, "total"))
        lines.append("")
        days = progress["attribution_days"]
        paid_rows = [
            (
                name,
                templates.get(name, "-"),
                _n(arm["sent"]),
                _n(arm.get("paid", 0)),
                _percent(arm.get("paid_rate")),
                campaigns.amounts_text(arm.get("paid_amount") or {}),
            )
            for name, arm in progress["variants"].items()
        ]
        if progress["holdout"]:
            paid_rows.append(
                (
                    "holdout",
                    "(no message)",
                    _n(progress["holdout"]),
                    _n(progress.get("holdout_paid", 0)),
                    _percent(progress.get("holdout_paid_rate")),
                    campaigns.amounts_text(progress.get("holdout_paid_amount") or {}),
                )
            )
        lines += _table(
            f"  Payments within {days} days of the message (holdout: of the start)",
            paid_rows,
            ("arm", "template", "sent/held", "paid", "rate", "amount"),
        )
        lines.append("  " + campaigns.comparison_text(progress.get("comparison")))
        lines.append("")
    return lines
