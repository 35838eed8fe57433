"""SMS encoding and segment counting, as carriers bill it.

A text that fits the GSM 03.38 alphabet is sent as GSM-7: 160 septets in a single message,
153 per part once it must be split (7 septets go to the concatenation header). Characters of
the GSM extension table are sent as ESC + character and so take 2 septets. Anything else forces
UCS-2 for the whole message: 70 UTF-16 code units alone, 67 per part; characters outside the
Basic Multilingual Plane (most emoji) take 2 units.

Parts are packed the way carriers split: an escape pair or a surrogate pair is never cut across
two parts, so a message whose boundary falls inside such a pair needs one more part than plain
division would say.
"""

from __future__ import annotations

from typing import Final, Literal

Encoding = Literal["GSM-7", "UCS-2"]

GSM7: Final = "GSM-7"
UCS2: Final = "UCS-2"

# The basic table without ESC (0x1B), which only introduces an extension character.
GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION: Final = frozenset("\f^{}\\[~]|€")
_GSM7_ANY: Final = GSM7_BASIC | GSM7_EXTENSION

GSM7_SINGLE: Final = 160
GSM7_PART: Final = 153
UCS2_SINGLE: Final = 70
UCS2_PART: Final = 67


def is_gsm7(text: str) -> bool:
    return _GSM7_ANY.issuperset(text)


def non_gsm7_characters(text: str) -> list[str]:
    """The characters that force UCS-2, in order of first appearance."""
    seen: dict[str, None] = {}
    for char in text:
        if char not in GSM7_BASIC and char not in GSM7_EXTENSION:
            seen.setdefault(char)
    return list(seen)


def _units(text: str, encoding: Encoding) -> list[int]:
    if encoding == GSM7:
        return [2 if char in GSM7_EXTENSION else 1 for char in text]
    return [2 if ord(char) > 0xFFFF else 1 for char in text]


def sms_encoding_and_segments(text: str) -> tuple[Encoding, int]:
    """The encoding a carrier will use for `text` and how many billed parts it takes.

    An empty text has nothing to send and takes 0 parts.
    """
    encoding: Encoding = GSM7 if is_gsm7(text) else UCS2
    single, part = (GSM7_SINGLE, GSM7_PART) if encoding == GSM7 else (UCS2_SINGLE, UCS2_PART)
    if encoding == GSM7:
        wide = sum(text.count(char) for char in GSM7_EXTENSION)
    else:
        wide = len(text.encode("utf-16-le")) // 2 - len(text)  # surrogate pairs
    if not wide:
        # every character one unit: nothing to keep whole across a boundary
        total = len(text)
        if total == 0:
            return encoding, 0
        return encoding, 1 if total <= single else -(-total // part)
    units = _units(text, encoding)
    total = sum(units)
    if total == 0:
        return encoding, 0
    if total <= single:
        return encoding, 1
    parts, used = 1, 0
    for width in units:
        if used + width > part:
            parts += 1
            used = 0
        used += width
    return encoding, parts
