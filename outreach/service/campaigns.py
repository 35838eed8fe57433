"""Campaigns (SPEC §8): ops set up a message for a segment of the book, preview it, launch,
pause, resume or cancel it, and read how it is doing.

A campaign is a source of planned messages like a cadence. Launching turns its segment into
message rows (`purpose=campaign`) through the planner's `plan_message`, in batches read and
written together, and from then on the same final gate, caps, rendering and dispatch send
them. A preview runs exactly that planning without writing anything, so what a preview says
and what launching does cannot disagree.

Arms (variants and the holdout group) are drawn from a stable hash of the campaign id and
the borrower id: random across borrowers, the same every time for one. Pause, cancel and the
throttle hold at dispatch through `outreach.campaign_control` (Redis), so they hold across
every worker; the database keeps the status, the control only carries it to hand-over.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from sqlalchemy.orm import Session, sessionmaker

from outreach import policy as pol
from outreach.campaign_control import CampaignControl
from outreach.domain import (
    PENDING_STATUSES,
    BorrowerState,
    CampaignStatus,
    Channel,
    Decision,
    DecisionKind,
    LoanState,
    PlannedMessage,
    Purpose,
    Reason,
    Status,
)
from outreach.errors import PermanentError, RenderError, StoreUnavailable
from outreach.policy.cap_forecast import cap_frees_at
from outreach.policy.dunning import aged_days_past_due
from outreach.render import Renderer
from outreach.render.catalog import spec_for
from outreach.service.context import message_context
from outreach.service.messages import new_id
from outreach.service.planner import plan_message, withhold
from outreach.store import audit
from outreach.store import campaigns as store
from outreach.store import models as m
from outreach.store.borrowers import load_borrowers, load_loans
from outreach.store.db import transaction
from outreach.store.messages import CapHistory, NewMessage, detail_text, insert_new

# borrowers planned together: their state read in one set of queries, their rows in one insert
PLAN_BATCH = 5000
SAMPLES_PER_VARIANT_AND_LOCALE = 2
MAX_THROTTLE_PER_MINUTE = 100_000
MAX_HOLDOUT_PERCENT = 50
DEFAULT_VARIANT = "default"
CAMPAIGN_ID = re.compile(r"[A-Za-z0-9_.:-]{1,40}")
# the arm of the borrowers held out (no variant may take the name)
HOLDOUT_ARM = "holdout"

CREATE_FIELDS = frozenset(
    {
        "name",
        "channel",
        "template",
        "segment",
        "start_at",
        "end_at",
        "throttle_per_minute",
        "variants",
        "holdout_percent",
    }
)
SEGMENT_FIELDS = frozenset(
    {"stages", "dpd_min", "dpd_max", "amount_min", "amount_max", "products", "locales", "tags"}
)


# the statuses a campaign's messages may still go out in
LIVE_STATUSES = (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING)
FINISHED_STATUSES = (CampaignStatus.COMPLETED, CampaignStatus.CANCELLED)
_CAP_HISTORY = CapHistory([p.value for p in Purpose if pol.counts_against_caps(p)])
_LONGEST_CAP_WINDOW = dt.timedelta(days=7)


# -- errors -----------------------------------------------------------------------------------


class CampaignInvalid(PermanentError):
    """A campaign body that cannot be accepted: every field at fault, with why."""

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{name}: {detail}" for name, detail in self.errors))


class CampaignNotFound(PermanentError):
    def __init__(self, campaign_id: str) -> None:
        super().__init__(f"no campaign {campaign_id}")


class CampaignConflict(PermanentError):
    """A transition the campaign's status does not allow (409)."""

    def __init__(self, campaign_id: str, status: str, action: str) -> None:
        self.status = status
        # what could not be done, in the past participle: `paused`, `launched`, …
        self.action = action
        super().__init__(f"campaign {campaign_id} is {status}: it cannot be {action}")


# -- what ops set -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """Which loans a campaign reaches; every filter given must hold."""

    stages: tuple[str, ...] | None = None
    dpd_min: int | None = None
    dpd_max: int | None = None
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
    products: tuple[str, ...] | None = None
    locales: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {}
        for name in ("stages", "products", "locales", "tags"):
            value = getattr(self, name)
            if value is not None:
                document[name] = list(value)
        for name in ("dpd_min", "dpd_max"):
            value = getattr(self, name)
            if value is not None:
                document[name] = value
        for name in ("amount_min", "amount_max"):
            value = getattr(self, name)
            if value is not None:
                document[name] = str(value)
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Segment:
        def listed(name: str) -> tuple[str, ...] | None:
            value = document.get(name)
            return tuple(value) if value is not None else None

        def amount(name: str) -> Decimal | None:
            value = document.get(name)
            return Decimal(value) if value is not None else None

        return cls(
            stages=listed("stages"),
            dpd_min=document.get("dpd_min"),
            dpd_max=document.get("dpd_max"),
            amount_min=amount("amount_min"),
            amount_max=amount("amount_max"),
            products=listed("products"),
            locales=listed("locales"),
            tags=listed("tags"),
        )


@dataclass(frozen=True)
class Variant:
    name: str
    template: str
    weight: float


@dataclass(frozen=True)
class CampaignSpec:
    """A campaign as ops asked for it, checked."""

    name: str
    channel: Channel
    variants: tuple[Variant, ...]
    segment: Segment
    start_at: dt.datetime
    end_at: dt.datetime | None = None
    throttle_per_minute: int | None = None
    holdout_percent: int = 0
    # the one template of a campaign without variants
    template: str | None = None

    @classmethod
    def of(cls, row: m.Campaign) -> CampaignSpec:
        variants = tuple(
            Variant(item["name"], item["template"], float(item["weight"]))
            for item in (row.variants or [])
        ) or (Variant(DEFAULT_VARIANT, row.template, 1.0),)
        return cls(
            name=row.name,
            channel=Channel(row.channel),
            variants=variants,
            segment=Segment.from_json(row.segment or {}),
            start_at=row.start_at,
            end_at=row.end_at,
            throttle_per_minute=row.throttle_per_minute,
            holdout_percent=row.holdout_percent,
            template=row.template if not row.variants else None,
        )


