"""The audit log: every ops write, appended in the transaction of the write it records. There
is no update or delete here, on purpose."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from outreach.store import models as m


def append(
    session: Session,
    *,
    at: dt.datetime,
    actor: str,
    role: str | None,
    action: str,
    target: str | None,
    outcome: str,
    detail: Mapping[str, Any] | None = None,
) -> None:
    session.add(
        m.AuditEntry(
            at=at,
            actor=actor,
            role=role,
            action=action,
            target=target,
            outcome=outcome,
            detail=dict(detail) if detail else None,
        )
    )
    session.flush()


def entries(
    session: Session,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> Sequence[m.AuditEntry]:
    """Newest first."""
    query = select(m.AuditEntry)
    if actor is not None:
        query = query.where(m.AuditEntry.actor == actor)
    if action is not None:
        query = query.where(m.AuditEntry.action == action)
    if target is not None:
        query = query.where(m.AuditEntry.target == target)
    if since is not None:
        query = query.where(m.AuditEntry.at >= since)
    if until is not None:
        query = query.where(m.AuditEntry.at < until)
    if before_id is not None:
        query = query.where(m.AuditEntry.id < before_id)
    return session.scalars(query.order_by(m.AuditEntry.id.desc()).limit(limit)).all()
