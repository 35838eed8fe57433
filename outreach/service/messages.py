"""Message rows: identifiers, timeline entries, forward-only status moves, and the log's shape."""

from __future__ import annotations

import datetime as dt
import os
import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import inspect

from outreach.domain import DELIVERY_RANK, Status
from outreach.store import models as m

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# the random part of new identifiers; replaced only by `seeded_ids` (the simulator's --seed)
_seeded: random.Random | None = None


def _random_bits() -> int:
    if _seeded is not None:
        return _seeded.getrandbits(80)
    return int.from_bytes(os.urandom(10), "big")


@contextmanager
def seeded_ids(seed: int) -> Iterator[None]:
    """Reproducible identifiers while active: the same seed and inputs give the same ids.

    For the simulator only; it is process-wide, so never use it in a serving process.
    """
    global _seeded
    previous = _seeded
    _seeded = random.Random(seed)
    try:
        yield
    finally:
        _seeded = previous


def new_id(prefix: str, at: dt.datetime | None = None) -> str:
    """A sortable identifier: 48 bits of milliseconds then 80 random bits, Crockford base32.

    Newer messages sort after older ones, which keeps cursor pages stable.
    """
    millis = int(at.timestamp() * 1000) if at is not None else time.time_ns() // 1_000_000
    value = (millis << 80) | _random_bits()
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return prefix + "".join(reversed(chars))


def detail_text(detail: Mapping[str, object] | str | None) -> str | None:
    if detail is None or isinstance(detail, str):
        return detail or None
    if not detail:
        return None
    return " ".join(f"{key}={value}" for key, value in detail.items())


def record(
    message: m.Message,
    status: Status,
    reason: str | None,
    at: dt.datetime,
    detail: Mapping[str, object] | str | None = None,
) -> None:
    """Move a message to `status` and append the step to its timeline."""
    message.status = status.value
    message.reason = reason
    message.updated_at = at
    step = m.MessageEvent(at=at, status=status.value, reason=reason, detail=detail_text(detail))
    state = inspect(message)
    session = state.session
    if "events" in state.unloaded and session is not None and state.persistent:
        # the timeline was not read: add the step without reading it first
        step.message_id = message.id
        session.add(step)
    else:
        message.events.append(step)


def may_move(current: Status, new: Status) -> bool:
    """Delivery statuses only move forward: a late `sent` never undoes `delivered`."""
    if current.is_final:
        return False
    return DELIVERY_RANK[new] > DELIVERY_RANK[current]


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def as_record(message: m.Message, *, with_events: bool = True) -> dict[str, Any]:
    """The message as the API and MESSAGES.jsonl show it (SPEC §6, §10)."""
    document: dict[str, Any] = {
        "id": message.id,
        "purpose": message.purpose,
        "borrower_id": message.borrower_id,
        "loan_id": message.loan_id,
        "campaign_id": message.campaign_id,
        "stage": message.stage,
        "channel": message.channel,
        "template": message.template,
        "template_version": message.template_version,
        "locale": message.locale,
        "to": message.recipient,
        "body": message.body,
        "subject": message.subject,
        "text": message.text,
        "html": message.html,
        "segments": message.segments,
        "encoding": message.encoding,
        "status": message.status,
        "reason": message.reason,
        "fallback_from": message.fallback_from,
        "provider_id": message.provider_id,
        "needs_human": message.needs_human,
        "send_at": iso(message.send_at),
        "sent_at": iso(message.sent_at),
        "created_at": iso(message.created_at),
    }
    if with_events:
        document["events"] = [
            {"at": iso(e.at), "status": e.status, "reason": e.reason, "detail": e.detail}
            for e in message.events
        ]
    return document
