"""Characters that must not reach a borrower's screen: they hide, reorder or break text."""

from __future__ import annotations

import functools
import unicodedata
from typing import Final

# controls, format characters (bidi overrides and isolates, zero-width spaces, soft hyphens),
# surrogates, private use, line and paragraph separators
_HIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
# joiners belong to some scripts and to emoji sequences
_JOINERS: Final = frozenset("\u200c\u200d")
LAYOUT: Final = "\n\r\t"


@functools.cache
def _as_spaces(characters: str) -> dict[int, str]:
    return {ord(character): " " for character in characters}


def hidden_characters(text: str, *, allowed: str = "") -> list[str]:
    """The hidden characters in `text` (but those `allowed`, such as LAYOUT), sorted."""
    # printable text (the usual case, checked at C speed) has none of them
    if (text.translate(_as_spaces(allowed)) if allowed else text).isprintable():
        return []
    return sorted(
        {
            character
            for character in text
            if character not in allowed
            and character not in _JOINERS
            and unicodedata.category(character) in _HIDDEN_CATEGORIES
        }
    )
