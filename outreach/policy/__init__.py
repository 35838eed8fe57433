"""The policy engine: pure decisions on stages, cadence, quiet hours and suppression.

Nothing here reads a clock, the environment or the network: `now` and state come in as
arguments, a `Decision` (with its reason code) or a list of planned messages goes out. The
frequency caps, which need Redis, live in `outreach.caps`.
"""

from __future__ import annotations

import datetime as dt

from outreach.domain import LoanState
from outreach.policy.cadence import (
    PlanItem,
    next_plan_change,
    plan,
    plan_items,
    reply_message,
)
from outreach.policy.dunning import (
    ages_alike,
    choose_channel,
    delinquency_cycle,
    effective_days_past_due,
)
from outreach.policy.gate import campaign_end, counts_against_caps, gate, obeys_quiet_hours
from outreach.policy.hours import (
    contact_rules,
    earliest_allowed,
    next_allowed_instant,
    when_allowed,
    window_closes_at,
)
from outreach.policy.loader import PolicyError, load_policy, load_policy_text
from outreach.policy.model import (
    CapRule,
    ContactRules,
    DailyWindow,
    EventRule,
    Jurisdiction,
    Lender,
    Policy,
    Stage,
    Step,
)
from outreach.policy.zones import borrower_countries, candidate_zones, phone_facts_text


def days_past_due_at(policy: Policy, loan: LoanState, now: dt.datetime) -> int:
    """The loan's days past due at `now`, aged from when the loan system last reported it."""
    return effective_days_past_due(policy, loan, now)


__all__ = [
    "CapRule",
    "ContactRules",
    "DailyWindow",
    "EventRule",
    "Jurisdiction",
    "Lender",
    "PlanItem",
    "Policy",
    "PolicyError",
    "Stage",
    "Step",
    "ages_alike",
    "borrower_countries",
    "campaign_end",
    "candidate_zones",
    "choose_channel",
    "contact_rules",
    "counts_against_caps",
    "days_past_due_at",
    "delinquency_cycle",
    "earliest_allowed",
    "effective_days_past_due",
    "gate",
    "load_policy",
    "load_policy_text",
    "next_allowed_instant",
    "next_plan_change",
    "obeys_quiet_hours",
    "phone_facts_text",
    "plan",
    "plan_items",
    "reply_message",
    "when_allowed",
    "window_closes_at",
]
