"""The simulator (`outreach simulate`) and the demo (`outreach demo`), SPEC §9 and §10."""

from outreach.sim.engine import (
    SimulationEnvironment,
    SimulationError,
    SimulationResult,
    SimulationStats,
    Simulator,
    VirtualClock,
    environment,
    simulate,
)
from outreach.sim.inputs import EventBook, SimulationInputError

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