class _Fields:
    """Collects every fault of a body before any is reported."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def fail(self, name: str, detail: str) -> None:
        self.errors.append((name, detail))

    def text(self, value: Any, name: str, *, longest: int = 200) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.fail(name, "must be non-empty text")
            return None
        if len(value) > longest:
            self.fail(name, f"must be at most {longest} characters")
            return None
        return value.strip()

    def integer(self, value: Any, name: str, low: int, high: int) -> int | None:
        if type(value) is float and value.is_integer():
            value = int(value)  # JSON has one kind of number: 60.0 is the integer 60
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"must be a whole number, not {value!r}")
            return None
        if not low <= value <= high:
            self.fail(name, f"must be between {low} and {high}, not {value}")
            return None
        return value

    def amount(self, value: Any, name: str) -> Decimal | None:
        if not isinstance(value, str):
            self.fail(name, 'must be a decimal string such as "100.00"')
            return None
        try:
            amount = Decimal(value)
        except InvalidOperation:
            self.fail(name, f"is not a decimal amount: {value!r}")
            return None
        if not amount.is_finite() or amount < 0:
            self.fail(name, "must be a finite amount, zero or more")
            return None
        return amount

    def texts(self, value: Any, name: str) -> tuple[str, ...] | None:
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            self.fail(name, "must be a list of non-empty text")
            return None
        if not value:
            self.fail(name, "must not be empty (leave it out to admit every value)")
            return None
        return tuple(dict.fromkeys(value))

    def instant(self, value: Any, name: str) -> dt.datetime | None:
        if not isinstance(value, str):
            self.fail(name, "must be an RFC 3339 time such as 2026-12-03T09:00:00Z")
            return None
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            self.fail(name, f"is not an RFC 3339 time: {value!r}")
            return None
        if moment.tzinfo is None or moment.utcoffset() is None:
            self.fail(name, "needs a UTC offset, e.g. 2026-12-03T09:00:00Z")
            return None
        return moment.astimezone(dt.UTC)


def parse_campaign(
    body: Any, policy: pol.Policy, renderer: Renderer, now: dt.datetime
) -> CampaignSpec:
    """A create body (SPEC §8) checked against the policy and the templates; raises
    `CampaignInvalid` naming every field at fault."""
    fields = _Fields()
    if not isinstance(body, Mapping):
        raise CampaignInvalid([("body", "must be a JSON object")])
    for unknown in sorted(set(body) - CREATE_FIELDS):
        fields.fail(unknown, "is not a campaign field")
    name = fields.text(body.get("name"), "name")
    channel: Channel | None = None
    raw_channel = body.get("channel")
    if raw_channel in (Channel.SMS.value, Channel.EMAIL.value):
        channel = Channel(raw_channel)
    else:
        fields.fail("channel", f"must be sms or email, not {raw_channel!r}")
    segment = _segment(fields, body.get("segment", {}), policy)
    start_at = fields.instant(body.get("start_at"), "start_at") if "start_at" in body else None
    if "start_at" not in body:
        fields.fail("start_at", "is required")
    end_at = None
    if body.get("end_at") is not None:
        end_at = fields.instant(body["end_at"], "end_at")
        if end_at is not None and start_at is not None and end_at <= start_at:
            fields.fail("end_at", "must be after start_at")
        elif end_at is not None and end_at <= now:
            fields.fail("end_at", "is in the past")
    throttle = None
    if body.get("throttle_per_minute") is not None:
        throttle = fields.integer(
            body["throttle_per_minute"], "throttle_per_minute", 1, MAX_THROTTLE_PER_MINUTE
        )
    holdout = 0
    if body.get("holdout_percent") is not None:
        holdout = (
            fields.integer(body["holdout_percent"], "holdout_percent", 0, MAX_HOLDOUT_PERCENT) or 0
        )
    template = body.get("template")
    variants: list[Variant] = []
    reached = segment.locales if segment and segment.locales else policy.locales
    if body.get("variants") is not None:
        if template is not None:
            fields.fail("template", "give either template or variants, not both")
        variants = _variants(fields, body["variants"], channel, reached, renderer)
    elif template is None:
        fields.fail("template", "is required unless variants are given")
    else:
        checked = _template(fields, template, "template", channel, reached, renderer)
        if checked is not None:
            variants = [Variant(DEFAULT_VARIANT, checked, 1.0)]
    if fields.errors:
        raise CampaignInvalid(fields.errors)
    assert name is not None and channel is not None and start_at is not None
    assert segment is not None
    return CampaignSpec(
        name=name,
        channel=channel,
        variants=tuple(variants),
        segment=segment,
        start_at=start_at,
        end_at=end_at,
        throttle_per_minute=throttle,
        holdout_percent=holdout,
        template=template if body.get("variants") is None else None,
    )


def _segment(fields: _Fields, raw: Any, policy: pol.Policy) -> Segment | None:
    if not isinstance(raw, Mapping):
        fields.fail("segment", "must be an object")
        return None
    for unknown in sorted(set(raw) - SEGMENT_FIELDS):
        fields.fail(f"segment.{unknown}", "is not a segment filter")
    values: dict[str, Any] = {}
    known_stages = [stage.name for stage in policy.stages]
    for name in ("stages", "products", "locales", "tags"):
        if raw.get(name) is not None:
            values[name] = fields.texts(raw[name], f"segment.{name}")
    for stage in values.get("stages") or ():
        if stage not in known_stages:
            fields.fail(
                "segment.stages", f"unknown stage {stage!r} (known: {', '.join(known_stages)})"
            )
    for locale in values.get("locales") or ():
        if locale not in policy.locales:
            fields.fail(
                "segment.locales", f"{locale!r} is not served (served: {', '.join(policy.locales)})"
            )
    for name in ("dpd_min", "dpd_max"):
        if raw.get(name) is not None:
            values[name] = fields.integer(raw[name], f"segment.{name}", -10_000, 100_000)
    for name in ("amount_min", "amount_max"):
        if raw.get(name) is not None:
            values[name] = fields.amount(raw[name], f"segment.{name}")
    low, high = values.get("dpd_min"), values.get("dpd_max")
    if low is not None and high is not None and low > high:
        fields.fail("segment.dpd_min", f"is greater than dpd_max ({low} > {high})")
    low, high = values.get("amount_min"), values.get("amount_max")
    if low is not None and high is not None and low > high:
        fields.fail("segment.amount_min", f"is greater than amount_max ({low} > {high})")
    return Segment(**values)


def _template(
    fields: _Fields,
    value: Any,
    name: str,
    channel: Channel | None,
    locales: Sequence[str],
    renderer: Renderer,
) -> str | None:
    if not isinstance(value, str) or not value:
        fields.fail(name, "must name a template")
        return None
    if value not in renderer.templates():
        fields.fail(name, f"unknown template {value!r}")
        return None
    if spec_for(value).purpose is not Purpose.CAMPAIGN:
        fields.fail(name, f"{value!r} is not a campaign template (folders named campaign_<name>)")
        return None
    if channel is None:
        return value
    if not any(renderer.has(value, channel, locale) for locale in renderer.locales(value)):
        fields.fail(name, f"{value!r} has no {channel} part: it cannot be sent by {channel}")
        return None
    missing = [locale for locale in locales if not renderer.has(value, channel, locale)]
    if missing:
        fields.fail(
            name,
            f"{value!r} has no {channel} part for {', '.join(missing)}, which the segment reaches",
        )
        return None
    return value


def _variants(
    fields: _Fields,
    raw: Any,
    channel: Channel | None,
    locales: Sequence[str],
    renderer: Renderer,
) -> list[Variant]:
    if not isinstance(raw, list) or not raw:
        fields.fail("variants", "must be a non-empty list of {name, template, weight}")
        return []
    variants: list[Variant] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        where = f"variants[{index}]"
        if not isinstance(item, Mapping):
            fields.fail(where, "must be an object with name, template and weight")
            continue
        for unknown in sorted(set(item) - {"name", "template", "weight"}):
            fields.fail(f"{where}.{unknown}", "is not a variant field")
        name = fields.text(item.get("name"), f"{where}.name", longest=100)
        if name == HOLDOUT_ARM:
            fields.fail(f"{where}.name", f"{HOLDOUT_ARM!r} names the holdout group")
        elif name is not None and name in seen:
            fields.fail(f"{where}.name", f"{name!r} is used by another variant")
        if name is not None:
            seen.add(name)
        template = _template(
            fields, item.get("template"), f"{where}.template", channel, locales, renderer
        )
        weight = item.get("weight", 1)
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not (math.isfinite(weight) and weight > 0)
        ):
            fields.fail(f"{where}.weight", f"must be a positive number, not {weight!r}")
            weight = None
        if name is not None and template is not None and weight is not None:
            variants.append(Variant(name, template, float(weight)))
    return variants


# -- arms -------------------------------------------------------------------------------------


def unit_draw(campaign_id: str, borrower_id: str, purpose: str) -> float:
    """A number in [0, 1) drawn from the campaign and the borrower: uniform across
    borrowers, the same for the same pair every time. `purpose` keeps draws apart."""
    digest = hashlib.sha256(f"{purpose}\x1f{campaign_id}\x1f{borrower_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def arm_of(spec: CampaignSpec, campaign_id: str, borrower_id: str) -> tuple[Variant, bool]:
    """The borrower's variant, and whether the borrower falls in the holdout group (which,
    for an eligible borrower, means no message; the variant then says which message a
    borrower not eligible would have had)."""
    draw = unit_draw(campaign_id, borrower_id, "arm")
    share = spec.holdout_percent / 100
    held_out = draw < share
    within = draw / share if held_out else (draw - share) / (1 - share)
    total = sum(variant.weight for variant in spec.variants)
    point = within * total
    for variant in spec.variants:
        if point < variant.weight:
            return variant, held_out
        point -= variant.weight
    return spec.variants[-1], held_out


# -- targeting and planning -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A borrower the segment reaches, and the loan the message is about."""

    borrower_id: str
    loan_id: str
    stage: str | None
    days_past_due: int
    # the loan has a promise or a payment plan, which the gate reads
    has_terms: bool = False


