"""One simulation split between processes: borrowers who share nothing run apart.

Every rule the service applies is about one borrower, or about an address several borrowers
may share: caps and restrictions per borrower, opt-outs and dead numbers per address, replies
matched by the number they come from, loans belonging to a borrower (and possibly moving to
another). So the book splits into groups that share nothing — borrowers joined by a loan, a
phone number or an email address — and each process simulates some of the groups, with its
own store, caps and providers, over the whole period. Message ids (`seeded_ids`) and provider
ids are derived from what they name, not from the order they were drawn in, and a batch never
depends on another borrower's messages (`claim_due` breaks ties by id), so the merged output
is the output of one process: a test holds the two to the same bytes.

A campaign reaches borrowers of every group, so its line goes to every process: each
launches it over its own borrowers at the same instant, under the same id, and draws each
borrower's arm from the campaign and borrower ids as one process would. Its figures are the
sum of theirs. A throttled campaign is the exception: its pace is shared by all its messages
(spread over the time its whole segment takes, at most so many a minute), so a book with one
runs in one process.

The parent reads each line once as JSON to find the group it belongs to; each process then
reads the lines of its own groups with the webhook's parser, checks all of them before any
runs (the first malformed line of the book stops the run, as in one process), simulates, and
writes its messages; the parent merges them in creation order.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import heapq
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

import orjson
import phonenumbers

from outreach.settings import Settings
from outreach.sim.collection import paused_collection
from outreach.sim.results import (
    ProgressBar,
    SimulationError,
    SimulationInputError,
    SimulationResult,
    SimulationStats,
    peak_memory,
)

# The simulator itself (`outreach.sim.engine`, `outreach.sim.inputs`) and the policy are
# imported where they are used: the process that splits a book starts the fork server, and
# plans the split, before it has spent a second loading them.

# A book smaller than this runs in one process: starting others costs more than it saves.
SHARD_MIN_EVENTS = 20_000
# At most this many processes, whatever the machine has.
MAX_JOBS = 8
_UNROUTED = 255  # a blank line: no process reads it
_EVERY = 254  # a campaign line: every process reads it
_CAMPAIGN_LAUNCHED = "campaign.launched"


def default_jobs() -> int:
    """One process per CPU this process may run on, up to MAX_JOBS."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_JOBS))


class _Groups:
    """Union-find over the names that join borrowers: borrower, loan, phone, email."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, name: str) -> str:
        parent = self.parent.setdefault(name, name)
        if parent == name:
            return name
        root = name
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[name] != root:  # path compression
            self.parent[name], name = root, self.parent[name]
        return root

    def join(self, names: tuple[str, ...]) -> None:
        roots = sorted({self.find(name) for name in names})
        for other in roots[1:]:
            self.parent[other] = roots[0]


def _phone(value: Any) -> str:
    """A number as the webhook's parser stores it (E.164), or as given if it cannot tell."""
    text = str(value)
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return text
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def joining_names(document: Any) -> list[str]:
    """The names an event line touches; [] when it names nothing (it is then malformed, or
    an event about nobody in particular)."""
    if not isinstance(document, dict) or not isinstance(document.get("data"), dict):
        return []
    kind, data = document.get("type"), document["data"]
    names: list[str] = []
    if kind == "borrower.upserted" and isinstance(data.get("borrower"), dict):
        borrower = data["borrower"]
        names.append(f"b:{borrower.get('id')}")
        phones = borrower.get("phones")
        if isinstance(phones, list):
            names.extend(f"p:{_phone(phone)}" for phone in phones)
        if isinstance(borrower.get("email"), str):
            names.append(f"e:{borrower['email'].strip().lower()}")
    elif kind == "loan.updated" and isinstance(data.get("loan"), dict):
        loan = data["loan"]
        names.append(f"l:{loan.get('id')}")
        names.append(f"b:{loan.get('borrower_id')}")
    elif kind == "contact.restricted":
        names.append(f"b:{data.get('borrower_id')}")
    elif kind == "sms.inbound":
        names.append(f"p:{_phone(data.get('from'))}")
    elif "loan_id" in data:
        names.append(f"l:{data.get('loan_id')}")
    return names


@dataclass
class ShardPlan:
    """Which process simulates each line of the book."""

    jobs: int
    # by line number - 1: the process, _UNROUTED for a blank line, _EVERY for a campaign
    shard_of_line: bytes
    events: list[int] = field(default_factory=list)


