"""CSV export of the message log, streamed in batches."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from sqlalchemy.orm import Session, sessionmaker

from outreach.service.log import MessageFilter, iter_messages
from outreach.service.messages import as_record

COLUMNS = (
    "id",
    "purpose",
    "borrower_id",
    "loan_id",
    "campaign_id",
    "variant",
    "stage",
    "channel",
    "template",
    "template_version",
    "locale",
    "to",
    "status",
    "reason",
    "segments",
    "encoding",
    "send_at",
    "sent_at",
    "created_at",
    "fallback_from",
    "provider_id",
    "body",
    "subject",
    "text",
)


def csv_rows(sessions: sessionmaker[Session], criteria: MessageFilter) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    yield _drain(buffer)
    with sessions() as session:
        for count, message in enumerate(iter_messages(session, criteria), start=1):
            record = as_record(message, with_events=False)
            writer.writerow([_cell(record[c]) for c in COLUMNS])
            if count % 200 == 0:
                yield _drain(buffer)
        yield _drain(buffer)


# A spreadsheet reads a cell that starts with one of these as a formula (`=HYPERLINK(…)` in a
# borrower id becomes a live link) or a signed number (`+86…` loses its plus): OWASP's CSV
# injection advice, a leading single quote that makes the cell text
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_LEADS):
        return "'" + value
    return value


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