def targets(
    session: Session, policy: pol.Policy, segment: Segment, now: dt.datetime
) -> Iterator[Target]:
    """One per borrower: the matching loan with the most days past due (then the most owed,
    then the first by id), on the state at `now`; in borrower order."""
    wanted_tags = frozenset(segment.tags or ())
    locales = frozenset(segment.locales) if segment.locales else None
    stages = frozenset(segment.stages) if segment.stages else None
    best: store.Candidate | None = None
    best_key: tuple[int, Decimal] | None = None
    best_stage: str | None = None
    best_terms = False
    borrower: str | None = None
    locale_of: dict[str, str] = {}
    for candidate in store.segment_candidates(
        session,
        products=segment.products,
        amount_min=segment.amount_min,
        amount_max=segment.amount_max,
        with_locale=locales is not None,
        with_tags=bool(wanted_tags),
    ):
        if candidate.borrower_id != borrower:
            if best is not None and best_key is not None:
                yield Target(best.borrower_id, best.loan_id, best_stage, best_key[0], best_terms)
            borrower, best, best_key, best_stage = candidate.borrower_id, None, None, None
        if wanted_tags and not wanted_tags <= frozenset(candidate.tags or ()):
            continue
        if locales is not None:
            served = locale_of.get(candidate.locale)
            if served is None:
                served = locale_of[candidate.locale] = policy.locale_for(candidate.locale)
            if served not in locales:
                continue
        dpd = aged_days_past_due(policy, candidate.days_past_due, candidate.as_of, True, now)
        if segment.dpd_min is not None and dpd < segment.dpd_min:
            continue
        if segment.dpd_max is not None and dpd > segment.dpd_max:
            continue
        stage = policy.stage_for(dpd)
        if stages is not None and stage not in stages:
            continue
        key = (dpd, candidate.amount_due)
        if best_key is None or key > best_key:
            best, best_key, best_stage, best_terms = candidate, key, stage, candidate.has_terms
    if best is not None and best_key is not None:
        yield Target(best.borrower_id, best.loan_id, best_stage, best_key[0], best_terms)


@dataclass
class PlannedTarget:
    """What planning decided for one targeted borrower; with the states it was decided on
    when they were read for it (not for a borrower planned alike with another)."""

    target: Target
    variant: Variant
    held_out: bool
    message: NewMessage
    borrower: BorrowerState | None = None
    loan: LoanState | None = None

    @property
    def eligible(self) -> bool:
        return Status(self.message.status) in PENDING_STATUSES


def message_key(campaign_id: str, borrower_id: str) -> str:
    return f"campaign:{campaign_id}:{borrower_id}"


def _send_at(
    spec: CampaignSpec, campaign_id: str, borrower_id: str, now: dt.datetime, targeted: int
) -> dt.datetime:
    """When the borrower's message is planned for: the start (or now, once started); spread
    at random over the time the throttle needs for everyone, for a throttled campaign."""
    start = max(spec.start_at, now)
    if spec.throttle_per_minute is None or targeted <= spec.throttle_per_minute:
        return start
    minutes = targeted / spec.throttle_per_minute
    offset = unit_draw(campaign_id, borrower_id, "pace") * minutes
    return start + dt.timedelta(minutes=offset)


# a key of what the final gate reads of a borrower and loan for a campaign message (see
# `_alike`); borrowers with equal keys are decided alike
AlikeKey = tuple[object, ...]


@dataclass
class PlanMemory:
    """What one planning run of a campaign learns as it goes: the decision taken for each
    kind of borrower (by `_alike` key: the message planned for the first of them, and the
    state it was decided on), and the addresses on the opt-out and invalid lists."""

    decided: dict[AlikeKey, tuple[NewMessage, BorrowerState]] = field(default_factory=dict)
    listed: frozenset[str] | None = None


