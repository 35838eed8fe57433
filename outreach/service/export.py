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
            writer.writerow(["" if record[c] is None else record[c] for c in COLUMNS])
            if count % 200 == 0:
                yield _drain(buffer)
        yield _drain(buffer)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
