"""Delivery statuses kept until their message is known by the provider's id (the provider's
callback overtook the worker's record of the acceptance)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, delete, exists
from sqlalchemy.orm import Session

from outreach.store import models as m
from outreach.store.bulk import insert_rows
from outreach.store.keysets import keys_in

PARKED = cast(Table, m.ParkedCallback.__table__)
MESSAGES = cast(Table, m.Message.__table__)
# a status no message claimed within this long is for a message that is not ours (another
# system on the same account) or was never recorded: dropped, with a line in the log
PARKED_FOR = dt.timedelta(days=1)
_COLUMNS = (
    PARKED.c.id,
    PARKED.c.provider,
    PARKED.c.provider_id,
    PARKED.c.status,
    PARKED.c.error_code,
    PARKED.c.received_at,
)


@dataclass(frozen=True)
class Parked:
    key: str
    provider: str
    provider_id: str
    status: str
    error_code: str | None
    received_at: dt.datetime


def park(session: Session, statuses: Sequence[Parked]) -> None:
    insert_rows(
        session,
        PARKED,
        [
            {
                "id": status.key,
                "provider": status.provider,
                "provider_id": status.provider_id,
                "status": status.status,
                "error_code": status.error_code,
                "received_at": status.received_at,
            }
            for status in statuses
        ],
        conflict="id",
    )


def claim(session: Session, provider_ids: Iterable[str] | None) -> list[Parked]:
    """Take the parked statuses whose message now carries their provider id (of these ids;
    None: of every parked one), oldest first; each is taken by one transaction only."""
    claimed = exists().where(MESSAGES.c.provider_id == PARKED.c.provider_id)
    statement = delete(PARKED).where(claimed)
    parameters: dict[str, list[str]] = {}
    if provider_ids is not None:
        wanted = sorted(set(provider_ids))
        if not wanted:
            return []
        statement = statement.where(keys_in(PARKED.c.provider_id, "ids"))
        parameters = {"ids": wanted}
    rows = session.connection().execute(statement.returning(*_COLUMNS), parameters)
    found = [Parked(*row) for row in rows]
    return sorted(found, key=lambda parked: (parked.received_at, parked.key))


def drop_unclaimed(session: Session, now: dt.datetime) -> list[Parked]:
    """Drop the statuses parked longer than PARKED_FOR; returns them."""
    rows = session.connection().execute(
        delete(PARKED).where(PARKED.c.received_at < now - PARKED_FOR).returning(*_COLUMNS)
    )
    return [Parked(*row) for row in rows]