def _alike(
    facts: store.BorrowerFacts | None, target: Target, channel: Channel, listed: frozenset[str]
) -> AlikeKey | None:
    """Everything the final gate reads of a borrower and a loan for a campaign message sent
    at one instant, when that is all it reads; None when it reads more (a promise or a plan
    on the loan, inconvenient times, an address on an opt-out or invalid list), and the
    borrower is planned on its own state.

    Read from the rows: the zones and countries (the explicit zone, the address, what each
    number says), the restrictions in force, whether there is an address on the channel and
    consent to it. Two borrowers with equal keys get the same decision, the same deferral
    and the same caps rules: planning decides once per key."""
    if facts is None or target.has_terms or "inconvenient_times" in facts.restrictions:
        return None
    addresses = [phone.strip() for phone in facts.phones]
    if facts.email:
        addresses.append(facts.email.strip().lower())
    if any(address in listed for address in addresses):
        return None
    if channel is Channel.SMS:
        reachable = bool(facts.phones and facts.phones[0].strip())
        consent = facts.consent_sms
    else:
        reachable = bool(facts.email and facts.email.strip())
        consent = facts.consent_email
    phone_facts = tuple(
        recorded if recorded is not None else pol.phone_facts_text(phone)
        for phone, recorded in zip(
            facts.phones,
            (*facts.phone_facts, *([None] * (len(facts.phones) - len(facts.phone_facts)))),
            strict=True,
        )
    )
    return (facts.timezone, facts.address, phone_facts, facts.restrictions, reachable, consent)


def _planned_message(
    spec: CampaignSpec,
    campaign_id: str,
    target: Target,
    variant: Variant,
    now: dt.datetime,
    targeted: int,
) -> PlannedMessage:
    refs = {"campaign_end_at": spec.end_at.isoformat()} if spec.end_at is not None else {}
    return PlannedMessage(
        key=message_key(campaign_id, target.borrower_id),
        purpose=Purpose.CAMPAIGN,
        borrower_id=target.borrower_id,
        loan_id=target.loan_id,
        stage=target.stage,
        channel=spec.channel,
        template=variant.template,
        send_at=_send_at(spec, campaign_id, target.borrower_id, now, targeted),
        campaign_id=campaign_id,
        variant=variant.name,
        refs=refs,
    )


def _like(
    decided: NewMessage,
    planned: PlannedMessage,
    locale: str,
    recipient: str | None,
    *,
    row: bool = True,
) -> NewMessage:
    """The row `plan_message` gives `planned` when the gate decides for it what it decided
    for `decided`'s message: the same status, reason, send time and steps, its own id, key
    and borrower (`row=False`: the decision only, without the id and steps a row needs)."""
    message_id = new_id("msg_", decided.created_at, name=planned.key) if row else ""
    message = NewMessage(
        id=message_id,
        idempotency_key=planned.key,
        purpose=decided.purpose,
        borrower_id=planned.borrower_id,
        loan_id=planned.loan_id,
        campaign_id=planned.campaign_id,
        stage=planned.stage,
        channel=decided.channel,
        template=planned.template,
        locale=locale,
        recipient=recipient,
        send_at=decided.send_at,
        status=decided.status,
        reason=decided.reason,
        fallback_from=None,
        refs=dict(planned.refs),
        created_at=decided.created_at,
        updated_at=decided.updated_at,
        variant=planned.variant,
    )
    if not row:
        return message
    first, *rest = decided.steps
    message.steps = [
        {**first, "message_id": message_id, "detail": detail_text({"key": planned.key})},
        *({**step, "message_id": message_id} for step in rest),
    ]
    return message


def plan_targets(
    session: Session,
    policy: pol.Policy,
    spec: CampaignSpec,
    campaign_id: str,
    batch: Sequence[Target],
    now: dt.datetime,
    targeted: int,
    memory: PlanMemory | None = None,
    *,
    alike: bool = True,
    rows: bool = True,
) -> list[PlannedTarget]:
    """The message each target (a run of borrowers in id order) would get, gated as the
    final gate would decide at its send time (and held back as the caps would, by the log),
    and its arm. Writes nothing.

    The gate runs on each borrower's own state unless another borrower alike in everything
    it reads (`_alike`) was decided before in this run (`memory`): then the decision is
    that one's (`alike=False`: never, every borrower on its own state; `rows=False`: those
    decided alike get no id or steps, for a preview that writes nothing). A throttled
    campaign's send times differ for everyone: each is its own."""
    if not batch:
        return []
    memory = memory if memory is not None else PlanMemory()
    if memory.listed is None:
        memory.listed = store.listed_recipients(session)
    keys: dict[str, AlikeKey] = {}
    facts: dict[str, store.BorrowerFacts] = {}
    if alike and spec.throttle_per_minute is None:
        facts = store.borrower_facts(session, batch[0].borrower_id, batch[-1].borrower_id)
        for target in batch:
            key = _alike(facts.get(target.borrower_id), target, spec.channel, memory.listed)
            if key is not None:
                keys[target.borrower_id] = key
    first_of: dict[AlikeKey, Target] = {}
    for target in batch:
        key = keys.get(target.borrower_id)
        if key is not None and key not in memory.decided:
            first_of.setdefault(key, target)
    own = [t for t in batch if t.borrower_id not in keys or first_of.get(keys[t.borrower_id]) is t]
    borrowers = load_borrowers(session, [target.borrower_id for target in own])
    loans = load_loans(session, [target.loan_id for target in own])
    history = _CAP_HISTORY.of_range(
        session,
        batch[0].borrower_id,
        batch[-1].borrower_id,
        max(spec.start_at, now) - _LONGEST_CAP_WINDOW,
    )
    locales: dict[str, str] = {}
    planned: list[PlannedTarget] = []
    for target in batch:
        variant, held_out = arm_of(spec, campaign_id, target.borrower_id)
        wanted = _planned_message(spec, campaign_id, target, variant, now, targeted)
        key = keys.get(target.borrower_id)
        earlier = memory.decided.get(key) if key is not None else None
        if earlier is not None:
            decided, decided_for = earlier
            found = facts[target.borrower_id]
            locale = locales.get(found.locale)
            if locale is None:
                locale = locales[found.locale] = policy.locale_for(found.locale)
            recipient = (
                (found.phones[0] if found.phones else None)
                if spec.channel is Channel.SMS
                else found.email
            )
            message = _like(decided, wanted, locale, recipient, row=rows)
            if Status(message.status) in PENDING_STATUSES:
                # the caps of a borrower alike are the same rules over their own slots
                _hold_for_caps(
                    policy, spec, decided_for, message, history.get(target.borrower_id, ()), now
                )
            planned.append(PlannedTarget(target, variant, held_out, message))
            continue
        borrower = borrowers.get(target.borrower_id)
        loan = loans.get(target.loan_id)
        if borrower is None or loan is None:
            continue  # gone since the segment was read (this transaction sees no such change)
        message = plan_message(policy, borrower, loan, wanted, now)
        if key is not None:
            # as decided by the gate, before the caps hold this borrower's own slots
            decided = dataclasses.replace(
                message, refs=dict(message.refs), steps=[dict(step) for step in message.steps]
            )
            memory.decided[key] = (decided, borrower)
        if Status(message.status) in PENDING_STATUSES:
            _hold_for_caps(policy, spec, borrower, message, history.get(borrower.id, ()), now)
        planned.append(PlannedTarget(target, variant, held_out, message, borrower, loan))
    return planned


