"""`outreach events post` (SPEC §9): a file of events, one JSON envelope per line, signed and
posted to a running service through `POST /v1/events/batch`.

Lines go in batches of at most MAX_BATCH_EVENTS events and MAX_BATCH_BYTES, in file order (the
service applies the events of one loan in the order they arrive). A line that is not a JSON
object is reported with its number and not sent. A batch the service could not store (503,
or no answer at all) is sent again after a pause: events it stored meanwhile come back as
duplicates, so nothing is applied twice. A 401, 413 or 422 for a whole batch is not worth
retrying and ends the run.

Two things make a file usable any day and with the simulator's inputs (SPEC §10):
- a string value that is exactly `{now}`, `{now-3d}`, `{now+90m}` (units `d`, `h`, `m`,
  combinable: `{now-1d2h}`) becomes that instant in RFC 3339 UTC, and `{today}`, `{today+2d}`
  that date in the lender's day (the policy's `day_boundary_zone`): the shipped `examples/`
  are written that way;
- an `sms.inbound` line (`data`: `from`, `body`, optional `to`) is a borrower's reply: it is
  posted in its place in the file (REPLY_AFTER_BATCH_SECONDS after a batch before it, as a
  reply comes after what it answers) to the Twilio inbound route as Twilio would post it,
  signed with the Twilio auth token, with a MessageSid derived from its `id` (posting the
  file again records it once).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import requests
from twilio.request_validator import RequestValidator

from outreach.api.webhook import MAX_BATCH_BYTES, MAX_BATCH_EVENTS, SIGNATURE_HEADER, signature_for

BATCH_PATH = "/v1/events/batch"
INBOUND_PATH = "/v1/providers/twilio/inbound"
INBOUND_TYPE = "sms.inbound"
# the number a reply is addressed to when its line names none: Twilio's test "from" number
DEFAULT_REPLY_TO = "+15005550006"
# seconds between a batch and a reply that follows it in the file
REPLY_AFTER_BATCH_SECONDS = 2.0
_RELATIVE = re.compile(r"\{(now|today)((?:[+-]\d{1,5}[dhm])*)\}")
_OFFSET = re.compile(r"([+-])(\d{1,5})([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
# a batch the service could not store is sent again after these pauses (seconds), then the
# run gives up
RETRY_PAUSES = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
TIMEOUT_SECONDS = 60.0


class PostFailed(Exception):
    """The service refused a whole batch, or could not be reached after every retry."""


@dataclass(frozen=True)
class Invalid:
    """An event the service (or the file) refused: where it is, which field, why."""

    line: int
    event_id: str | None
    field: str
    detail: str


@dataclass
class PostReport:
    """What posting a file came to."""

    accepted: int = 0
    duplicate: int = 0
    invalid: list[Invalid] = field(default_factory=list)
    batches: int = 0
    retries: int = 0
    replies: int = 0

    @property
    def sent(self) -> int:
        return self.accepted + self.duplicate + len(self.invalid) + self.replies


@dataclass(frozen=True)
class Moment:
    """What `{now…}` and `{today…}` stand for in this run."""

    now: dt.datetime
    day_zone: ZoneInfo

    def fill(self, value: Any) -> Any:
        """`value` with every relative time in it made absolute."""
        if isinstance(value, str):
            found = _RELATIVE.fullmatch(value)
            return self._instant(found) if found else value
        if isinstance(value, dict):
            return {key: self.fill(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.fill(item) for item in value]
        return value

    def _instant(self, found: re.Match[str]) -> str:
        base, offsets = found.groups()
        shift = dt.timedelta()
        for sign, amount, unit in _OFFSET.findall(offsets):
            step = dt.timedelta(**{_UNITS[unit]: int(amount)})
            shift += step if sign == "+" else -step
        if base == "today":
            return (self.now.astimezone(self.day_zone) + shift).date().isoformat()
        instant = (self.now + shift).astimezone(dt.UTC).replace(microsecond=0)
        return instant.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Reply:
    """A borrower's SMS reply (an `sms.inbound` line), as Twilio would post it."""

    line: int
    event_id: str | None
    form: dict[str, str]


@dataclass(frozen=True)
class Destination:
    """Where and how the file goes: the service's address, the webhook secret, and for
    replies the Twilio auth token and the URL the service checks Twilio's signature with
    (its OUTREACH_PUBLIC_URL, which behind a proxy is not the address posted to)."""

    url: str
    secret: str
    twilio_token: str | None = None
    signed_url: str | None = None


@dataclass
class _Batch:
    lines: list[int] = field(default_factory=list)
    documents: list[bytes] = field(default_factory=list)
    size: int = 0

    def body(self) -> bytes:
        return b'{"events":[' + b",".join(self.documents) + b"]}"


def read_batches(path: Path, report: PostReport, moment: Moment) -> Iterator[_Batch | Reply]:
    """The file's events in batches, and its replies between them in file order; lines that
    are no JSON object go to `report.invalid`."""
    batch = _Batch()
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                document = orjson.loads(text)
            except orjson.JSONDecodeError as error:
                report.invalid.append(
                    Invalid(number, None, "body", f"body: not valid JSON ({error})")
                )
                continue
            if not isinstance(document, dict):
                report.invalid.append(Invalid(number, None, "body", "body: must be a JSON object"))
                continue
            document = moment.fill(document)
            if document.get("type") == INBOUND_TYPE:
                reply = _reply(number, document, report)
                if reply is not None:
                    if batch.documents:
                        yield batch
                        batch = _Batch()
                    yield reply
                continue
            encoded = orjson.dumps(document)
            # the envelope around the events, and a comma between two
            if batch.documents and (
                len(batch.documents) >= MAX_BATCH_EVENTS
                or batch.size + len(encoded) + 64 > MAX_BATCH_BYTES
            ):
                yield batch
                batch = _Batch()
            batch.lines.append(number)
            batch.documents.append(encoded)
            batch.size += len(encoded) + 1
    if batch.documents:
        yield batch


