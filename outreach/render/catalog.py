"""What each shipped message is about: the facts lint and sample data are built from.

The policy decides *when* a message goes out; this table says what a message *must say* to be
lawful and useful (who is writing, the opt-out, the amount it is about) and which optional
parts of the render context it reads. A template not listed here (a campaign template added
by ops, say) is treated as a collection message that needs the opt-out and reads only the
base context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from outreach.domain import Channel, Purpose

BOTH_CHANNELS: Final = frozenset({Channel.SMS, Channel.EMAIL})

# Optional blocks of the render context; a template may read only the ones its spec names.
OPTIONAL_PARTS: Final = frozenset({"promise", "instalment", "plan", "visit", "payment"})


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    name: str
    purpose: Purpose
    # carries "Reply STOP to opt out" / the unsubscribe link
    requires_opt_out: bool = True
    # dotted context paths of amounts the message states; each must appear, formatted
    amounts: tuple[str, ...] = ()
    # further amounts the email states (an SMS has room only for what is due)
    email_amounts: tuple[str, ...] = ()
    # optional context parts it reads (promise, instalment, visit, payment)
    parts: frozenset[str] = frozenset()
    channels: frozenset[Channel] = BOTH_CHANNELS
    # sample data: the stage and days past due a borrower typically has when it is sent
    stage: str | None = None
    days_past_due: int = 5


def _dunning(name: str, stage: str, days_past_due: int, *email_amounts: str) -> TemplateSpec:
    return TemplateSpec(
        name,
        Purpose.DUNNING,
        amounts=("loan.amount_due",),
        email_amounts=email_amounts,
        stage=stage,
        days_past_due=days_past_due,
    )


_SPECS: Final = (
    _dunning("pre_due_reminder", "pre_due", -3),
    _dunning("early_first_notice", "early", 2),
    _dunning("early_follow_up_1", "early", 7),
    _dunning("early_follow_up_2", "early", 12),
    _dunning("early_hardship", "early", 5),
    _dunning("negotiation_invitation", "negotiation", 18),
    _dunning("negotiation_follow_up", "negotiation", 30),
    _dunning("negotiation_hardship", "negotiation", 25),
    _dunning("late_formal_notice", "late", 46, "loan.balance"),
    _dunning("late_follow_up", "late", 60),
    _dunning("pre_legal_notice", "pre_legal", 92, "loan.balance"),
    TemplateSpec(
        "promise_reminder",
        Purpose.PROMISE_REMINDER,
        amounts=("promise.amount",),
        parts=frozenset({"promise"}),
        stage="negotiation",
        days_past_due=20,
    ),
    TemplateSpec(
        "broken_promise",
        Purpose.BROKEN_PROMISE,
        amounts=("promise.amount", "loan.amount_due"),
        parts=frozenset({"promise"}),
        stage="negotiation",
        days_past_due=23,
    ),
    TemplateSpec(
        "instalment_reminder",
        Purpose.INSTALMENT_REMINDER,
        amounts=("instalment.amount",),
        parts=frozenset({"instalment"}),
        stage="negotiation",
        days_past_due=28,
    ),
    TemplateSpec(
        "visit_notice",
        Purpose.VISIT_NOTICE,
        parts=frozenset({"visit"}),
        stage="late",
        days_past_due=52,
    ),
    TemplateSpec(
        "payment_confirmation",
        Purpose.PAYMENT_CONFIRMATION,
        amounts=("payment.amount",),
        parts=frozenset({"payment"}),
        stage="early",
        days_past_due=6,
    ),
    # After an opt-out or a cease-contact request, telling the borrower how to opt out again
    # would be noise; the opt-in confirmation and the HELP reply do say how to stop.
    TemplateSpec("optout_confirmation", Purpose.OPTOUT_CONFIRMATION, requires_opt_out=False),
    TemplateSpec("optin_confirmation", Purpose.OPTIN_CONFIRMATION),
    TemplateSpec("help_reply", Purpose.HELP_REPLY, channels=frozenset({Channel.SMS})),
    TemplateSpec("cease_confirmation", Purpose.CEASE_CONFIRMATION, requires_opt_out=False),
    # campaign messages (SPEC §8: folders named campaign_<name>), sent to a segment by ops
    TemplateSpec(
        "campaign_hardship_relief",
        Purpose.CAMPAIGN,
        amounts=("loan.amount_due",),
        stage="early",
        days_past_due=12,
    ),
    TemplateSpec(
        "campaign_restructuring_offer",
        Purpose.CAMPAIGN,
        amounts=("loan.amount_due",),
        email_amounts=("loan.balance",),
        stage="negotiation",
        days_past_due=35,
    ),
)

CATALOG: Final[dict[str, TemplateSpec]] = {spec.name: spec for spec in _SPECS}

SHIPPED_TEMPLATES: Final = tuple(CATALOG)


def spec_for(template: str) -> TemplateSpec:
    """The known spec, or the cautious default for a template this table does not list."""
    return CATALOG.get(template) or TemplateSpec(template, Purpose.CAMPAIGN)


def shipped_references() -> dict[str, set[Channel]]:
    """Every shipped template with the channels it exists for, as a policy would reference it."""
    return {spec.name: set(spec.channels) for spec in _SPECS}