def _hold_for_caps(
    policy: pol.Policy,
    spec: CampaignSpec,
    borrower: BorrowerState,
    message: NewMessage,
    history: Sequence[tuple[str, Channel, dt.datetime]],
    now: dt.datetime,
) -> None:
    """Where the caps would hold the message back at its send time (by the slots the log
    says are held): deferred to when they free inside an allowed hour, or withheld when
    that is after the campaign's end."""
    rules = pol.contact_rules(policy, borrower).caps
    frees = cap_frees_at(
        rules, [(channel, at) for _, channel, at in history], spec.channel, message.send_at
    )
    if frees is None:
        return
    until, rule = frees
    window = pol.next_allowed_instant(policy, borrower, until)
    if window.kind is DecisionKind.SUPPRESS:
        withhold(message, window, now)
        return
    later = window.until or until
    if spec.end_at is not None and later >= spec.end_at:
        withhold(
            message,
            Decision.suppress(
                Reason.CAMPAIGN_ENDED, detail="the caps free no slot before the campaign ends"
            ),
            now,
        )
        return
    message.send_at = later
    message.move(
        Status.DEFERRED,
        Reason.FREQUENCY_CAP,
        now,
        Decision.wait(Reason.FREQUENCY_CAP, later, rule=rule).detail_text(),
    )


@dataclass
class Tally:
    """What planning a campaign found (a preview's figures; what launching recorded)."""

    targeted: int = 0
    eligible: int = 0
    holdout: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)
    deferred: Counter[str] = field(default_factory=Counter)
    variants: Counter[str] = field(default_factory=Counter)

    def add(self, item: PlannedTarget) -> None:
        self.targeted += 1
        if not item.eligible:
            self.suppressed[item.message.reason or item.message.status] += 1
            return
        self.eligible += 1
        if item.held_out:
            self.holdout += 1
            return
        self.variants[item.variant.name] += 1
        if item.message.status == Status.DEFERRED.value and item.message.reason:
            self.deferred[item.message.reason] += 1

    def to_json(self, spec: CampaignSpec) -> dict[str, Any]:
        return {
            "targeted": self.targeted,
            "eligible": self.eligible,
            "holdout": self.holdout,
            "suppressed": dict(sorted(self.suppressed.items())),
            "deferred": dict(sorted(self.deferred.items())),
            "variants": {variant.name: self.variants[variant.name] for variant in spec.variants},
        }


def _planned_batches(
    session: Session,
    policy: pol.Policy,
    spec: CampaignSpec,
    campaign_id: str,
    now: dt.datetime,
    *,
    rows: bool = True,
) -> Iterator[list[PlannedTarget]]:
    """The whole segment planned, batch by batch; a throttled campaign counts its targets
    first, as the spread of its send times depends on how many there are."""
    targeted = 0
    if spec.throttle_per_minute is not None:
        targeted = sum(1 for _ in targets(session, policy, spec.segment, now))
    memory = PlanMemory()
    batch: list[Target] = []
    for target in targets(session, policy, spec.segment, now):
        batch.append(target)
        if len(batch) >= PLAN_BATCH:
            yield plan_targets(
                session, policy, spec, campaign_id, batch, now, targeted, memory, rows=rows
            )
            batch = []
    if batch:
        yield plan_targets(
            session, policy, spec, campaign_id, batch, now, targeted, memory, rows=rows
        )


