"""`outreach events post` (SPEC §9): a file of events, one JSON envelope per line, signed and
posted to a running service through `POST /v1/events/batch`.

Lines go in batches of at most MAX_BATCH_EVENTS events and MAX_BATCH_BYTES, in file order (the
service applies the events of one loan in the order they arrive). A line that is not a JSON
object is reported with its number and not sent. A batch the service could not store (503,
or no answer at all) is sent again after a pause: events it stored meanwhile come back as
duplicates, so nothing is applied twice. A 401, 413 or 422 for a whole batch is not worth
retrying and ends the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import requests

from outreach.api.webhook import MAX_BATCH_BYTES, MAX_BATCH_EVENTS, SIGNATURE_HEADER, signature_for

BATCH_PATH = "/v1/events/batch"
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

    @property
    def sent(self) -> int:
        return self.accepted + self.duplicate + len(self.invalid)


@dataclass
class _Batch:
    lines: list[int] = field(default_factory=list)
    documents: list[bytes] = field(default_factory=list)
    size: int = 0

    def body(self) -> bytes:
        return b'{"events":[' + b",".join(self.documents) + b"]}"


def read_batches(path: Path, report: PostReport) -> Iterator[_Batch]:
    """The file's events in batches; lines that are no JSON object go to `report.invalid`."""
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


def post_file(
    path: Path,
    url: str,
    secret: str,
    *,
    progress: Callable[[int], None] | None = None,
    session: requests.Session | None = None,
    pauses: Iterable[float] = RETRY_PAUSES,
) -> PostReport:
    """Post every event of the file; `progress` is told how many events each batch held."""
    report = PostReport()
    endpoint = url.rstrip("/") + BATCH_PATH
    http = session or requests.Session()
    retry_pauses = tuple(pauses)
    try:
        for batch in read_batches(path, report):
            results = _post_batch(http, endpoint, secret.encode(), batch, retry_pauses, report)
            report.batches += 1
            for number, result in zip(batch.lines, results, strict=True):
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
                progress(len(batch.lines))
    finally:
        if session is None:
            http.close()
    report.invalid.sort(key=lambda invalid: invalid.line)
    return report


def _post_batch(
    http: requests.Session,
    endpoint: str,
    secret: bytes,
    batch: _Batch,
    pauses: tuple[float, ...],
    report: PostReport,
) -> list[dict[str, Any]]:
    body = batch.body()
    for attempt in range(len(pauses) + 1):
        # signed afresh each try: the signature's time must stay inside the service's window
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature_for(secret, body, time.time()),
        }
        try:
            response = http.post(endpoint, data=body, headers=headers, timeout=TIMEOUT_SECONDS)
        except requests.RequestException as error:
            problem = f"no answer from {endpoint} ({type(error).__name__})"
        else:
            if response.status_code == 200:
                results = response.json().get("results")
                if not isinstance(results, list) or len(results) != len(batch.lines):
                    raise PostFailed(f"{endpoint} answered 200 without a result per event")
                return results
            problem = f"{endpoint} answered {response.status_code}: {_detail(response)}"
            if response.status_code != 503:
                raise PostFailed(f"{problem} (lines {batch.lines[0]}–{batch.lines[-1]})")
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
