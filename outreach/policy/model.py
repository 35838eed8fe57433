"""The policy as immutable data: what `schedules/*.yaml` says once it has been validated."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from outreach.domain import Channel, Purpose

# Cap rule names are `<channel or any>_per_<day|week>`; these are the windows they stand for.
CAP_PERIODS: Mapping[str, dt.timedelta] = MappingProxyType(
    {"day": dt.timedelta(hours=24), "week": dt.timedelta(days=7)}
)
CAP_SCOPES: Mapping[str, Channel | None] = MappingProxyType(
    {"sms": Channel.SMS, "email": Channel.EMAIL, "any": None}
)
CAP_RULE_NAMES: tuple[str, ...] = tuple(
    f"{scope}_per_{period}" for scope in CAP_SCOPES for period in CAP_PERIODS
)

# Purposes driven by events rather than by the stage cadence, in the order the YAML lists them.
EVENT_PURPOSES: tuple[Purpose, ...] = (
    Purpose.PROMISE_REMINDER,
    Purpose.BROKEN_PROMISE,
    Purpose.INSTALMENT_REMINDER,
    Purpose.VISIT_NOTICE,
    Purpose.PAYMENT_CONFIRMATION,
    Purpose.OPTOUT_CONFIRMATION,
    Purpose.OPTIN_CONFIRMATION,
    Purpose.HELP_REPLY,
    Purpose.CEASE_CONFIRMATION,
)


K = TypeVar("K")
V = TypeVar("V")


def frozen_mapping(items: Mapping[K, V] | Iterable[tuple[K, V]]) -> Mapping[K, V]:
    """A read-only view of a private copy, so a loaded policy cannot be changed in place."""
    return MappingProxyType(dict(items))


@dataclass(frozen=True, slots=True)
class DailyWindow:
    """Local wall-clock hours in which contact is allowed: `start` inclusive, `end` exclusive."""

    start: dt.time
    end: dt.time

    def contains(self, local_time: dt.time) -> bool:
        return self.start <= local_time < self.end

    def to_json(self) -> dict[str, str]:
        return {"start": self.start.strftime("%H:%M"), "end": self.end.strftime("%H:%M")}


@dataclass(frozen=True, slots=True)
class CapRule:
    """At most `limit` messages (on `channel`, or any channel when None) in any rolling `window`."""

    name: str
    channel: Channel | None
    limit: int
    window: dt.timedelta

    @classmethod
    def named(cls, name: str, limit: int) -> CapRule:
        scope, _, period = name.partition("_per_")
        return cls(name, CAP_SCOPES[scope], limit, CAP_PERIODS[period])

    def counts(self, channel: Channel) -> bool:
        return self.channel is None or self.channel is channel


@dataclass(frozen=True, slots=True)
class Step:
    """One message of a stage cadence, sent on the day the loan reaches `days_past_due`."""

    days_past_due: int
    at: dt.time
    channel: Channel
    template: str
    fallback: bool = True

    @property
    def id(self) -> str:
        return f"d{self.days_past_due}:{self.template}"

    def to_json(self) -> dict[str, Any]:
        return {
            "days_past_due": self.days_past_due,
            "at": self.at.strftime("%H:%M"),
            "channel": str(self.channel),
            "template": self.template,
            "fallback": self.fallback,
        }


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    first_day: int
    # None: the stage has no upper end (the last one)
    last_day: int | None
    steps: tuple[Step, ...]
    # a gentler cadence for borrowers carrying a tag (e.g. `hardship`), replacing `steps`
    tag_steps: Mapping[str, tuple[Step, ...]] = field(default_factory=lambda: frozen_mapping({}))

    def contains(self, days_past_due: int) -> bool:
        return self.first_day <= days_past_due and (
            self.last_day is None or days_past_due <= self.last_day
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "days_past_due": {"from": self.first_day, "to": self.last_day},
            "steps": [step.to_json() for step in self.steps],
            "tag_steps": {
                tag: [step.to_json() for step in steps] for tag, steps in self.tag_steps.items()
            },
        }


@dataclass(frozen=True, slots=True)
class EventRule:
    """How the policy answers an event: which template, on which channel, when.

    `channel` None means "the channel the borrower wrote on" (replies); `channels` lists the
    channels such a message may go on. `days` is the days before (reminders) or after
    (broken-promise follow-up) the event's date; `valid_days` how long after its day a
    follow-up is still worth sending; `notice` the least advance notice of a field visit;
    `max_age` how old a payment may be and still be confirmed.
    """

    purpose: Purpose
    template: str
    channel: Channel | None
    channels: frozenset[Channel]
    fallback: bool = True
    at: dt.time | None = None
    days: int = 0
    valid_days: int = 0
    notice: dt.timedelta | None = None
    max_age: dt.timedelta | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "template": self.template,
            "channel": None if self.channel is None else str(self.channel),
            "channels": sorted(str(channel) for channel in self.channels),
            "fallback": self.fallback,
        }
        if self.at is not None:
            data["at"] = self.at.strftime("%H:%M")
        if self.purpose in (
            Purpose.PROMISE_REMINDER,
            Purpose.BROKEN_PROMISE,
            Purpose.INSTALMENT_REMINDER,
        ):
            data["days"] = self.days
        if self.purpose is Purpose.BROKEN_PROMISE:
            data["valid_days"] = self.valid_days
        if self.notice is not None:
            data["notice_hours"] = self.notice.total_seconds() / 3600
        if self.max_age is not None:
            data["max_age_hours"] = self.max_age.total_seconds() / 3600
        return data


@dataclass(frozen=True, slots=True)
class Lender:
    """Who is writing, per locale: the lender identity every message carries."""

    name: str
    phone: str
    email: str
    website: str
    payment_url: str
    hours: str

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "phone": self.phone,
            "email": self.email,
            "website": self.website,
            "payment_url": self.payment_url,
            "hours": self.hours,
        }


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    """Overrides for borrowers whose address is in `code` (`US`, or `US-MA` for a region)."""

    code: str
    contact_window: DailyWindow | None = None
    caps: Mapping[str, int] = field(default_factory=lambda: frozen_mapping({}))
    # extra no-contact days, on top of the country's holidays
    holidays: frozenset[dt.date] = frozenset()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.contact_window is not None:
            data["contact_window"] = self.contact_window.to_json()
        if self.caps:
            data["caps"] = dict(self.caps)
        if self.holidays:
            data["holidays"] = sorted(day.isoformat() for day in self.holidays)
        return data


@dataclass(frozen=True, slots=True)
class Pauses:
    """How promises and payment plans pause the stage cadence."""

    # an instalment unpaid this many days after its due date counts as missed
    instalment_grace_days: int = 0


@dataclass(frozen=True, slots=True)
class ContactRules:
    """The rules that apply to one borrower once jurisdiction overrides are laid on."""

    jurisdiction: str | None
    contact_window: DailyWindow
    caps: tuple[CapRule, ...]
    holidays: frozenset[dt.date]


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    name: str
    default_zone: ZoneInfo
    # the zone whose midnight ages a loan by one day
    day_boundary_zone: ZoneInfo
    # whose holidays apply when nothing says where the borrower is
    default_country: str
    locales: tuple[str, ...]
    default_locale: str
    max_sms_segments: int
    sender: Mapping[str, Lender]
    contact_window: DailyWindow
    caps: tuple[CapRule, ...]
    holidays: Mapping[str, frozenset[dt.date]]
    jurisdictions: Mapping[str, Jurisdiction]
    stages: tuple[Stage, ...]
    # which tag cadence wins when a borrower carries several tags: the first listed
    cadence_tags: tuple[str, ...]
    events: Mapping[Purpose, EventRule]
    pauses: Pauses
    # how far ahead an allowed contact instant is searched for before giving up
    search_horizon: dt.timedelta = dt.timedelta(days=7)
    # a payment on a campaign message's loan within this many days after it was sent (for
    # the holdout: after launch) is attributed to the campaign
    attribution_days: int = 7

    def stage_for(self, days_past_due: int) -> str | None:
        stage = self.stage_at(days_past_due)
        return None if stage is None else stage.name

    def stage_at(self, days_past_due: int) -> Stage | None:
        for stage in self.stages:
            if stage.contains(days_past_due):
                return stage
        return None

    def stage(self, name: str) -> Stage | None:
        for stage in self.stages:
            if stage.name == name:
                return stage
        return None

    def event(self, purpose: Purpose) -> EventRule:
        return self.events[purpose]

    def locale_for(self, requested: str | None) -> str:
        """The served locale closest to what the borrower asked for, else the default.

        Chinese written in Traditional characters (zh-TW, zh-HK, zh-MO, zh-Hant) maps to zh-TW;
        other Chinese to zh-CN; any English to en-US; anything else to the default locale.
        """
        if not requested:
            return self.default_locale
        wanted = requested.replace("_", "-").strip()
        by_lower = {locale.lower(): locale for locale in self.locales}
        if wanted.lower() in by_lower:
            return by_lower[wanted.lower()]
        parts = [part.lower() for part in wanted.split("-") if part]
        if not parts:
            return self.default_locale
        language = parts[0]
        if language == "zh":
            traditional = {"hant", "tw", "hk", "mo"} & set(parts[1:])
            preferred = "zh-tw" if traditional else "zh-cn"
            if preferred in by_lower:
                return by_lower[preferred]
        for locale in self.locales:
            if locale.lower().split("-")[0] == language:
                return locale
        return self.default_locale

    def strictest_caps(self) -> tuple[CapRule, ...]:
        """Every cap at its lowest limit in any jurisdiction: for when the borrower is unknown."""
        limits = {rule.name: rule.limit for rule in self.caps}
        for jurisdiction in self.jurisdictions.values():
            for name, limit in jurisdiction.caps.items():
                limits[name] = min(limit, limits.get(name, limit))
        return tuple(CapRule.named(name, limits[name]) for name in CAP_RULE_NAMES if name in limits)

    def sender_for(self, locale: str | None) -> dict[str, str]:
        """The lender identity for a locale (the nearest served one), as templates read it."""
        return self.sender[self.locale_for(locale)].to_json()

    def templates_referenced(self) -> dict[str, set[Channel]]:
        """Every template this policy can send, with every channel it may go out on."""
        referenced: dict[str, set[Channel]] = {}

        def add(template: str, channel: Channel, fallback: bool) -> None:
            channels = referenced.setdefault(template, set())
            channels.add(channel)
            if fallback:
                channels.add(channel.other)

        for stage in self.stages:
            for steps in (stage.steps, *stage.tag_steps.values()):
                for step in steps:
                    add(step.template, step.channel, step.fallback)
        for rule in self.events.values():
            if rule.channel is not None:
                add(rule.template, rule.channel, rule.fallback)
            for channel in rule.channels:
                add(rule.template, channel, False)
        return referenced

    def to_json(self) -> dict[str, Any]:
        """The effective policy, as GET /v1/policy shows it."""
        return {
            "source": self.source,
            "name": self.name,
            "default_zone": self.default_zone.key,
            "day_boundary_zone": self.day_boundary_zone.key,
            "default_country": self.default_country,
            "locales": list(self.locales),
            "default_locale": self.default_locale,
            "max_sms_segments": self.max_sms_segments,
            "sender": {locale: sender.to_json() for locale, sender in self.sender.items()},
            "contact_window": self.contact_window.to_json(),
            "caps": {rule.name: rule.limit for rule in self.caps},
            "holidays": {
                country: sorted(day.isoformat() for day in days)
                for country, days in self.holidays.items()
            },
            "jurisdictions": {
                code: jurisdiction.to_json() for code, jurisdiction in self.jurisdictions.items()
            },
            "stages": [stage.to_json() for stage in self.stages],
            "cadence_tags": list(self.cadence_tags),
            "events": {str(purpose): rule.to_json() for purpose, rule in self.events.items()},
            "pauses": {"instalment_grace_days": self.pauses.instalment_grace_days},
            "search_horizon_days": self.search_horizon.days,
            "campaigns": {"attribution_days": self.attribution_days},
            "templates": {
                name: sorted(str(channel) for channel in channels)
                for name, channels in sorted(self.templates_referenced().items())
            },
        }
