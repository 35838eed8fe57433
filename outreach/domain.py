"""Plain data shared by every layer: no I/O, no clock, no environment."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"

    @property
    def other(self) -> Channel:
        return Channel.EMAIL if self is Channel.SMS else Channel.SMS


class Status(StrEnum):
    SCHEDULED = "scheduled"
    DEFERRED = "deferred"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"

    @property
    def is_pending(self) -> bool:
        """Not yet handed to a provider, so it may still be cancelled."""
        return self in PENDING_STATUSES

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


PENDING_STATUSES = frozenset({Status.SCHEDULED, Status.DEFERRED, Status.QUEUED})
FINAL_STATUSES = frozenset(
    {Status.DELIVERED, Status.UNDELIVERED, Status.FAILED, Status.SUPPRESSED, Status.CANCELLED}
)

# Forward-only order of the delivery part of the life cycle. A status callback may only move a
# message to a higher rank; `failed`/`undelivered` and `delivered` are terminal peers.
DELIVERY_RANK: dict[Status, int] = {
    Status.SCHEDULED: 0,
    Status.DEFERRED: 0,
    Status.QUEUED: 1,
    Status.SENDING: 2,
    Status.SENT: 3,
    Status.DELIVERED: 4,
    Status.UNDELIVERED: 4,
    Status.FAILED: 4,
    Status.SUPPRESSED: 4,
    Status.CANCELLED: 4,
}


class Purpose(StrEnum):
    DUNNING = "dunning"
    PROMISE_REMINDER = "promise_reminder"
    BROKEN_PROMISE = "broken_promise"
    INSTALMENT_REMINDER = "instalment_reminder"
    VISIT_NOTICE = "visit_notice"
    PAYMENT_CONFIRMATION = "payment_confirmation"
    OPTOUT_CONFIRMATION = "optout_confirmation"
    OPTIN_CONFIRMATION = "optin_confirmation"
    HELP_REPLY = "help_reply"
    CEASE_CONFIRMATION = "cease_confirmation"
    CAMPAIGN = "campaign"

    @property
    def is_direct_reply(self) -> bool:
        """Answers to something the borrower just did: sent at once, in any hour, uncapped."""
        return self in DIRECT_REPLY_PURPOSES

    @property
    def is_collection(self) -> bool:
        """Messages that pursue the debt; these pause for disputes, promises and plans."""
        return self in COLLECTION_PURPOSES


DIRECT_REPLY_PURPOSES = frozenset(
    {Purpose.OPTOUT_CONFIRMATION, Purpose.OPTIN_CONFIRMATION, Purpose.HELP_REPLY}
)
COLLECTION_PURPOSES = frozenset(
    {
        Purpose.DUNNING,
        Purpose.PROMISE_REMINDER,
        Purpose.BROKEN_PROMISE,
        Purpose.INSTALMENT_REMINDER,
        Purpose.VISIT_NOTICE,
        Purpose.CAMPAIGN,
    }
)

# Messages about a loan that the cadence plans from the loan's state: without that state they
# cannot be re-checked, and a pending one the plan no longer lists is cancelled.
LOAN_PURPOSES = frozenset(
    {
        Purpose.DUNNING,
        Purpose.PROMISE_REMINDER,
        Purpose.BROKEN_PROMISE,
        Purpose.INSTALMENT_REMINDER,
        Purpose.VISIT_NOTICE,
        Purpose.PAYMENT_CONFIRMATION,
    }
)


class CampaignStatus(StrEnum):
    """draft → scheduled (launched, its start ahead) → running ↔ paused → completed or
    cancelled (SPEC §8)."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


CAMPAIGN_STATUSES = tuple(status.value for status in CampaignStatus)


class Restriction(StrEnum):
    CEASE_CONTACT = "cease_contact"
    DISPUTE = "dispute"
    BANKRUPTCY = "bankruptcy"
    DECEASED = "deceased"
    ATTORNEY = "attorney"
    INCONVENIENT_TIMES = "inconvenient_times"


class ClosedReason(StrEnum):
    PAID_OFF = "paid_off"
    SETTLED = "settled"
    CHARGED_OFF = "charged_off"
    SOLD = "sold"


