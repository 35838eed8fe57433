"""an index of the webhook events not applied yet

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 16:10:00

Webhook events are now applied after their 202; the clock looks every minute for those still
`pending` (their web process stopped) or `failed`. Nearly every inbox row is applied, so a
partial index over the others stays tiny however long the inbox grows, and the look is not a
scan of the whole inbox.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UNAPPLIED = sa.text("outcome IN ('pending', 'failed')")


def upgrade() -> None:
    op.create_index(
        "ix_received_events_unapplied",
        "received_events",
        ["received_at", "id"],
        postgresql_where=UNAPPLIED,
        sqlite_where=UNAPPLIED,
    )


def downgrade() -> None:
    op.drop_index("ix_received_events_unapplied", table_name="received_events")
