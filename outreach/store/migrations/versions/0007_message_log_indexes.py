"""indexes of the message log: one filter, newest first, on a large log; the overview

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 10:00:00

The ops pages read the log with one filter at a time, newest first, a page after a cursor;
on a log of millions a filter on a column without an index of (that column, id) reads the
log in id order until a page is found, which for a value found only long ago is most of it.
So each filtered column gets one: status (carrying the reason, for the overview's deferred
by reason), channel, stage, purpose and reason (these three replace the indexes of the
column alone, which they serve as well); the few messages flagged for a person a partial
index; `send_at` one carrying channel, status and reason, so the overview counts a day's
messages from the index alone; and (id, send_at) for the log's since and until: read
backwards, its entries say which messages are in the range without reading them, where the
primary key's would have the log read row by row back to the range. On PostgreSQL the text
search (`q`, a substring of content or ids) gets a trigram index (pg_trgm, a trusted
extension: the database's owner may create it) of the searched columns as one text; the
expression is `models.SEARCHED_SQL`, written out here as it was at this revision.

The indexes are built in the migration's transaction: writes to `messages` wait while
they are (on 1,000,000 messages, see BENCHMARKS.md "Pages (issue 19)").
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NEEDS_HUMAN = sa.text("needs_human IS TRUE")
SEARCHED_SQL = (
    "coalesce(messages.body, '') || chr(31) || coalesce(messages.subject, '') || chr(31) || "
    "coalesce(messages.text, '') || chr(31) || coalesce(messages.recipient, '') || chr(31) || "
    "coalesce(messages.template, '') || chr(31) || coalesce(messages.borrower_id, '') || "
    "chr(31) || coalesce(messages.loan_id, '')"
)
# (name, columns); the column alone's index they replace
BY_COLUMN = [
    ("ix_messages_channel_id", ["channel", "id"], "ix_messages_channel"),
    ("ix_messages_stage_id", ["stage", "id"], "ix_messages_stage"),
    ("ix_messages_purpose_id", ["purpose", "id"], None),
    ("ix_messages_reason_id", ["reason", "id"], "ix_messages_reason"),
]


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_index(
        "ix_messages_status_id", "messages", ["status", "id"], postgresql_include=["reason"]
    )
    for name, columns, replaced in BY_COLUMN:
        op.create_index(name, "messages", columns)
        if replaced is not None:
            op.drop_index(replaced, table_name="messages")
    op.create_index(
        "ix_messages_needs_human",
        "messages",
        ["id"],
        postgresql_where=NEEDS_HUMAN,
        sqlite_where=NEEDS_HUMAN,
    )
    op.create_index(
        "ix_messages_send_at",
        "messages",
        ["send_at"],
        postgresql_include=["channel", "status", "reason"],
    )
    op.create_index("ix_messages_id_send_at", "messages", ["id", "send_at"])
    if postgresql:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(
            "CREATE INDEX ix_messages_search ON messages "
            f"USING gin (({SEARCHED_SQL}) {trigram_ops()})"
        )


def trigram_ops() -> str:
    """pg_trgm's operator class, named with the schema the extension lives in: it may be in
    the database already, installed in a schema not on this connection's search path."""
    bind = op.get_bind()
    schema = bind.execute(
        sa.text(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'pg_trgm'"
        )
    ).scalar_one()
    return f"{bind.dialect.identifier_preparer.quote(schema)}.gin_trgm_ops"


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_messages_search")
        # the extension stays: something else in the database may use it
    op.drop_index("ix_messages_id_send_at", table_name="messages")
    op.drop_index("ix_messages_send_at", table_name="messages")
    op.drop_index("ix_messages_needs_human", table_name="messages")
    for name, columns, replaced in reversed(BY_COLUMN):
        if replaced is not None:
            op.create_index(replaced, "messages", columns[:1])
        op.drop_index(name, table_name="messages")
    op.drop_index("ix_messages_status_id", table_name="messages")
