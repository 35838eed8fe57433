"""When a message would get its frequency-cap slots, worked out from the slots the message
log says are held: what planning a campaign tells ops before launch, and where it puts a
message the caps would hold back. The caps themselves are reserved at dispatch
(`outreach.caps`); this reads the same rules the same way (a slot counts while it is less
than its window old; a refused message waits until enough of the oldest leave).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from outreach.domain import Channel
from outreach.policy.model import CapRule

# a message never waits on more rules than there are; a guard against a loop all the same
_MAX_STEPS = 16


def cap_frees_at(
    rules: Sequence[CapRule],
    held: Iterable[tuple[Channel, dt.datetime]],
    channel: Channel,
    at: dt.datetime,
) -> tuple[dt.datetime, str] | None:
    """None when a message on `channel` could take its slots at `at`; else the first instant
    it could and the rule that held it back longest."""
    slots = sorted(held, key=lambda slot: slot[1])
    moment = at
    blocking_rule: str | None = None
    for _ in range(_MAX_STEPS):
        blocked: tuple[dt.datetime, str] | None = None
        for rule in rules:
            if not rule.counts(channel):
                continue
            inside = [
                when for kind, when in slots if rule.counts(kind) and when > moment - rule.window
            ]
            if len(inside) >= rule.limit:
                frees = inside[len(inside) - rule.limit] + rule.window
                if blocked is None or frees > blocked[0]:
                    blocked = (frees, rule.name)
        if blocked is None:
            return None if blocking_rule is None else (moment, blocking_rule)
        moment, blocking_rule = blocked
    return (moment, blocking_rule) if blocking_rule is not None else None
