"""What the pages say, for people who are not engineers: instants in UTC and in the borrower's
zone, a status's tone, and a timeline step's reason and details in plain words
(`deferred — quiet hours until 08:00 Asia/Taipei, Fri 4 Dec`)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from outreach.domain import Reason, Status
from outreach.render.filters import format_money, mask_recipient
from outreach.ui.charts import share

# what each reason code means, as a phrase that follows the status
REASON_WORDS: dict[str, str] = {
    Reason.PLANNED: "planned",
    Reason.DUE: "due now",
    Reason.CLAIMED: "picked up for sending",
    Reason.SENT: "handed to the provider",
    Reason.ACCEPTED: "accepted by the provider",
    Reason.FALLBACK: "sent on the other channel",
    Reason.QUIET_HOURS: "quiet hours",
    Reason.HOLIDAY: "public holiday",
    Reason.INCONVENIENT_TIME: "a time the borrower asked not to be contacted",
    Reason.FREQUENCY_CAP: "frequency cap reached",
    Reason.CHECK_UNAVAILABLE: "a check could not be made",
    Reason.RATE_LIMITED: "the provider's rate limit",
    Reason.EVENT_PENDING: "waiting for a loan-system event to be applied",
    Reason.NO_CONVENIENT_TIME: "no allowed hour in the coming days",
    Reason.NO_CONSENT: "no consent for this channel",
    Reason.NO_ADDRESS: "no phone number or email address",
    Reason.OPTED_OUT: "the borrower opted out",
    Reason.CEASE_CONTACT: "the borrower asked us to stop contacting them",
    Reason.BANKRUPTCY: "bankruptcy filed",
    Reason.DECEASED: "the borrower is deceased",
    Reason.ATTORNEY: "the borrower is represented by an attorney",
    Reason.DISPUTE: "the debt is disputed",
    Reason.LOAN_CLOSED: "the loan is closed",
    Reason.LOAN_CURRENT: "nothing is owed any more",
    Reason.PROMISE_PENDING: "a promise to pay is in force",
    Reason.PAYMENT_PLAN_ACTIVE: "a payment plan is in force",
    Reason.INVALID_ADDRESS: "the number or address cannot receive messages",
    Reason.STAGE_CHANGED: "the loan moved to another stage",
    Reason.SUPERSEDED: "replaced by a later message",
    Reason.OPS_CANCELLED: "cancelled by ops",
    Reason.PROMISE_KEPT: "the promise was kept",
    Reason.INSTALMENT_PAID: "the instalment was paid",
    Reason.VISIT_CANCELLED: "the visit was cancelled",
    Reason.EXPIRED: "the moment it was for has passed",
    Reason.PLAN_BROKEN: "the payment plan was broken",
    Reason.ALREADY_CONFIRMED: "already confirmed",
    Reason.CAMPAIGN_PAUSED: "the campaign is paused",
    Reason.CAMPAIGN_CANCELLED: "the campaign was cancelled",
    Reason.CAMPAIGN_ENDED: "the campaign ended",
    Reason.CONTENT_REJECTED: "the text failed the content checks",
    Reason.RENDER_ERROR: "the template could not be rendered",
    Reason.PROVIDER_ERROR: "the provider refused it",
    Reason.DISPATCH_FAILED: "sending it failed again and again; a person should look at it",
    Reason.PROVIDER_RETRY: "the provider was busy; trying again",
    Reason.PROVIDER_STATUS: "reported by the provider",
    Reason.RECONCILED: "confirmed with the provider",
    Reason.OUTCOME_UNKNOWN: "unknown whether the provider got it",
    Reason.NEEDS_HUMAN: "the borrower replied; a person should read it",
}

# how each detail key is said; `until` (an instant) is said in its own way
DETAIL_WORDS: dict[str, str] = {
    "rule": "rule",
    "code": "provider code",
    "by": "replaced by",
    "missed": "missed instalment of",
    "check": "check",
    "channel": "channel",
    "closed": "closed as",
    "cycle": "cycle",
    "horizon_days": "days looked ahead",
    "attempt": "attempt",
    "attempts": "attempts",
    "worker": "worker",
    "provider_id": "provider reference",
    "reply": "reply",
    "event": "event",
    "outcome": "outcome",
}

# a status's colour on the page: pending, gone, failed, withheld
_TONES: dict[str, str] = {
    Status.SCHEDULED: "pending",
    Status.DEFERRED: "pending",
    Status.QUEUED: "pending",
    Status.SENDING: "pending",
    Status.SENT: "good",
    Status.DELIVERED: "good",
    Status.UNDELIVERED: "bad",
    Status.FAILED: "bad",
    Status.SUPPRESSED: "muted",
    Status.CANCELLED: "muted",
}

# details a reader needs no words for: the zone is said with `until`; the planning key is
# the idempotency key (still shown, as a code, on the message page)
_UNSAID = frozenset({"zone", "key"})
_KEY = re.compile(r"(?:^|(?<=\s))([a-z_]+)=")


def tone(status: str | None) -> str:
    return _TONES.get(status or "", "muted")


def reason_words(reason: str | None) -> str:
    if not reason:
        return ""
    return REASON_WORDS.get(reason, reason.replace("_", " "))


def parse_instant(value: str | dt.datetime | None) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def utc(value: str | dt.datetime | None) -> str:
    """`2026-12-03 14:05 UTC`."""
    moment = parse_instant(value)
    if moment is None:
        return "" if value is None else str(value)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def local(value: str | dt.datetime | None, zone: ZoneInfo | str | None) -> str:
    """`Thu 3 Dec 22:05 Asia/Taipei`: the instant on the borrower's clock."""
    moment = parse_instant(value)
    if moment is None or zone is None:
        return ""
    where = zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone)
    there = moment.astimezone(where)
    return f"{there:%a} {there.day} {there:%b %H:%M} {where.key}"


