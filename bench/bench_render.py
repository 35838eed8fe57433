"""How fast messages render: SMS and email separately, plus start-up and a full lint.

    .venv/bin/python bench/bench_render.py [--seconds 3]

Renders every shipped message in every locale with its sample context, round robin, on one
thread, for the given time per channel. A render includes the filters (Babel money and dates)
and, for SMS, encoding and segment counting; contexts are built before timing starts.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time
from pathlib import Path
from typing import Any

from outreach.domain import Channel
from outreach.render import Renderer, check_repository, sample_context
from outreach.render.catalog import shipped_references

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
LOCALES = ("en-US", "zh-CN", "zh-TW")


def cases(renderer: Renderer, channel: Channel) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (template, locale, sample_context(template, channel, locale))
        for template in sorted(shipped_references())
        for locale in LOCALES
        if renderer.has(template, channel, locale)
    ]


def renders_per_second(
    renderer: Renderer, channel: Channel, seconds: float
) -> tuple[float, float, int]:
    """Renders per second of CPU time and of wall time, and how many variants were cycled.

    CPU time is the steadier figure on a shared machine: it leaves out time spent waiting for
    a core that other processes hold.
    """
    work = cases(renderer, channel)
    for template, locale, context in work:  # warm Babel's caches
        renderer.render(template, channel, locale, context)
    done = 0
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    deadline = wall_start + seconds
    for template, locale, context in itertools.cycle(work):
        renderer.render(template, channel, locale, context)
        done += 1
        if done % 64 == 0 and time.perf_counter() >= deadline:
            break
    cpu = time.process_time() - cpu_start
    wall = time.perf_counter() - wall_start
    return done / cpu, done / wall, len(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per channel")
    args = parser.parse_args()

    started = time.process_time()
    renderer = Renderer(TEMPLATES)
    startup = time.process_time() - started
    files = len(renderer.source_files())

    print(f"python {platform.python_version()} on {platform.machine()}, one thread")
    print(f"start-up (read and compile {files} template files): {startup * 1000:.0f} ms CPU")
    for channel in (Channel.SMS, Channel.EMAIL):
        cpu_rate, wall_rate, variety = renders_per_second(renderer, channel, args.seconds)
        print(
            f"{channel.value:5} renders/s: {cpu_rate:7.0f} per CPU second, "
            f"{wall_rate:7.0f} per wall second  ({variety} template x locale variants)"
        )

    started = time.process_time()
    findings = check_repository(TEMPLATES, shipped_references(), LOCALES, 3)
    elapsed = time.process_time() - started
    print(f"full lint of the templates: {elapsed * 1000:.0f} ms CPU, {len(findings)} findings")


if __name__ == "__main__":
    main()
