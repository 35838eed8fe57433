"""the worker lease that holds a message being sent

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 11:00:00

A message marked `sending` records the lease of the worker process that marked it, so that a
message whose worker died is reconciled as soon as the lease is known to be gone, instead of
after a fixed wait. Rows marked before this revision have none: the reconciler takes them
after the old fixed wait.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("worker_lease", sa.String(80), nullable=True))


def downgrade() -> None:
    op.drop_column("messages", "worker_lease")
