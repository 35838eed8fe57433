"""EVENTS.jsonl: every line validated up front, then replayed in `occurred_at` order.

Each line is one event in the webhook format (SPEC §4), or a borrower's SMS reply
(`sms.inbound`, which may leave out `id`). Lines are checked by the same parser the webhook
uses; the first malformed one stops the run with its line number and what is wrong. The file
need not be sorted. Only when each event occurred and where its line is in the file are kept
after the check (a parsed event takes about ten times the memory of its line, the line a
dozen times that of its place); the line is read and parsed again when its turn comes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import orjson

from outreach.service.parse import Event, EventError, parse_event
from outreach.sim.collection import paused_collection
from outreach.sim.results import SimulationInputError

SMS_INBOUND = "sms.inbound"


def _document(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise EventError("line", f"not valid JSON ({error.msg} at column {error.colno})") from None


def parse_line(text: str, line: int) -> Event:
    """One line as an Event; an `sms.inbound` without an id is named after its line."""
    document = _document(text)
    if (
        isinstance(document, dict)
        and document.get("type") == SMS_INBOUND
        and document.get("id") in (None, "")
    ):
        document["id"] = f"sms-inbound-line-{line}"
    return parse_event(document, allow_simulation=True)


def _checked(source: str, text: str, line: int) -> Event:
    """`parse_line`, a malformed line reported with its place."""
    try:
        return parse_line(text, line)
    except EventError as error:
        raise SimulationInputError(source, line, str(error)) from None


class _Entry(NamedTuple):
    """One event's place in the book; entries sort by when they occurred, then by line (a
    tuple: made and sorted several times faster than an object, for every line of a book)."""

    occurred_at: dt.datetime
    line: int
    # the line itself, or None when it is read again from the book's file
    text: str | None
    offset: int = 0
    length: int = 0


@dataclass
class EventBook:
    """The events of one simulation, checked and ordered by `occurred_at` (then line)."""

    source: str
    entries: list[_Entry] = field(default_factory=list)
    # the file the entries without text are read from
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def from_lines(
        cls,
        lines: Iterable[str],
        source: str = "EVENTS.jsonl",
        keep: Callable[[int], bool] | None = None,
    ) -> EventBook:
        """The book of these lines; with `keep`, of the lines whose number it accepts."""
        book = cls(source)
        with paused_collection():
            for number, raw in enumerate(lines, start=1):
                if keep is not None and not keep(number):
                    continue
                text = raw.strip()
                if not text:
                    continue
                event = _checked(source, text, number)
                book.entries.append(_Entry(event.occurred_at, number, text))
        book.entries.sort()  # by (occurred_at, line): a line number is never repeated
        return book

    @classmethod
    def from_file(cls, path: Path, keep: Callable[[int], bool] | None = None) -> EventBook:
        """The book of a file; with `keep`, of the lines whose number it accepts."""
        source = str(path)
        book = cls(source, path=path)
        try:
            with path.open("rb") as handle, paused_collection():
                offset = 0
                for number, raw in enumerate(handle, start=1):
                    start, offset = offset, offset + len(raw)
                    if keep is not None and not keep(number):
                        continue
                    try:
                        text = raw.decode("utf-8").strip()
                    except UnicodeDecodeError as error:
                        raise SimulationInputError(
                            source, number, f"not UTF-8 text ({error.reason})"
                        ) from None
                    if not text:
                        continue
                    event = _checked(source, text, number)
                    book.entries.append(_Entry(event.occurred_at, number, None, start, len(raw)))
        except OSError as error:
            raise SimulationInputError(source, 0, error.strerror or str(error)) from None
        book.entries.sort()  # by (occurred_at, line): a line number is never repeated
        return book

    @classmethod
    def from_events(cls, events: Iterable[dict[str, Any]], source: str = "<book>") -> EventBook:
        return cls.from_lines((json.dumps(event) for event in events), source)

    def cursor(self) -> EventCursor:
        return EventCursor(self)


class EventCursor:
    """Walks the book in order, handing out the events due by an instant."""

    def __init__(self, book: EventBook) -> None:
        self._entries = book.entries
        self._next = 0
        self._path = book.path
        self._file: BinaryIO | None = None

    @property
    def next_at(self) -> dt.datetime | None:
        if self._next < len(self._entries):
            return self._entries[self._next].occurred_at
        return None

    @property
    def remaining(self) -> int:
        return len(self._entries) - self._next

    def due(self, now: dt.datetime) -> Iterator[tuple[int, Event]]:
        """(line, event) for every event that occurred by `now`, in order."""
        entries = self._entries
        while self._next < len(entries) and entries[self._next].occurred_at <= now:
            entry = entries[self._next]
            self._next += 1
            yield entry.line, parse_line(self._text(entry), entry.line)

    def _text(self, entry: _Entry) -> str:
        if entry.text is not None:
            return entry.text
        if self._file is None:
            assert self._path is not None  # entries without text come from a file
            self._file = self._path.open("rb", buffering=0)
        # one positioned read per line: a seek of a buffered file drops its buffer, and the
        # read after it fills a whole one again
        return os.pread(self._file.fileno(), entry.length, entry.offset).decode("utf-8").strip()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
