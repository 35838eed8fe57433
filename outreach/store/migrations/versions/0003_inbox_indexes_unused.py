"""drop the inbox's indexes that no query reads

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 17:40:00

Nothing looks events up by their type, and the one look by arrival (the clock's, for events
not applied) reads the partial index of migration 0002. Every accepted event is written into
each index of the inbox, so each one nothing reads is paid for on every webhook call.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_received_events_type", table_name="received_events")
    op.drop_index("ix_received_events_received_at", table_name="received_events")


def downgrade() -> None:
    op.create_index("ix_received_events_received_at", "received_events", ["received_at"])
    op.create_index("ix_received_events_type", "received_events", ["type"])