def plan_shards(path: Path, jobs: int) -> ShardPlan | None:
    """Split the book's groups between `jobs` processes, largest groups first, each to the
    process with the fewest events so far; campaign lines to all of them. None when the book
    is better run in one process: too small, one group, a throttled campaign, or a line that
    is not JSON (one process reports it as usual)."""
    if jobs < 2:
        return None
    groups = _Groups()
    joined: set[tuple[str, ...]] = set()  # a loan is reported daily: join its names once
    first_name: list[str | None] = []
    every: set[int] = set()
    try:
        with path.open(encoding="utf-8") as handle, paused_collection():
            for raw in handle:
                text = raw.strip()
                if not text:
                    first_name.append(None)
                    continue
                try:
                    document = orjson.loads(text)
                except orjson.JSONDecodeError:
                    return None
                if isinstance(document, dict) and document.get("type") == _CAMPAIGN_LAUNCHED:
                    if _throttled(document):
                        return None
                    every.add(len(first_name))
                    first_name.append(None)
                    continue
                names = tuple(joining_names(document)) or ("unrouted",)
                if names not in joined:
                    joined.add(names)
                    groups.join(names)
                first_name.append(names[0])
    except (OSError, UnicodeDecodeError):
        return None
    events = sum(1 for name in first_name if name is not None)
    if jobs < 2 or events < SHARD_MIN_EVENTS:
        return None
    size: Counter[str] = Counter()
    root_of_line = [groups.find(name) if name is not None else None for name in first_name]
    size.update(root for root in root_of_line if root is not None)
    if len(size) < 2:
        return None
    jobs = min(jobs, len(size))
    load = [0] * jobs
    shard_of_root: dict[str, int] = {}
    for root, count in sorted(size.items(), key=lambda item: (-item[1], item[0])):
        shard = min(range(jobs), key=lambda index: (load[index], index))
        shard_of_root[root] = shard
        load[shard] += count
    return ShardPlan(
        jobs,
        bytes(
            _EVERY if index in every else _UNROUTED if root is None else shard_of_root[root]
            for index, root in enumerate(root_of_line)
        ),
        load,
    )


def _throttled(document: dict[str, Any]) -> bool:
    data = document.get("data")
    return isinstance(data, dict) and data.get("throttle_per_minute") is not None


@dataclass(frozen=True)
class _ShardSpec:
    index: int
    path: Path
    shard_of_line: bytes
    settings: Settings
    start: dt.datetime
    days: float
    part: Path
    policy_path: Path | None
    seed: int | None
    workdir: Path | None


def _run_shard(spec: _ShardSpec, connection: Connection, shared: Any) -> None:
    """A process's part: check its lines, wait for every process's check, simulate, write."""
    from outreach.sim.campaigns import deferred_checker
    from outreach.sim.engine import simulate
    from outreach.sim.inputs import EventBook

    try:
        try:
            book = EventBook.from_file(
                spec.path,
                keep=lambda line: spec.shard_of_line[line - 1] in (spec.index, _EVERY),
                check_campaign=deferred_checker(spec.settings, spec.policy_path),
            )
        except SimulationInputError as error:
            connection.send(("invalid", error.line, error.source, error.problem))
            return
        connection.send(("valid",))
        if connection.recv() != "go":
            return

        def report(done: float, messages: int) -> None:
            shared[2 * spec.index] = done
            shared[2 * spec.index + 1] = messages

        result = simulate(
            spec.settings,
            book,
            start=spec.start,
            days=spec.days,
            out=spec.part,
            policy_path=spec.policy_path,
            seed=spec.seed,
            workdir=spec.workdir,
            keyed_output=True,
            report=report,
        )
        connection.send(("done", result.stats, peak_memory()))
    except BaseException as error:  # reported to the parent, which raises it
        with contextlib.suppress(Exception):
            connection.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        connection.close()


