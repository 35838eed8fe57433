"""Charts drawn on the server as SVG, with no script and no inline style (the pages' policy
allows neither): shapes placed by their attributes, coloured by classes of ui.css
(`bar-<status>`), each shape with a `<title>` giving its numbers, and the same numbers in
text or a table beside it for anyone who cannot see the picture.

`status_bar`: one horizontal bar, a campaign's messages stacked by status. `day_chart`: the
overview's sends per day, a group of bars per day (one per channel) stacked by status."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from outreach.domain import Status

# the order statuses are stacked in: gone out first (delivered at the base), then on the
# way, then withheld
STATUS_ORDER: tuple[str, ...] = (
    Status.DELIVERED,
    Status.SENT,
    Status.UNDELIVERED,
    Status.FAILED,
    Status.SENDING,
    Status.QUEUED,
    Status.SCHEDULED,
    Status.DEFERRED,
    Status.SUPPRESSED,
    Status.CANCELLED,
)


def ordered(by_status: Mapping[str, int]) -> list[tuple[str, int]]:
    """The statuses with a count, in STATUS_ORDER (any other after them, by name)."""
    known = [(status, by_status[status]) for status in STATUS_ORDER if by_status.get(status)]
    other = sorted((s, n) for s, n in by_status.items() if n and s not in STATUS_ORDER)
    return known + other


@dataclass(frozen=True)
class BarPart:
    """One status's stretch of a bar: from `x` over `width`, in hundredths of the bar."""

    status: str
    count: int
    x: float
    width: float

    @property
    def percent(self) -> str:
        return _percent(self.width)


def _percent(share: float) -> str:
    if share == 0:
        return "0%"
    if share < 1:
        return "<1%"
    return f"{share:.0f}%"


def status_bar(by_status: Mapping[str, int], total: int | None = None) -> list[BarPart]:
    """A bar's stretches: each status's share of `total` (by default the sum)."""
    whole = total if total is not None else sum(by_status.values())
    parts: list[BarPart] = []
    x = 0.0
    for status, count in ordered(by_status):
        width = 100 * count / whole if whole else 0.0
        parts.append(BarPart(status, count, round(x, 3), round(width, 3)))
        x += width
    return parts


def share(part: int, whole: int) -> str:
    """`40%` (`<1%` for a sliver, `—` of nothing)."""
    return _percent(100 * part / whole) if whole else "—"


# -- sends per day ----------------------------------------------------------------------------

# what the chart of days stacks: the statuses a message ends in, and `sent` (handed over,
# its delivery not reported, which for many numbers and most email is where it stays)
DAY_STATUSES: tuple[str, ...] = (
    Status.DELIVERED,
    Status.SENT,
    Status.UNDELIVERED,
    Status.FAILED,
    Status.SUPPRESSED,
    Status.CANCELLED,
)
CHANNEL_WORDS = {"sms": "SMS", "email": "email"}
# the drawing's own units (the SVG scales to the page's width)
_WIDTH, _HEIGHT = 960.0, 260.0
_LEFT, _RIGHT, _TOP, _BOTTOM = 44.0, 8.0, 10.0, 34.0


def day_words(day: dt.date) -> str:
    """`Thu 3 Dec`."""
    return f"{day:%a} {day.day} {day:%b}"


def nice_scale(largest: int) -> tuple[int, int]:
    """The top of the axis and the step of its lines: 1, 2 or 5 times a power of ten, at
    most five steps, the top at or above `largest`."""
    if largest <= 0:
        return 1, 1
    step = 1
    while True:
        for factor in (1, 2, 5):
            candidate = step * factor
            if math.ceil(largest / candidate) <= 5:
                return math.ceil(largest / candidate) * candidate, candidate
        step *= 10


@dataclass(frozen=True)
class Stretch:
    """One status's part of a bar, from `y` down over `height` (the drawing's units)."""

    status: str
    count: int
    y: float
    height: float
    title: str


@dataclass(frozen=True)
class DayBar:
    """A channel's messages of one day, stacked by status."""

    day: dt.date
    channel: str
    x: float
    width: float
    total: int
    stretches: tuple[Stretch, ...]
    title: str


@dataclass(frozen=True)
class DayChart:
    """The drawing: its size, the bars, the lines across (value, y) and the days under it
    (x of the group's middle, words)."""

    width: float
    height: float
    left: float
    right: float
    baseline: float
    top: int
    per_unit: float
    bars: tuple[DayBar, ...]
    lines: tuple[tuple[int, float], ...]
    labels: tuple[tuple[float, str], ...]
    channels: tuple[str, ...]


def day_chart(
    days: Sequence[dt.date],
    counts: Mapping[tuple[dt.date, str, str], int],
    channels: Sequence[str],
) -> DayChart:
    """Sends per day: one group per day, one bar per channel in it (in `channels` order),
    each stacked by DAY_STATUSES. `counts`: (day, channel, status) → messages."""
    totals = {
        (day, channel): sum(counts.get((day, channel, s), 0) for s in DAY_STATUSES)
        for day in days
        for channel in channels
    }
    top, step = nice_scale(max(totals.values(), default=0))
    plot_height = _HEIGHT - _TOP - _BOTTOM
    baseline = _HEIGHT - _BOTTOM
    per_unit = plot_height / top
    group = (_WIDTH - _LEFT - _RIGHT) / max(len(days), 1)
    bar_width = group * 0.8 / max(len(channels), 1)
    bars: list[DayBar] = []
    labels: list[tuple[float, str]] = []
    for index, day in enumerate(days):
        start = _LEFT + index * group
        month_turns = index == 0 or day.day == 1
        labels.append(
            (round(start + group / 2, 2), f"{day.day} {day:%b}" if month_turns else str(day.day))
        )
        for place, channel in enumerate(channels):
            named = f"{day_words(day)}, {CHANNEL_WORDS.get(channel, channel)}"
            stretches: list[Stretch] = []
            y = baseline
            for status in DAY_STATUSES:
                count = counts.get((day, channel, status), 0)
                if not count:
                    continue
                height = count * per_unit
                y -= height
                stretches.append(
                    Stretch(
                        status, count, round(y, 3), round(height, 3), f"{named}, {status}: {count}"
                    )
                )
            total = totals[(day, channel)]
            parts = ", ".join(f"{s.status} {s.count}" for s in stretches)
            bars.append(
                DayBar(
                    day=day,
                    channel=channel,
                    x=round(start + group * 0.1 + place * bar_width, 3),
                    width=round(bar_width * 0.92, 3),
                    total=total,
                    stretches=tuple(stretches),
                    title=f"{named}: {total}" + (f" ({parts})" if parts else ""),
                )
            )
    lines = tuple(
        (value, round(baseline - value * per_unit, 3)) for value in range(0, top + 1, step)
    )
    return DayChart(
        width=_WIDTH,
        height=_HEIGHT,
        left=_LEFT,
        right=_WIDTH - _RIGHT,
        baseline=baseline,
        top=top,
        per_unit=per_unit,
        bars=tuple(bars),
        lines=lines,
        labels=tuple(labels),
        channels=tuple(channels),
    )
