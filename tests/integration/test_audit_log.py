"""The audit log (SPEC §8): append-only in the database itself, and a viewer's refused
write recorded beside the admins' writes."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DatabaseError

from outreach.store import audit
from outreach.store.db import make_session_factory, transaction
from tests.live import VIEWER_TOKEN, LiveService


def append_by_alice(engine: Engine, action: str, *, minute: int) -> None:
    with transaction(make_session_factory(engine)) as session:
        audit.append(
            session,
            at=dt.datetime(2026, 12, 4, 9, minute, tzinfo=dt.UTC),
            actor="alice",
            role="admin",
            action=action,
            target="c-1",
            outcome="ok",
        )


def test_audit_rows_cannot_be_updated_or_deleted(engine: Engine) -> None:
    append_by_alice(engine, "campaign.launch", minute=0)
    for change in (
        "UPDATE audit_log SET actor = 'mallory'",
        "UPDATE audit_log SET outcome = 'refused' WHERE action = 'campaign.launch'",
        "DELETE FROM audit_log",
    ):
        with pytest.raises(DatabaseError, match="append-only"), engine.begin() as connection:
            connection.execute(text(change))
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT actor, outcome FROM audit_log")).all()
    assert [tuple(row) for row in rows] == [("alice", "ok")]
    # appending stays open
    append_by_alice(engine, "campaign.pause", minute=5)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM audit_log")).scalar_one() == 2


def test_a_viewers_refused_write_is_in_the_audit_log(live: LiveService) -> None:
    viewer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    created = live.client.post("/v1/campaigns", json={"name": "x"}, headers=viewer)
    assert created.status_code == 403
    cancelled = live.client.post("/v1/messages/m-404/cancel", headers=viewer)
    assert cancelled.status_code == 403
    # reading is not a write: refused, and not recorded
    assert live.get("/v1/audit", token=VIEWER_TOKEN).status_code == 403
    entries = live.get("/v1/audit", action="api.write").json()["items"]
    assert [(e["target"], e["outcome"], e["role"], e["detail"]) for e in entries] == [
        ("/v1/messages/m-404/cancel", "forbidden", "viewer", {"why": "role", "method": "POST"}),
        ("/v1/campaigns", "forbidden", "viewer", {"why": "role", "method": "POST"}),
    ]
    assert live.get("/v1/audit").json()["items"] == entries
