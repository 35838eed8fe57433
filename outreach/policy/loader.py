"""Reading and validating a policy file; every error names the file, the key path and the fault."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from outreach.domain import Channel, Purpose
from outreach.errors import ConfigurationError
from outreach.policy.model import (
    CAP_RULE_NAMES,
    EVENT_PURPOSES,
    CapRule,
    DailyWindow,
    EventRule,
    Jurisdiction,
    Lender,
    Pauses,
    Policy,
    Stage,
    Step,
    frozen_mapping,
)

# The SPEC §5 caps a policy must state; `any_per_week` may be added but is not required.
REQUIRED_CAPS = ("sms_per_day", "sms_per_week", "email_per_day", "email_per_week", "any_per_day")
# SPEC §5: a field visit is announced at least two days ahead.
MIN_VISIT_NOTICE_HOURS = 48

_TEMPLATE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_JURISDICTION = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")
_LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_CLOCK = re.compile(r"^(\d{2}):(\d{2})$")

T = TypeVar("T")


class PolicyError(ConfigurationError):
    """Raised when a policy file cannot be read or breaks a rule; names file, key and fault."""

    def __init__(self, source: str, path: str, problem: str) -> None:
        self.source = source
        self.path = path
        self.problem = problem
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {problem}")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping instead of keeping the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# The templates that exist: names, or names with the channels each has parts for.
KnownTemplates = Mapping[str, Collection[Channel]] | Collection[str]


def load_policy(path: str | Path, *, templates: KnownTemplates | None = None) -> Policy:
    """Read and validate a policy file.

    With `templates` (e.g. the render catalogue), every template the policy names must be
    among them, with a part for every channel it may go on (fallback included).
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(source, "", f"cannot be read ({error.strerror or error})") from error
    return load_policy_text(text, source, templates=templates)


