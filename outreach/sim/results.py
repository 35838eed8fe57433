"""What a simulation run reports, and how it shows its progress: what every process of a
run (and the one that splits a book between them) needs without the simulator itself, so a
split run's first process starts the others before it has loaded the rest."""

from __future__ import annotations

import resource
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outreach.errors import OutreachError, PermanentError


class SimulationError(OutreachError):
    """Raised when the simulation itself cannot go on (not a malformed input line)."""


class SimulationInputError(PermanentError):
    """Raised when a line of EVENTS.jsonl is malformed; names the line and what is wrong."""

    def __init__(self, source: str, line: int, problem: str) -> None:
        where = f"{source}, line {line}" if line else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.line = line
        self.problem = problem


@dataclass
class SimulationStats:
    """What happened, for the summary line and the demo report."""

    events: Counter[str] = field(default_factory=Counter)  # ingest outcome -> count
    events_after_end: int = 0
    replies: Counter[str] = field(default_factory=Counter)  # classification -> count
    outcomes: Counter[str] = field(default_factory=Counter)  # provider status -> count
    dispatches: Counter[str] = field(default_factory=Counter)  # dispatch outcome -> count
    replans: int = 0
    instants: int = 0
    messages: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    wall_seconds: float = 0.0
    # the processes the run took, the sum of each one's peak resident memory, and the
    # largest of those peaks
    processes: int = 1
    peak_memory_bytes: int = 0
    largest_memory_bytes: int = 0
    # each campaign launched, as the ops API shows it with its progress (SPEC §8)
    campaigns: list[dict[str, Any]] = field(default_factory=list)
    campaigns_after_end: int = 0

    @property
    def events_applied(self) -> int:
        return sum(self.events.values()) + sum(self.replies.values())


@dataclass
class SimulationResult:
    stats: SimulationStats
    out: Path


class ProgressBar:
    """A bar over virtual time on a terminal (`enabled`); silent otherwise."""

    def __init__(self, enabled: bool, total: float) -> None:
        self._bar: Any = None
        self._task: Any = None
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("simulating"),
                BarColumn(),
                TextColumn("{task.fields[day]}"),
                TimeElapsedColumn(),
                transient=True,
            )
            self._task = self._bar.add_task("simulate", total=total, day="")

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def __enter__(self) -> ProgressBar:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def show(self, done: float, messages: int) -> None:
        """`done` virtual seconds of the run, `messages` dispatched so far."""
        if self._bar is not None:
            day = f"day {int(done // 86400) + 1}, {messages} dispatched"
            self._bar.update(self._task, completed=done, day=day)


def peak_memory() -> int:
    """This process's peak resident memory in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


__all__ = [
    "ProgressBar",
    "SimulationError",
    "SimulationInputError",
    "SimulationResult",
    "SimulationStats",
    "peak_memory",
]
