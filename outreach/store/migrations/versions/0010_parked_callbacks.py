"""delivery statuses that arrive before their message's acceptance is recorded

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 19:00:00

Twilio may call back with `sent` or `failed` before the worker that handed the message over
has recorded the message's sid (it records a run of acceptances together). Such a callback
used to be answered and forgotten (`unknown_message`); it is kept here instead and applied
as soon as the message carries the sid (`service/delivery_status.py`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from outreach.store.types import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "parked_callbacks",
        sa.Column("id", sa.String(300), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("provider_id", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error_code", sa.String(20), nullable=True),
        sa.Column("received_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_parked_callbacks")),
    )
    op.create_index(op.f("ix_parked_callbacks_provider_id"), "parked_callbacks", ["provider_id"])
    op.create_index(op.f("ix_parked_callbacks_received_at"), "parked_callbacks", ["received_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_parked_callbacks_received_at"), table_name="parked_callbacks")
    op.drop_index(op.f("ix_parked_callbacks_provider_id"), table_name="parked_callbacks")
    op.drop_table("parked_callbacks")