def load_policy_text(
    text: str, source_name: str, *, templates: KnownTemplates | None = None
) -> Policy:
    """Validate policy YAML given as text; `source_name` is what errors call the file."""
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise PolicyError(source_name, where, f"is not valid YAML: {problem}") from error
    reader = _Reader(source_name)
    policy = reader.policy(document)
    if templates is not None:
        reader.check_templates(templates)
    return policy


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class _Reader:
    """Walks the parsed YAML once, converting each value and failing at the first fault."""

    def __init__(self, source: str) -> None:
        self.source = source
        # (template, key path, channels it may go on, channel it falls back from)
        self.uses: list[tuple[str, str, frozenset[Channel], Channel | None]] = []

    def use(self, template: str, path: str, channel: Channel, fallback: bool) -> None:
        self.uses.append(
            (
                template,
                path,
                frozenset({channel, channel.other} if fallback else {channel}),
                channel if fallback else None,
            )
        )

    def check_templates(self, templates: KnownTemplates) -> None:
        for template, path, channels, fallback_from in self.uses:
            if template not in templates:
                self.fail(path, f"unknown template {template!r}: there is no such template")
            if not isinstance(templates, Mapping):
                continue
            for channel in sorted(channels - set(templates[template])):
                why = ""
                if fallback_from is not None and channel is not fallback_from:
                    why = " (needed to fall back; set fallback: false if it must not)"
                self.fail(path, f"template {template!r} has no {channel} part{why}")

    def fail(self, path: str, problem: str) -> NoReturn:
        raise PolicyError(self.source, path, problem)

    # -- generic shapes -------------------------------------------------------------------

    def mapping(
        self,
        value: Any,
        path: str,
        required: tuple[str, ...] = (),
        optional: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping, not {_kind(value)}")
        for key in value:
            if not isinstance(key, str):
                self.fail(
                    path,
                    f"key {key!r} is not a string (YAML reads some bare words such as NO or "
                    "ON as booleans; quote it)",
                )
        allowed = (*required, *optional)
        if allowed:
            for key in value:
                if key not in allowed:
                    self.fail(
                        _join(path, key), f"unknown key (expected one of: {', '.join(allowed)})"
                    )
        for key in required:
            if key not in value:
                self.fail(_join(path, key), "is required but missing")
        return value

    def sequence(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            self.fail(path, f"must be a list, not {_kind(value)}")
        return value

    def text(self, value: Any, path: str, pattern: re.Pattern[str] | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(path, f"must be a non-empty string, not {_kind(value)}")
        if pattern is not None and not pattern.match(value):
            self.fail(path, f"{value!r} is not well formed (expected {pattern.pattern})")
        return value

    def integer(self, value: Any, path: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be a whole number, not {_kind(value)}")
        if minimum is not None and value < minimum:
            self.fail(path, f"must be at least {minimum}, not {value}")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, not {_kind(value)}")
        return value

    def clock(self, value: Any, path: str) -> dt.time:
        if not isinstance(value, str):
            hint = ""
            if isinstance(value, int):
                hint = " (quote it: YAML reads a bare 08:00 as a number)"
            self.fail(path, f'must be a time written "HH:MM", not {_kind(value)}{hint}')
        match = _CLOCK.match(value)
        if match is None:
            self.fail(path, f'{value!r} is not a time written "HH:MM"')
        hour, minute = int(match.group(1)), int(match.group(2))
        if hour > 23 or minute > 59:
            self.fail(path, f"{value!r} is not a time of day")
        return dt.time(hour, minute)

    def date(self, value: Any, path: str) -> dt.date:
        if isinstance(value, dt.datetime):
            self.fail(path, f"must be a date, not a date and time ({value.isoformat()})")
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        self.fail(path, f"must be a date written YYYY-MM-DD, not {value!r}")

    def zone(self, value: Any, path: str) -> ZoneInfo:
        name = self.text(value, path)
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            self.fail(path, f"{name!r} is not an IANA time zone")

    def channel(self, value: Any, path: str) -> Channel:
        try:
            return Channel(value)
        except ValueError:
            self.fail(path, f"{value!r} is not a channel (expected sms or email)")

    def template(self, value: Any, path: str) -> str:
        return self.text(value, path, _TEMPLATE_NAME)

    def listed(self, value: Any, path: str, convert: Callable[[Any, str], T]) -> list[T]:
        return [convert(item, _join(path, i)) for i, item in enumerate(self.sequence(value, path))]

    # -- sections ---------------------------------------------------------------------------

    def policy(self, document: Any) -> Policy:
        if document is None:
            self.fail("", "is empty")
        top = self.mapping(
            document,
            "",
            required=(
                "default_zone",
                "default_country",
                "locales",
                "default_locale",
                "sender",
                "contact_window",
                "caps",
                "stages",
                "events",
            ),
            optional=(
                "version",
                "name",
                "day_boundary_zone",
                "max_sms_segments",
                "search_horizon_days",
                "holidays",
                "jurisdictions",
                "cadence_tags",
                "pauses",
                "campaigns",
            ),
        )
        if "version" in top and top["version"] != 1:
            self.fail("version", f"unsupported policy format version {top['version']!r} (1 is)")
        default_zone = self.zone(top["default_zone"], "default_zone")
        boundary_zone = (
            self.zone(top["day_boundary_zone"], "day_boundary_zone")
            if "day_boundary_zone" in top
            else default_zone
        )
        locales = self.listed(top["locales"], "locales", lambda v, p: self.text(v, p, _LOCALE))
        if not locales:
            self.fail("locales", "must list at least one locale")
        if len(set(locales)) != len(locales):
            self.fail("locales", "lists a locale twice")
        default_locale = self.text(top["default_locale"], "default_locale")
        if default_locale not in locales:
            self.fail("default_locale", f"{default_locale!r} is not one of locales {locales}")
        cadence_tags = tuple(self.listed(top.get("cadence_tags", []), "cadence_tags", self.text))
        horizon_days = self.integer(top.get("search_horizon_days", 7), "search_horizon_days", 1)
        if horizon_days > 31:
            self.fail("search_horizon_days", "must be at most 31")
        return Policy(
            source=self.source,
            name=self.text(top.get("name", Path(self.source).stem or "policy"), "name"),
            default_zone=default_zone,
            day_boundary_zone=boundary_zone,
            default_country=self.text(top["default_country"], "default_country", _COUNTRY),
            locales=tuple(locales),
            default_locale=default_locale,
            max_sms_segments=self.integer(top.get("max_sms_segments", 3), "max_sms_segments", 1),
            sender=self.senders(top["sender"], "sender", locales),
            contact_window=self.window(top["contact_window"], "contact_window"),
            caps=self.caps(top["caps"], "caps"),
            holidays=self.holidays(top.get("holidays", {}), "holidays"),
            jurisdictions=self.jurisdictions(top.get("jurisdictions", {}), "jurisdictions"),
            stages=self.stages(top["stages"], "stages", cadence_tags),
            cadence_tags=cadence_tags,
            events=self.events(top["events"], "events"),
            pauses=self.pauses(top.get("pauses", {}), "pauses"),
            search_horizon=dt.timedelta(days=horizon_days),
            attribution_days=self.attribution_days(top.get("campaigns", {}), "campaigns"),
        )

    def senders(self, value: Any, path: str, locales: list[str]) -> Mapping[str, Lender]:
        fields = ("name", "phone", "email", "website", "payment_url", "hours")
        section = self.mapping(value, path, optional=tuple(locales))
        senders = {}
        for locale in locales:
            if locale not in section:
                self.fail(_join(path, locale), "is required: every served locale needs a sender")
            where = _join(path, locale)
            entry = self.mapping(section[locale], where, required=fields)
            values = {key: self.text(entry[key], _join(where, key)) for key in fields}
            senders[locale] = Lender(**values)
        return frozen_mapping(senders)

    def window(self, value: Any, path: str) -> DailyWindow:
        section = self.mapping(value, path, required=("start", "end"))
        start = self.clock(section["start"], _join(path, "start"))
        end = self.clock(section["end"], _join(path, "end"))
        if start >= end:
            self.fail(
                path,
                f"impossible window: start {start:%H:%M} is not before end {end:%H:%M} "
                "(windows across midnight are not supported)",
            )
        return DailyWindow(start, end)

    def caps(self, value: Any, path: str) -> tuple[CapRule, ...]:
        section = self.mapping(value, path, required=REQUIRED_CAPS, optional=("any_per_week",))
        return tuple(
            CapRule.named(name, self.integer(section[name], _join(path, name), 1))
            for name in CAP_RULE_NAMES
            if name in section
        )

    def cap_overrides(self, value: Any, path: str) -> Mapping[str, int]:
        section = self.mapping(value, path, optional=CAP_RULE_NAMES)
        return frozen_mapping(
            {name: self.integer(limit, _join(path, name), 1) for name, limit in section.items()}
        )

    def day_list(self, value: Any, path: str) -> frozenset[dt.date]:
        return frozenset(self.listed(value, path, self.date))

    def holidays(self, value: Any, path: str) -> Mapping[str, frozenset[dt.date]]:
        section = self.mapping(value, path)
        result = {}
        for country, days in section.items():
            self.text(country, _join(path, country), _COUNTRY)
            result[country] = self.day_list(days, _join(path, country))
        return frozen_mapping(result)

    def jurisdictions(self, value: Any, path: str) -> Mapping[str, Jurisdiction]:
        section = self.mapping(value, path)
        result = {}
        for code, body in section.items():
            where = _join(path, code)
            self.text(code, where, _JURISDICTION)
            entry = self.mapping(body, where, optional=("contact_window", "caps", "holidays"))
            if not entry:
                self.fail(where, "overrides nothing (give contact_window, caps or holidays)")
            result[code] = Jurisdiction(
                code=code,
                contact_window=(
                    self.window(entry["contact_window"], _join(where, "contact_window"))
                    if "contact_window" in entry
                    else None
                ),
                caps=self.cap_overrides(entry.get("caps", {}), _join(where, "caps")),
                holidays=self.day_list(entry.get("holidays", []), _join(where, "holidays")),
            )
        return frozen_mapping(result)

    def stages(self, value: Any, path: str, cadence_tags: tuple[str, ...]) -> tuple[Stage, ...]:
        section = self.mapping(value, path)
        if not section:
            self.fail(path, "must define at least one stage")
        stages = []
        for name, body in section.items():
            where = _join(path, name)
            self.text(name, where, _STAGE_NAME)
            entry = self.mapping(
                body, where, required=("days_past_due", "steps"), optional=("tag_steps",)
            )
            first, last = self.day_range(entry["days_past_due"], _join(where, "days_past_due"))
            stage = Stage(name, first, last, ())
            steps = self.steps(entry["steps"], _join(where, "steps"), stage)
            tag_section = self.mapping(entry.get("tag_steps", {}), _join(where, "tag_steps"))
            tag_steps = {}
            for tag, tag_body in tag_section.items():
                tag_where = _join(_join(where, "tag_steps"), tag)
                if tag not in cadence_tags:
                    self.fail(tag_where, f"tag {tag!r} is not listed in cadence_tags")
                tag_steps[tag] = self.steps(tag_body, tag_where, stage)
            stages.append(Stage(name, first, last, steps, frozen_mapping(tag_steps)))
        stages.sort(key=lambda stage: stage.first_day)
        for earlier, later in itertools.pairwise(stages):
            if earlier.last_day is None or earlier.last_day >= later.first_day:
                self.fail(
                    _join(_join(path, later.name), "days_past_due"),
                    f"overlaps stage {earlier.name!r} "
                    f"({earlier.first_day}…{'' if earlier.last_day is None else earlier.last_day})",
                )
        return tuple(stages)

    def day_range(self, value: Any, path: str) -> tuple[int, int | None]:
        section = self.mapping(value, path, required=("from",), optional=("to",))
        first = self.integer(section["from"], _join(path, "from"))
        last_value = section.get("to")
        if last_value is None:
            return first, None
        last = self.integer(last_value, _join(path, "to"))
        if last < first:
            self.fail(path, f"is empty: to ({last}) is before from ({first})")
        return first, last

    def steps(self, value: Any, path: str, stage: Stage) -> tuple[Step, ...]:
        steps = []
        seen: set[str] = set()
        for index, item in enumerate(self.sequence(value, path)):
            where = _join(path, index)
            entry = self.mapping(
                item,
                where,
                required=("at", "channel", "template"),
                optional=("days_past_due", "day", "fallback"),
            )
            if ("days_past_due" in entry) == ("day" in entry):
                self.fail(
                    where, "give exactly one of days_past_due or day (1 = first day of the stage)"
                )
            if "day" in entry:
                day = self.integer(entry["day"], _join(where, "day"), 1)
                days_past_due = stage.first_day + day - 1
            else:
                days_past_due = self.integer(entry["days_past_due"], _join(where, "days_past_due"))
            if not stage.contains(days_past_due):
                self.fail(
                    where,
                    f"falls on day {days_past_due} past due, outside stage {stage.name!r} "
                    f"({stage.first_day}…{'' if stage.last_day is None else stage.last_day})",
                )
            step = Step(
                days_past_due=days_past_due,
                at=self.clock(entry["at"], _join(where, "at")),
                channel=self.channel(entry["channel"], _join(where, "channel")),
                template=self.template(entry["template"], _join(where, "template")),
                fallback=self.boolean(entry.get("fallback", True), _join(where, "fallback")),
            )
            self.use(step.template, _join(where, "template"), step.channel, step.fallback)
            if step.id in seen:
                self.fail(where, f"repeats step {step.id} (same day and template)")
            seen.add(step.id)
            steps.append(step)
        steps.sort(key=lambda step: (step.days_past_due, step.at))
        return tuple(steps)

    def events(self, value: Any, path: str) -> Mapping[Purpose, EventRule]:
        names = tuple(str(purpose) for purpose in EVENT_PURPOSES)
        section = self.mapping(value, path, required=names)
        rules = {}
        for purpose in EVENT_PURPOSES:
            where = _join(path, str(purpose))
            rule = self.event(purpose, section[str(purpose)], where)
            if rule.channel is not None:
                self.use(rule.template, _join(where, "template"), rule.channel, rule.fallback)
            for channel in rule.channels:
                self.use(rule.template, _join(where, "template"), channel, False)
            rules[purpose] = rule
        return frozen_mapping(rules)

    def event(self, purpose: Purpose, value: Any, path: str) -> EventRule:
        timed = ("at", "channel", "template")
        if purpose is Purpose.PROMISE_REMINDER or purpose is Purpose.INSTALMENT_REMINDER:
            entry = self.mapping(
                value, path, required=(*timed, "days_before"), optional=("fallback",)
            )
            # a promise reminder on the promised date itself would be no reminder
            minimum = 1 if purpose is Purpose.PROMISE_REMINDER else 0
            days = self.integer(entry["days_before"], _join(path, "days_before"), minimum)
            return self.timed_event(purpose, entry, path, days=days)
        if purpose is Purpose.BROKEN_PROMISE:
            entry = self.mapping(
                value, path, required=(*timed, "days_after"), optional=("fallback", "valid_days")
            )
            return self.timed_event(
                purpose,
                entry,
                path,
                days=self.integer(entry["days_after"], _join(path, "days_after"), 1),
                valid_days=self.integer(entry.get("valid_days", 2), _join(path, "valid_days"), 0),
            )
        if purpose is Purpose.VISIT_NOTICE:
            entry = self.mapping(
                value, path, required=(*timed, "notice_hours"), optional=("fallback",)
            )
            hours = self.integer(entry["notice_hours"], _join(path, "notice_hours"))
            if hours < MIN_VISIT_NOTICE_HOURS:
                self.fail(
                    _join(path, "notice_hours"),
                    f"{hours} is less than the {MIN_VISIT_NOTICE_HOURS} hours of notice a field "
                    "visit needs",
                )
            return self.timed_event(purpose, entry, path, notice=dt.timedelta(hours=hours))
        if purpose is Purpose.PAYMENT_CONFIRMATION or purpose is Purpose.CEASE_CONFIRMATION:
            optional: tuple[str, ...] = ("fallback",)
            if purpose is Purpose.PAYMENT_CONFIRMATION:
                optional = ("fallback", "max_age_hours")
            entry = self.mapping(value, path, required=("channel", "template"), optional=optional)
            channel = self.channel(entry["channel"], _join(path, "channel"))
            max_age = None
            if purpose is Purpose.PAYMENT_CONFIRMATION:
                hours = self.integer(
                    entry.get("max_age_hours", 72), _join(path, "max_age_hours"), 1
                )
                max_age = dt.timedelta(hours=hours)
            return EventRule(
                purpose=purpose,
                template=self.template(entry["template"], _join(path, "template")),
                channel=channel,
                channels=frozenset(),
                fallback=self.boolean(entry.get("fallback", True), _join(path, "fallback")),
                max_age=max_age,
            )
        # direct replies: they go back on the channel the borrower used
        entry = self.mapping(value, path, required=("channels", "template"))
        channels = self.listed(entry["channels"], _join(path, "channels"), self.channel)
        if not channels:
            self.fail(_join(path, "channels"), "must list at least one channel")
        return EventRule(
            purpose=purpose,
            template=self.template(entry["template"], _join(path, "template")),
            channel=None,
            channels=frozenset(channels),
            fallback=False,
        )

    def timed_event(
        self,
        purpose: Purpose,
        entry: dict[str, Any],
        path: str,
        *,
        days: int = 0,
        valid_days: int = 0,
        notice: dt.timedelta | None = None,
    ) -> EventRule:
        return EventRule(
            purpose=purpose,
            template=self.template(entry["template"], _join(path, "template")),
            channel=self.channel(entry["channel"], _join(path, "channel")),
            channels=frozenset(),
            fallback=self.boolean(entry.get("fallback", True), _join(path, "fallback")),
            at=self.clock(entry["at"], _join(path, "at")),
            days=days,
            valid_days=valid_days,
            notice=notice,
        )

    def attribution_days(self, value: Any, path: str) -> int:
        section = self.mapping(value, path, optional=("attribution_days",))
        days = self.integer(section.get("attribution_days", 7), _join(path, "attribution_days"), 1)
        if days > 90:
            self.fail(_join(path, "attribution_days"), "must be at most 90")
        return days

    def pauses(self, value: Any, path: str) -> Pauses:
        section = self.mapping(value, path, optional=("instalment_grace_days",))
        return Pauses(
            instalment_grace_days=self.integer(
                section.get("instalment_grace_days", 0), _join(path, "instalment_grace_days"), 0
            )
        )


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"text ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
