"""The Redis Lua scripts, each in a file of its own (`<name>.lua` beside this module)."""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def lua_script(name: str) -> str:
    """The text of `<name>.lua`, read once from the installed package."""
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
