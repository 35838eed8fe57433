"""webhook events that keep failing to apply become dead letters

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:40:00

An event whose apply fails is tried again with a growing delay (`attempts`, `retry_at`) and,
after a few failures, kept as `dead_letter` for ops instead of being tried every minute for
ever. The partial index of the events not applied covers dead letters too: the final gate
holds the messages of a borrower or loan that has one, and ops list them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import outreach.store.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UNAPPLIED_BEFORE = sa.text("outcome IN ('pending', 'failed')")
UNAPPLIED = sa.text("outcome IN ('pending', 'failed', 'dead_letter')")


def _unapplied_index(where: sa.TextClause) -> None:
    op.create_index(
        "ix_received_events_unapplied",
        "received_events",
        ["received_at", "id"],
        postgresql_where=where,
        sqlite_where=where,
    )


def upgrade() -> None:
    with op.batch_alter_table("received_events") as batch_op:
        batch_op.add_column(
            sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch_op.add_column(
            sa.Column("retry_at", outreach.store.types.UTCDateTime(timezone=True), nullable=True)
        )
    op.drop_index("ix_received_events_unapplied", table_name="received_events")
    _unapplied_index(UNAPPLIED)


def downgrade() -> None:
    # a dead letter was a failed event before: the clock tries it again every minute
    op.execute("UPDATE received_events SET outcome = 'failed' WHERE outcome = 'dead_letter'")
    op.drop_index("ix_received_events_unapplied", table_name="received_events")
    _unapplied_index(UNAPPLIED_BEFORE)
    with op.batch_alter_table("received_events") as batch_op:
        batch_op.drop_column("retry_at")
        batch_op.drop_column("attempts")