def _context() -> Any:
    """Processes forked from a server that has imported the simulator and nothing else: they
    start at once, without a copy of what the parent read to plan the split (each would count
    it again in its memory). A fresh interpreter each where there is no fork server."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(
            ["outreach.sim.engine", "outreach.sim.inputs", "outreach.sim.preload"]
        )
        return context
    return multiprocessing.get_context("spawn")


def _start_server(context: Any) -> None:
    """Start the fork server now, so it imports while the parent plans the split."""
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def simulate_file(
    settings: Settings,
    path: Path,
    *,
    start: dt.datetime,
    days: float,
    out: Path,
    policy_path: Path | None = None,
    seed: int | None = None,
    progress: bool = False,
    workdir: Path | None = None,
    jobs: int | None = None,
) -> SimulationResult:
    """`simulate` over an EVENTS.jsonl file, in `jobs` processes (default: one per CPU)
    when the book is large enough to gain from it; the same output either way."""
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("the start of a simulation must carry a UTC offset")
    jobs = default_jobs() if jobs is None else jobs
    context = _context()
    if jobs > 1:
        _start_server(context)
    plan = plan_shards(path, jobs)
    from outreach import policy as pol
    from outreach.sim.campaigns import deferred_checker
    from outreach.sim.engine import simulate
    from outreach.sim.inputs import EventBook

    if plan is not None:
        # a policy that does not load fails here, once, as it does in one process
        pol.load_policy(policy_path or settings.policy_path)
    if plan is None:
        return simulate(
            settings,
            EventBook.from_file(path, check_campaign=deferred_checker(settings, policy_path)),
            start=start,
            days=days,
            out=out,
            policy_path=policy_path,
            seed=seed,
            progress=progress,
            workdir=workdir,
        )
    started = time.perf_counter()
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="outreach-shards-", dir=workdir))
    try:
        parts = [directory / f"part-{index}.jsonl" for index in range(plan.jobs)]
        specs = [
            _ShardSpec(
                index,
                path,
                plan.shard_of_line,
                settings,
                start.astimezone(dt.UTC),
                days,
                parts[index],
                policy_path,
                seed,
                workdir,
            )
            for index in range(plan.jobs)
        ]
        stats, peaks = _run_all(context, specs, progress)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as handle:
            _merge(parts, handle)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    total = _combined(stats)
    total.wall_seconds = time.perf_counter() - started
    total.processes = len(peaks) + 1
    total.peak_memory_bytes = sum(peaks) + peak_memory()
    total.largest_memory_bytes = max(*peaks, peak_memory())
    return SimulationResult(total, out)


def _run_all(
    context: Any, specs: list[_ShardSpec], progress: bool
) -> tuple[list[SimulationStats], list[int]]:
    workers: list[tuple[Any, Connection]] = []
    # each process's (virtual seconds done, messages dispatched), for the progress bar
    shared = context.Array("d", 2 * len(specs), lock=False)
    try:
        for spec in specs:
            mine, theirs = context.Pipe()
            process = context.Process(target=_run_shard, args=(spec, theirs, shared), daemon=True)
            process.start()
            theirs.close()
            workers.append((process, mine))
        checks = [_receive(process, connection) for process, connection in workers]
        invalid = [check for check in checks if check[0] == "invalid"]
        for _, connection in workers:
            with contextlib.suppress(OSError):
                connection.send("stop" if invalid else "go")
        if invalid:
            _, line, source, problem = min(invalid, key=lambda check: check[1])
            raise SimulationInputError(source, line, problem)
        _raise_errors(checks)
        total = specs[0].days * 86400
        with ProgressBar(progress, total) as bar:
            for _, connection in workers:
                while not connection.poll(0.2):
                    bar.show(
                        min(shared[2 * index] for index in range(len(specs))),
                        int(sum(shared[2 * index + 1] for index in range(len(specs)))),
                    )
            results = [_receive(process, connection) for process, connection in workers]
        _raise_errors(results)
        return [result[1] for result in results], [result[2] for result in results]
    finally:
        for process, connection in workers:
            connection.close()
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()


def _receive(process: Any, connection: Connection) -> tuple[Any, ...]:
    try:
        message: tuple[Any, ...] = connection.recv()
    except EOFError:
        process.join()
        return ("error", f"a simulation process ended without a result (exit {process.exitcode})")
    return message


def _raise_errors(messages: list[tuple[Any, ...]]) -> None:
    for message in messages:
        if message[0] == "error":
            raise SimulationError(message[1])


def _keyed_lines(path: Path) -> Iterator[tuple[str, str]]:
    with path.open(encoding="utf-8") as handle:
        for raw in handle:
            key, _, line = raw.partition("\t\t")
            yield key, line


def _merge(parts: list[Path], out: IO[str]) -> None:
    """The processes' messages in creation order (each part is in that order already)."""
    for _, line in heapq.merge(*(_keyed_lines(part) for part in parts)):
        out.write(line)


def _combined(parts: list[SimulationStats]) -> SimulationStats:
    from outreach.sim.campaigns import merged

    total = SimulationStats()
    for part in parts:
        total.events.update(part.events)
        total.replies.update(part.replies)
        total.outcomes.update(part.outcomes)
        total.dispatches.update(part.dispatches)
        total.statuses.update(part.statuses)
        total.events_after_end += part.events_after_end
        total.replans += part.replans
        total.instants = max(total.instants, part.instants)
        total.messages += part.messages
        # every process had every campaign line
        total.campaigns_after_end = max(total.campaigns_after_end, part.campaigns_after_end)
    total.campaigns = merged(part.campaigns for part in parts)
    return total


__all__ = ["ShardPlan", "default_jobs", "joining_names", "plan_shards", "simulate_file"]
