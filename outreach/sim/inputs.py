"""EVENTS.jsonl: every line validated up front, then replayed in `occurred_at` order.

Each line is one event in the webhook format (SPEC §4), a borrower's SMS reply
(`sms.inbound`, which may leave out `id`), or a campaign launched (`campaign.launched`, the
campaign body of SPEC §8 as its data; its `id`, if given, names the campaign, else its line
does). Lines are checked by the same parser the webhook uses, campaign bodies by the one the
ops API uses; the first malformed line stops the run with its line number and what is wrong.
The file need not be sorted. Only when each event occurred and where its line is in the file
are kept after the check (a parsed event takes about ten times the memory of its line, the
line a dozen times that of its place); the line is read and parsed again when its turn comes.
Campaign lines are few and are kept parsed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from outreach.service.parse import Event, EventError, Instant, parse_event
from outreach.sim.collection import paused_collection
from outreach.sim.results import SimulationInputError

SMS_INBOUND = "sms.inbound"
CAMPAIGN_LAUNCHED = "campaign.launched"
# the campaigns table's key is 40 characters; ids go into URLs of the ops API
CAMPAIGN_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
CAMPAIGN_ID_LENGTH = 40


def campaign_id_of_line(line: int) -> str:
    """The id of a campaign whose line gives none: the same book, the same ids."""
    return f"cmp_line{line}"


@dataclass(frozen=True, slots=True)
class CampaignLaunch:
    """A `campaign.launched` line: the campaign body (SPEC §8) to create and launch at
    `occurred_at`, under `campaign_id`."""

    campaign_id: str
    occurred_at: dt.datetime
    body: dict[str, Any]
    line: int


# what a book's reader asks of a campaign body beyond its envelope (the run's policy and
# templates): what is wrong with it, or None
CampaignCheck = Callable[[CampaignLaunch], str | None]


class _CampaignEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: (
        Annotated[str, Field(min_length=1, max_length=CAMPAIGN_ID_LENGTH, pattern=CAMPAIGN_ID)]
        | None
    ) = None
    type: Literal["campaign.launched"]
    occurred_at: Instant
    data: dict[str, Any]


def _campaign_launch(document: dict[str, Any], line: int) -> CampaignLaunch:
    try:
        envelope = _CampaignEnvelope.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            message = "is required"
        elif first["type"] == "extra_forbidden":
            message = "is not a known field"
        elif first["type"] == "string_pattern_mismatch":
            message = "must be letters, digits and _ . : - (starting with a letter or digit)"
        raise EventError(where or "line", message) from None
    return CampaignLaunch(
        campaign_id=envelope.id or campaign_id_of_line(line),
        occurred_at=envelope.occurred_at,
        body=envelope.data,
        line=line,
    )


def _document(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise EventError("line", f"not valid JSON ({error.msg} at column {error.colno})") from None


def parse_line(text: str, line: int) -> Event | CampaignLaunch:
    """One line as an Event, or as the campaign it launches; an `sms.inbound` without an id
    is named after its line."""
    document = _document(text)
    if isinstance(document, dict) and document.get("type") == CAMPAIGN_LAUNCHED:
        return _campaign_launch(document, line)
    if (
        isinstance(document, dict)
        and document.get("type") == SMS_INBOUND
        and document.get("id") in (None, "")
    ):
        document["id"] = f"sms-inbound-line-{line}"
    return parse_event(document, allow_simulation=True)


def _checked(source: str, text: str, line: int) -> Event | CampaignLaunch:
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
    # the campaign lines, by line number (their entries are in `entries` too, for the order)
    campaigns: dict[int, CampaignLaunch] = field(default_factory=dict)
    # whether the campaign bodies were checked against a run's policy and templates
    campaigns_checked: bool = False

    def __len__(self) -> int:
        return len(self.entries)

    def _add(
        self, parsed: Event | CampaignLaunch, entry: _Entry, check: CampaignCheck | None
    ) -> None:
        if isinstance(parsed, CampaignLaunch):
            self._add_campaign(parsed, check)
        self.entries.append(entry)

    def _add_campaign(self, launch: CampaignLaunch, check: CampaignCheck | None) -> None:
        for other in self.campaigns.values():
            if other.campaign_id == launch.campaign_id:
                raise SimulationInputError(
                    self.source,
                    launch.line,
                    f"id: {launch.campaign_id!r} names the campaign of line {other.line} too",
                )
        problem = check(launch) if check is not None else None
        if problem is not None:
            raise SimulationInputError(self.source, launch.line, problem)
        self.campaigns[launch.line] = launch

    def check_campaigns(self, check: CampaignCheck) -> None:
        """Every campaign body checked (a book read without a check); the first at fault,
        by line, stops the run."""
        for line in sorted(self.campaigns):
            problem = check(self.campaigns[line])
            if problem is not None:
                raise SimulationInputError(self.source, line, problem)
        self.campaigns_checked = True

    @classmethod
    def from_lines(
        cls,
        lines: Iterable[str],
        source: str = "EVENTS.jsonl",
        keep: Callable[[int], bool] | None = None,
        *,
        check_campaign: CampaignCheck | None = None,
    ) -> EventBook:
        """The book of these lines; with `keep`, of the lines whose number it accepts; with
        `check_campaign`, campaign bodies checked as they are read."""
        book = cls(source, campaigns_checked=check_campaign is not None)
        with paused_collection():
            for number, raw in enumerate(lines, start=1):
                if keep is not None and not keep(number):
                    continue
                text = raw.strip()
                if not text:
                    continue
                event = _checked(source, text, number)
                book._add(event, _Entry(event.occurred_at, number, text), check_campaign)
        book.entries.sort()  # by (occurred_at, line): a line number is never repeated
        return book

    @classmethod
    def from_file(
        cls,
        path: Path,
        keep: Callable[[int], bool] | None = None,
        *,
        check_campaign: CampaignCheck | None = None,
    ) -> EventBook:
        """The book of a file; with `keep`, of the lines whose number it accepts; with
        `check_campaign`, campaign bodies checked as they are read."""
        source = str(path)
        book = cls(source, path=path, campaigns_checked=check_campaign is not None)
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
                    entry = _Entry(event.occurred_at, number, None, start, len(raw))
                    book._add(event, entry, check_campaign)
        except OSError as error:
            raise SimulationInputError(source, 0, error.strerror or str(error)) from None
        book.entries.sort()  # by (occurred_at, line): a line number is never repeated
        return book

    @classmethod
    def from_events(
        cls,
        events: Iterable[dict[str, Any]],
        source: str = "<book>",
        *,
        check_campaign: CampaignCheck | None = None,
    ) -> EventBook:
        return cls.from_lines(
            (json.dumps(event) for event in events), source, check_campaign=check_campaign
        )

    def cursor(self) -> EventCursor:
        return EventCursor(self)


class EventCursor:
    """Walks the book in order, handing out the events due by an instant."""

    def __init__(self, book: EventBook) -> None:
        self._entries = book.entries
        self._campaigns = book.campaigns
        self._campaigns_left = len(book.campaigns)
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
        """Events not handed out yet (campaign launches apart: every process of a split run
        has all of them)."""
        return len(self._entries) - self._next - self._campaigns_left

    @property
    def remaining_campaigns(self) -> int:
        return self._campaigns_left

    def due(self, now: dt.datetime) -> Iterator[tuple[int, Event | CampaignLaunch]]:
        """(line, event or campaign launch) for every line that occurred by `now`, in order."""
        entries = self._entries
        campaigns = self._campaigns
        while self._next < len(entries) and entries[self._next].occurred_at <= now:
            entry = entries[self._next]
            self._next += 1
            launch = campaigns.get(entry.line) if campaigns else None
            if launch is not None:
                self._campaigns_left -= 1
                yield entry.line, launch
                continue
            parsed = parse_line(self._text(entry), entry.line)
            assert isinstance(parsed, Event)  # the campaign lines are all in `campaigns`
            yield entry.line, parsed

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
