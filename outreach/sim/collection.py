"""Garbage collection paused while a book is read.

Reading a book builds one small object per line and keeps them all; with collection on, the
collector walks that growing list again every few hundred allocations, a quarter of the time
it takes to check a book. Nothing read there forms a cycle that must go before the read ends
(what a failed line leaves is collected once collection resumes).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_collection() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