def _until(value: str, zone: ZoneInfo | None) -> str:
    moment = parse_instant(value)
    if moment is None:
        return f"until {value}"
    where = zone or ZoneInfo("UTC")
    there = moment.astimezone(where)
    return f"until {there:%H:%M} {where.key}, {there:%a} {there.day} {there:%b}"


def detail_pairs(detail: str) -> list[tuple[str, str]] | None:
    """`key=value key=value` as pairs (a value may hold spaces), or None for free text."""
    keys = list(_KEY.finditer(detail))
    if not keys or keys[0].start() != 0:
        return None
    pairs = []
    for index, match in enumerate(keys):
        end = keys[index + 1].start() if index + 1 < len(keys) else len(detail)
        pairs.append((match.group(1), detail[match.end() : end].strip()))
    return pairs


def detail_words(detail: str | None, zone: ZoneInfo | None = None) -> str:
    """A step's details in words; `until` in the zone the step names, else `zone`."""
    if not detail:
        return ""
    pairs = detail_pairs(detail)
    if pairs is None:
        return detail
    values = dict(pairs)
    named = values.get("zone")
    where = _zone_or(named, zone)
    parts = []
    for key, value in pairs:
        if key in _UNSAID:
            continue
        if key == "until":
            parts.append(_until(value, where))
        elif key == "detail":
            parts.append(value)
        elif key == "rule":
            parts.append(f"rule {value.replace('_', ' ')}")
        else:
            parts.append(f"{DETAIL_WORDS.get(key, key.replace('_', ' '))} {value}")
    if named and "until" not in values:
        parts.append(f"in {named}")
    return ", ".join(parts)


def _zone_or(name: str | None, fallback: ZoneInfo | None) -> ZoneInfo | None:
    if name:
        try:
            return ZoneInfo(name)
        except (ValueError, KeyError):
            return fallback
    return fallback


def step_words(step: dict[str, Any], zone: ZoneInfo | None = None) -> str:
    """`quiet hours until 08:00 Asia/Taipei, Fri 4 Dec`: the reason and its details."""
    reason = reason_words(step.get("reason"))
    detail = detail_words(step.get("detail"), zone)
    if reason and detail:
        if detail.startswith("until "):
            return f"{reason} {detail}"
        return f"{reason} ({detail})"
    return reason or detail


def money(amount: object, currency: str) -> str:
    """An amount in its currency, as the pages (in English) write it: `US$120.00`."""
    return format_money(amount, currency, "en-US")


FILTERS: dict[str, Callable[..., Any]] = {
    "money": money,
    "utc": utc,
    "local": local,
    "tone": tone,
    "reason_words": reason_words,
    "detail_words": detail_words,
    "step_words": step_words,
    "masked": mask_recipient,
    "share": share,
}