class Reason(StrEnum):
    """Reason codes carried from a decision to the message timeline, the API and the UI."""

    # planning and dispatch
    PLANNED = "planned"
    DUE = "due"
    CLAIMED = "claimed"
    SENT = "sent"
    ACCEPTED = "accepted"
    FALLBACK = "channel_fallback"
    # waiting
    QUIET_HOURS = "quiet_hours"
    HOLIDAY = "holiday"
    INCONVENIENT_TIME = "inconvenient_time"
    FREQUENCY_CAP = "frequency_cap"
    CHECK_UNAVAILABLE = "check_unavailable"
    RATE_LIMITED = "rate_limited"
    # an accepted webhook event about the borrower or loan is not applied yet (pending for
    # more than a few seconds, failed, or a dead letter): the state the gate reads may be stale
    EVENT_PENDING = "event_pending"
    # suppression
    NO_CONVENIENT_TIME = "no_convenient_time"
    NO_CONSENT = "no_consent"
    NO_ADDRESS = "no_address"
    OPTED_OUT = "opted_out"
    CEASE_CONTACT = "cease_contact"
    BANKRUPTCY = "bankruptcy"
    DECEASED = "deceased"
    ATTORNEY = "attorney"
    DISPUTE = "dispute"
    LOAN_CLOSED = "loan_closed"
    LOAN_CURRENT = "loan_current"
    PROMISE_PENDING = "promise_pending"
    PAYMENT_PLAN_ACTIVE = "payment_plan_active"
    INVALID_ADDRESS = "invalid_address"
    STAGE_CHANGED = "stage_changed"
    SUPERSEDED = "superseded"
    OPS_CANCELLED = "ops_cancelled"
    PROMISE_KEPT = "promise_kept"
    INSTALMENT_PAID = "instalment_paid"
    VISIT_CANCELLED = "visit_cancelled"
    # the moment a follow-up was for has passed (promise date, instalment date, visit)
    EXPIRED = "expired"
    # the payment plan an instalment reminder is about has a missed instalment
    PLAN_BROKEN = "plan_broken"
    ALREADY_CONFIRMED = "already_confirmed"
    CAMPAIGN_PAUSED = "campaign_paused"
    CAMPAIGN_CANCELLED = "campaign_cancelled"
    CAMPAIGN_ENDED = "campaign_ended"
    # the rendered text failed the lint at dispatch (forbidden language, a foreign link, …)
    CONTENT_REJECTED = "content_rejected"
    # the template did not render at dispatch (a missing part or a broken template)
    RENDER_ERROR = "render_error"
    # its dispatch failed the same way, on an error retrying cannot cure (a bug, a row the
    # code cannot read), DISPATCH_ATTEMPTS times: dead-lettered, for a person (worker.py)
    DISPATCH_FAILED = "dispatch_failed"
    # provider outcomes
    PROVIDER_ERROR = "provider_error"
    PROVIDER_RETRY = "provider_retry"
    PROVIDER_STATUS = "provider_status"
    RECONCILED = "reconciled"
    # a worker stopped while handing it to a provider that cannot be asked (SMTP)
    OUTCOME_UNKNOWN = "outcome_unknown"
    # inbound
    NEEDS_HUMAN = "needs_human"


