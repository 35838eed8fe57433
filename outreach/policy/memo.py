"""Memory for pure functions of (policy, borrower) that planning and gating ask many times.

One plan of one loan asks for the borrower's zones and contact rules a dozen times or more
(each step, each gate, each day looked ahead); both are pure functions of two immutable
values, so each is worked out once per borrower state. Entries are held by identity (the
same objects, not equal ones), a few thousand at most.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from outreach.domain import BorrowerState
from outreach.policy.model import Policy

Result = TypeVar("Result")

_MAX_ENTRIES = 4096


def per_borrower(
    function: Callable[[Policy, BorrowerState], Result],
) -> Callable[[Policy, BorrowerState], Result]:
    """`function`, remembering its answer for the last few thousand (policy, borrower)."""
    memory: dict[tuple[int, int], tuple[Policy, BorrowerState, Result]] = {}

    @functools.wraps(function)
    def remembered(policy: Policy, borrower: BorrowerState) -> Result:
        key = (id(policy), id(borrower))
        found = memory.get(key)
        # an id may be reused once its object is gone: the entry holds the objects, so a
        # match by identity is the same object
        if found is not None and found[0] is policy and found[1] is borrower:
            return found[2]
        value = function(policy, borrower)
        if len(memory) >= _MAX_ENTRIES:
            memory.clear()
        memory[key] = (policy, borrower, value)
        return value

    return remembered
