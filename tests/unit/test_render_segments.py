"""SMS encoding and segment counts, checked against hand-computed cases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outreach.render.segments import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    non_gsm7_characters,
    sms_encoding_and_segments,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("GSM-7", 0)),
        ("a", ("GSM-7", 1)),
        ("a" * 160, ("GSM-7", 1)),  # a single SMS holds 160 septets
        ("a" * 161, ("GSM-7", 2)),  # then 153 per part
        ("a" * 306, ("GSM-7", 2)),
        ("a" * 307, ("GSM-7", 3)),
        ("Pay $12.50 @ home: £/¥ ok? Ñ§¿", ("GSM-7", 1)),  # all in the basic table
    ],
)
def test_gsm7_single_and_concatenated(text: str, expected: tuple[str, int]) -> None:
    assert sms_encoding_and_segments(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("€" * 80, ("GSM-7", 1)),  # 80 extension characters = 160 septets
        ("€" * 80 + "a", ("GSM-7", 2)),  # 161 septets
        ("a" * 159 + "[", ("GSM-7", 2)),  # '[' takes ESC + '[' = 2 septets: 161
        ("a" * 158 + "{", ("GSM-7", 1)),  # exactly 160
        ("^{}\\[~]|€", ("GSM-7", 1)),  # the whole extension table: 18 septets
    ],
)
def test_gsm7_extension_characters_count_two(text: str, expected: tuple[str, int]) -> None:
    assert sms_encoding_and_segments(text) == expected


def test_an_escape_pair_is_never_split_across_parts() -> None:
    # 152 + 2 + 152 = 306 septets would fit 2 parts by division, but the '€' cannot straddle
    # the 153-septet boundary, so the second part starts with it and a third part is needed.
    assert sms_encoding_and_segments("a" * 152 + "€" + "a" * 152) == ("GSM-7", 3)
    assert sms_encoding_and_segments("a" * 151 + "€" + "a" * 153) == ("GSM-7", 2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("中" * 70, ("UCS-2", 1)),
        ("中" * 71, ("UCS-2", 2)),
        ("中" * 134, ("UCS-2", 2)),  # 67 per part
        ("中" * 135, ("UCS-2", 3)),
        ("a" * 69 + "中", ("UCS-2", 1)),  # one non-GSM character makes the whole text UCS-2
        ("a" * 70 + "中", ("UCS-2", 2)),
    ],
)
def test_chinese_is_ucs2(text: str, expected: tuple[str, int]) -> None:
    assert sms_encoding_and_segments(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("😀", ("UCS-2", 1)),  # outside the BMP: 2 UTF-16 units
        ("a" * 68 + "😀", ("UCS-2", 1)),  # 70 units
        ("a" * 69 + "😀", ("UCS-2", 2)),  # 71 units
        ("😀" * 35, ("UCS-2", 1)),
        ("😀" * 36, ("UCS-2", 2)),
        # 66 + 2 + 66 = 134 units, but the emoji's surrogate pair cannot straddle unit 67
        ("中" * 66 + "😀" + "中" * 66, ("UCS-2", 3)),
        ("中" * 65 + "😀" + "中" * 67, ("UCS-2", 2)),
    ],
)
def test_emoji_take_two_units(text: str, expected: tuple[str, int]) -> None:
    assert sms_encoding_and_segments(text) == expected


def test_non_gsm7_characters_names_the_culprits_once() -> None:
    assert non_gsm7_characters("It’s “quoted” ’") == ["’", "“", "”"]
    assert non_gsm7_characters("plain text") == []


@given(st.text(max_size=400), st.characters())
def test_adding_a_character_never_reduces_the_parts(text: str, extra: str) -> None:
    assert sms_encoding_and_segments(text + extra)[1] >= sms_encoding_and_segments(text)[1]


@given(st.text(min_size=1, max_size=600))
def test_parts_are_at_least_what_division_says(text: str) -> None:
    encoding, parts = sms_encoding_and_segments(text)
    if encoding == "GSM-7":
        units = sum(2 if c in "\f^{}\\[~]|€" else 1 for c in text)
        single, each = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, each = 70, 67
    if units <= single:
        assert parts == 1
    else:
        assert parts >= math.ceil(units / each)


def packed_parts(text: str) -> tuple[str, int]:
    """Parts as a carrier packs them, unit by unit (pairs never split), for any text."""
    gsm = all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)
    if gsm:
        widths = [2 if c in GSM7_EXTENSION else 1 for c in text]
        single, each = 160, 153
    else:
        widths = [2 if ord(c) > 0xFFFF else 1 for c in text]
        single, each = 70, 67
    total = sum(widths)
    if total == 0:
        return ("GSM-7" if gsm else "UCS-2"), 0
    if total <= single:
        return ("GSM-7" if gsm else "UCS-2"), 1
    parts, used = 1, 0
    for width in widths:
        if used + width > each:
            parts, used = parts + 1, 0
        used += width
    return ("GSM-7" if gsm else "UCS-2"), parts


@given(
    st.text(
        alphabet=st.sampled_from([*sorted(GSM7_BASIC | GSM7_EXTENSION), "中", "é", "😀", "ü"]),
        max_size=700,
    )
)
def test_counting_agrees_with_packing_unit_by_unit(text: str) -> None:
    assert sms_encoding_and_segments(text) == packed_parts(text)
