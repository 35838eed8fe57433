"""Quiet hours: when a message may reach a borrower, in every zone they may be in.

The allowed instants in one zone are the local contact window of every day that is not a
holiday, minus the borrower's inconvenient windows. To be exact across DST the computation
never converts a local wall time to an instant directly (02:30 may not exist, 01:30 may exist
twice); it splits time into stretches of constant UTC offset, where local time is just UTC
plus the offset, and maps the local intervals into each stretch. The answer is the start of
the first stretch allowed in every zone at once, so no earlier allowed instant exists.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from zoneinfo import ZoneInfo

from outreach.domain import BorrowerState, Decision, InconvenientWindow, Reason
from outreach.policy.memo import per_borrower
from outreach.policy.model import CAP_RULE_NAMES, CapRule, ContactRules, DailyWindow, Policy
from outreach.policy.zones import borrower_countries, candidate_zones, jurisdiction_codes

_DAY = dt.timedelta(days=1)
# Offset changes are looked for between samples this far apart; no zone changes offset twice
# within it.
_SAMPLE = dt.timedelta(hours=3)
_SECOND = dt.timedelta(seconds=1)

# Naive datetimes below are either UTC ("utc") or a zone's wall time ("local"), never mixed.
Interval = tuple[dt.datetime, dt.datetime]


@per_borrower
def contact_rules(policy: Policy, borrower: BorrowerState) -> ContactRules:
    """The window, caps and holidays for this borrower, jurisdiction overrides applied.

    Holidays of every country the borrower may be in apply; a country override applies before
    a region override (`US`, then `US-MA`).
    """
    window = policy.contact_window
    caps = {rule.name: rule for rule in policy.caps}
    holidays: set[dt.date] = set()
    for country in borrower_countries(policy, borrower):
        holidays |= policy.holidays.get(country, frozenset())
    applied: str | None = None
    for code in jurisdiction_codes(borrower):
        jurisdiction = policy.jurisdictions.get(code)
        if jurisdiction is None:
            continue
        applied = code
        if jurisdiction.contact_window is not None:
            window = jurisdiction.contact_window
        for name, limit in jurisdiction.caps.items():
            caps[name] = CapRule.named(name, limit)
        holidays |= jurisdiction.holidays
    return ContactRules(
        jurisdiction=applied,
        contact_window=window,
        caps=tuple(caps[name] for name in CAP_RULE_NAMES if name in caps),
        holidays=frozenset(holidays),
    )


def next_allowed_instant(policy: Policy, borrower: BorrowerState, at: dt.datetime) -> Decision:
    """The earliest instant ≥ `at` allowed in every candidate zone of the borrower.

    `send` when `at` itself is allowed; `wait(QUIET_HOURS | HOLIDAY | INCONVENIENT_TIME,
    until)` naming what blocks `at`; `suppress(NO_CONVENIENT_TIME)` when nothing is allowed
    within the policy's search horizon (7 days by default).
    """
    rules = contact_rules(policy, borrower)
    return _earliest_allowed_remembered(
        candidate_zones(policy, borrower),
        rules.contact_window,
        rules.holidays,
        tuple(borrower.inconvenient_windows),
        at,
        policy.search_horizon,
    )


@functools.lru_cache(maxsize=16384)
def _earliest_allowed_remembered(
    zones: tuple[ZoneInfo, ...],
    window: DailyWindow,
    holidays: frozenset[dt.date],
    inconvenient: tuple[InconvenientWindow, ...],
    at: dt.datetime,
    horizon: dt.timedelta,
) -> Decision:
    # planning asks about the same instants (a step's hour on its day) for every borrower in
    # the same zones under the same rules, every time the loan is planned again
    return earliest_allowed(zones, window, holidays, inconvenient, at, horizon)


# `when_allowed` reads better at call sites that plan rather than gate.
when_allowed = next_allowed_instant


def earliest_allowed(
    zones: Sequence[ZoneInfo],
    window: DailyWindow,
    holidays: frozenset[dt.date],
    inconvenient: Sequence[InconvenientWindow],
    at: dt.datetime,
    horizon: dt.timedelta = dt.timedelta(days=7),
) -> Decision:
    """`next_allowed_instant` for explicit zones and rules (the pure core)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("`at` must be timezone-aware")
    blocked = blocking_reason(zones, window, holidays, inconvenient, at)
    if blocked is None:
        return Decision.send(Reason.DUE)
    reason, zone = blocked
    start = _naive_utc(at)
    allowed = _allowed_everywhere(zones, window, holidays, inconvenient, start, horizon + _DAY)
    if allowed and allowed[0][0] - start <= horizon:
        until = allowed[0][0].replace(tzinfo=dt.UTC)
        return Decision.wait(reason, until, zone=zone.key)
    return Decision.suppress(Reason.NO_CONVENIENT_TIME, horizon_days=str(horizon.days))


