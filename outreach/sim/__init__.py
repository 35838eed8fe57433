"""The simulator (`outreach simulate`) and the demo (`outreach demo`), SPEC §9 and §10.

The names below load the simulator when first used, not when any of its modules is imported:
the process that splits a book between others starts them before loading it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from outreach.sim.engine import (
        SimulationEnvironment,
        Simulator,
        VirtualClock,
        environment,
        simulate,
    )
    from outreach.sim.inputs import EventBook
    from outreach.sim.results import (
        SimulationError,
        SimulationInputError,
        SimulationResult,
        SimulationStats,
    )

_HOMES = {
    "EventBook": "outreach.sim.inputs",
    "SimulationEnvironment": "outreach.sim.engine",
    "SimulationError": "outreach.sim.results",
    "SimulationInputError": "outreach.sim.results",
    "SimulationResult": "outreach.sim.results",
    "SimulationStats": "outreach.sim.results",
    "Simulator": "outreach.sim.engine",
    "VirtualClock": "outreach.sim.engine",
    "environment": "outreach.sim.engine",
    "simulate": "outreach.sim.engine",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'outreach.sim' has no attribute '{name}'")
    return getattr(importlib.import_module(home), name)


__all__ = [
    "EventBook",
    "SimulationEnvironment",
    "SimulationError",
    "SimulationInputError",
    "SimulationResult",
    "SimulationStats",
    "Simulator",
    "VirtualClock",
    "environment",
    "simulate",
]
