"""messages by status and channel, inbox events by type and outcome, kept by triggers

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 18:00:00

`GET /metrics` reports how many messages are in each status (by channel) and how many inbox
events have each outcome (by type). Counted with GROUP BY, that is a scan of the whole log
on every scrape of every web process (0.45 to 0.9 s of both cores of the test machine on
3,000,000 messages, see BENCHMARKS.md "Metrics"). On PostgreSQL triggers keep the counts instead,
in the same transaction as the change: after each statement that inserts, updates or
deletes rows of `messages` (or `received_events`) one row per (status, channel) that
changed is appended to `message_counts` (`event_counts`) with the difference, computed from
the statement's transition tables; rows are only ever appended, so concurrent writers never
wait on each other for them. A read sums them (`outreach/store/counts.py`); now and then they
are folded into one row per pair. A TRUNCATE of the counted table empties its counts.

The counts start from a GROUP BY of the table as it is, in this migration's transaction,
after the triggers exist: creating a trigger locks the table against writes until the commit,
so no change is missed or counted twice. On SQLite (one process, a small book) the tables
exist but stay empty and the counts are read with GROUP BY.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# (counted table, counts table, its two columns)
COUNTED = [
    ("messages", "message_counts", ("status", "channel")),
    ("received_events", "event_counts", ("type", "outcome")),
]
OPERATIONS = ("insert", "update", "delete")


def _function(table: str, counts: str, columns: tuple[str, str]) -> str:
    a, b = columns
    # names from COUNTED above, never from input
    return f"""
CREATE FUNCTION {counts}_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    DELETE FROM {counts};
  ELSIF TG_OP = 'INSERT' THEN
    INSERT INTO {counts} ({a}, {b}, n)
      SELECT {a}, {b}, count(*) FROM new_rows GROUP BY {a}, {b};
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO {counts} ({a}, {b}, n)
      SELECT {a}, {b}, -count(*) FROM old_rows GROUP BY {a}, {b};
  ELSE
    INSERT INTO {counts} ({a}, {b}, n)
      SELECT {a}, {b}, sum(n) FROM (
        SELECT {a}, {b}, 1 AS n FROM new_rows
        UNION ALL
        SELECT {a}, {b}, -1 AS n FROM old_rows
      ) AS moved
      GROUP BY {a}, {b} HAVING sum(n) <> 0;
  END IF;
  RETURN NULL;
END
$$"""  # noqa: S608


def _trigger(table: str, counts: str, operation: str) -> str:
    referencing = {
        "insert": "REFERENCING NEW TABLE AS new_rows",
        "update": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "delete": "REFERENCING OLD TABLE AS old_rows",
    }[operation]
    return (
        f"CREATE TRIGGER {counts}_{operation} AFTER {operation.upper()} ON {table} "
        f"{referencing} FOR EACH STATEMENT EXECUTE FUNCTION {counts}_kept()"
    )


def upgrade() -> None:
    op.create_table(
        "message_counts",
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "event_counts",
        sa.Column("type", sa.String(60), nullable=False),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, counts, columns in COUNTED:
        op.execute(_function(table, counts, columns))
        for operation in OPERATIONS:
            op.execute(_trigger(table, counts, operation))
        op.execute(
            f"CREATE TRIGGER {counts}_truncate AFTER TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {counts}_kept()"
        )
        a, b = columns
        op.execute(
            f"INSERT INTO {counts} ({a}, {b}, n) "  # noqa: S608 - names from COUNTED
            f"SELECT {a}, {b}, count(*) FROM {table} GROUP BY {a}, {b}"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, counts, _ in COUNTED:
            for operation in (*OPERATIONS, "truncate"):
                op.execute(f"DROP TRIGGER {counts}_{operation} ON {table}")
            op.execute(f"DROP FUNCTION {counts}_kept()")
    op.drop_table("event_counts")
    op.drop_table("message_counts")