def window_closes_at(
    policy: Policy, borrower: BorrowerState, now: dt.datetime
) -> dt.datetime | None:
    """When the allowed stretch containing `now` ends in some zone; None if `now` is not allowed.

    A provider should not deliver after this instant (SMS validity, a queued email).
    """
    rules = contact_rules(policy, borrower)
    return _window_end(
        candidate_zones(policy, borrower),
        rules.contact_window,
        rules.holidays,
        tuple(borrower.inconvenient_windows),
        now,
    )


@functools.lru_cache(maxsize=4096)
def _window_end(
    zones: tuple[ZoneInfo, ...],
    window: DailyWindow,
    holidays: frozenset[dt.date],
    inconvenient: tuple[InconvenientWindow, ...],
    now: dt.datetime,
) -> dt.datetime | None:
    # a batch of messages is sent at one instant to borrowers in the same few zones
    if blocking_reason(zones, window, holidays, inconvenient, now):
        return None
    start = _naive_utc(now)
    allowed = _allowed_everywhere(zones, window, holidays, inconvenient, start, 2 * _DAY)
    if not allowed or allowed[0][0] != start:
        return None
    return allowed[0][1].replace(tzinfo=dt.UTC)


def _allowed_everywhere(
    zones: Sequence[ZoneInfo],
    window: DailyWindow,
    holidays: frozenset[dt.date],
    inconvenient: Sequence[InconvenientWindow],
    start: dt.datetime,
    span: dt.timedelta,
) -> list[Interval]:
    """UTC intervals in [start, start + span) allowed in every zone at once."""
    end = start + span
    allowed: list[Interval] = [(start, end)]
    for zone in zones:
        in_zone = _allowed_utc(
            zone, window, holidays, tuple(inconvenient), start.date(), end.date()
        )
        allowed = _intersect(allowed, in_zone)
        if not allowed:
            break
    return allowed


def blocking_reason(
    zones: Iterable[ZoneInfo],
    window: DailyWindow,
    holidays: frozenset[dt.date],
    inconvenient: Sequence[InconvenientWindow],
    at: dt.datetime,
) -> tuple[Reason, ZoneInfo] | None:
    """Why `at` is not allowed (holiday before quiet hours before inconvenient), or None."""
    found: tuple[Reason, ZoneInfo] | None = None
    rank = {Reason.HOLIDAY: 0, Reason.QUIET_HOURS: 1, Reason.INCONVENIENT_TIME: 2}
    for zone in zones:
        local = at.astimezone(zone).replace(tzinfo=None)
        day = local.date()
        reason: Reason | None = None
        if day in holidays:
            reason = Reason.HOLIDAY
        elif not window.contains(local.time()):
            reason = Reason.QUIET_HOURS
        elif any(a <= local < b for a, b in _blocked_local(inconvenient, day - _DAY, day)):
            reason = Reason.INCONVENIENT_TIME
        if reason is not None and (found is None or rank[reason] < rank[found[0]]):
            found = (reason, zone)
    return found


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def _offset_at(zone: ZoneInfo, utc: dt.datetime) -> dt.timedelta:
    offset = zone.fromutc(utc.replace(tzinfo=zone)).utcoffset()
    assert offset is not None  # a ZoneInfo always knows its offset
    return offset


@functools.lru_cache(maxsize=8192)
def _day_segments(
    zone: ZoneInfo, day: dt.date
) -> tuple[tuple[dt.datetime, dt.datetime, dt.timedelta], ...]:
    """Stretches of constant UTC offset covering one UTC day: (utc start, utc end, offset)."""
    day_start = dt.datetime.combine(day, dt.time())
    day_end = day_start + _DAY
    segments = []
    segment_start = day_start
    offset = _offset_at(zone, day_start)
    probe = day_start
    while probe < day_end:
        next_probe = min(probe + _SAMPLE, day_end)
        next_offset = _offset_at(zone, next_probe) if next_probe < day_end else None
        if next_offset is not None and next_offset != offset:
            # the first whole second in (probe, next_probe] already on the new offset
            low, high = 0, int((next_probe - probe).total_seconds())
            while high - low > 1:
                middle = (low + high) // 2
                if _offset_at(zone, probe + middle * _SECOND) == offset:
                    low = middle
                else:
                    high = middle
            change = probe + high * _SECOND
            segments.append((segment_start, change, offset))
            segment_start, offset = change, _offset_at(zone, change)
        probe = next_probe
    segments.append((segment_start, day_end, offset))
    return tuple(segments)