# -- use cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """Who asks: an ops token's name and role (SPEC §3), and where from when that is not
    the API or the terminal (`via`: `ui` for the pages), which the audit log records."""

    name: str
    role: str | None = None
    via: str | None = None


def create(
    session: Session,
    spec: CampaignSpec,
    actor: Actor,
    now: dt.datetime,
    *,
    campaign_id: str | None = None,
) -> m.Campaign:
    """A draft campaign; `campaign_id` names it (the simulator's, from its input line),
    else a new id."""
    if campaign_id is not None and not CAMPAIGN_ID.fullmatch(campaign_id):
        raise CampaignInvalid([("id", "must be 1 to 40 letters, digits or _ . : -")])
    campaign_id = campaign_id or new_campaign_id(now)
    variants = (
        None
        if spec.template is not None
        else [{"name": v.name, "template": v.template, "weight": v.weight} for v in spec.variants]
    )
    store.insert_campaign(
        session,
        {
            "id": campaign_id,
            "name": spec.name,
            "channel": spec.channel.value,
            "template": spec.template or spec.variants[0].template,
            "segment": spec.segment.to_json(),
            "variants": variants,
            "start_at": spec.start_at,
            "end_at": spec.end_at,
            "throttle_per_minute": spec.throttle_per_minute,
            "holdout_percent": spec.holdout_percent,
            "status": CampaignStatus.DRAFT.value,
            "created_by": actor.name,
            "created_at": now,
            "updated_at": now,
        },
    )
    _audit(session, actor, "campaign.create", campaign_id, now, {"name": spec.name})
    campaign = store.get_campaign(session, campaign_id)
    assert campaign is not None
    return campaign


def new_campaign_id(now: dt.datetime) -> str:
    return new_id("cmp_", now)


def _found(session: Session, campaign_id: str, *, lock: bool = False) -> m.Campaign:
    campaign = store.get_campaign(session, campaign_id, lock=lock)
    if campaign is None:
        raise CampaignNotFound(campaign_id)
    return campaign


def preview(
    session: Session,
    policy: pol.Policy,
    renderer: Renderer,
    campaign_id: str,
    now: dt.datetime,
    *,
    unsubscribe_url: str | None = None,
) -> dict[str, Any]:
    """What launching now would do, with rendered samples per variant and locale; changes
    nothing."""
    campaign = _found(session, campaign_id)
    spec = CampaignSpec.of(campaign)
    return preview_spec(
        session, policy, renderer, spec, campaign.id, now, unsubscribe_url=unsubscribe_url
    )


def preview_unsubscribe_url(public_url: str) -> str:
    """The unsubscribe link a preview's samples carry (a preview's, which opts nobody out)."""
    return f"{public_url}/v1/unsubscribe/preview"


def preview_spec(
    session: Session,
    policy: pol.Policy,
    renderer: Renderer,
    spec: CampaignSpec,
    campaign_id: str,
    now: dt.datetime,
    *,
    unsubscribe_url: str | None = None,
) -> dict[str, Any]:
    """What launching `spec` now as campaign `campaign_id` would do, whether or not it is
    stored yet (the pages preview a campaign before creating it, under the id it will be
    created with: the arms are drawn from it); changes nothing."""
    tally = Tally()
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for batch in _planned_batches(session, policy, spec, campaign_id, now, rows=False):
        for item in batch:
            tally.add(item)
            if item.eligible and not item.held_out:
                key = (item.variant.name, item.message.locale)
                taken = samples.setdefault(key, [])
                if len(taken) < SAMPLES_PER_VARIANT_AND_LOCALE:
                    taken.append(_sample(session, policy, renderer, spec, item, unsubscribe_url))
    document = tally.to_json(spec)
    document["campaign_id"] = campaign_id
    document["at"] = _rfc3339(max(spec.start_at, now))
    document["samples"] = [sample for _, found in sorted(samples.items()) for sample in found]
    return document


def _sample(
    session: Session,
    policy: pol.Policy,
    renderer: Renderer,
    spec: CampaignSpec,
    item: PlannedTarget,
    unsubscribe_url: str | None,
) -> dict[str, Any]:
    """The message rendered for its own borrower and loan, as it would be sent."""
    message = item.message
    borrower = item.borrower or load_borrowers(session, [message.borrower_id])[message.borrower_id]
    loan = item.loan or load_loans(session, [item.target.loan_id])[item.target.loan_id]
    planned = PlannedMessage(
        key=message.idempotency_key,
        purpose=Purpose.CAMPAIGN,
        borrower_id=message.borrower_id,
        loan_id=message.loan_id,
        stage=message.stage,
        channel=spec.channel,
        template=message.template,
        send_at=message.send_at,
        campaign_id=message.campaign_id,
        variant=message.variant,
    )
    locale, context = message_context(
        policy, borrower, loan, planned, message.send_at, unsubscribe_url
    )
    sample: dict[str, Any] = {
        "variant": item.variant.name,
        "template": message.template,
        "locale": locale,
        "borrower_id": message.borrower_id,
        "loan_id": message.loan_id,
    }
    try:
        rendered = renderer.render(message.template, spec.channel, locale, context)
    except RenderError as error:
        sample["error"] = str(error)
        return sample
    if spec.channel is Channel.SMS:
        sample.update(body=rendered.body, segments=rendered.segments, encoding=rendered.encoding)
    else:
        sample.update(subject=rendered.subject, text=rendered.text, html=rendered.html)
    return sample


def launch(
    session: Session,
    policy: pol.Policy,
    campaign_id: str,
    actor: Actor,
    now: dt.datetime,
) -> m.Campaign:
    """Plan and write every message of the campaign (its holdout group kept aside), in one
    transaction: launched whole or not at all."""
    campaign = _found(session, campaign_id, lock=True)
    if campaign.status != CampaignStatus.DRAFT:
        _refuse("campaign.launch", campaign)
    spec = CampaignSpec.of(campaign)
    tally = Tally()
    for batch in _planned_batches(session, policy, spec, campaign.id, now):
        messages: list[NewMessage] = []
        members: list[tuple[str, str, str]] = []
        for item in batch:
            tally.add(item)
            if item.eligible:
                arm = HOLDOUT_ARM if item.held_out else item.variant.name
                members.append((item.target.borrower_id, item.target.loan_id, arm))
            if not (item.eligible and item.held_out):
                messages.append(item.message)
        insert_new(session, messages)
        store.insert_members(session, campaign.id, members)
    counts = tally.to_json(spec)
    campaign.status = (
        CampaignStatus.SCHEDULED.value if spec.start_at > now else CampaignStatus.RUNNING.value
    )
    campaign.launched_at = now
    campaign.launched_by = actor.name
    campaign.launch_counts = counts
    campaign.updated_at = now
    _audit(session, actor, "campaign.launch", campaign.id, now, counts)
    session.flush()
    return campaign


def pause(
    session: Session, control: CampaignControl, campaign_id: str, actor: Actor, now: dt.datetime
) -> m.Campaign:
    """Hold every message of the campaign not handed over yet: once this returns, nothing
    more of it reaches a provider (the control waits for hand-overs in flight)."""
    campaign = _found(session, campaign_id, lock=True)
    if campaign.status not in LIVE_STATUSES:
        _refuse("campaign.pause", campaign)
    control.halt(campaign.id)
    campaign.status = CampaignStatus.PAUSED.value
    campaign.updated_at = now
    _audit(session, actor, "campaign.pause", campaign.id, now)
    session.flush()
    return campaign


def resume(
    session: Session, control: CampaignControl, campaign_id: str, actor: Actor, now: dt.datetime
) -> m.Campaign:
    campaign = _found(session, campaign_id, lock=True)
    if campaign.status != CampaignStatus.PAUSED:
        _refuse("campaign.resume", campaign)
    campaign.status = (
        CampaignStatus.SCHEDULED.value if campaign.start_at > now else CampaignStatus.RUNNING.value
    )
    campaign.updated_at = now
    spacing = (
        dt.timedelta(minutes=1) / campaign.throttle_per_minute
        if campaign.throttle_per_minute
        else None
    )
    brought = store.bring_paused_forward(session, campaign.id, max(now, campaign.start_at), spacing)
    _audit(session, actor, "campaign.resume", campaign.id, now, {"messages_due": brought})
    session.flush()
    control.unhalt(campaign.id)
    return campaign


def cancel(
    session: Session, control: CampaignControl, campaign_id: str, actor: Actor, now: dt.datetime
) -> m.Campaign:
    """Withhold every message of the campaign not handed over yet (`campaign_cancelled`)."""
    campaign = _found(session, campaign_id, lock=True)
    if campaign.status in FINISHED_STATUSES:
        _refuse("campaign.cancel", campaign)
    control.halt(campaign.id)
    withheld = store.withhold_pending(
        session, campaign.id, Status.SUPPRESSED, Reason.CAMPAIGN_CANCELLED, now
    )
    campaign.status = CampaignStatus.CANCELLED.value
    campaign.finished_at = now
    campaign.updated_at = now
    _audit(session, actor, "campaign.cancel", campaign.id, now, {"messages_withheld": withheld})
    session.flush()
    return campaign


# what ops may do to a launched (or launchable) campaign, and the audit action of each
TRANSITIONS = ("launch", "pause", "resume", "cancel")


def transition(
    session: Session,
    policy: pol.Policy,
    control: CampaignControl,
    name: str,
    campaign_id: str,
    actor: Actor,
    now: dt.datetime,
) -> m.Campaign:
    """One of TRANSITIONS by name (the API's and the terminal's one way to them)."""
    if name == "launch":
        return launch(session, policy, campaign_id, actor, now)
    moves = {"pause": pause, "resume": resume, "cancel": cancel}
    return moves[name](session, control, campaign_id, actor, now)


def transition_audited(
    sessions: sessionmaker[Session],
    policy: pol.Policy,
    control: CampaignControl,
    name: str,
    campaign_id: str,
    actor: Actor,
    now: dt.datetime,
) -> dict[str, Any]:
    """One of TRANSITIONS in a transaction of its own, answered with the campaign (without
    its progress: counting a large campaign's messages would hold the answer back); a
    refusal (`CampaignConflict`) is recorded in the audit log, then raised. The API's and the
    pages' one way to them. Raises `CampaignNotFound`, `CampaignConflict`, and
    `CampaignCheckUnavailable` or `StoreUnavailable` when nothing could be changed."""
    try:
        with transaction(sessions) as session:
            return to_json(transition(session, policy, control, name, campaign_id, actor, now))
    except CampaignConflict as error:
        record_refusal(sessions, actor, campaign_id, f"campaign.{name}", error.status, now)
        raise


def _refuse(action: str, campaign: m.Campaign) -> NoReturn:
    """A transition the status does not allow (the edge records the refusal in the audit log
    with `record_refusal`, as this transaction is rolled back)."""
    raise CampaignConflict(campaign.id, campaign.status, _PAST[action])


_PAST = {
    "campaign.launch": "launched",
    "campaign.pause": "paused",
    "campaign.resume": "resumed",
    "campaign.cancel": "cancelled",
}


def record_refusal(
    sessions: sessionmaker[Session],
    actor: Actor,
    campaign_id: str,
    action: str,
    status: str,
    now: dt.datetime,
) -> None:
    """A refused transition in the audit log, in a transaction of its own as the refused one
    was rolled back; a store that cannot take it does not change the answer."""
    try:
        with transaction(sessions) as session:
            _audit(session, actor, action, campaign_id, now, {"status": status}, "refused")
    except StoreUnavailable:
        pass


def _audit(
    session: Session,
    actor: Actor,
    action: str,
    target: str,
    now: dt.datetime,
    detail: Mapping[str, Any] | None = None,
    outcome: str = "ok",
) -> None:
    if actor.via is not None:
        detail = {**(detail or {}), "via": actor.via}
    audit.append(
        session,
        at=now,
        actor=actor.name,
        role=actor.role,
        action=action,
        target=target,
        outcome=outcome,
        detail=detail,
    )


ADVANCE_EVERY = dt.timedelta(seconds=5)


def advance(session: Session, control: CampaignControl | None, now: dt.datetime) -> list[str]:
    """The clock's part: a scheduled campaign whose start has come runs; one whose end has
    passed (running or paused) is completed, its unsent messages withheld as
    `campaign_ended`; a running one with nothing left to hand over is completed. Returns the
    ids of the campaigns moved."""
    moved: list[str] = []
    for campaign in store.list_campaigns(
        session, status=",".join((*LIVE_STATUSES, CampaignStatus.PAUSED))
    ):
        if campaign.launched_at is None:
            continue
        if campaign.end_at is not None and campaign.end_at <= now:
            locked = _found(session, campaign.id, lock=True)
            if locked.status not in (*LIVE_STATUSES, CampaignStatus.PAUSED):
                continue
            store.withhold_pending(
                session, campaign.id, Status.SUPPRESSED, Reason.CAMPAIGN_ENDED, now
            )
            _finish(locked, now)
            moved.append(campaign.id)
            continue
        if campaign.status == CampaignStatus.SCHEDULED and campaign.start_at <= now:
            campaign.status = CampaignStatus.RUNNING.value
            campaign.updated_at = now
            moved.append(campaign.id)
        if (
            campaign.status == CampaignStatus.RUNNING
            and store.pending_count(session, campaign.id) == 0
        ):
            _finish(campaign, now)
            moved.append(campaign.id)
    session.flush()
    if control is not None:
        # a campaign a pause or cancel is moving right now is left alone: its flag is set
        # before its status is committed, and clearing it then would let hand-overs through
        idle = set(store.idle_campaigns(session, [*LIVE_STATUSES, CampaignStatus.PAUSED]))
        halted = [
            c.id
            for c in store.list_campaigns(session, status=CampaignStatus.PAUSED)
            if c.id in idle
        ]
        settled = [
            c.id
            for c in store.list_campaigns(session, status=",".join(LIVE_STATUSES))
            if c.id in idle and now - c.updated_at > dt.timedelta(minutes=1)
        ]
        control.sync(halted, settled)
    return moved


def _finish(campaign: m.Campaign, now: dt.datetime) -> None:
    campaign.status = CampaignStatus.COMPLETED.value
    campaign.finished_at = now
    campaign.updated_at = now


# -- reads ------------------------------------------------------------------------------------

_HANDED_OVER = frozenset({Status.SENT.value, Status.DELIVERED.value, Status.UNDELIVERED.value})


def to_json(campaign: m.Campaign) -> dict[str, Any]:
    spec = CampaignSpec.of(campaign)
    return {
        "id": campaign.id,
        "name": campaign.name,
        "status": campaign.status,
        "channel": campaign.channel,
        "template": spec.template,
        "variants": [
            {"name": v.name, "template": v.template, "weight": v.weight} for v in spec.variants
        ],
        "segment": campaign.segment or {},
        "start_at": _rfc3339(campaign.start_at),
        "end_at": _rfc3339(campaign.end_at),
        "throttle_per_minute": campaign.throttle_per_minute,
        "holdout_percent": campaign.holdout_percent,
        "created_at": _rfc3339(campaign.created_at),
        "created_by": campaign.created_by,
        "launched_at": _rfc3339(campaign.launched_at),
        "launched_by": campaign.launched_by,
        "finished_at": _rfc3339(campaign.finished_at),
        "updated_at": _rfc3339(campaign.updated_at),
        "launch": campaign.launch_counts,
    }


def get(session: Session, policy: pol.Policy, campaign_id: str) -> dict[str, Any]:
    """The campaign with its progress and its audit trail."""
    campaign = _found(session, campaign_id)
    document = to_json(campaign)
    document["progress"] = progress(session, policy, campaign)
    document["audit"] = [
        {
            "at": _rfc3339(entry.at),
            "actor": entry.actor,
            "action": entry.action,
            "outcome": entry.outcome,
        }
        for entry in reversed(audit.entries(session, target=campaign.id, limit=500))
    ]
    return document


def list_all(
    session: Session, policy: pol.Policy, *, status: str | None = None
) -> list[dict[str, Any]]:
    """Every campaign (in these statuses), newest first, with its messages counted (by
    status, reason and variant; no payments): every campaign's counts in one statement."""
    found = store.list_campaigns(session, status=status)
    counted = store.counts_by_arms(session, [campaign.id for campaign in found])
    items = []
    for campaign in found:
        document = to_json(campaign)
        document["progress"] = progress(
            session, policy, campaign, attribution=False, counted=counted.get(campaign.id, [])
        )
        items.append(document)
    return items


def progress(
    session: Session,
    policy: pol.Policy,
    campaign: m.Campaign,
    *,
    attribution: bool = True,
    counted: Sequence[store.ArmCount] | None = None,
) -> dict[str, Any]:
    """Counts of the campaign's messages by status, reason and variant; sends, deliveries
    and payments attributed per arm, the holdout beside them, and which arm leads.
    `counted`: its messages' counts, already read (`store.counts_by_arms`)."""
    spec = CampaignSpec.of(campaign)
    if counted is None:
        counted = store.counts_by_arm(session, campaign.id)
    by_status: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    arms: dict[str, dict[str, Any]] = {
        v.name: {"messages": 0, "by_status": Counter(), "sent": 0, "delivered": 0}
        for v in spec.variants
    }
    for variant, status, reason, count in counted:
        by_status[status] += count
        if reason:
            by_reason[reason] += count
        arm = arms.setdefault(
            variant or DEFAULT_VARIANT,
            {"messages": 0, "by_status": Counter(), "sent": 0, "delivered": 0},
        )
        arm["messages"] += count
        arm["by_status"][status] += count
        if status in _HANDED_OVER:
            arm["sent"] += count
        if status == Status.DELIVERED.value:
            arm["delivered"] += count
    counts = campaign.launch_counts or {}
    document: dict[str, Any] = {
        "targeted": counts.get("targeted", 0),
        "eligible": counts.get("eligible", 0),
        "holdout": counts.get("holdout", 0),
        "by_status": dict(sorted(by_status.items())),
        "by_reason": dict(sorted(by_reason.items())),
        "attribution_days": policy.attribution_days,
    }
    window = dt.timedelta(days=policy.attribution_days)
    if attribution:
        paid: dict[str, set[str]] = {name: set() for name in arms}
        amounts: dict[str, dict[str, Decimal]] = {name: {} for name in arms}
        for variant, message_id, sent_at, paid_at, amount, currency in store.payments_after_sends(
            session, campaign.id
        ):
            if paid_at - sent_at <= window:
                name = variant or DEFAULT_VARIANT
                paid.setdefault(name, set()).add(message_id)
                mine = amounts.setdefault(name, {})
                mine[currency] = mine.get(currency, Decimal(0)) + amount
        for name, arm in arms.items():
            arm["paid"] = len(paid.get(name, ()))
            arm["paid_amount"] = _money(amounts.get(name, {}))
            arm["paid_rate"] = _rate(arm["paid"], arm["sent"])
        by_arm: dict[str, store.ArmPayments] = {}
        if campaign.launched_at is not None:
            # launched ahead of its start, the campaign does nothing before it: the span of
            # every arm is counted from whichever comes later
            since = max(campaign.launched_at, campaign.start_at)
            by_arm = store.payments_by_arm(session, campaign.id, since, since + window)
        held = by_arm.get(HOLDOUT_ARM, store.ArmPayments(0, 0, {}))
        document["holdout_paid"] = held.paid
        document["holdout_paid_amount"] = _money(held.amounts)
        document["holdout_paid_rate"] = _rate(held.paid, held.members)
        document["comparison"] = compare(
            {name: (found.paid, found.members) for name, found in sorted(by_arm.items())}
        )
    for arm in arms.values():
        arm["by_status"] = dict(sorted(arm["by_status"].items()))
    document["variants"] = arms
    return document


def _money(amounts: Mapping[str, Decimal]) -> dict[str, str]:
    """Amounts by currency (loans of a segment may be in several; they are never added)."""
    return {
        currency: str(Decimal(amount).quantize(Decimal("0.01")))
        for currency, amount in sorted(amounts.items())
    }


def amounts_text(amounts: Mapping[str, str]) -> str:
    """Amounts by currency for people: `CNY 1200.00, USD 80.00` (`0` for none)."""
    return ", ".join(f"{currency} {amount}" for currency, amount in amounts.items()) or "0"


def comparison_text(comparison: Mapping[str, Any] | None) -> str:
    """The comparison in a sentence (for the terminal and the demo report)."""
    if comparison is None:
        return "no comparison yet: two arms need members to compare"
    rate = "{:.1%}".format
    if comparison["leader"] is None:
        return f"no arm leads: the best two pay alike ({rate(comparison['leader_rate'])})"
    return (
        f"{comparison['leader']} leads ({rate(comparison['leader_rate'])}) over"
        f" {comparison['runner_up']} ({rate(comparison['runner_up_rate'])}),"
        f" p = {comparison['p_value']} ({comparison['test']}; {comparison['basis']})"
    )


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def compare(arms: Mapping[str, tuple[int, int]]) -> dict[str, Any] | None:
    """Which arm pays most, the next one, and the two-sided p-value of a two-proportion
    z-test between them (the chance of a difference at least this large if both arms paid
    alike): a figure to read, not a verdict. `arms`: name -> (members who paid, members).

    Every borrower eligible at launch counts in their arm, whether their message went out or
    not (one who paid before it did is a success of the arm, as a holdout borrower who paid
    is of the holdout), and every arm's payments are counted over the same span: like is
    compared with like. With equal rates no arm leads."""
    measured = sorted(
        ((paid / whole, name, paid, whole) for name, (paid, whole) in arms.items() if whole),
        key=lambda item: (-item[0], item[1]),
    )
    if len(measured) < 2:
        return None
    (rate_a, first, paid_a, n_a), (rate_b, second, paid_b, n_b) = measured[0], measured[1]
    tied = rate_a == rate_b
    return {
        "basis": "borrowers eligible at launch, by arm; payments in the attribution span",
        "arms": {
            name: {"members": whole, "paid": paid, "rate": round(rate, 6)}
            for rate, name, paid, whole in sorted(measured, key=lambda item: item[1])
        },
        "leader": None if tied else first,
        "runner_up": None if tied else second,
        "leader_rate": round(rate_a, 6),
        "runner_up_rate": round(rate_b, 6),
        "difference": round(rate_a - rate_b, 6),
        "p_value": two_proportion_p_value(paid_a, n_a, paid_b, n_b),
        "test": "two-proportion z-test, two-sided, pooled",
    }


def two_proportion_p_value(success_a: int, n_a: int, success_b: int, n_b: int) -> float | None:
    if n_a == 0 or n_b == 0:
        return None
    pooled = (success_a + success_b) / (n_a + n_b)
    variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    if variance == 0:
        return 1.0
    z = (success_a / n_a - success_b / n_b) / math.sqrt(variance)
    return round(math.erfc(abs(z) / math.sqrt(2)), 6)


def _rfc3339(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
