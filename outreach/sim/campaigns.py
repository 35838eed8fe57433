"""Campaigns in a simulation (SPEC §10), through the ops API's own use cases.

A `campaign.launched` line is checked as `POST /v1/campaigns` checks a body, against the
run's policy and templates and as of the line's instant; at that instant the campaign is
created under the line's id and launched, as by an ops user named `simulation`. From then on
the clock's `advance` starts and ends it on the virtual clock, and the same gate, caps and
dispatch send its messages as any other. What each campaign did is read back as the API
shows it (`to_json` with `progress`). A split run launches every campaign in each process,
over that process's borrowers (arms are drawn from the campaign and borrower ids, so every
process draws as one would), and adds up their figures.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from outreach import policy as pol
from outreach.domain import CampaignStatus
from outreach.render import Renderer
from outreach.service import campaigns
from outreach.settings import Settings
from outreach.sim.inputs import CampaignCheck, CampaignLaunch
from outreach.store import campaigns as store

SIMULATION_ACTOR = campaigns.Actor("simulation")
# a campaign's status where processes of a split run disagree: the least advanced, as one
# process would still be there while any of its borrowers' messages is pending
_PROGRESSION = [status.value for status in CampaignStatus]
UNFINISHED = ",".join(
    status.value
    for status in (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.PAUSED)
)


def checker(policy: pol.Policy, renderer: Renderer) -> CampaignCheck:
    """A campaign line's body checked as the ops API checks one, at the line's instant."""

    def check(launch: CampaignLaunch) -> str | None:
        try:
            campaigns.parse_campaign(launch.body, policy, renderer, launch.occurred_at)
        except campaigns.CampaignInvalid as error:
            return "; ".join(f"data.{name}: {detail}" for name, detail in error.errors)
        return None

    return check


def deferred_checker(settings: Settings, policy_path: Path | None) -> CampaignCheck:
    """`checker` for the run's policy and templates, loaded when a book first has a
    campaign line (most have none, and a book is read before anything else is loaded)."""
    loaded: list[CampaignCheck] = []

    def check(launch: CampaignLaunch) -> str | None:
        if not loaded:
            from outreach.sim.engine import compiled_renderer

            policy = pol.load_policy(policy_path or settings.policy_path)
            loaded.append(checker(policy, compiled_renderer(settings.templates_dir)))
        return loaded[0](launch)

    return check


def launch(
    session: Session,
    policy: pol.Policy,
    renderer: Renderer,
    launched: CampaignLaunch,
    now: dt.datetime,
) -> campaigns.CampaignSpec:
    """Create the line's campaign and launch it, now; its spec (checked again as of the
    line's instant, as when the book was read)."""
    spec = campaigns.parse_campaign(launched.body, policy, renderer, launched.occurred_at)
    campaigns.create(session, spec, SIMULATION_ACTOR, now, campaign_id=launched.campaign_id)
    campaigns.launch(session, policy, launched.campaign_id, SIMULATION_ACTOR, now)
    return spec


def unfinished(session: Session) -> bool:
    """Whether any campaign may still move (start, end, or complete)."""
    return bool(store.list_campaigns(session, status=UNFINISHED))


def reports(session: Session, policy: pol.Policy) -> list[dict[str, Any]]:
    """Every campaign as `GET /v1/campaigns/{id}` shows it (its audit trail apart), in the
    order they were launched."""
    found = sorted(
        store.list_campaigns(session),
        key=lambda campaign: (campaign.launched_at or campaign.created_at, campaign.id),
    )
    documents = []
    for campaign in found:
        document = campaigns.to_json(campaign)
        document["progress"] = campaigns.progress(session, policy, campaign)
        documents.append(document)
    return documents


# -- a split run's campaigns, added up --------------------------------------------------------