def _segments(
    zone: ZoneInfo, start: dt.datetime, end: dt.datetime
) -> list[tuple[dt.datetime, dt.datetime, dt.timedelta]]:
    result = []
    day = start.date()
    while dt.datetime.combine(day, dt.time()) < end:
        for seg_start, seg_end, offset in _day_segments(zone, day):
            lo, hi = max(seg_start, start), min(seg_end, end)
            if lo < hi:
                result.append((lo, hi, offset))
        day += _DAY
    return result


def _blocked_local(
    inconvenient: Sequence[InconvenientWindow], first_day: dt.date, last_day: dt.date
) -> list[Interval]:
    """Local intervals a borrower declared inconvenient, for windows starting on these days.

    A window whose end is before its start runs past midnight into the next day; one whose
    start equals its end is read as the whole day, the cautious reading of an ambiguous
    declaration.
    """
    blocked = []
    day = first_day
    while day <= last_day:
        for window in inconvenient:
            if window.weekdays and day.isoweekday() not in window.weekdays:
                continue
            begin = dt.datetime.combine(day, window.start)
            if window.start < window.end:
                finish = dt.datetime.combine(day, window.end)
            else:
                finish = dt.datetime.combine(day + _DAY, window.end)
            blocked.append((begin, finish))
        day += _DAY
    return blocked


def _allowed_local(
    window: DailyWindow,
    holidays: frozenset[dt.date],
    inconvenient: Sequence[InconvenientWindow],
    first_day: dt.date,
    last_day: dt.date,
) -> list[Interval]:
    allowed: list[Interval] = []
    day = first_day
    while day <= last_day:
        if day not in holidays:
            allowed.append(
                (dt.datetime.combine(day, window.start), dt.datetime.combine(day, window.end))
            )
        day += _DAY
    if inconvenient and allowed:
        allowed = _subtract(allowed, _blocked_local(inconvenient, first_day - _DAY, last_day))
    return allowed


@functools.lru_cache(maxsize=4096)
def _allowed_utc(
    zone: ZoneInfo,
    window: DailyWindow,
    holidays: frozenset[dt.date],
    inconvenient: tuple[InconvenientWindow, ...],
    first_day: dt.date,
    last_day: dt.date,
) -> tuple[Interval, ...]:
    """The UTC intervals allowed in one zone, over whole UTC days (cached: rules repeat)."""
    start = dt.datetime.combine(first_day, dt.time())
    end = dt.datetime.combine(last_day, dt.time()) + _DAY
    result: list[Interval] = []
    for seg_start, seg_end, offset in _segments(zone, start, end):
        local_first = (seg_start + offset).date()
        local_last = (seg_end + offset).date()
        for local_a, local_b in _allowed_local(
            window, holidays, inconvenient, local_first, local_last
        ):
            lo, hi = max(local_a - offset, seg_start), min(local_b - offset, seg_end)
            if lo < hi:
                result.append((lo, hi))
    return tuple(_merge(result))


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            if b > merged[-1][1]:
                merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def _intersect(left: Sequence[Interval], right: Sequence[Interval]) -> list[Interval]:
    result = []
    i = j = 0
    while i < len(left) and j < len(right):
        lo = max(left[i][0], right[j][0])
        hi = min(left[i][1], right[j][1])
        if lo < hi:
            result.append((lo, hi))
        if left[i][1] < right[j][1]:
            i += 1
        else:
            j += 1
    return result


def _subtract(intervals: Sequence[Interval], holes: Iterable[Interval]) -> list[Interval]:
    pieces = list(intervals)
    for hole_a, hole_b in _merge(holes):
        next_pieces = []
        for a, b in pieces:
            if hole_b <= a or b <= hole_a:
                next_pieces.append((a, b))
                continue
            if a < hole_a:
                next_pieces.append((a, hole_a))
            if hole_b < b:
                next_pieces.append((hole_b, b))
        pieces = next_pieces
    return pieces
