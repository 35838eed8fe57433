"""What borrowers sent us, in the database: replies and unsubscribe clicks (`inbound_replies`),
and who a phone number or email address belongs to."""

from __future__ import annotations

import datetime as dt
from typing import cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from outreach.store import models as m
from outreach.store.db import InsertIgnoringDuplicates

REPLIES = cast(Table, m.InboundReply.__table__)
_PHONES = cast(Table, m.BorrowerPhone.__table__)
_BORROWERS = cast(Table, m.Borrower.__table__)

# a reply Twilio delivers twice (same MessageSid) is recorded once; one without an id (an
# unsubscribe click) never conflicts: NULLs are distinct in a unique index
_NEW_REPLY = InsertIgnoringDuplicates(
    REPLIES,
    (
        "provider_id",
        "channel",
        "sender",
        "body",
        "borrower_id",
        "classification",
        "needs_human",
        "received_at",
    ),
    key=("provider_id",),
    returning=("id",),
)


def record_reply(
    session: Session,
    *,
    provider_id: str | None,
    channel: str,
    sender: str,
    body: str,
    borrower_id: str | None,
    classification: str,
    needs_human: bool,
    received_at: dt.datetime,
) -> int | None:
    """Record a reply; its id, or None when the provider's id was recorded before."""
    found = session.execute(
        _NEW_REPLY.of(session),
        {
            "provider_id": provider_id,
            "channel": channel,
            "sender": sender,
            "body": body,
            "borrower_id": borrower_id,
            "classification": classification,
            "needs_human": needs_human,
            "received_at": received_at,
        },
    ).scalar()
    return int(found) if found is not None else None


_BY_PHONE = (
    select(_PHONES.c.borrower_id)
    .where(_PHONES.c.phone == bindparam("phone"))
    .order_by(_PHONES.c.position)
    .limit(1)
)
_BY_EMAIL = select(_BORROWERS.c.id).where(_BORROWERS.c.email == bindparam("email")).limit(1)


def borrower_for_phone(session: Session, phone: str) -> str | None:
    """The borrower with this number (the first listed, where several list it)."""
    return session.scalar(_BY_PHONE, {"phone": phone})


def borrower_for_email(session: Session, email: str) -> str | None:
    return session.scalar(_BY_EMAIL, {"email": email})