def merged(parts: Iterable[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The processes' reports of each campaign as one process would have made them: counts
    and amounts added up, rates and the comparison worked out again from the sums."""
    by_id: dict[str, list[Mapping[str, Any]]] = {}
    for part in parts:
        for report in part:
            by_id.setdefault(report["id"], []).append(report)
    documents = [_merged_one(found) for found in by_id.values()]
    documents.sort(key=lambda document: (document["launched_at"] or "", document["id"]))
    return documents


def _merged_one(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    document = dict(reports[0])
    if len(reports) == 1:
        return document
    document["status"] = min(
        (report["status"] for report in reports), key=lambda status: _PROGRESSION.index(status)
    )
    finished = [report["finished_at"] for report in reports]
    # RFC 3339 in UTC, all written alike: their order is the order of the text
    document["finished_at"] = max(finished) if all(finished) else None
    document["updated_at"] = max(report["updated_at"] for report in reports)
    if all(report.get("launch") for report in reports):
        document["launch"] = _launch_counts([report["launch"] for report in reports])
    document["progress"] = _progress([report["progress"] for report in reports])
    return document


def _added(documents: Sequence[Mapping[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for document in documents:
        total.update(document)
    return dict(sorted(total.items()))


def _launch_counts(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    variants = dict.fromkeys(parts[0]["variants"], 0)
    for part in parts:
        for name, count in part["variants"].items():
            variants[name] = variants.get(name, 0) + count
    return {
        "targeted": sum(part["targeted"] for part in parts),
        "eligible": sum(part["eligible"] for part in parts),
        "holdout": sum(part["holdout"] for part in parts),
        "suppressed": _added([part["suppressed"] for part in parts]),
        "deferred": _added([part["deferred"] for part in parts]),
        "variants": variants,
    }


def _rate(part: int, whole: int) -> float | None:
    # as `campaigns.progress` rounds its rates
    return round(part / whole, 6) if whole else None


def _amount(parts: Iterable[Mapping[str, str]]) -> dict[str, str]:
    # by currency, as `campaigns.progress` writes its amounts
    totals: dict[str, Decimal] = {}
    for part in parts:
        for currency, amount in part.items():
            totals[currency] = totals.get(currency, Decimal(0)) + Decimal(amount)
    return {c: str(a.quantize(Decimal("0.01"))) for c, a in sorted(totals.items())}


def _progress(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    first = parts[0]
    document: dict[str, Any] = {
        "targeted": sum(part["targeted"] for part in parts),
        "eligible": sum(part["eligible"] for part in parts),
        "holdout": sum(part["holdout"] for part in parts),
        "by_status": _added([part["by_status"] for part in parts]),
        "by_reason": _added([part["by_reason"] for part in parts]),
        "attribution_days": first["attribution_days"],
    }
    attributed = "holdout_paid" in first
    names = list(dict.fromkeys(name for part in parts for name in part["variants"]))
    variants: dict[str, dict[str, Any]] = {}
    for name in names:
        arms = [part["variants"][name] for part in parts if name in part["variants"]]
        arm: dict[str, Any] = {
            "messages": sum(a["messages"] for a in arms),
            "by_status": _added([a["by_status"] for a in arms]),
            "sent": sum(a["sent"] for a in arms),
            "delivered": sum(a["delivered"] for a in arms),
        }
        if attributed:
            arm["paid"] = sum(a["paid"] for a in arms)
            arm["paid_amount"] = _amount(a["paid_amount"] for a in arms)
            arm["paid_rate"] = _rate(arm["paid"], arm["sent"])
        variants[name] = arm
    if attributed:
        held, held_paid = document["holdout"], sum(part["holdout_paid"] for part in parts)
        document["holdout_paid"] = held_paid
        document["holdout_paid_amount"] = _amount(part["holdout_paid_amount"] for part in parts)
        document["holdout_paid_rate"] = _rate(held_paid, held)
        members: dict[str, list[int]] = {}
        for part in parts:
            for name, found in ((part.get("comparison") or {}).get("arms") or {}).items():
                totals = members.setdefault(name, [0, 0])
                totals[0] += found["paid"]
                totals[1] += found["members"]
        document["comparison"] = campaigns.compare(
            {name: (paid, whole) for name, (paid, whole) in members.items()}
        )
    document["variants"] = variants
    return document


__all__ = [
    "SIMULATION_ACTOR",
    "checker",
    "deferred_checker",
    "launch",
    "merged",
    "reports",
    "unfinished",
]
