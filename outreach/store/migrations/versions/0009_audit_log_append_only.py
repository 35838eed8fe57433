"""the audit log refuses updates and deletes

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 19:00:00

The application has no path that changes or removes an audit row (`outreach/store/audit.py`
only appends); these triggers make the database say so too, so that a bug, a hand-written
script or a compromised process holding the service's credentials cannot quietly rewrite
who did what. A row-level trigger does not fire for TRUNCATE (on PostgreSQL that stays the
database owner's deliberate act, as the test suite's reset uses it).
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

REFUSAL = "audit_log is append-only: its rows are never updated or deleted"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION audit_log_refuse_change() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{REFUSAL}' USING ERRCODE = 'insufficient_privilege';
            END
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change()"
        )
        return
    for change in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER audit_log_refuse_{change.lower()} BEFORE {change} ON audit_log "
            f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION audit_log_refuse_change()")
        return
    for change in ("update", "delete"):
        op.execute(f"DROP TRIGGER audit_log_refuse_{change}")