class DecisionKind(StrEnum):
    SEND = "send"
    WAIT = "wait"
    SUPPRESS = "suppress"


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer of a policy check: send now, wait until an instant, or suppress — with why."""

    kind: DecisionKind
    reason: Reason
    until: dt.datetime | None = None
    detail: dict[str, str] = field(default_factory=dict)

    @classmethod
    def send(cls, reason: Reason = Reason.DUE, **detail: str) -> Decision:
        return cls(DecisionKind.SEND, reason, None, dict(detail))

    @classmethod
    def wait(cls, reason: Reason, until: dt.datetime, **detail: str) -> Decision:
        return cls(DecisionKind.WAIT, reason, until, dict(detail))

    @classmethod
    def suppress(cls, reason: Reason, **detail: str) -> Decision:
        return cls(DecisionKind.SUPPRESS, reason, None, dict(detail))

    @property
    def may_send(self) -> bool:
        return self.kind is DecisionKind.SEND

    def detail_text(self) -> str:
        parts = dict(self.detail)
        if self.until is not None:
            parts.setdefault("until", self.until.astimezone(dt.UTC).isoformat())
        return " ".join(f"{key}={value}" for key, value in sorted(parts.items()))


@dataclass(frozen=True, slots=True)
class Address:
    country: str | None = None
    region: str | None = None
    city: str | None = None
    postal_code: str | None = None


@dataclass(frozen=True, slots=True)
class InconvenientWindow:
    """A borrower-declared time they must not be contacted, in their local time.

    `weekdays` uses ISO numbering (1 = Monday); empty means every day.
    """

    start: dt.time
    end: dt.time
    weekdays: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class BorrowerState:
    id: str
    name: str
    locale: str
    phones: tuple[str, ...] = ()
    email: str | None = None
    timezone: str | None = None
    address: Address | None = None
    consent_sms: bool = False
    consent_email: bool = False
    tags: frozenset[str] = frozenset()
    # recipient (E.164 or email, lower-cased) -> opted out
    opted_out: frozenset[str] = frozenset()
    invalid_addresses: frozenset[str] = frozenset()
    active_restrictions: frozenset[Restriction] = frozenset()
    inconvenient_windows: tuple[InconvenientWindow, ...] = ()
    # what each phone number says of where the borrower is, as recorded when the number was
    # stored (`policy.zones.phone_facts_text`; None or missing: worked out when asked)
    phone_facts: tuple[str | None, ...] = ()

    def recipient(self, channel: Channel) -> str | None:
        """The address a message on this channel goes to, if the borrower has one at all."""
        if channel is Channel.SMS:
            return self.phones[0] if self.phones else None
        return self.email

    def consents_to(self, channel: Channel) -> bool:
        return self.consent_sms if channel is Channel.SMS else self.consent_email


@dataclass(frozen=True, slots=True)
class Promise:
    id: str
    amount: Decimal
    promised_date: dt.date
    created_at: dt.datetime
    # set once payments received on or before the promised date cover the amount
    kept: bool = False


@dataclass(frozen=True, slots=True)
class Instalment:
    due_date: dt.date
    amount: Decimal
    paid: bool = False


@dataclass(frozen=True, slots=True)
class PaymentPlan:
    id: str
    instalments: tuple[Instalment, ...]
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class FieldVisit:
    id: str
    visit_at: dt.datetime
    collector_name: str
    collector_id: str


@dataclass(frozen=True, slots=True)
class Payment:
    id: str
    amount: Decimal
    paid_at: dt.datetime
    amount_due_after: Decimal


@dataclass(frozen=True, slots=True)
class LoanState:
    id: str
    borrower_id: str
    product: str
    currency: str
    amount_due: Decimal
    balance: Decimal
    days_past_due: int
    due_date: dt.date
    account_number: str
    # the instant `days_past_due` was true at; the policy ages it forward from here
    as_of: dt.datetime
    closed_reason: ClosedReason | None = None
    promises: tuple[Promise, ...] = ()
    plans: tuple[PaymentPlan, ...] = ()
    visits: tuple[FieldVisit, ...] = ()
    payments: tuple[Payment, ...] = ()

    @property
    def is_closed(self) -> bool:
        return self.closed_reason is not None

    @property
    def is_current(self) -> bool:
        """Nothing owed now: the loan needs no collection messages."""
        return self.amount_due <= 0


@dataclass(frozen=True, slots=True)
class PlannedMessage:
    """A message the policy wants to exist; its `key` makes planning idempotent.

    `refs` names what the message is about beyond the loan (`promise_id`, `plan_id`,
    `instalment_due_date`, `visit_id`, `payment_id`, `step`), so the final gate can re-check it
    against the latest state.
    """

    key: str
    purpose: Purpose
    borrower_id: str
    loan_id: str | None
    stage: str | None
    channel: Channel
    template: str
    send_at: dt.datetime
    fallback_from: Channel | None = None
    campaign_id: str | None = None
    # the campaign arm (variant) a campaign message belongs to
    variant: str | None = None
    refs: dict[str, str] = field(default_factory=dict)
