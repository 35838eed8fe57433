"""campaigns that can be launched, their holdout groups, message variants and the audit log

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 15:00:00

A campaign gains what ops set and what launching it records (holdout share, who created and
launched it, the counts at launch); the borrowers eligible at launch are kept with their arm
(a variant, or the holdout group: the control); a campaign message records its variant;
every ops write is kept in an append-only audit log; and a phone number keeps what it says
of where its owner is (zones, country), worked out once when it is stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from outreach.store.types import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(
            sa.Column("holdout_percent", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("created_by", sa.String(100), nullable=True))
        batch.add_column(sa.Column("launched_at", UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("launched_by", sa.String(100), nullable=True))
        batch.add_column(sa.Column("finished_at", UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("launch_counts", JSON, nullable=True))
    op.create_table(
        "campaign_members",
        sa.Column("campaign_id", sa.String(40), nullable=False),
        sa.Column("borrower_id", sa.String(100), nullable=False),
        sa.Column("loan_id", sa.String(100), nullable=False),
        sa.Column("arm", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "borrower_id", name=op.f("pk_campaign_members")),
    )
    op.add_column("messages", sa.Column("variant", sa.String(100), nullable=True))
    # runs of a campaign's messages in id order (pause, cancel, end): the index on the id
    # alone is superseded
    op.create_index("ix_messages_campaign", "messages", ["campaign_id", "id"])
    op.drop_index("ix_messages_campaign_id", table_name="messages")
    op.add_column("borrower_phones", sa.Column("facts", sa.Text(), nullable=True))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("role", sa.String(20), nullable=True),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("target", sa.String(200), nullable=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("detail", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    op.create_index(op.f("ix_audit_log_actor"), "audit_log", ["actor"])
    op.create_index(op.f("ix_audit_log_action"), "audit_log", ["action"])


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_log_action"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_actor"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_at"), table_name="audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("borrower_phones") as batch:
        batch.drop_column("facts")
    op.create_index("ix_messages_campaign_id", "messages", ["campaign_id"])
    op.drop_index("ix_messages_campaign", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("variant")
    op.drop_table("campaign_members")
    with op.batch_alter_table("campaigns") as batch:
        for column in (
            "launch_counts",
            "finished_at",
            "launched_by",
            "launched_at",
            "created_by",
            "holdout_percent",
        ):
            batch.drop_column(column)