def _reply(number: int, document: dict[str, Any], report: PostReport) -> Reply | None:
    event_id = document.get("id") if isinstance(document.get("id"), str) else None
    data = document.get("data")
    sender = data.get("from") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(sender, str) or not sender:
        report.invalid.append(
            Invalid(number, event_id, "data.from", "data.from: the number the reply came from")
        )
        return None
    body = data.get("body", "")
    addressed = data.get("to") or DEFAULT_REPLY_TO
    # the same line posted twice is the same Twilio message: recorded once
    seed = event_id or orjson.dumps(document).decode()
    sid = "SM" + hashlib.sha256(seed.encode()).hexdigest()[:32]
    form = {"From": sender, "To": str(addressed), "Body": str(body), "MessageSid": sid}
    return Reply(number, event_id, form)


def post_file(
    path: Path,
    destination: Destination,
    moment: Moment,
    *,
    progress: Callable[[int], None] | None = None,
    session: requests.Session | None = None,
    pauses: Iterable[float] = RETRY_PAUSES,
) -> PostReport:
    """Post every event and reply of the file; `progress` is told how many lines each
    batch or reply held."""
    report = PostReport()
    base = destination.url.rstrip("/")
    http = session or requests.Session()
    retry_pauses = tuple(pauses)
    after_batch = False
    try:
        for part in read_batches(path, report, moment):
            if isinstance(part, Reply):
                if after_batch:
                    # the service answers a batch once it is stored and applies it moments
                    # later: a reply right behind it would come from a number no borrower
                    # has yet (its opt-out is kept, but no confirmation can be addressed)
                    time.sleep(REPLY_AFTER_BATCH_SECONDS)
                    after_batch = False
                _post_reply(http, base, destination, part, retry_pauses, report)
                if progress is not None:
                    progress(1)
                continue
            results = _post_batch(
                http, base + BATCH_PATH, destination.secret.encode(), part, retry_pauses, report
            )
            report.batches += 1
            after_batch = True
            for number, result in zip(part.lines, results, strict=True):
                status = result.get("status")
                if status == "accepted":
                    report.accepted += 1
                elif status == "duplicate":
                    report.duplicate += 1
                else:
                    error = result.get("error") or {}
                    report.invalid.append(
                        Invalid(
                            number,
                            result.get("id"),
                            str(error.get("field", "?")),
                            str(error.get("detail", status)),
                        )
                    )
            if progress is not None:
                progress(len(part.lines))
    finally:
        if session is None:
            http.close()
    report.invalid.sort(key=lambda invalid: invalid.line)
    return report


def _post_reply(
    http: requests.Session,
    base: str,
    destination: Destination,
    reply: Reply,
    pauses: tuple[float, ...],
    report: PostReport,
) -> None:
    if not destination.twilio_token:
        report.invalid.append(
            Invalid(
                reply.line,
                reply.event_id,
                "type",
                "sms.inbound: no Twilio auth token to sign the reply with (TWILIO_AUTH_TOKEN)",
            )
        )
        return
    signed = (destination.signed_url or base).rstrip("/") + INBOUND_PATH
    signature = RequestValidator(destination.twilio_token).compute_signature(signed, reply.form)
    _post_until_stored(
        http,
        base + INBOUND_PATH,
        lambda: {"data": reply.form, "headers": {"X-Twilio-Signature": signature}},
        pauses,
        report,
        f"line {reply.line}",
    )
    report.replies += 1


def _post_batch(
    http: requests.Session,
    endpoint: str,
    secret: bytes,
    batch: _Batch,
    pauses: tuple[float, ...],
    report: PostReport,
) -> list[dict[str, Any]]:
    body = batch.body()

    def signed() -> dict[str, Any]:
        # signed afresh each try: the signature's time must stay inside the service's window
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature_for(secret, body, time.time()),
        }
        return {"data": body, "headers": headers}

    where = f"lines {batch.lines[0]}–{batch.lines[-1]}"
    response = _post_until_stored(http, endpoint, signed, pauses, report, where)
    results = response.json().get("results")
    if not isinstance(results, list) or len(results) != len(batch.lines):
        raise PostFailed(f"{endpoint} answered 200 without a result per event")
    return results


def _post_until_stored(
    http: requests.Session,
    endpoint: str,
    request: Callable[[], dict[str, Any]],
    pauses: tuple[float, ...],
    report: PostReport,
    where: str,
) -> requests.Response:
    """The 200 of `endpoint`, asked again after each pause while it could not store (503 or
    no answer); any other answer ends the run."""
    for attempt in range(len(pauses) + 1):
        try:
            response = http.post(endpoint, timeout=TIMEOUT_SECONDS, **request())
        except requests.RequestException as error:
            problem = f"no answer from {endpoint} ({type(error).__name__})"
        else:
            if response.status_code == 200:
                return response
            problem = f"{endpoint} answered {response.status_code}: {_detail(response)}"
            if response.status_code != 503:
                raise PostFailed(f"{problem} ({where})")
        if attempt == len(pauses):
            raise PostFailed(f"{problem}; gave up after {attempt + 1} tries")
        report.retries += 1
        time.sleep(pauses[attempt])
    raise AssertionError("unreachable")


def _detail(response: requests.Response) -> str:
    try:
        document = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(document, dict) and "detail" in document:
        return str(document["detail"])
    return str(document)[:200]
