"""Imported by the fork server of a split simulation (`outreach.sim.shards`), before any
process is forked from it: the configured templates compiled once, for every process.

Whatever goes wrong here is left for the processes themselves to meet and report as they
would without it (a missing templates directory, a setting that does not parse).
"""

from __future__ import annotations

import contextlib

from outreach.errors import OutreachError
from outreach.settings import load_settings
from outreach.sim.engine import compiled_renderer

with contextlib.suppress(OutreachError, OSError):
    compiled_renderer(load_settings().templates_dir)
